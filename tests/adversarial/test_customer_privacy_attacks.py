"""A coordinator against customer-level privacy: averaging the noise away over many jobs, and
reading the raw sales through anything but the node's one release per job."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from sqlalchemy import create_engine, text

from common.customer_privacy import composed_epsilon
from common.he import CkksParams, create_secret_context, secret_context_bytes
from common.wire import CustomerDPRequest, DPSettings, HESettings, JobSpec, TrainInstruction
from lineage import EventKind
from node_agent.agent import NodeAgent
from node_agent.config import CustomerPrivacy, NodeConfig, write_node_config
from node_agent.ledger import Budget
from tests.conftest import EXAMPLES

WINDOW = CustomerDPRequest(epsilon=0.4, first_month="2020-01", last_month="2026-10")


def _node(tmp_path, small_alliance, name: str, *, extra_sales: int = 0, **settings) -> NodeConfig:
    db = tmp_path / f"{name}.db"
    shutil.copy(small_alliance / "B001.db", db)
    engine = create_engine(f"sqlite:///{db}")
    with engine.begin() as conn:  # a row the data contract quarantines; then, if asked, one customer's many 2024 cars
        top = conn.execute(text("SELECT max(sale_id) FROM sales")).scalar()
        conn.execute(text("INSERT INTO sales (sale_id, sale_date, vin, list_price, sale_price, customer_id) VALUES "
                          "(:id, '2023-03-03', 'NEGPRICEVIN000001', -5, -5, 'SOMEONE')"), {"id": top + 1})
        for i in range(extra_sales):
            conn.execute(text("INSERT INTO sales (sale_id, sale_date, vin, list_price, sale_price, customer_id) VALUES "
                              "(:id, :day, :vin, 30000, 29000, 'PLANTED')"),
                         {"id": top + 2 + i, "day": f"2024-{1 + i % 12:02d}-{1 + i // 12:02d}", "vin": f"PLANTVIN{i:09d}"})
    engine.dispose()
    config = NodeConfig(branch_id="B001", db_url=f"sqlite:///{db}", node_dir=tmp_path / name,
                        budgets={"sales": Budget(epsilon=100, delta=1e-4)}, accept_non_private_jobs=True, require_he=False,
                        customer_privacy=CustomerPrivacy(first_month="2020-01", **settings),
                        limits={"max_new_jobs_per_day": 50})
    write_node_config(config)
    shutil.copy(EXAMPLES / "domestic_dealer.yaml", config.policy_path)
    config.he_secret_path.parent.mkdir(parents=True)
    config.he_secret_path.write_bytes(secret_context_bytes(create_secret_context(CkksParams())))
    return config


def test_many_small_jobs_cannot_average_the_noise_away(tmp_path, small_alliance):
    """Head office splits one study into throw-away jobs at ε 0.4 each, hoping to average their
    releases: the node admits only as many as compose within the yearly budget, by the accountant."""
    agent = NodeAgent(_node(tmp_path, small_alliance, "n", epsilon_per_year=1.0))
    answers = [agent.train(TrainInstruction(job=JobSpec(job_id=f"study-{i}", rounds=1, customer_dp=WINDOW), round=1))
               for i in range(8)]
    taken = [a for a in answers if a.status == "ok"]
    assert 2 <= len(taken) < 8  # summing would stop at 2; RDP composition fits a few more, and then no more
    assert all(a.code == "privacy-budget" for a in answers[len(taken):])
    releases = agent.lineage.events(kind=EventKind.CUSTOMER_RELEASE)
    assert len(releases) == len(taken)
    zs = [r.details["noise_multiplier"] for r in releases]
    assert composed_epsilon(zs, 1e-6) <= 1.0 + 1e-9  # every year's total stays within the promise
    assert max(agent.customers.standing("sales", 1e-6).values()) <= 1.0 + 1e-9
    refused = {e.job_id for e in agent.lineage.events(kind=EventKind.REFUSAL)}
    assert not any(e.job_id in refused for e in agent.lineage.events(kind=EventKind.DATA_READ))  # refused before any read


def test_what_leaves_depends_on_the_sales_only_through_the_release(tmp_path, small_alliance):
    """Two nodes whose databases differ by a customer with 40 purchases, holding the same
    release: every reply they send is the same, although their own (raw) figures differ."""
    job = JobSpec(job_id="through-release", rounds=1, dp=DPSettings(enabled=False), he=HESettings(enabled=False),
                  customer_dp=WINDOW)
    plain, planted = (NodeAgent(_node(tmp_path, small_alliance, name, extra_sales=n)) for name, n in (("a", 0), ("b", 40)))
    first = plain.train(TrainInstruction(job=job, round=1))
    assert first.status == "ok" and first.quarantined == {}  # counts read off raw rows stay in lineage
    assert plain.lineage.events(job_id=job.job_id, kind=EventKind.QUARANTINE)
    # The planted node is made to hold the very same release (as if its noise had come out so).
    z, years = plain.customers.job_charge("sales", job.job_id)
    planted.customers.reserve("sales", job.job_id, years, z, budget=1.0, delta=1e-6)
    planted.customers.keep("sales", plain.customers.release("sales", job.job_id))
    assert planted.train(TrainInstruction(job=job, round=1)).status == "ok"
    replies = [agent.evaluate(TrainInstruction(job=job, round=1)) for agent in (plain, planted)]
    assert all(r.status == "ok" for r in replies)
    vectors = [r.metrics.plain_values() for r in replies]
    assert np.array_equal(vectors[0], vectors[1])
    own = [a.lineage.events(job_id=job.job_id, kind=EventKind.EVALUATION)[-1].details["scores"] for a in (plain, planted)]
    assert own[0] != own[1]  # the branches' own figures (which stay on the nodes) do see the difference


@pytest.mark.parametrize("window", [
    CustomerDPRequest(epsilon=0.4, first_month="2026-09", last_month="2026-10"),  # two months: nothing to hold out
])
def test_a_window_too_short_to_forecast_is_refused_before_any_read(tmp_path, small_alliance, window):
    agent = NodeAgent(_node(tmp_path, small_alliance, "n"))
    reply = agent.train(TrainInstruction(job=JobSpec(job_id="narrow", rounds=1, customer_dp=window), round=1))
    assert (reply.status, reply.code) == ("refused", "too-little-history")
    assert not agent.lineage.events(job_id="narrow", kind=EventKind.DATA_READ)
    assert not agent.customers.charges("sales")  # and nothing was charged
