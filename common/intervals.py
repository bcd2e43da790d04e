"""Prediction intervals for a branch's forecast, calibrated on that branch's own history.

Split-conformal on scaled residuals: the model forecasts from rolling origins inside the
months it is given, each error is divided by the square root of its forecast (count data:
a 120-car branch's months vary more in units than a 6-car branch's), and the interval
half-width at level L is the conformal quantile of |scaled error| times the square root of
the forecast. With too few residuals for that quantile, a normal interval from their RMS
(Poisson's 1 when there are none). Pure functions; the node calls them on its own data, and
only coverage counts and interval sums leave it, inside encrypted sums.
"""

from __future__ import annotations

import math
from typing import Callable

import numpy as np
from scipy.stats import norm

LEVELS = (0.8, 0.95)
MAX_ORIGINS = 24  # the most recent origins a branch calibrates on
MIN_ORIGIN = 2  # months of history the first calibration forecast starts from

Predict = Callable[[np.ndarray, int], np.ndarray]  # (history, month number of the next month) -> forecasts


def scaled_residuals(predict: Predict, series: np.ndarray, start: int, horizon: int) -> np.ndarray:
    """(actual − forecast) / √max(forecast, 1) at every step of every rolling origin in
    `series`, whose first month is month number `start` (the latest `MAX_ORIGINS` origins
    with at least one month after them)."""
    s = np.asarray(series, dtype=float)
    out = []
    for origin in range(max(MIN_ORIGIN, s.size - MAX_ORIGINS), s.size):
        ahead = s[origin : origin + horizon]
        f = np.asarray(predict(s[:origin], start + origin), dtype=float)[: ahead.size]
        out.extend((ahead - f) / np.sqrt(np.maximum(f, 1.0)))
    return np.asarray(out, dtype=float)


def half_width_scale(residuals: np.ndarray, level: float) -> float:
    """The multiplier of √forecast for a `level` interval: the conformal quantile of the
    absolute residuals, ceil((n+1)·level)-th smallest, when n allows it; else z·RMS."""
    r = np.abs(np.asarray(residuals, dtype=float))
    r = r[np.isfinite(r)]
    k = math.ceil((r.size + 1) * level)
    if r.size and k <= r.size:
        return float(np.sort(r)[k - 1])
    rms = float(np.sqrt(np.mean(r * r))) if r.size else 1.0
    return float(norm.ppf(0.5 + level / 2)) * max(rms, 1.0)


def interval(point: np.ndarray, residuals: np.ndarray, level: float) -> tuple[np.ndarray, np.ndarray]:
    """(low, high) around `point`, never below zero."""
    p = np.asarray(point, dtype=float)
    half = half_width_scale(residuals, level) * np.sqrt(np.maximum(p, 1.0))
    return np.clip(p - half, 0.0, None), p + half


def variance(point: np.ndarray, residuals: np.ndarray) -> np.ndarray:
    """Each month's forecast variance, mean squared scaled residual × forecast (at least
    Poisson's), so independent branches' variances add up for a regional total."""
    r = np.asarray(residuals, dtype=float)
    r = r[np.isfinite(r)]
    spread = max(float(np.mean(r * r)) if r.size else 1.0, 1.0)
    return spread * np.maximum(np.asarray(point, dtype=float), 1.0)


def coverage(actual: np.ndarray, low: np.ndarray, high: np.ndarray) -> float:
    """The share of months whose actual value lies inside the interval."""
    a = np.asarray(actual, dtype=float)
    return float(np.mean((a >= low) & (a <= high))) if a.size else 0.0


def total_interval(points: float, variances: float, level: float) -> tuple[float, float]:
    """A normal interval for a sum of independent branch forecasts."""
    half = float(norm.ppf(0.5 + level / 2)) * math.sqrt(max(variances, 0.0))
    return max(points - half, 0.0), points + half
