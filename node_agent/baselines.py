"""What a branch could do alone, computed on its own node beside the federated forecast.

Run at the held-out evaluation, on the same months, so the alliance sees the comparison only
as encrypted sums (`common.evaluation`); each branch's own numbers stay on its node.

- local: the same model trained on this branch's data alone, without DP (the data never
  leaves, so this is the strongest thing the branch can do with it by itself);
- local under DP: the same, under the job's privacy settings and schedule;
- the competent statistical methods a branch could run alone (`common.local_methods`):
  seasonal naive, moving average of 3, 12-month mean, AutoETS, AutoTheta, and the per-branch
  choice among them by rolling-origin validation on the training months.
"""

from __future__ import annotations

import numpy as np

from common import local_methods
from common.model import BranchContext, build_model, forecast, job_model, make_windows
from common.wire import JobSpec
from node_agent.data import HoldoutSplit
from node_agent.training import plan_noise_multiplier, train_dp_round, train_plain

# One non-private recipe for small data (small batches, many steps), not the DP job's,
# whose large batches suit DP-SGD's noise.
RECIPE = {"epochs": 16, "batch_size": 8, "learning_rate": 0.05}


def windows(split: HoldoutSplit, job: JobSpec, context: BranchContext):
    return make_windows(split.history, split.start, context, lags=job.lags, horizon=job.horizon)


def _alone(split: HoldoutSplit, job: JobSpec, context: BranchContext, train, *, private: bool = False) -> np.ndarray:
    """A model from this branch's windows only; with none it keeps the initial model. Under
    DP it takes the job model's rare-effect gain, as the federated model does."""
    x, y, _ = windows(split, job, context)
    model = job_model(job) if private else build_model(job.seed, lags=job.lags, horizon=job.horizon)
    if len(x):
        train(model, x, y)
    return forecast(model, split.history, split.target, context)[: len(split.actual)]


def local_forecast(split: HoldoutSplit, job: JobSpec, context: BranchContext) -> np.ndarray:
    return _alone(split, job, context, lambda m, x, y: train_plain(m, x, y, **RECIPE, seed=job.seed))


def local_dp_forecast(split: HoldoutSplit, job: JobSpec, context: BranchContext) -> np.ndarray:
    """This branch alone under the job's DP settings: its rounds, epochs and epsilon."""

    def train(model, x: np.ndarray, y: np.ndarray) -> None:
        sigma, state = plan_noise_multiplier(len(x), job), None
        for _ in range(job.rounds):
            state = train_dp_round(model, x, y, job, noise_multiplier=sigma, accountant_state=state).accountant_state

    return _alone(split, job, context, train, private=True)


def statistical_forecasts(split: HoldoutSplit) -> tuple[dict[str, np.ndarray], str]:
    """Every statistical arm's forecast of the held-out months, and the validated choice's pick."""
    return local_methods.local_forecasts(split.history, len(split.actual))
