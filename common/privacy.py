"""Privacy accounting as pure functions: the epsilon a DP-SGD schedule spends, the noise a
target needs, and what a window-level guarantee means for one customer.

Both sides use these: analysts plan jobs with them, nodes account with them. The accountants
are Opacus's (RDP, and PRV for a tighter numerical bound); `tests/test_privacy_accounting.py`
checks them against Google's independent `dp_accounting` implementation.
"""

from __future__ import annotations

import functools
import math
import warnings
from typing import Literal

Accountant = Literal["rdp", "prv"]


class PrivacyPlanError(ValueError):
    """A schedule or target that makes no sense (or cannot be met); one line, naming the value."""


def _check(sample_rate: float, steps: int, delta: float) -> None:
    if not 0 < sample_rate <= 1:
        raise PrivacyPlanError(f"sampling rate {sample_rate} must be in (0, 1]")
    if steps < 1:
        raise PrivacyPlanError(f"steps {steps} must be at least 1")
    if not 0 < delta < 1:
        raise PrivacyPlanError(f"delta {delta} must be in (0, 1)")


def _accountant(name: str):
    from opacus.accountants import PRVAccountant, RDPAccountant

    if name not in ("rdp", "prv"):
        raise PrivacyPlanError(f"accountant {name!r} must be rdp or prv")
    return RDPAccountant() if name == "rdp" else PRVAccountant()


def epsilon_spent(history: list[tuple[float, float, int]], delta: float, accountant: Accountant = "rdp") -> float:
    """Epsilon at `delta` of a composed schedule: [(noise multiplier, sampling rate, steps), ...]."""
    acc = _accountant(accountant)
    acc.history = [(float(s), float(q), int(t)) for s, q, t in history if t > 0]
    if not acc.history:
        return 0.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "optimal order is the largest alpha": the bound is then conservative
        return float(acc.get_epsilon(delta))


@functools.lru_cache(maxsize=1024)  # pure and slow (RDP series); branches of one size share a schedule
def epsilon(sample_rate: float, noise_multiplier: float, steps: int, delta: float, accountant: Accountant = "rdp") -> float:
    """Epsilon of `steps` DP-SGD steps with Poisson sampling at `sample_rate` and noise `noise_multiplier`."""
    _check(sample_rate, steps, delta)
    if noise_multiplier <= 0:
        raise PrivacyPlanError(f"noise multiplier {noise_multiplier} must be positive")
    return epsilon_spent([(noise_multiplier, sample_rate, steps)], delta, accountant)


@functools.lru_cache(maxsize=1024)  # a binary search over `epsilon`: seconds per call
def noise_multiplier(target_epsilon: float, delta: float, sample_rate: float, steps: int, accountant: Accountant = "rdp") -> float:
    """The smallest noise multiplier (to 1 %) that keeps `steps` steps within `target_epsilon`."""
    from opacus.accountants.utils import get_noise_multiplier

    _check(sample_rate, steps, delta)
    if target_epsilon <= 0:
        raise PrivacyPlanError(f"epsilon {target_epsilon} must be positive")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return float(get_noise_multiplier(target_epsilon=target_epsilon, target_delta=delta, sample_rate=sample_rate,
                                              steps=steps, accountant=accountant))
    except ValueError as exc:
        raise PrivacyPlanError(f"no noise multiplier reaches epsilon {target_epsilon} in {steps} steps ({exc})") from None


def windows_per_month(lags: int, horizon: int, num_windows: int) -> int:
    """How many training windows one month's total can appear in (as input or target)."""
    return max(1, min(lags + horizon, num_windows))


def group_privacy(epsilon_: float, delta: float, group_size: int) -> tuple[float, float]:
    """(epsilon, delta) for a group of `group_size` records, from a per-record (epsilon, delta):
    (k·ε, k·e^((k-1)·ε)·δ). A delta of 1 or more means the bound says nothing."""
    k = max(1, int(group_size))
    try:
        group_delta = k * math.exp((k - 1) * epsilon_) * delta
    except OverflowError:
        group_delta = math.inf
    return k * epsilon_, group_delta
