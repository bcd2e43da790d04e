"""Forecast accuracy: MASE and sMAPE. Pure numpy."""

from __future__ import annotations

import numpy as np


def smape(actual: np.ndarray, forecast: np.ndarray) -> float:
    """Symmetric MAPE in percent (0-200); months where both are zero count as exact."""
    a = np.asarray(actual, dtype=float)
    f = np.asarray(forecast, dtype=float)
    denom = np.abs(a) + np.abs(f)
    ratio = np.where(denom == 0, 0.0, 2.0 * np.abs(f - a) / np.where(denom == 0, 1.0, denom))
    return float(100.0 * ratio.mean())


def mase_scale(history: np.ndarray, season: int = 12) -> float:
    """In-sample MAE of the seasonal naive forecast (lag `season`), the MASE denominator.

    Short histories (no full season) fall back to the one-step naive forecast.
    """
    h = np.asarray(history, dtype=float)
    m = season if h.size > season else 1
    if h.size <= m:
        return 1.0
    scale = float(np.mean(np.abs(h[m:] - h[:-m])))
    return scale if scale > 0 else 1.0


def mase(actual: np.ndarray, forecast: np.ndarray, history: np.ndarray, season: int = 12) -> float:
    """Mean absolute scaled error against the seasonal naive's in-sample error."""
    err = np.mean(np.abs(np.asarray(actual, float) - np.asarray(forecast, float)))
    return float(err / mase_scale(history, season))


def seasonal_naive(history: np.ndarray, horizon: int, season: int = 12) -> np.ndarray:
    """Same month last year; the last observed value when there is no full season yet."""
    h = np.asarray(history, dtype=float)
    if h.size >= season:
        return np.array([h[h.size - season + (i % season)] for i in range(horizon)])
    last = h[-1] if h.size else 0.0
    return np.full(horizon, last)


def score(actual: np.ndarray, forecast: np.ndarray, history: np.ndarray) -> dict[str, float]:
    """The accuracy figures for one branch's held-out months: MASE and sMAPE (scale-free, the
    ones reports quote) and the MAE in units (only ever compared with another arm's MAE on
    the same branch: on its own it would tell the branch's size)."""
    err = float(np.mean(np.abs(np.asarray(actual, float) - np.asarray(forecast, float))))
    return {"mase": mase(actual, forecast, history), "smape": smape(actual, forecast), "mae": err}
