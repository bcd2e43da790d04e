"""A branch's forecast with intervals: of its held-out months, and of the months after its data.

The job's model forecasts; the intervals come from that model's own errors at rolling origins
in the branch's series (`common.intervals`). For the held-out months only the training months
calibrate, so the coverage measured on them is what the intervals really deliver. The
forecast of the months ahead is the job's deliverable to the branch: it stays on the node
(`sovereign node forecast`); only its contribution to regional totals leaves, inside the
encrypted sum.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from torch import nn

from common.evaluation import COVERAGE_LEVELS
from common.intervals import coverage, interval, scaled_residuals, variance
from common.model import forecast
from node_agent.data import HoldoutSplit, MonthlySeries, month_label


@dataclass(frozen=True)
class BranchForecast:
    months: list[str]
    point: np.ndarray
    variance: np.ndarray
    bounds: dict[int, tuple[np.ndarray, np.ndarray]]  # level in percent -> (low, high)

    def coverage(self, actual: np.ndarray) -> dict[int, float]:
        n = len(actual)
        return {level: coverage(actual, low[:n], high[:n]) for level, (low, high) in self.bounds.items()}

    def as_json(self) -> dict:
        out: dict = {"months": self.months, "point": _rounded(self.point), "variance": _rounded(self.variance)}
        for level, (low, high) in self.bounds.items():
            out[f"low{level}"], out[f"high{level}"] = _rounded(low), _rounded(high)
        return out


def _rounded(values: np.ndarray) -> list[float]:
    return [round(float(v), 2) for v in values]


def _with_intervals(model: nn.Module, history: np.ndarray, first_month: int, target_month: int, horizon: int,
                    months: list[str]) -> BranchForecast:
    predict = lambda h, month: forecast(model, h, month)  # noqa: E731
    residuals = scaled_residuals(predict, history, first_month, horizon)
    point = predict(history, target_month)[: len(months)]
    bounds = {level: interval(point, residuals, level / 100) for level in COVERAGE_LEVELS}
    return BranchForecast(months=months, point=point, variance=variance(point, residuals), bounds=bounds)


def held_out_intervals(model: nn.Module, split: HoldoutSplit, horizon: int) -> BranchForecast:
    """The model's forecast of the held-out months, calibrated on the training months only."""
    first_month = (split.target_month - 1 - len(split.history)) % 12 + 1
    return _with_intervals(model, split.history, first_month, split.target_month, horizon, split.months)


def months_ahead(model: nn.Module, series: MonthlySeries, horizon: int) -> BranchForecast:
    """The model's forecast of the `horizon` months after the branch's last month of data."""
    n = len(series.units)
    months = [month_label(series.start, n + i) for i in range(horizon)]
    return _with_intervals(model, series.units, series.start.month, (series.start.month - 1 + n) % 12 + 1, horizon, months)
