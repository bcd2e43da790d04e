"""Forecast intervals calibrated on a branch's own history, and regional totals released as sums."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import norm, t

from common import evaluation, intervals


def _mean_predictor(level: float):
    return lambda history, month: np.full(6, level)


@pytest.mark.parametrize("level", [0.8, 0.95])
def test_conformal_intervals_cover_new_months_at_their_nominal_rate(level):
    rng = np.random.default_rng(5)
    covered = []
    for mean in (6.0, 30.0, 120.0):  # a small and a large dealership: scaled residuals make one rule fit both
        for _ in range(60):
            history = rng.poisson(mean, size=36).astype(float)
            residuals = intervals.scaled_residuals(_mean_predictor(mean), history, 1, 6)
            low, high = intervals.interval(np.full(6, mean), residuals, level)
            covered.append(intervals.coverage(rng.poisson(mean, size=6), low, high))
    assert abs(np.mean(covered) - level) < 0.05


def test_a_branch_without_residuals_gets_a_student_t_interval_from_the_poisson_prior():
    prior = intervals.PRIOR_WEIGHT
    assert intervals.half_width_scale(np.zeros((0, 6)), 0.95) == pytest.approx(t.ppf(0.975, prior))
    tiny = np.array([[0.1, 0.2]])  # one origin, errors below Poisson's: the scale stays at 1
    assert intervals.half_width_scale(tiny, 0.95) == pytest.approx(t.ppf(0.975, prior + 1), rel=1e-6)
    assert intervals.half_width_scale(tiny, 0.8) > norm.ppf(0.9)
    many = np.linspace(-3, 3, 99)  # 1-D: each residual its own origin
    assert intervals.half_width_scale(many, 0.8) == pytest.approx(np.sort(np.abs(many))[79])
    low, high = intervals.interval(np.array([0.0, 2.0]), np.zeros((0, 6)), 0.95)
    assert (low >= 0).all() and (high > 0).all()


@pytest.mark.parametrize("level", [0.8, 0.95])
def test_a_new_store_with_two_months_is_not_overconfident(level):
    """Two months of data leave no rolling origin to calibrate on, and the level itself is a
    two-month estimate: a normal interval at Poisson's scale covered 70 % at 80 % nominal."""
    rng = np.random.default_rng(3)
    covered = []
    for mean in (6.0, 30.0, 120.0):
        for _ in range(200):
            series = rng.poisson(mean * rng.lognormal(0, 0.1), size=8).astype(float)
            history, ahead = series[:2], series[2:]
            predict = lambda h, month: np.full(6, h.mean())  # noqa: E731
            residuals = intervals.scaled_residuals(predict, history, 1, 6)
            low, high = intervals.interval(predict(history, 3), residuals, level)
            covered.append(intervals.coverage(ahead, low, high))
    assert np.mean(covered) >= level - 0.05


def test_residuals_that_share_an_origin_count_as_fewer():
    rng = np.random.default_rng(2)
    independent = rng.normal(size=(24, 6))
    shared = np.repeat(rng.normal(size=(24, 1)), 6, axis=1)  # every month of an origin misses alike
    assert intervals.effective_size(shared) == pytest.approx(24)
    assert intervals.effective_size(independent) > 0.8 * independent.size
    ragged = independent.copy()
    ragged[-1, 1:] = np.nan  # the last origin has one month after it
    assert intervals.effective_size(ragged) <= independent.size - 5


def _vector(point: float, region: int | None, young: bool = False) -> np.ndarray:
    scores = {arm: {"mase": 0.8, "smape": 10.0, "mae": 2.0} for arm in evaluation.ARMS}
    return evaluation.metric_vector(scores, young=young, coverage={80: 0.5, 95: 1.0},
                                    outlook=(np.full(6, point), np.full(6, point)), region_slot=region)


def test_regional_totals_are_released_only_over_enough_branches():
    vectors = [_vector(10, 0), _vector(20, 0), _vector(30, 0), _vector(40, 1), *(_vector(5, None) for _ in range(3))]
    summed = np.sum(vectors, axis=0)
    assert (summed <= len(vectors) * evaluation.CEILINGS).all() and summed.min() >= 0
    figures = evaluation.alliance_figures(list(evaluation.release_values(summed, 3)), regions=["Kanto", "Seoul"], horizon=6)
    totals = figures["totals"]
    assert totals["alliance"]["nodes"] == 7 and totals["alliance"]["point"] == [115.0] * 6
    assert totals["Kanto"]["nodes"] == 3 and totals["Kanto"]["point"] == [60.0] * 6
    assert totals["Seoul"] == {"nodes": 0}  # one branch: its forecast is not released
    low, high = intervals.total_interval(60.0, 60.0, 0.95)
    assert totals["Kanto"]["low95"][0] == pytest.approx(low, abs=0.1) and totals["Kanto"]["high95"][0] == pytest.approx(high, abs=0.1)
    assert figures["all"]["coverage"] == {"80": 0.5, "95": 1.0}


def test_a_one_branch_region_cannot_be_read_as_the_alliance_minus_the_other_regions():
    """The attacker lists regions so that every region but one (holding one branch) is
    released: the alliance's total minus the released regions would be that branch's forecast."""
    vectors = [_vector(10, 0), _vector(20, 0), _vector(30, 0), _vector(77, 1)]
    released = evaluation.release_values(np.sum(vectors, axis=0), 3)
    totals = evaluation.alliance_figures(list(released), regions=["Kanto", "Seoul"], horizon=6)["totals"]
    shown = [g["point"][0] for name, g in totals.items() if name != "alliance" and g["nodes"]]
    alliance = totals["alliance"]["point"][0] if totals["alliance"]["nodes"] else None
    assert alliance is None or alliance - sum(shown) not in (77.0,)  # no single branch's forecast by subtraction
    assert totals["alliance"]["nodes"] == 4 and totals["Kanto"] == {"nodes": 0}  # the sub-block goes, the total stays


def test_young_branches_are_not_released_when_the_rest_would_be_one_branch():
    scores = {arm: {"mase": 0.8, "smape": 10.0, "mae": 2.0} for arm in evaluation.ARMS}
    vectors = [evaluation.metric_vector(scores, young=i < 3) for i in range(4)]  # three young, one established
    figures = evaluation.alliance_figures(list(evaluation.release_values(np.sum(vectors, axis=0), 3)))
    assert figures["all"]["nodes"] == 4 and figures["young"]["nodes"] == 0
