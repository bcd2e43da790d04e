"""Customer-level DP: the accounting (against independent accountants), the contribution bound,
the yearly ledger, the release every output is computed from, and an empirical audit."""

import itertools
import math
import shutil
from datetime import date

import numpy as np
import pytest
from sqlalchemy import create_engine, text

from common.customer_privacy import (
    ContributionBound,
    composed_epsilon,
    every_year_epsilon,
    release_noise_multiplier,
    yearly_refusal,
)
from common.he import CkksParams, create_secret_context, secret_context_bytes
from common.wire import CustomerDPRequest, JobSpec, TrainInstruction
from lineage import EventKind
from node_agent.agent import NodeAgent
from node_agent.bounding import BoundedSale, bound_contributions
from node_agent.config import CustomerPrivacy, NodeConfig, load_node_config, write_node_config
from node_agent.ledger import Budget
from node_agent.release import discrete_gaussian, opendp_rho
from sovereign.experiment.customer_audit import audit_release, epsilon_lower_bound
from tests.conftest import EXAMPLES

SCHEDULES = [  # per-job ε requests composed on one year, at a δ
    ([1.0], 1e-6), ([0.5], 1e-6), ([4.0], 1e-6), ([0.5, 0.5], 1e-6), ([1.0, 0.5, 0.25], 1e-6),
    ([0.3] * 6, 1e-6), ([2.0, 2.0], 1e-5), ([1.0] * 3, 1e-7),
]


# ------------------------------------------------------------------ accounting

@pytest.mark.parametrize("requests, delta", SCHEDULES)
def test_customer_epsilon_matches_googles_accountant_within_one_percent(requests, delta):
    import dp_accounting
    from dp_accounting.rdp import RdpAccountant

    zs = [release_noise_multiplier(e, delta) for e in requests]
    ours = composed_epsilon(zs, delta)
    accountant = RdpAccountant()
    accountant.compose(dp_accounting.ComposedDpEvent([dp_accounting.GaussianDpEvent(z) for z in zs]))
    theirs = accountant.get_epsilon(delta)
    assert ours == pytest.approx(theirs, rel=0.01)
    # The exact privacy-loss distribution of the same Gaussians is tighter: the RDP claim never understates.
    pld = dp_accounting.pld.PLDAccountant()
    pld.compose(dp_accounting.ComposedDpEvent([dp_accounting.GaussianDpEvent(z) for z in zs]))
    assert pld.get_epsilon(delta) <= ours * 1.001
    if len(requests) == 1:
        assert ours <= requests[0] * (1 + 1e-9)  # the planned noise never spends more than asked


@pytest.mark.parametrize("epsilon", [0.5, 1.0, 2.0, 4.0])
def test_opendp_charges_the_sampler_exactly_what_the_ledger_assumes(epsilon):
    """OpenDP's own privacy map of its discrete Gaussian: ρ = Δ²/2σ², i.e. RDP α/2z² at every order."""
    bound = ContributionBound()
    z = release_noise_multiplier(epsilon, 1e-6)
    assert opendp_rho(z * bound.l2_sensitivity, bound.l2_sensitivity) == pytest.approx(1 / (2 * z * z), rel=1e-9)


def test_composition_is_by_the_accountant_not_by_summing():
    z = release_noise_multiplier(0.6, 1e-6)
    assert composed_epsilon([z, z], 1e-6) < 1.0 < 1.2  # two jobs at 0.6 fit a budget of 1 that summing would refuse
    assert yearly_refusal([2025], z, {2025: [z]}, budget=1.0, delta=1e-6) is None
    why = yearly_refusal([2024, 2025], z, {2025: [z, z]}, budget=1.0, delta=1e-6)
    assert why and "year 2025" in why and "epsilon_per_year is 1" in why


def test_a_customer_of_every_year_composes_over_the_years():
    z = release_noise_multiplier(1.0, 1e-6)
    assert every_year_epsilon(z, 1, 1e-6) == pytest.approx(composed_epsilon([z], 1e-6))
    assert composed_epsilon([z], 1e-6) < every_year_epsilon(z, 7, 1e-6) < 7 * 1.0


