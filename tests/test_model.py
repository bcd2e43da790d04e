"""The global model: shared seasonality and events, each branch's own level computed on its node."""

from __future__ import annotations

from datetime import date

import numpy as np
import pytest

from common.calendar import month_number
from common.model import (
    COUNTRY_SLOTS,
    REGION_SLOTS,
    BranchContext,
    branch_context,
    build_model,
    forecast,
    make_windows,
    window_features,
)
from common.wire import JobSpec
from node_agent.training import train_plain

START = month_number(date(2020, 1, 1))
SHAPE = 1 + 0.4 * np.cos(2 * np.pi * np.arange(72) / 12)  # a strong year: high in January, low in July


def test_the_untrained_model_is_the_mean_of_the_recent_months():
    history = np.array([10.0, 20, 30, 40, 50, 60, 70, 80, 90, 100, 110, 120, 130])
    f = forecast(build_model(0), history, START + len(history), BranchContext())
    assert f == pytest.approx(np.full(6, history[-12:].mean()), rel=1e-5)


def test_an_empty_poisson_batch_still_runs_forward():
    """DP-SGD's Poisson sampling can draw an empty batch: it is still a noised, accounted step."""
    import torch

    from common.model import feature_size

    assert build_model(0)(torch.zeros(0, feature_size())).shape == (0, 6)


def test_a_branch_is_placed_by_its_own_country_and_region_and_the_jobs_public_calendar():
    job = JobSpec(job_id="j", countries=["JP", "CN"], regions=["Kanto", "Shanghai"], launches=["2024-04"])
    assert branch_context(job, country="CN", region="Shanghai") == BranchContext(1, 1, (month_number(date(2024, 4, 1)),))
    assert branch_context(job, country="KR", region=None) == BranchContext(COUNTRY_SLOTS, REGION_SLOTS, (month_number(date(2024, 4, 1)),))
    x, _ = window_features(np.ones(12), month_number(date(2026, 1, 1)), BranchContext(1, 1, ()))
    lny = x[42:60]  # after 12 lags, 12 masks and 18 calendar months: lag months Jan 2025..Dec 2025, then forecast months Jan..Jun 2026
    assert lny[0] == 1.0 and lny[13] == 1.0 and lny.sum() == 2  # Lunar New Year: Jan 29 2025, Feb 17 2026


def test_forecasts_scale_with_the_branch_so_its_size_is_not_in_the_weights():
    rng = np.random.default_rng(1)
    model = build_model(0)
    x, y, _ = make_windows(rng.poisson(40 * SHAPE[:48]).astype(float), START, BranchContext(0, 0))
    train_plain(model, x, y, epochs=20, batch_size=8, learning_rate=0.05, seed=1)
    small = rng.poisson(5 * SHAPE[:36]).astype(float)
    big = forecast(model, small * 20, START + 36, BranchContext(0, 0))
    assert big == pytest.approx(20 * forecast(model, small, START + 36, BranchContext(0, 0)), rel=1e-4)


def test_the_alliance_teaches_a_young_branch_the_shape_of_its_countrys_year():
    rng = np.random.default_rng(2)
    x, y = [], []
    for size in (10, 30, 60, 90, 120):  # established branches of one country share the year's shape
        xs, ys, _ = make_windows(rng.poisson(size * SHAPE[:60]).astype(float), START, BranchContext(0, 0))
        x.append(xs)
        y.append(ys)
    model = build_model(0)
    train_plain(model, np.concatenate(x), np.concatenate(y), epochs=30, batch_size=16, learning_rate=0.05, seed=3)
    young = 50 * SHAPE[54:60]  # six months of history (July to December), then January to June
    truth = 50 * SHAPE[60:66]
    joint = forecast(model, young, START + 60, BranchContext(0, 0))
    alone = np.full(6, young.mean())  # what the branch's own months say
    assert np.abs(joint - truth).mean() < 0.5 * np.abs(alone - truth).mean()


