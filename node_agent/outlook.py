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
from common.evaluation import COVERAGE_LEVELS
from common.intervals import coverage, interval, scaled_residuals, variance
from common.calendar import month_number
from common.model import BranchContext, Forecaster, forecast
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


def _with_intervals(model: Forecaster, history: np.ndarray, start: int, context: BranchContext, horizon: int,
                    months: list[str]) -> BranchForecast:
    predict = lambda h, target: forecast(model, h, target, context)  # noqa: E731
    residuals = scaled_residuals(predict, history, start, horizon)
    point = predict(history, start + len(history))[: len(months)]
    bounds = {level: interval(point, residuals, level / 100) for level in COVERAGE_LEVELS}
    return BranchForecast(months=months, point=point, variance=variance(point, residuals), bounds=bounds)


def held_out_intervals(model: Forecaster, split: HoldoutSplit, horizon: int, context: BranchContext) -> BranchForecast:
    """The model's forecast of the held-out months, calibrated on the training months only."""
    return _with_intervals(model, split.history, split.start, context, horizon, split.months)


def months_ahead(model: Forecaster, series: MonthlySeries, horizon: int, context: BranchContext) -> BranchForecast:
    """The model's forecast of the `horizon` months after the branch's last month of data."""
    n = len(series.units)
    months = [month_label(series.start, n + i) for i in range(horizon)]
    return _with_intervals(model, series.units, month_number(series.start), context, horizon, months)
