"""DP randomness is secret: two runs of the same job on the same data give different
updates, and the noise DP-SGD added has the standard deviation the plan says (σ·C / batch).
With noise or sampling seeded from job values, replaying training would reveal membership."""

from __future__ import annotations

import numpy as np

from common.model import BranchContext, build_model, get_flat_weights, make_windows
from common.wire import DPSettings, JobSpec
from node_agent import training
from node_agent.training import train_dp_round


def _data(n: int = 64, seed: int = 0):
    """n training windows of a branch's monthly series, as a node builds them."""
    rng = np.random.default_rng(seed)
    x, y, _ = make_windows(rng.poisson(30, size=n + 7).astype(float), 600, BranchContext(country=0, region=0))
    return x[:n], y[:n]


def test_the_same_job_on_the_same_data_gives_different_updates():
    job = JobSpec(job_id="same", seed=7, local_epochs=1, batch_size=16)
    x, y = _data()
    runs = []
    for _ in range(2):
        model = build_model(job.seed)
        runs.append(train_dp_round(model, x, y, job, noise_multiplier=1.0, accountant_state=None).weights)
    start = get_flat_weights(build_model(job.seed))
    assert np.abs(runs[0] - start).max() > 0 and np.abs(runs[0] - runs[1]).max() > 1e-4


def test_the_noise_added_has_the_planned_standard_deviation(monkeypatch):
    """Zero loss: the only change to the weights is DP-SGD's noise. One step over the whole
    batch (q = 1, so the expected batch is all n rows): Δw ~ N(0, (lr·σ·C / n)²) per weight."""
    monkeypatch.setattr(training, "training_loss", lambda: (lambda out, target: (out * 0.0).mean()))
    n, sigma, clip, lr = 64, 1.3, 0.3, 0.1
    job = JobSpec(job_id="noise", local_epochs=1, batch_size=n, learning_rate=lr, dp=DPSettings(max_grad_norm=clip))
    x, y = _data(n)
    start = get_flat_weights(build_model(job.seed))
    delta = np.concatenate([  # independent rounds, so the estimate rests on enough noise draws
        train_dp_round(build_model(job.seed), x, y, job, noise_multiplier=sigma, accountant_state=None).weights - start
        for _ in range(16)])
    planned = lr * sigma * clip / n
    measured = float(np.std(delta))
    assert delta.size > 2000 and abs(float(np.mean(delta))) < 4 * planned / np.sqrt(delta.size)
    assert abs(measured / planned - 1) < 0.08, (measured, planned)