def test_stores_that_ramped_up_before_teach_a_new_store_how_far_it_still_has_to_grow():
    ramp = 1 - 0.65 * np.exp(-np.arange(40) / 5.0)
    rng = np.random.default_rng(2)
    xs, ys = [], []
    for k in range(8):  # stores that opened inside their data, each with its own opening month
        opened = START + 3 * k
        x, y, _ = make_windows(rng.poisson(40 * ramp[:36]).astype(float), opened, BranchContext(0, 0, opened=opened))
        xs.append(x)
        ys.append(y)
    model = build_model(0)
    train_plain(model, np.concatenate(xs), np.concatenate(ys), epochs=30, batch_size=8, learning_rate=0.05, seed=1)
    opened = START + 40
    history = 40 * ramp[:3]  # three months of a new store
    joint = forecast(model, history, opened + 3, BranchContext(0, 0, opened=opened))
    truth = 40 * ramp[3:9]
    alone = np.full(6, history.mean())
    assert np.abs(joint - truth).mean() < 0.5 * np.abs(alone - truth).mean()
    # without its opening month the model cannot tell a new store from an old one
    blind = forecast(model, history, opened + 3, BranchContext(0, 0))
    assert np.abs(blind - truth).mean() > np.abs(joint - truth).mean()


def test_a_branch_reads_its_own_regions_launch_dates_and_the_campaign_calendar():
    job = JobSpec(job_id="j", launches=[{"line": "A", "region": "Kanto", "month": "2024-04"},
                                        {"line": "A", "region": "Kansai", "month": "2024-09"},
                                        {"line": "B", "month": "2025-01"}],
                  campaigns=["2025-06"], shortages=["2025-02"])
    kanto, kansai = (branch_context(job, country="JP", region=r, opened="2025-03") for r in ("Kanto", "Kansai"))
    assert kanto.launches == (month_number(date(2024, 4, 1)), month_number(date(2025, 1, 1)))
    assert kansai.launches == (month_number(date(2024, 9, 1)), month_number(date(2025, 1, 1)))
    assert kanto.opened == month_number(date(2025, 3, 1)) and kanto.campaigns == {month_number(date(2025, 6, 1))}
    x, _ = window_features(np.ones(12), month_number(date(2025, 7, 1)), kanto)
    assert not np.array_equal(x, window_features(np.ones(12), month_number(date(2025, 7, 1)), kansai)[0])


def test_the_rare_effect_gain_is_a_reparametrisation_the_dp_job_alone_takes():
    """Same functions with or without the gain (parameters divided by it), so only the step
    sizes of the rare effects change; a DP job's model has it, a non-private one does not."""
    import torch

    from common.model import RARE_GAIN, Forecaster, job_model
    from common.wire import DPSettings, JobSpec

    plain, gained = Forecaster(), Forecaster(rare_gain=RARE_GAIN)
    torch.manual_seed(0)
    with torch.no_grad():
        for name, p in plain.named_parameters():
            p.copy_(0.1 * torch.randn_like(p))
            q = dict(gained.named_parameters())[name]
            q.copy_(p / RARE_GAIN if name in ("launch", "ramp", "calendar") else p)
    from common.model import BranchContext, window_features

    history = np.linspace(10, 30, 14)
    context = BranchContext(launches=(24_300,), opened=24_290, campaigns=frozenset({24_301}), shortages=frozenset({24_302}))
    features, _ = window_features(history, 24_300, context)
    batch = torch.from_numpy(features)[None, :]
    assert torch.allclose(plain(batch), gained(batch), rtol=1e-5)
    with torch.no_grad():  # and the gain is really applied: equal parameters give other forecasts
        for name, p in plain.named_parameters():
            dict(gained.named_parameters())[name].copy_(p)
    assert not torch.allclose(plain(batch), gained(batch), rtol=1e-3)
    assert job_model(JobSpec(job_id="j")).rare_gain == RARE_GAIN
    assert job_model(JobSpec(job_id="j", dp=DPSettings(enabled=False))).rare_gain == 1.0
