"""What one branch can forecast alone with competent statistical methods. Pure functions.

The joint model is judged against these, not against a weak copy of itself: each takes a
branch's own monthly history and returns `horizon` non-negative forecasts. ETS and Theta are
statsforecast's automatic (AICc-selected) models; the validated choice picks, per branch,
the method with the lowest error over rolling origins inside that branch's training months
only, so it never sees the months it is judged on.

Used on each node at the held-out evaluation and by the experiment runner on real panels.
"""

from __future__ import annotations

import warnings
from typing import Callable

import numpy as np

from common.metrics import seasonal_naive

# The statistical methods a branch could run alone; the validated choice picks among them.
METHODS = ("seasonal_naive", "moving_average_3", "mean_12", "ets", "theta")
CHOICE = "local_choice"
MIN_FIT_MONTHS = 6  # the shortest history a rolling origin fits on
FOLDS = 3  # rolling origins per branch
FOLD_STEP = 3  # months between origins


def moving_average(history: np.ndarray, horizon: int, window: int = 3) -> np.ndarray:
    """The mean of the last `window` months, carried flat: what most dealerships do today."""
    h = np.asarray(history, dtype=float)
    return np.full(horizon, float(h[-window:].mean()) if h.size else 0.0)


def recent_mean(history: np.ndarray, horizon: int, window: int = 12) -> np.ndarray:
    """The mean of the last `window` months (all of them when fewer), carried flat."""
    return moving_average(history, horizon, window)


def _statsforecast(model_name: str, history: np.ndarray, horizon: int, season: int) -> np.ndarray:
    """statsforecast's automatic model; the recent mean when the series is too short for it
    to fit or the fit gives no finite forecast (a two-month branch has no ETS)."""
    from statsforecast.models import AutoETS, AutoTheta  # imported late: 1.4 s, only where used

    h = np.asarray(history, dtype=float)
    if h.size >= 3 and np.ptp(h) > 0:
        model = {"ets": AutoETS, "theta": AutoTheta}[model_name](season_length=season if h.size > season else 1)
        try:
            with warnings.catch_warnings(), np.errstate(all="ignore"):
                warnings.simplefilter("ignore")
                mean = np.asarray(model.forecast(y=h, h=horizon)["mean"], dtype=float)
            if mean.shape == (horizon,) and np.isfinite(mean).all():
                return np.clip(mean, 0.0, None)
        except Exception:  # noqa: BLE001 - statsforecast raises assorted errors on degenerate series
            pass
    return recent_mean(h, horizon)


def ets(history: np.ndarray, horizon: int, season: int = 12) -> np.ndarray:
    return _statsforecast("ets", history, horizon, season)


def theta(history: np.ndarray, horizon: int, season: int = 12) -> np.ndarray:
    return _statsforecast("theta", history, horizon, season)


def method(name: str, season: int = 12) -> Callable[[np.ndarray, int], np.ndarray]:
    """One of `METHODS` as `f(history, horizon)`."""
    return {
        "seasonal_naive": lambda h, n: seasonal_naive(h, n, season),
        "moving_average_3": moving_average,
        "mean_12": lambda h, n: recent_mean(h, n, season),
        "ets": lambda h, n: ets(h, n, season),
        "theta": lambda h, n: theta(h, n, season),
    }[name]


def rolling_origins(months: int, horizon: int) -> list[int]:
    """Origins (months of history before each validation forecast) inside the training
    months: the latest `FOLDS` that leave a full horizon after them, `FOLD_STEP` apart; for a
    history too short for one, the latest origins that leave at least one month."""
    full = [o for o in (months - horizon - i * FOLD_STEP for i in range(FOLDS)) if o >= MIN_FIT_MONTHS]
    if full:
        return full
    return [o for o in range(months - 1, MIN_FIT_MONTHS - 1, -1)][:FOLDS]


def validated_choice(history: np.ndarray, horizon: int, season: int = 12) -> tuple[str, np.ndarray]:
    """The method with the lowest mean absolute error over rolling origins in `history`, and
    its forecast from all of `history`. With no origin to validate on, the recent mean."""
    h = np.asarray(history, dtype=float)
    origins = rolling_origins(h.size, horizon)
    if not origins:
        return "mean_12", recent_mean(h, horizon, season)
    errors = {}
    for name in METHODS:
        f = method(name, season)
        errors[name] = float(np.mean([
            np.mean(np.abs(h[o:o + horizon] - f(h[:o], horizon)[: len(h[o:o + horizon])])) for o in origins
        ]))
    best = min(METHODS, key=lambda name: (errors[name], METHODS.index(name)))
    return best, method(best, season)(h, horizon)


def local_forecasts(history: np.ndarray, horizon: int, season: int = 12) -> tuple[dict[str, np.ndarray], str]:
    """Every statistical local arm's forecast, and which method the validated choice took."""
    out = {name: method(name, season)(history, horizon) for name in METHODS}
    chosen, out[CHOICE] = validated_choice(history, horizon, season)
    return out, chosen