@pytest.mark.parametrize("per_year, per_month", [(1, 1), (2, 1), (3, 1), (3, 2), (4, 4), (5, 2)])
def test_l2_sensitivity_is_the_worst_case_of_any_customer_year(per_year, per_month):
    bound = ContributionBound(max_sales_per_year=per_year, max_sales_per_month=per_month)
    worst = max(math.sqrt(sum(c * c for c in counts))
                for counts in itertools.product(range(per_month + 1), repeat=min(per_year, 12))
                if sum(counts) <= per_year)
    assert bound.l2_sensitivity == pytest.approx(worst)


def test_the_sampler_is_an_integer_gaussian_of_the_planned_scale():
    draws = discrete_gaussian(np.zeros(20_000, dtype=np.int64), 6.0)
    assert draws.dtype == np.int64 and abs(draws.mean()) < 0.15 and draws.std() == pytest.approx(6.0, rel=0.03)
    assert len(set(discrete_gaussian(np.array([5]), 6.0)[0] for _ in range(30))) > 5  # fresh noise every call


# ------------------------------------------------------------------ contribution bounding

def _sales(customer: str, dates: list[date]) -> list[BoundedSale]:
    return [BoundedSale(customer, d, (0, i)) for i, d in enumerate(dates)]


def test_bounding_drops_a_fleet_buyers_excess_and_nobody_elses():
    fleet = _sales("fleet", [date(2025, m, d) for m in range(1, 13) for d in (3, 10, 17)])  # 36 cars in 2025
    private = _sales("a", [date(2025, 2, 1)]) + _sales("b", [date(2024, 5, 1), date(2025, 5, 2)])
    two = ContributionBound(max_sales_per_year=2)
    raw, bounded, report = bound_contributions(fleet + private, two, date(2024, 1, 1), date(2025, 12, 1))
    assert raw.sum() == 39 and bounded.sum() == 2 + 1 + 2
    assert (report.sales_dropped, report.customers_capped, report.most_sales_of_one_customer) == (34, 1, 36)
    assert bounded[12] == 1 and bounded[13] == 2  # the fleet's January, its February beside a's; then its cap


def test_removing_one_customer_moves_the_counts_by_at_most_the_sensitivity():
    rng = np.random.default_rng(3)
    others = [BoundedSale(f"c{rng.integers(0, 60)}", date(2024 + int(rng.integers(0, 2)), int(rng.integers(1, 13)), 1),
                          (0, i)) for i in range(300)]
    bound = ContributionBound()
    for heavy in (1, 5, 40):
        planted = _sales("planted", [date(2025, 1 + i % 12, 1 + i % 27) for i in range(heavy)])
        with_ = bound_contributions(others + planted, bound, date(2024, 1, 1), date(2025, 12, 1))[1]
        without = bound_contributions(others, bound, date(2024, 1, 1), date(2025, 12, 1))[1]
        assert np.linalg.norm(with_ - without) <= bound.l2_sensitivity + 1e-12


# ------------------------------------------------------------------ on the node

WINDOW = CustomerDPRequest(epsilon=1.0, first_month="2020-01", last_month="2026-10")


@pytest.fixture
def customer_node(tmp_path, small_alliance):
    db = tmp_path / "B001.db"
    shutil.copy(small_alliance / "B001.db", db)
    engine = create_engine(f"sqlite:///{db}")
    with engine.begin() as conn:  # a rental company buys 30 cars in 2025, a few a month
        top = conn.execute(text("SELECT max(sale_id) FROM sales")).scalar()
        for i in range(30):
            conn.execute(text("INSERT INTO sales (sale_id, sale_date, vin, list_price, sale_price, customer_id) VALUES "
                              "(:id, :day, :vin, 30000, 29000, 'FLEET-RENTALS')"),
                         {"id": top + 1 + i, "day": f"2025-{1 + i % 10:02d}-{1 + i // 10:02d}", "vin": f"FLEETVIN{i:09d}"})
    engine.dispose()
    config = NodeConfig(branch_id="B001", db_url=f"sqlite:///{db}", node_dir=tmp_path / "node",
                        budgets={"sales": Budget(epsilon=50, delta=1e-4)},
                        customer_privacy=CustomerPrivacy(epsilon_per_year=1.5, first_month="2020-01"))
    write_node_config(config)
    shutil.copy(EXAMPLES / "domestic_dealer.yaml", config.policy_path)
    config.he_secret_path.parent.mkdir(parents=True)
    config.he_secret_path.write_bytes(secret_context_bytes(create_secret_context(CkksParams())))
    return config


