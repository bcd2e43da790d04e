"""The yardstick: what one branch can forecast alone, and how the comparison reaches the
alliance only as sums (wins, geometric-mean relative MAE and its interval)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from common import evaluation, local_methods
from common.metrics import score

MONTHS = np.arange(48)
SEASONAL = 40 + 15 * np.sin(2 * np.pi * MONTHS / 12)  # a strong, exact yearly pattern


def test_each_method_forecasts_the_horizon_and_ets_learns_a_season_the_means_cannot():
    forecasts, _ = local_methods.local_forecasts(SEASONAL[:42], 6)
    assert set(forecasts) == {*local_methods.METHODS, local_methods.CHOICE}
    assert all(f.shape == (6,) and np.isfinite(f).all() and (f >= 0).all() for f in forecasts.values())
    actual = SEASONAL[42:]
    errors = {name: np.abs(f - actual).mean() for name, f in forecasts.items()}
    assert errors["seasonal_naive"] < 1e-6  # an exact season repeats
    assert errors["ets"] < 0.3 * errors["mean_12"]
    assert forecasts["moving_average_3"] == pytest.approx(np.full(6, SEASONAL[39:42].mean()))


def test_the_validated_choice_follows_the_branchs_own_training_months():
    seasonal_pick, f = local_methods.validated_choice(SEASONAL[:42], 6)
    assert seasonal_pick == "seasonal_naive" and np.abs(f - SEASONAL[42:]).max() < 1e-6
    rng = np.random.default_rng(3)
    flat = rng.poisson(30, size=42).astype(float)  # no season, no trend: averaging wins
    flat_pick, _ = local_methods.validated_choice(flat, 6)
    assert flat_pick in {"mean_12", "ets", "theta"} and flat_pick != "seasonal_naive"
    # the choice reads only the months before the forecast origin: changing "future" values cannot move it
    assert local_methods.rolling_origins(42, 6) == [36, 33, 30]
    assert max(local_methods.rolling_origins(9, 6)) < 9 and local_methods.rolling_origins(4, 6) == []


def test_short_and_flat_histories_fall_back_to_the_recent_mean():
    for history in (np.array([5.0, 7.0]), np.full(10, 4.0), np.array([])):
        forecasts, chosen = local_methods.local_forecasts(history, 6)
        expected = history.mean() if history.size else 0.0
        assert forecasts["ets"] == pytest.approx(np.full(6, expected))
        assert chosen == "mean_12" or history.size >= local_methods.MIN_FIT_MONTHS + 1


def _branch_scores(rng: np.random.Generator) -> dict:
    history = rng.poisson(20, size=30).astype(float)
    actual = rng.poisson(20, size=6).astype(float)
    forecasts = {arm: actual + rng.normal(0, rng.uniform(1, 6), size=6) for arm in evaluation.ARMS}
    return {arm: score(actual, f, history) for arm, f in forecasts.items()}


def test_summed_vectors_give_the_wins_and_the_geometric_mean_relative_mae_of_the_branches():
    rng = np.random.default_rng(11)
    branches = [_branch_scores(rng) for _ in range(9)]
    summed = sum(evaluation.metric_vector(s, young=i < 4) for i, s in enumerate(branches))
    figures = evaluation.alliance_figures(list(evaluation.release_values(summed, 3)))
    for arm in evaluation.LOCAL_ARMS:
        ratios = np.array([math.log(s["federated"]["mae"] / s[arm]["mae"]) for s in branches])
        versus = figures["all"]["versus"][arm]
        assert versus["federated_better_on"] == int((ratios < 0).sum())
        assert versus["geomean"] == pytest.approx(math.exp(ratios.mean()), abs=2e-3)
        half = 2.306 * ratios.std(ddof=1) / math.sqrt(len(ratios))  # Student t, 8 degrees of freedom
        assert versus["interval95"] == pytest.approx([math.exp(ratios.mean() - half), math.exp(ratios.mean() + half)], abs=3e-3)
        assert figures["all"][arm]["mase"] == pytest.approx(np.mean([s[arm]["mase"] for s in branches]), abs=1e-3)
    assert figures["young"]["nodes"] == 4
    assert summed.min() >= 0  # every slot stays non-negative: a decrypting node refuses a sum that is not


def test_best_local_is_the_strongest_statistical_arm_and_a_diverged_arm_is_flagged():
    mase = {"federated": 0.7, "local": 0.5, "local_dp": 3855.0, "seasonal_naive": 0.9, "moving_average_3": 0.8,
            "mean_12": 0.68, "ets": 0.72, "theta": 0.75, "local_choice": 0.71}
    assert evaluation.best_local(mase) == "mean_12"  # the MLP alone is a row, never the yardstick
    assert evaluation.diverged(mase, "local_dp") and not evaluation.diverged(mase, "federated")
    assert evaluation.diverged({**mase, "federated": 1000.0}, "federated")
