"""One branch of a panel experiment, framework-free: its windows, one round of local training
(DP-SGD through the node agent's own Opacus trainer, or plain SGD), and its encrypted update.

The branch's series never leave this object; what it returns is a weighted update
`[n·w ..., n]` (n: its window count), plaintext or as TenSEAL CKKS ciphertexts, exactly the
node agent's codec, so the coordinator side can sum without a key. Under DP the noise
multiplier is planned once for the whole experiment (rounds × local steps) and ε is the
accountant's composition of every step taken so far.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

import numpy as np
import torch

from common.he import EncryptedVector, decrypt_vector, encrypt_vector
from common.model import get_flat_weights, set_flat_weights
from common.panel_model import PanelForecaster, PanelModelSpec, make_panel_windows
from common.privacy import epsilon as epsilon_of
from common.privacy import noise_multiplier as plan_sigma
from node_agent.training import sample_rate, steps_per_round, train_dp_round, train_plain
from sovereign.experiment.panel import TrainingRecipe

WEIGHT_UNIT = 1000.0  # windows per unit of weight: keeps CKKS sums far below 2^19 at 2^40 scale


@dataclass(frozen=True)
class LocalUpdate:
    """What one branch sends after a round: its weighted update, its weight, its ε so far."""

    weighted: np.ndarray  # [n·w ..., n], n in units of WEIGHT_UNIT windows
    windows: int
    epsilon: float | None


def branch_windows(series: list[np.ndarray], spec: PanelModelSpec, season: int) -> tuple[np.ndarray, np.ndarray]:
    parts = [make_panel_windows(s, spec, season) for s in series]
    x = np.concatenate([p[0] for p in parts]) if parts else np.zeros((0, spec.lags + 1), np.float32)
    y = np.concatenate([p[1] for p in parts]) if parts else np.zeros((0, spec.block), np.float32)
    return x, y


class PanelNode:
    """A branch holding some series of the panel."""

    def __init__(self, branch: str, series: list[np.ndarray], spec: PanelModelSpec, recipe: TrainingRecipe, season: int) -> None:
        self.branch = branch
        self.spec = spec
        self.recipe = recipe
        self.x, self.y = branch_windows(series, spec, season)

    @property
    def windows(self) -> int:
        return int(len(self.x))

    def sigma(self) -> float:
        total = self.recipe.rounds * steps_per_round(self.windows, self.recipe)
        return plan_sigma(self.recipe.dp.target_epsilon, self.recipe.dp.delta, sample_rate(self.windows, self.recipe),
                          total, self.recipe.dp.accountant)

    def train(self, global_weights: np.ndarray, rnd: int, *, dp: bool) -> LocalUpdate:
        """One round from the global model; a branch with no window sends a zero update of weight 0."""
        model = PanelForecaster(self.spec)
        set_flat_weights(model, global_weights)
        torch.set_num_threads(1)
        if self.windows == 0:
            return LocalUpdate(np.zeros(global_weights.size + 1), 0, 0.0 if dp else None)
        if dp:
            sigma = self.sigma()
            private = self.recipe.model_copy(update={"learning_rate": self.recipe.dp_learning_rate})
            train_dp_round(model, self.x, self.y, private, noise_multiplier=sigma, accountant_state=None,
                           report_epsilon=False)
            steps = rnd * steps_per_round(self.windows, self.recipe)
            eps = epsilon_of(sample_rate(self.windows, self.recipe), sigma, steps, self.recipe.dp.delta, self.recipe.dp.accountant)
        else:
            seed = zlib.crc32(f"{self.branch}/{rnd}".encode())
            train_plain(model, self.x, self.y, epochs=self.recipe.local_epochs, batch_size=self.recipe.batch_size,
                        learning_rate=self.recipe.learning_rate, seed=seed,
                        max_grad_norm=self.recipe.dp.max_grad_norm)
            eps = None
        n = self.windows / WEIGHT_UNIT
        return LocalUpdate(np.append(n * get_flat_weights(model), n), self.windows, eps)


def encrypt_update(ctx, update: LocalUpdate) -> EncryptedVector:
    return encrypt_vector(ctx, update.weighted)


def average_of(summed: np.ndarray) -> np.ndarray:
    """The weighted mean from a summed `[Σ n·w ..., Σ n]`."""
    total = float(summed[-1])
    if total <= 0:
        raise ValueError("no branch contributed a window this round")
    return summed[:-1] / total


def decrypt_average(ctx, summed: EncryptedVector) -> np.ndarray:
    return average_of(decrypt_vector(ctx, summed, decimals=9))