def _job(job_id: str, customer=WINDOW, **kw) -> JobSpec:
    return JobSpec(job_id=job_id, rounds=2, customer_dp=customer, **kw)


def test_a_node_bounds_counts_releases_once_and_records_it(customer_node):
    agent = NodeAgent(customer_node)
    spec = _job("cust-1")
    assert agent.train(TrainInstruction(job=spec, round=1)).status == "ok"
    bounding = agent.lineage.events(job_id="cust-1", kind=EventKind.CONTRIBUTION_BOUNDING)[0]
    assert bounding.details["sales_dropped"] >= 28 and bounding.row_count == bounding.details["sales_dropped"]
    assert bounding.details["most_sales_of_one_customer_in_a_year"] >= 30
    assert "sales.customer_id" in bounding.fields  # read as the policy's keyed hash, and listed for compliance
    decision = agent.lineage.events(job_id="cust-1", kind=EventKind.POLICY_DECISION)[0]
    assert {d["field"]: d["kind"] for d in decision.details["decisions"]}["sales.customer_id"] == "hash"
    release, = agent.lineage.events(job_id="cust-1", kind=EventKind.CUSTOMER_RELEASE)
    assert release.details["epsilon_per_year"] == 1.0 and release.details["delta"] == 1e-6
    assert release.details["years"] == list(range(2020, 2027)) and release.details["months"] == 82
    kept = agent.customers.release("sales", "cust-1")
    assert release.digest == kept.digest() and kept.sigma == pytest.approx(kept.noise_multiplier * kept.bound.l2_sensitivity)
    # Round 2 (a fresh process) trains on the same release: the job spends its ε once.
    again = NodeAgent(load_node_config(customer_node.node_dir))
    assert again.train(TrainInstruction(job=spec, round=2)).status == "ok"
    assert len(again.lineage.events(job_id="cust-1", kind=EventKind.CUSTOMER_RELEASE)) == 1
    assert again.customers.release("sales", "cust-1").values == kept.values
    assert again.customers.standing("sales", 1e-6)[2025] == pytest.approx(composed_epsilon([kept.noise_multiplier], 1e-6))


def test_the_ledger_refuses_the_job_that_would_cross_the_yearly_budget_before_reading(customer_node):
    agent = NodeAgent(customer_node)  # budget 1.5 per year: two jobs at 1.0 compose to about 1.45, a third does not fit
    for job_id in ("cust-a", "cust-b"):
        assert agent.train(TrainInstruction(job=_job(job_id), round=1)).status == "ok"
    reply = agent.train(TrainInstruction(job=_job("cust-c"), round=1))
    assert (reply.status, reply.code) == ("refused", "privacy-budget")
    refusal = agent.lineage.events(job_id="cust-c", kind=EventKind.REFUSAL)[0]
    assert "customer privacy budget" in refusal.details["reason"] and "year 2020" in refusal.details["reason"]
    assert not agent.lineage.events(job_id="cust-c", kind=EventKind.DATA_READ)  # nothing was read
    # Every year the window touches is charged, and none past its budget.
    spent = agent.customers.standing("sales", 1e-6)
    assert set(spent) == set(range(2020, 2027)) and max(spent.values()) <= 1.5


@pytest.mark.parametrize("change, code", [
    ({"customer_dp": None}, "customer-dp-required"),
    ({"customer_dp": CustomerDPRequest(epsilon=2.0, last_month="2026-10")}, "job-limits"),
    ({"customer_dp": CustomerDPRequest(epsilon=1.0, last_month="2099-12")}, "privacy-plan"),
])
def test_a_node_with_customer_privacy_refuses_what_it_cannot_promise(customer_node, change, code):
    agent = NodeAgent(customer_node)
    reply = agent.train(TrainInstruction(job=_job("cust-x").model_copy(update=change), round=1))
    assert (reply.status, reply.code) == ("refused", code)
    assert not agent.lineage.events(job_id="cust-x", kind=EventKind.DATA_READ)


# ------------------------------------------------------------------ the audit

