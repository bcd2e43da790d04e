"""An empirical audit of customer-level privacy: plant a customer, release with and without
them many times, and see how well the best attacker tells the two apart.

The attacker knows every other sale of the branch and the node's public bound and noise; it
sees what the node released and must say whether the planted customer bought there. Its test
is the likelihood-ratio one for Gaussian noise: the released values projected on the
difference the customer makes (`audit_release`). Every threshold gives a false-positive and a
false-negative rate; with Clopper-Pearson upper bounds on both (so the figure holds at the
stated confidence), (ε, δ)-DP requires FPR + e^ε · FNR ≥ 1 − δ, which gives a lower bound on
ε (Jagielski, Ullman & Oprea 2020). The audit passes when that bound stays below the claim;
it has teeth when removing the contribution bound makes it cross the claim (the tests do).

Anything else that leaves the node is computed from the release, so an attack on the
release is at least as strong as one on what is computed from it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
from scipy.stats import beta

from common.customer_privacy import ContributionBound, composed_epsilon, release_noise_multiplier
from node_agent.release import discrete_gaussian


@dataclass(frozen=True)
class AuditResult:
    claimed_epsilon: float
    empirical_epsilon: float  # a lower bound, at `confidence`
    delta: float
    trials: int
    confidence: float
    difference_l2: float  # how far the planted customer moves the counts the node releases

    def as_dict(self) -> dict:
        return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in self.__dict__.items()}


def _upper(errors: int, trials: int, confidence: float) -> float:
    """Clopper-Pearson upper bound on a rate from `errors` in `trials`."""
    return 1.0 if errors >= trials else float(beta.ppf(confidence, errors + 1, trials - errors))


def epsilon_lower_bound(without: np.ndarray, with_: np.ndarray, delta: float, confidence: float = 0.95) -> float:
    """The largest ε that the threshold attacks on these scores refute (0 when none does);
    higher scores say "the customer is in"."""
    thresholds = np.unique(np.concatenate([without, with_]))
    n0, n1 = len(without), len(with_)
    s0, s1 = np.sort(without), np.sort(with_)
    best = 0.0
    for t in thresholds:
        fp = n0 - int(np.searchsorted(s0, t, side="right"))  # without, yet scored above t
        fn = int(np.searchsorted(s1, t, side="right"))  # with, yet scored at or below t
        fpr, fnr = _upper(fp, n0, confidence), _upper(fn, n1, confidence)
        for a, b in ((fpr, fnr), (fnr, fpr)):  # either direction of the test
            if a > 0 and 1 - delta - b > a:
                best = max(best, float(np.log((1 - delta - b) / a)))
    return best


def audit_release(without: np.ndarray, with_: np.ndarray, *, epsilon: float, delta: float, bound: ContributionBound,
                  trials: int = 1000, confidence: float = 0.95,
                  release: Callable[[np.ndarray, float], np.ndarray] = discrete_gaussian) -> AuditResult:
    """Release the bounded counts `without` and `with_` the planted customer `trials` times each,
    with the noise the node uses for `epsilon` per year at `delta`, and bound ε from below."""
    z = release_noise_multiplier(epsilon, delta)
    sigma = z * bound.l2_sensitivity
    difference = np.asarray(with_, dtype=np.float64) - np.asarray(without, dtype=np.float64)
    scores = {}
    for name, counts in (("without", without), ("with", with_)):
        scores[name] = np.array([float(difference @ release(counts, sigma)) for _ in range(trials)])
    return AuditResult(claimed_epsilon=composed_epsilon([z], delta),
                       empirical_epsilon=epsilon_lower_bound(scores["without"], scores["with"], delta, confidence),
                       delta=delta, trials=trials, confidence=confidence, difference_l2=float(np.linalg.norm(difference)))
