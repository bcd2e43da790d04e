"""Local training: DP-SGD with Opacus for federated rounds, plain SGD for baselines.

Accounting across rounds keeps the accountant, not the model: each round loads the job's
accountant history from the node's store, trains, and saves it back, so the reported epsilon
is the composition of every step this node has taken in the job. The noise multiplier is
planned once for the whole job (rounds x local steps) and then held fixed.

DP randomness is secret: the Gaussian noise and the Poisson batch sampling draw from
generators seeded from the OS's CSPRNG every round (`secret_generator`), never from job
values (seed, round, branch), which the coordinator knows: with those, anyone who sees an
update could replay training on data-minus-one-sale and read membership off exactly.
"""

from __future__ import annotations

import copy
import functools
import os
import warnings
from dataclasses import dataclass
from typing import Any, Callable, TypeVar

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from common.model import get_flat_weights
from common.privacy import noise_multiplier
from common.wire import JobSpec

T = TypeVar("T")


def _quiet(fn: Callable[..., T]) -> Callable[..., T]:
    """Silence Opacus's known, harmless warnings: its non-cryptographic RNG (torchcsprng has
    no build for this Python), backward hooks on input layers, and "optimal order is the
    largest alpha" (the RDP bound is then conservative, not wrong)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> T:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return fn(*args, **kwargs)

    return wrapper


@dataclass(frozen=True)
class RoundResult:
    weights: np.ndarray
    steps: int
    epsilon: float | None
    noise_multiplier: float | None
    accountant_state: dict[str, Any] | None


def steps_per_round(num_windows: int, job: JobSpec) -> int:
    return job.local_epochs * max(1, -(-num_windows // job.batch_size))


def sample_rate(num_windows: int, job: JobSpec) -> float:
    """Poisson sampling rate Opacus uses: one over the number of batches per epoch."""
    return 1.0 / max(1, -(-num_windows // job.batch_size))


def plan_noise_multiplier(num_windows: int, job: JobSpec) -> float:
    """Sigma that keeps this node within the job's (epsilon, delta) after all rounds."""
    total_steps = job.rounds * steps_per_round(num_windows, job)
    return noise_multiplier(job.dp.target_epsilon, job.dp.delta, sample_rate(num_windows, job), total_steps, job.dp.accountant)


def secret_generator() -> torch.Generator:
    """A torch generator seeded with 64 bits from the OS's CSPRNG: unpredictable to anyone
    who knows the job (torchcsprng, Opacus's secure mode, has no build for this Python)."""
    return torch.Generator().manual_seed(int.from_bytes(os.urandom(8), "little"))


def training_loss() -> nn.Module:
    """The loss of every training recipe here (robust to a branch's odd month)."""
    return nn.SmoothL1Loss(reduction="mean")


def _loader(x: np.ndarray, y: np.ndarray, batch_size: int, generator: torch.Generator) -> DataLoader:
    data = TensorDataset(torch.from_numpy(x), torch.from_numpy(y))
    return DataLoader(data, batch_size=batch_size, shuffle=True, generator=generator)


@_quiet
def train_dp_round(
    model: nn.Module,
    x: np.ndarray,
    y: np.ndarray,
    job: JobSpec,
    *,
    noise_multiplier: float,
    accountant_state: dict[str, Any] | None,
    report_epsilon: bool = True,
) -> RoundResult:
    """One round of DP-SGD; returns new weights and Opacus's cumulative epsilon so far (the
    node accounts from its ledger; this figure serves the baselines and audits, and costs
    about a second of RDP arithmetic, so a caller that accounts itself can skip it).

    `job` is a `JobSpec` or any recipe with the same training fields (batch_size,
    learning_rate, local_epochs, dp)."""
    from opacus import PrivacyEngine  # imported late: 1.7 s on top of torch, and only DP rounds need it

    work = copy.deepcopy(model)  # Opacus hooks the module it wraps; keep the caller's clean
    work.train()  # Opacus validates that the module is in training mode
    engine = PrivacyEngine(accountant=job.dp.accountant)
    if accountant_state:
        engine.accountant.load_state_dict(accountant_state)
    optimizer = torch.optim.SGD(work.parameters(), lr=job.learning_rate, momentum=0.9)
    private_model, private_opt, loader = engine.make_private(
        module=work,
        optimizer=optimizer,
        data_loader=_loader(x, y, job.batch_size, secret_generator()),
        noise_multiplier=noise_multiplier,
        max_grad_norm=job.dp.max_grad_norm,
        poisson_sampling=True,
        noise_generator=secret_generator(),
    )
    loss_fn = training_loss()
    private_model.train()
    steps = 0
    for _ in range(job.local_epochs):
        for xb, yb in loader:
            private_opt.zero_grad()
            if len(xb):
                loss = loss_fn(private_model(xb), yb)
            else:  # an empty Poisson batch is still a noised, accounted step: zero per-sample grads
                loss = private_model(xb).sum()
            loss.backward()
            private_opt.step()
            steps += 1
    epsilon = float(engine.get_epsilon(job.dp.delta)) if report_epsilon else None
    state = engine.accountant.state_dict()
    model.load_state_dict(work.state_dict())
    return RoundResult(
        weights=get_flat_weights(model),
        steps=steps,
        epsilon=epsilon,
        noise_multiplier=noise_multiplier,
        accountant_state={"history": [list(h) for h in state["history"]], "mechanism": state["mechanism"]},
    )


def train_plain(
    model: nn.Module, x: np.ndarray, y: np.ndarray, *, epochs: int, batch_size: int, learning_rate: float, seed: int,
    max_grad_norm: float | None = None,
) -> RoundResult:
    """Non-private training: for `--no-dp` runs and for local-only / pooled baselines.
    `max_grad_norm` clips each batch's gradient (not per sample, as DP-SGD does): losses
    weighted per window, as the panel model's are, otherwise blow up an SGD step."""
    torch.manual_seed(seed)
    optimizer = torch.optim.SGD(model.parameters(), lr=learning_rate, momentum=0.9)
    loss_fn = training_loss()
    model.train()
    steps = 0
    if len(x):
        loader = _loader(x, y, batch_size, torch.Generator().manual_seed(seed))
        for _ in range(epochs):
            for xb, yb in loader:
                optimizer.zero_grad()
                loss_fn(model(xb), yb).backward()
                if max_grad_norm is not None:
                    nn.utils.clip_grad_norm_(model.parameters(), max_grad_norm)
                optimizer.step()
                steps += 1
    return RoundResult(get_flat_weights(model), steps, None, None, None)