def test_the_audit_finds_no_more_than_the_claim_and_finds_the_breach_without_the_bound(customer_node):
    """A planted customer with six purchases in one year, released 400 times with and without
    them, through the node's own bounding; then the same customer with the bound removed."""
    agent = NodeAgent(customer_node)
    window = agent._customer_window(_job("audit"))
    sales = [BoundedSale(f"c{i % 500}", date(2020 + i % 7, 1 + i % 12, 1), (0, i)) for i in range(3000)]
    planted = _sales("planted", [date(2024, m, 5) for m in (1, 2, 3, 5, 8, 11)])
    bound = window.bound
    without = bound_contributions(sales, bound, window.first, window.last)[1]
    with_ = bound_contributions(sales + planted, bound, window.first, window.last)[1]
    audit = audit_release(without, with_, epsilon=1.0, delta=1e-6, bound=bound, trials=400)
    assert audit.difference_l2 == pytest.approx(bound.l2_sensitivity)
    assert audit.empirical_epsilon < audit.claimed_epsilon <= 1.0
    # Without the bound, a fleet buyer's 30 cars move the counts far past the calibrated sensitivity,
    # and the same attack refutes the claim.
    fleet = _sales("fleet", [date(2024, 1 + i % 12, 1 + i // 12) for i in range(30)])
    loose = ContributionBound(max_sales_per_year=24, max_sales_per_month=24)
    unbounded = bound_contributions(sales + fleet, loose, window.first, window.last)[1]
    breach = audit_release(bound_contributions(sales, loose, window.first, window.last)[1], unbounded,
                           epsilon=1.0, delta=1e-6, bound=bound, trials=400)
    assert breach.empirical_epsilon > breach.claimed_epsilon


def test_the_lower_bound_is_zero_for_indistinguishable_scores_and_large_for_separated_ones():
    rng = np.random.default_rng(0)
    same = rng.normal(size=1000)
    assert epsilon_lower_bound(same, rng.normal(size=1000), 1e-6) < 0.3
    assert epsilon_lower_bound(same, same + 100, 1e-6) > 3


# ------------------------------------------------------------------ planning

def test_privacy_plan_reads_the_job_and_the_nodes_public_bounds(tmp_path, customer_node):
    import json

    from typer.testing import CliRunner

    from sovereign.cli import app

    runner = CliRunner()
    spec = tmp_path / "job.yaml"
    spec.write_text("job_id: planned\ncustomer_dp: {epsilon: 0.5, first_month: '2021-01', last_month: '2025-12'}\n")
    out = runner.invoke(app, ["privacy", "plan", str(spec), "--node", str(customer_node.node_dir), "--json"])
    assert out.exit_code == 0, out.output
    plan = json.loads(out.output)["nodes"]["B001"]
    z = release_noise_multiplier(0.5, 1e-6)
    assert plan["epsilon"] == pytest.approx(composed_epsilon([z], 1e-6)) and plan["epsilon"] <= 0.5
    assert plan["years"] == 5 and plan["sigma"] == pytest.approx(z * ContributionBound().l2_sensitivity)
    assert plan["jobs_per_year"] >= 3  # budget 1.5 at this node, composed by RDP (summing would say 3)
    assert composed_epsilon([z] * plan["jobs_per_year"], 1e-6) <= 1.5 < composed_epsilon([z] * (plan["jobs_per_year"] + 1), 1e-6)
    text_out = runner.invoke(app, ["privacy", "plan", str(spec)])
    assert text_out.exit_code == 0 and "per year of purchases" in text_out.output
    spec.write_text("job_id: planned\n")
    refused = runner.invoke(app, ["privacy", "plan", str(spec)])
    assert refused.exit_code == 2 and f"{spec}: customer_dp:" in refused.output and "Traceback" not in refused.output
    spec.write_text("job_id: planned\ncustomer_dp: {epsilon: -1}\n")
    bad = runner.invoke(app, ["privacy", "plan", str(spec)])
    assert bad.exit_code == 2 and "customer_dp.epsilon" in bad.output


def test_expected_cost_interpolates_the_measured_points():
    from common.customer_privacy import expected_cost

    measured = {"alliances": {"20": {"mean": {"off": {}, "0.5": {"cost_vs_off": 0.08, "cost_range": [0.06, 0.1]},
                                              "2": {"cost_vs_off": 0.02, "cost_range": [0.0, 0.04]}}}}}
    assert expected_cost(measured, 1.0)["20"]["cost"] == pytest.approx(0.05)
    assert expected_cost(measured, 1.0)["20"]["note"] is None
    assert expected_cost(measured, 8.0)["20"] == {"cost": 0.02, "range": [0.0, 0.04],
                                                  "note": "measured from ε = 0.5 to 2 only (nearest: 2)"}
