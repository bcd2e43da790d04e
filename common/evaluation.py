"""The held-out metric vector: how a branch's accuracy and forecast reach the alliance only as sums.

Each node scores every arm (the federated model and the branch's own local forecasts) on its
held-out months, forecasts the months after its data, and encrypts one vector; the
coordinator adds the vectors of all nodes, and a node decrypts only the sum. Layout:

- per group (`GROUPS`: all branches; young ones; new stores; branches in a launch window):
  `[mase, smape] per arm`, the share of held-out months inside the federated forecast's 80 %
  and 95 % intervals, then per local arm `[federated better, log MAE ratio + 5, its square]`,
  then `1` for a member of the group; all zeros otherwise;
- per totals block (the alliance, then one per region the job lists, `REGION_SLOTS` at
  most): the branch's forecast for each month ahead and its variance (`MAX_HORIZON` each),
  then `1`; zeros in the blocks of regions it is not in;
- the membership block: a `1` in the one slot naming the branch's cell of the groups
  (established / young / new store, crossed with in a launch window or not). Its sums tell a
  decrypting node how the groups overlap, so it can refuse a release from which a sum over
  too few branches could be read as a combination of groups; it is never released itself.

The groups. Young: under `YOUNG_MONTHS` months of training history. New stores: under
`NEW_STORE_MONTHS` (1 to 6 months: they opened after the rest of the alliance had most of
its data; a store with fewer months than the node needs to score a forecast sits out and is
counted among the refusals). Launch window: the target is a branch's total monthly sales,
not sales per line, so "newly launched lines" is read as the branches whose held-out months
include a model launch in their own region (the launch calendar is in the job).

So the sum holds the totals, how many branches the joint model beat each local arm on, the
geometric-mean relative MAE with its spread, the interval coverage, the regional forecast
totals with their variance, and the count of contributors in each block. Every slot is
non-negative and bounded (`CEILINGS`; a decrypting node checks that). Pure functions, no I/O.
"""

from __future__ import annotations

import math

import numpy as np

from common.intervals import LEVELS, total_interval
from common.local_methods import CHOICE, METHODS

# The joint model, the same model trained on one branch alone (with and without DP), and the
# competent statistical methods a branch can run alone (`common.local_methods`).
ARMS = ("federated", "local", "local_dp", *METHODS, CHOICE)
LOCAL_ARMS = ARMS[1:]  # what the joint model is compared with, branch by branch
STATISTICAL_ARMS = (*METHODS, CHOICE)  # best_local is the strongest of these
METRICS = ("mase", "smape")
COMPARISONS = ("wins", "log_ratio", "log_ratio_sq")
GROUPS = ("all", "young", "new_stores", "launch_window")
YOUNG_MONTHS = 24  # branches with less training history than this form the "young" group
NEW_STORE_MONTHS = 7  # ... and with less than this, the "new_stores" group (within "young")
METRIC_CEILING = 1_000.0  # a score is clipped here before encryption (keeps CKKS in range)
LOG_RATIO_BOUND = 5.0  # |log(MAE ratio)| is clipped here, then shifted by it to stay non-negative
COVERAGE_LEVELS = (80, 95)  # percent; the federated forecast's intervals (`common.intervals`)
_SCORES = len(ARMS) * len(METRICS)
_COMPARED = _SCORES + len(COVERAGE_LEVELS)
BLOCK = _COMPARED + len(LOCAL_ARMS) * len(COMPARISONS) + 1
MAX_HORIZON = 12  # months ahead a totals block holds (a job's horizon is at most this)
REGION_SLOTS = 8  # regions a job may ask totals for, besides the alliance
TOTALS_BLOCK = 2 * MAX_HORIZON + 1
TOTALS_AT = BLOCK * len(GROUPS)
MEMBERSHIP_AT = TOTALS_AT + TOTALS_BLOCK * (1 + REGION_SLOTS)
_LEVELS = 3  # established, young but not new, new store
MEMBERSHIP = _LEVELS * 2  # x (outside, inside) a launch window
LENGTH = MEMBERSHIP_AT + MEMBERSHIP
UNITS_CEILING = 1_000_000.0  # a branch's monthly forecast or its variance is clipped here (keeps CKKS in range)
DIVERGED_VS_NAIVE = 10.0  # an arm whose mean MASE is this many times seasonal naive's is flagged, not quoted


