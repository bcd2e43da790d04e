"""The global forecasting model and the features it reads.

A small MLP over scale-normalised lag windows. Every window is divided by the mean of its
own observed lags, so a 6-car-a-month branch and a 120-car-a-month branch speak the same
language and one model can serve the whole alliance. Missing lags (young branches) are zero
with a mask bit, so a branch with a few months of history still gets forecasts.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

LAGS = 12
HORIZON = 6
MONTHS = 12


def feature_size(lags: int = LAGS) -> int:
    """Lags + their availability mask + a one-hot month of the first forecast month."""
    return 2 * lags + MONTHS


class Forecaster(nn.Module):
    """Direct multi-horizon forecaster: one forward pass gives all `horizon` months."""

    def __init__(self, *, lags: int = LAGS, horizon: int = HORIZON, hidden: int = 32) -> None:
        super().__init__()
        self.lags = lags
        self.horizon = horizon
        self.net = nn.Sequential(
            nn.Linear(feature_size(lags), hidden),
            nn.ReLU(),
            nn.Linear(hidden, hidden),
            nn.ReLU(),
            nn.Linear(hidden, horizon),
        )

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Predict the ratio to the window scale; 1.0 means "like the recent average".
        return 1.0 + self.net(x)


def build_model(seed: int, *, lags: int = LAGS, horizon: int = HORIZON) -> Forecaster:
    """A model whose initial weights depend only on `seed` (public, holds no data)."""
    gen_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    model = Forecaster(lags=lags, horizon=horizon)
    torch.random.set_rng_state(gen_state)
    return model


def get_flat_weights(model: nn.Module) -> np.ndarray:
    """All parameters as one float64 vector, in `state_dict` order."""
    return np.concatenate(
        [t.detach().cpu().numpy().astype(np.float64).ravel() for t in model.state_dict().values()]
    )


def set_flat_weights(model: nn.Module, flat: np.ndarray) -> None:
    """Inverse of `get_flat_weights`; refuses a vector of the wrong length."""
    state = model.state_dict()
    total = sum(t.numel() for t in state.values())
    if flat.shape != (total,):
        raise ValueError(f"weight vector has {flat.size} values, model needs {total}")
    offset = 0
    new_state = {}
    for name, tensor in state.items():
        n = tensor.numel()
        new_state[name] = torch.from_numpy(
            np.asarray(flat[offset : offset + n], dtype=np.float32).reshape(tensor.shape)
        )
        offset += n
    model.load_state_dict(new_state)


def make_windows(
    series: np.ndarray,
    first_month: int,
    *,
    lags: int = LAGS,
    horizon: int = HORIZON,
    min_lags: int = 2,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Training windows from one monthly series.

    `series[i]` is the units sold in month i; `first_month` is the calendar month (1-12) of
    `series[0]`. Returns (features, targets, scales): targets are already divided by the
    window's scale. Every origin with at least `min_lags` observed lags and a full horizon
    of targets gives one window; that window is DP-SGD's unit of privacy.
    """
    xs, ys, scales = [], [], []
    for origin in range(min_lags, len(series) - horizon + 1):
        x, scale = window_features(series[:origin], (first_month - 1 + origin) % 12 + 1, lags=lags)
        xs.append(x)
        ys.append(series[origin : origin + horizon] / scale)
        scales.append(scale)
    if not xs:
        empty = np.zeros((0, feature_size(lags)), dtype=np.float32)
        return empty, np.zeros((0, horizon), dtype=np.float32), np.zeros(0, dtype=np.float32)
    return (
        np.asarray(xs, dtype=np.float32),
        np.asarray(ys, dtype=np.float32),
        np.asarray(scales, dtype=np.float32),
    )


def window_features(history: np.ndarray, target_month: int, *, lags: int = LAGS) -> tuple[np.ndarray, float]:
    """Features for a forecast whose first month is calendar month `target_month` (1-12).

    Uses the last `lags` values of `history` (fewer when history is short). Returns the
    feature vector and the scale the forecast must be multiplied by.
    """
    recent = np.asarray(history[-lags:], dtype=np.float64)
    scale = float(max(recent.mean(), 1.0)) if recent.size else 1.0
    values = np.zeros(lags)
    mask = np.zeros(lags)
    if recent.size:
        values[lags - recent.size :] = recent / scale
        mask[lags - recent.size :] = 1.0
    month = np.zeros(MONTHS)
    month[target_month - 1] = 1.0
    return np.concatenate([values, mask, month]).astype(np.float32), scale


def forecast(model: nn.Module, history: np.ndarray, target_month: int) -> np.ndarray:
    """Units forecast for the `horizon` months after `history`."""
    x, scale = window_features(history, target_month, lags=getattr(model, "lags", LAGS))
    model.eval()
    with torch.no_grad():
        ratio = model(torch.from_numpy(x)[None, :])[0].numpy()
    return np.clip(ratio, 0.0, None) * scale
