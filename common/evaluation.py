"""The held-out metric vector: how a branch's accuracy reaches the alliance only as a sum.

Each node scores every arm (the federated model and the branch's own local forecasts) on its
held-out months and encrypts one vector; the coordinator adds the vectors of all nodes, and a
node decrypts only the sum. Layout, per group (all branches, then young branches only):
`[mase, smape] per arm, then 1` for a member of the group, all zeros otherwise, so the sum
holds the totals and the count of contributors in each group. Pure functions, no I/O.
"""

from __future__ import annotations

import numpy as np

ARMS = ("federated", "local", "local_dp", "seasonal_naive")
METRICS = ("mase", "smape")
GROUPS = ("all", "young")
YOUNG_MONTHS = 24  # branches with less training history than this form the "young" group
METRIC_CEILING = 1_000.0  # a score is clipped here before encryption (keeps CKKS in range)
BLOCK = len(ARMS) * len(METRICS) + 1
LENGTH = BLOCK * len(GROUPS)


def metric_vector(scores: dict[str, dict[str, float]], *, young: bool) -> np.ndarray:
    """One branch's vector. `scores[arm][metric]`; an arm it could not score counts as missing
    for the whole branch (every arm must be scored, so the arms compare on the same branches)."""
    block = np.zeros(BLOCK)
    for i, arm in enumerate(ARMS):
        for j, metric in enumerate(METRICS):
            value = float(scores[arm][metric])
            block[i * len(METRICS) + j] = min(max(value, 0.0), METRIC_CEILING) if np.isfinite(value) else METRIC_CEILING
    block[-1] = 1.0
    return np.concatenate([block, block if young else np.zeros(BLOCK)])


def release_values(summed: np.ndarray, min_contributors: int) -> np.ndarray:
    """What a decrypting node may release from a decrypted sum: each group's totals only if
    at least `min_contributors` nodes are in it (a smaller group is zeroed), rounded."""
    out = np.round(np.asarray(summed, dtype=float), 3)
    for g in range(len(GROUPS)):
        block = slice(g * BLOCK, (g + 1) * BLOCK)
        if round(out[block][-1]) < min_contributors:
            out[block] = 0.0
    return out


def alliance_figures(values: list[float]) -> dict[str, dict]:
    """Released sums -> mean MASE and sMAPE per arm per group, with the group's node count."""
    v = np.asarray(values, dtype=float)
    out = {}
    for g, group in enumerate(GROUPS):
        block = v[g * BLOCK : (g + 1) * BLOCK]
        count = int(round(block[-1]))
        out[group] = {"nodes": count, **{
            arm: ({metric: round(float(block[i * len(METRICS) + j] / count), 4) for j, metric in enumerate(METRICS)}
                  if count else None)
            for i, arm in enumerate(ARMS)
        }}
    return out