def _bounded(value: float) -> float:
    return min(max(value, 0.0), METRIC_CEILING) if np.isfinite(value) else METRIC_CEILING


def log_mae_ratio(federated_mae: float, arm_mae: float) -> float:
    """log(federated MAE / arm MAE), clipped to ±LOG_RATIO_BOUND (an exact month on both is 0)."""
    if federated_mae <= 0 and arm_mae <= 0:
        return 0.0
    ratio = math.log(max(federated_mae, 1e-9) / max(arm_mae, 1e-9))
    return min(max(ratio, -LOG_RATIO_BOUND), LOG_RATIO_BOUND)


def in_launch_window(target: int, months: int, launches: tuple[int, ...] | list[int]) -> bool:
    """Whether a model launch (month numbers, the branch's region's) falls in the held-out
    months `target`, ..., `target + months - 1`."""
    return any(target <= launch < target + months for launch in launches)


def branch_groups(history_months: int, target: int, held_out_months: int, launches) -> dict[str, bool]:
    """Which groups besides "all" a branch is in (the `metric_vector` flags), from its months
    of training history and the launches in its region (month numbers)."""
    return {"young": history_months < YOUNG_MONTHS, "new_store": history_months < NEW_STORE_MONTHS,
            "launch_window": in_launch_window(target, held_out_months, launches)}


def metric_vector(scores: dict[str, dict[str, float]], *, young: bool, new_store: bool = False,
                  launch_window: bool = False, coverage: dict[int, float] | None = None,
                  outlook: tuple[np.ndarray, np.ndarray] | None = None, region_slot: int | None = None) -> np.ndarray:
    """One branch's vector. `scores[arm]` holds `mase`, `smape` and `mae`; every arm must be
    scored, so the arms compare on the same branches. `young`, `new_store` (a new store is
    young) and `launch_window` say which groups besides "all" it belongs to. `coverage[level]`
    is the share of held-out months inside the federated forecast's interval; `outlook` is
    the forecast of the months ahead and its variance, added to the alliance's totals and,
    when `region_slot` is given, to that region's."""
    if new_store and not young:
        raise ValueError("a new store is young: new_store without young")
    block = np.zeros(BLOCK)
    for i, arm in enumerate(ARMS):
        for j, metric in enumerate(METRICS):
            block[i * len(METRICS) + j] = _bounded(float(scores[arm][metric]))
    for i, level in enumerate(COVERAGE_LEVELS):
        block[_SCORES + i] = min(max(float((coverage or {}).get(level, 0.0)), 0.0), 1.0)
    fed = scores["federated"]
    for k, arm in enumerate(LOCAL_ARMS):
        ratio = log_mae_ratio(float(fed["mae"]), float(scores[arm]["mae"]))
        at = _COMPARED + k * len(COMPARISONS)
        block[at : at + 3] = (1.0 if ratio < 0 else 0.0, ratio + LOG_RATIO_BOUND, ratio * ratio)
    block[-1] = 1.0
    totals = np.zeros(TOTALS_BLOCK * (1 + REGION_SLOTS))
    if outlook is not None:
        point, var = (np.clip(np.nan_to_num(np.asarray(v, dtype=float)[:MAX_HORIZON]), 0.0, UNITS_CEILING) for v in outlook)
        one = np.zeros(TOTALS_BLOCK)
        one[: point.size], one[MAX_HORIZON : MAX_HORIZON + var.size], one[-1] = point, var, 1.0
        for slot in (0, None if region_slot is None else 1 + region_slot):
            if slot is not None:
                totals[slot * TOTALS_BLOCK : (slot + 1) * TOTALS_BLOCK] = one
    member = np.zeros(MEMBERSHIP)
    member[(int(young) + int(new_store)) * 2 + int(launch_window)] = 1.0
    groups = [block] + [block if flag else np.zeros(BLOCK) for flag in (young, new_store, launch_window)]
    return np.concatenate([*groups, totals, member])


