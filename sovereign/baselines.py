"""What the federation is measured against, on the same held-out months:

- local: the same model trained on one branch's data alone (no DP: the data never leaves,
  so this is the strongest thing a branch can do by itself);
- local under DP: the same, with the job's privacy budget and schedule, i.e. what a branch
  gets alone under the rules the alliance applies to the joint forecast;
- central: the same model trained on all branches' data pooled (an upper bound no real
  alliance can run, since it needs every record in one place);
- seasonal naive: the same month last year.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from common.metrics import score, seasonal_naive
from common.model import build_model, forecast, make_windows
from common.wire import JobSpec
from node_agent.data import HoldoutSplit
from node_agent.training import plan_noise_multiplier, train_dp_round, train_plain


# One non-private recipe for both baselines, chosen for small data (small batches, many
# steps) rather than copied from the DP job, whose large batches suit DP-SGD's noise.
RECIPE = {"epochs": 16, "batch_size": 8, "learning_rate": 0.05}


def _windows(split: HoldoutSplit, job: JobSpec, start_month: int):
    return make_windows(split.history, start_month, lags=job.lags, horizon=job.horizon)


def history_start_month(split: HoldoutSplit) -> int:
    """Calendar month of the first history month, from the first held-out month."""
    return (split.target_month - 1 - len(split.history)) % 12 + 1


Tick = Callable[[], None]


def _noop() -> None:
    pass


def _each_branch_alone(
    splits: dict[str, HoldoutSplit], job: JobSpec, train: Callable[[object, np.ndarray, np.ndarray], None], tick: Tick
) -> dict[str, np.ndarray]:
    """One model per branch from its own windows only; a branch with none keeps the seeded init."""
    out = {}
    for branch, split in splits.items():
        tick()
        x, y, _ = _windows(split, job, history_start_month(split))
        model = build_model(job.seed, lags=job.lags, horizon=job.horizon)
        if len(x):
            train(model, x, y)
        out[branch] = forecast(model, split.history, split.target_month)[: len(split.actual)]
    return out


def local_forecasts(splits: dict[str, HoldoutSplit], job: JobSpec, tick: Tick = _noop) -> dict[str, np.ndarray]:
    return _each_branch_alone(splits, job, lambda m, x, y: train_plain(m, x, y, **RECIPE, seed=job.seed), tick)


def local_dp_forecasts(splits: dict[str, HoldoutSplit], job: JobSpec, tick: Tick = _noop) -> dict[str, np.ndarray]:
    """Each branch alone under the job's DP settings: its rounds, epochs and epsilon budget."""

    def train(model, x: np.ndarray, y: np.ndarray) -> None:
        sigma, state = plan_noise_multiplier(len(x), job), None
        for rnd in range(job.rounds):
            state = train_dp_round(
                model, x, y, job, noise_multiplier=sigma, accountant_state=state, seed=job.seed + rnd
            ).accountant_state

    return _each_branch_alone(splits, job, train, tick)


def central_forecasts(splits: dict[str, HoldoutSplit], job: JobSpec) -> dict[str, np.ndarray]:
    parts = [_windows(s, job, history_start_month(s)) for s in splits.values()]
    x = np.concatenate([p[0] for p in parts])
    y = np.concatenate([p[1] for p in parts])
    model = build_model(job.seed, lags=job.lags, horizon=job.horizon)
    train_plain(model, x, y, **RECIPE, seed=job.seed)
    return {b: forecast(model, s.history, s.target_month)[: len(s.actual)] for b, s in splits.items()}


def naive_forecasts(splits: dict[str, HoldoutSplit], job: JobSpec) -> dict[str, np.ndarray]:
    return {b: seasonal_naive(s.history, len(s.actual)) for b, s in splits.items()}


def score_all(splits: dict[str, HoldoutSplit], forecasts: dict[str, np.ndarray]) -> dict[str, dict[str, float]]:
    return {b: score(splits[b].actual, forecasts[b], splits[b].history) for b in forecasts}