def _ceilings() -> np.ndarray:
    """The largest value one branch's vector holds in each slot."""
    block = np.full(BLOCK, METRIC_CEILING)
    block[_SCORES:_COMPARED] = 1.0
    block[_COMPARED:-1] = [1.0, 2 * LOG_RATIO_BOUND, LOG_RATIO_BOUND**2] * len(LOCAL_ARMS)
    block[-1] = 1.0
    totals = np.full(TOTALS_BLOCK, UNITS_CEILING)
    totals[-1] = 1.0
    return np.concatenate([np.tile(block, len(GROUPS)), np.tile(totals, 1 + REGION_SLOTS), np.ones(MEMBERSHIP)])


CEILINGS = _ceilings()
METRIC_CLIP = float(CEILINGS.max())  # the largest value a metric vector holds: its masked ring's clip (CKKS-ring)


def _blocks() -> list[tuple[int, int]]:
    """(first slot, count slot) of every block: the groups', then the totals'."""
    return [(g * BLOCK, (g + 1) * BLOCK - 1) for g in range(len(GROUPS))] + [
        (TOTALS_AT + t * TOTALS_BLOCK, TOTALS_AT + (t + 1) * TOTALS_BLOCK - 1) for t in range(1 + REGION_SLOTS)]


def count_slots() -> list[int]:
    """Where each block keeps its count of contributors: the groups', then the totals'."""
    return [count for _, count in _blocks()]


# Which cells of the membership block each group covers (cell = level * 2 + in launch window).
_GROUP_CELLS = np.array([
    [1, 1, 1, 1, 1, 1],  # all
    [0, 0, 1, 1, 1, 1],  # young (young but not new, and new)
    [0, 0, 0, 0, 1, 1],  # new stores
    [0, 1, 0, 1, 0, 1],  # in a launch window
])
_COEFFICIENTS = np.array(np.meshgrid(*[np.arange(-2, 3)] * len(GROUPS), indexing="ij")).reshape(len(GROUPS), -1).T


def exposed_group(released: list[int], cells: np.ndarray, min_contributors: int) -> int | None:
    """A released group (by index into GROUPS) to withhold, or None when no combination of
    the released groups' sums (coefficients -2..2) is the sum over a set of fewer than
    `min_contributors` branches; `cells` holds the branch count of each membership cell
    (empty cells do not count: a coordinator may know which are empty). Of the groups that
    make up an exposing combination, the smallest goes (never "all")."""
    occupied = cells > 0
    groups = np.array(released, dtype=int)
    for coefficients in _COEFFICIENTS:
        used = coefficients[groups]
        if not np.any(used):
            continue
        picked = (used @ _GROUP_CELLS[groups])[occupied]
        if np.all((picked == 0) | (picked == 1)) and 0 < cells[occupied][picked == 1].sum() < min_contributors:
            involved = [int(g) for g, c in zip(groups, used) if c and g != 0]
            if involved:
                return min(involved, key=lambda g: (cells @ _GROUP_CELLS[g], g))
    return None


def release_values(summed: np.ndarray, min_contributors: int) -> np.ndarray:
    """What a decrypting node may release from a decrypted sum, rounded: each block only over
    at least `min_contributors` nodes, and never so that a sum over fewer can be read off as
    a combination of released blocks: of the groups (all, young, new stores, launch window:
    the membership counts say how they overlap, see `exposed_group`), or of the regions
    within the alliance (each node in one region at most). Otherwise a coordinator would read
    one branch's numbers as a difference: the alliance's total minus every region's but a
    one-branch one. The membership counts themselves are never released."""
    out = np.round(np.asarray(summed, dtype=float), 3)
    blocks = _blocks()
    cells = np.clip(np.round(out[MEMBERSHIP_AT:MEMBERSHIP_AT + MEMBERSHIP]), 0, None)
    out[MEMBERSHIP_AT:MEMBERSHIP_AT + MEMBERSHIP] = 0.0

    def n(block: int) -> int:
        return int(round(out[blocks[block][1]]))

    def withhold(block: int) -> None:
        first, count = blocks[block]
        out[first : count + 1] = 0.0

    for block in range(len(blocks)):
        if n(block) < min_contributors:
            withhold(block)
    while (group := exposed_group([g for g in range(len(GROUPS)) if n(g)], cells, min_contributors)) is not None:
        withhold(group)
    parent, children = len(GROUPS), list(range(len(GROUPS) + 1, len(blocks)))
    released = sorted((c for c in children if n(c)), key=n)
    while released and 0 < n(parent) - sum(n(c) for c in released) < min_contributors:
        withhold(released.pop(0))  # the smallest sub-block goes, until the remainder is empty or large enough
    return out


def _relative_mae(total: float, squares: float, count: int) -> dict:
    """Geometric-mean relative MAE (federated / arm) with a 95% interval over branches, from
    the released sums of log ratios and their squares (t interval on the mean log ratio: the
    sums are all that leave the nodes, so there is no per-branch bootstrap here)."""
    from scipy.stats import t as student_t  # imported late: 0.7 s, and every process imports this module

    mean = total / count
    var = max(squares / count - mean * mean, 0.0) * count / (count - 1) if count > 1 else float("nan")
    half = float(student_t.ppf(0.975, count - 1)) * math.sqrt(var / count) if count > 1 else float("nan")
    out = {"geomean": round(math.exp(mean), 4)}
    out["interval95"] = [round(math.exp(mean - half), 4), round(math.exp(mean + half), 4)] if math.isfinite(half) else None
    return out


def alliance_figures(values: list[float], *, regions: tuple[str, ...] | list[str] = (), horizon: int = 6) -> dict[str, dict]:
    """Released sums -> per group: node count, mean MASE and sMAPE per arm, the federated
    intervals' coverage, and per local arm how many branches the joint model beat it on and
    the relative MAE (with its interval); under `totals`, the alliance's and each region's
    forecast for the months ahead with 80 % and 95 % intervals (branches taken as independent)."""
    v = np.asarray(values, dtype=float)
    out: dict = {}
    for g, group in enumerate(GROUPS):
        block = v[g * BLOCK : (g + 1) * BLOCK]
        count = int(round(block[-1]))
        figures: dict = {"nodes": count}
        for i, arm in enumerate(ARMS):
            figures[arm] = ({metric: round(float(block[i * len(METRICS) + j] / count), 4) for j, metric in enumerate(METRICS)}
                            if count else None)
        figures["coverage"] = ({str(level): round(float(block[_SCORES + i] / count), 4) for i, level in enumerate(COVERAGE_LEVELS)}
                               if count else None)
        comparisons = {}
        for k, arm in enumerate(LOCAL_ARMS):
            wins, shifted, squares = block[_COMPARED + k * len(COMPARISONS): _COMPARED + (k + 1) * len(COMPARISONS)]
            if count:
                comparisons[arm] = {"federated_better_on": int(round(wins)),
                                    **_relative_mae(float(shifted) - LOG_RATIO_BOUND * count, float(squares), count)}
        figures["versus"] = comparisons
        out[group] = figures
    out["totals"] = {}
    for t, name in enumerate(("alliance", *regions)):
        block = v[TOTALS_AT + t * TOTALS_BLOCK : TOTALS_AT + (t + 1) * TOTALS_BLOCK]
        count = int(round(block[-1]))
        out["totals"][name] = _totals(block, count, horizon) if count else {"nodes": 0}
    return out


def _totals(block: np.ndarray, count: int, horizon: int) -> dict:
    point, var = block[:horizon], block[MAX_HORIZON : MAX_HORIZON + horizon]
    out: dict = {"nodes": count, "point": [round(float(p), 1) for p in point]}
    for level in LEVELS:
        bounds = [total_interval(float(p), float(s), level) for p, s in zip(point, var)]
        out[f"low{round(level * 100)}"] = [round(lo, 1) for lo, _ in bounds]
        out[f"high{round(level * 100)}"] = [round(hi, 1) for _, hi in bounds]
    return out


def best_local(mase: dict[str, float | None]) -> str | None:
    """The yardstick: the statistical local arm with the lowest mean MASE on the held-out
    months (chosen after the fact, so it is at least as strong as any one method)."""
    scored = [arm for arm in STATISTICAL_ARMS if mase.get(arm) is not None]
    return min(scored, key=lambda arm: mase[arm]) if scored else None


def diverged(mase: dict[str, float | None], arm: str) -> bool:
    """An arm that failed (clipped scores, or far worse than the same month last year): a
    headline must flag it, never quote a ratio against it."""
    value, naive = mase.get(arm), mase.get("seasonal_naive")
    if value is None:
        return False
    return value >= METRIC_CEILING * 0.999 or (naive is not None and naive > 0 and value > DIVERGED_VS_NAIVE * naive)
