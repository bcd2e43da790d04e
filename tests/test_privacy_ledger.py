"""The data owner's privacy budget: a job that does not fit is refused before any training,
a job that reaches the limit mid-run stops and says why, the books survive a restart, and
bad privacy settings are refused in one line."""

from __future__ import annotations

import json
import re
import shutil

import pytest
from typer.testing import CliRunner

from common.refusals import REASONS
from common.wire import DPSettings, HESettings, JobSpec, TrainInstruction
from lineage import EventKind
from node_agent.agent import NodeAgent
from node_agent.config import NodeConfig, load_node_config, write_node_config
from node_agent.ledger import Budget, JobSpend, round_allowed
from sovereign.cli import app
from tests.conftest import EXAMPLES


@pytest.fixture
def node(tmp_path, small_alliance) -> NodeConfig:
    db = tmp_path / "B002.db"
    shutil.copy(small_alliance / "B002.db", db)
    # require_he false: these jobs run in the clear to stay fast; the budget is what is tested.
    config = NodeConfig(branch_id="B002", db_url=f"sqlite:///{db}", node_dir=tmp_path / "node",
                        budgets={"sales": Budget(epsilon=10, delta=1e-4)}, require_he=False)
    write_node_config(config)
    shutil.copy(EXAMPLES / "domestic_dealer.yaml", config.policy_path)
    return config


def dp_job(job_id: str, **dp) -> JobSpec:
    return JobSpec(job_id=job_id, rounds=3, local_epochs=1, he=HESettings(enabled=False),
                   dp=DPSettings(**{"target_epsilon": 6.0, **dp}))


def run(config: NodeConfig, job: JobSpec, rnd: int):
    return NodeAgent(load_node_config(config.node_dir)).train(TrainInstruction(job=job, round=rnd))  # a fresh process each time


def spent(config: NodeConfig, job_id: str) -> JobSpend | None:
    """The job's spend in the node's own ledger (replies carry no epsilon: it would hint at the
    branch's size)."""
    return NodeAgent(load_node_config(config.node_dir)).ledger.get("sales", job_id)


def refusal_detail(config: NodeConfig, reply, code: str) -> str:
    """A refusal leaves as its code and fixed phrase only; the detail is in the node's lineage."""
    assert (reply.status, reply.code, reply.reason) == ("refused", code, REASONS[code]), (reply.code, reply.reason)
    assert reply.update is None
    event = NodeAgent(load_node_config(config.node_dir)).lineage.events(kind=EventKind.REFUSAL)[-1]
    assert event.details["code"] == code
    return event.details["reason"]


def set_budget(config: NodeConfig, epsilon: float) -> None:
    data = json.loads((config.node_dir / "node.json").read_text())
    data["budgets"]["sales"]["epsilon"] = epsilon
    (config.node_dir / "node.json").write_text(json.dumps(data))


def test_a_job_the_budget_cannot_cover_is_refused_before_training(node):
    first = [run(node, dp_job("first"), r) for r in (1, 2, 3)]
    assert all(r.status == "ok" for r in first), [r.code for r in first]
    first_spend = spent(node, "first")
    assert 5.5 < first_spend.epsilon <= 6.0 and len(first_spend.history) == 3
    assert first_spend.planned_epsilon == pytest.approx(first_spend.epsilon, abs=0.01)
    refused = run(node, dp_job("second"), 1)
    detail = refusal_detail(node, refused, "privacy-budget")
    assert re.search(r"job second plans ε = (6|5\.99)\b", detail) and "has 4" in detail and "of 10 left" in detail
    agent = NodeAgent(load_node_config(node.node_dir))
    assert not agent.lineage.events(job_id="second", kind=EventKind.TRAINING)
    assert agent.ledger.get("sales", "second") is None  # nothing reserved for a refused job
    spends = [e.details for e in agent.lineage.events(job_id="first", kind=EventKind.BUDGET_CHANGE)]
    assert [s["change"] for s in spends] == ["reserved", "spent", "spent", "spent"]
    assert spends[-1]["job_status"] == "complete" and spends[-1]["remaining_epsilon"] == pytest.approx(10 - first_spend.epsilon)
    # A smaller job still fits what is left, and the books add up across both.
    small = [run(node, dp_job("small", target_epsilon=3.0), r) for r in (1, 2, 3)]
    assert all(r.status == "ok" for r in small)
    small_spend = spent(node, "small")
    assert 2.5 < small_spend.epsilon <= 3.0 and small_spend.status == "complete"
    books = json.loads(CliRunner().invoke(app, ["node", "budget", "--node-dir", str(node.node_dir), "--json"]).output)
    sales = books["datasets"]["sales"]
    assert {j["job_id"]: j["status"] for j in sales["jobs"]} == {"first": "complete", "small": "complete"}
    assert sales["committed_epsilon"] == pytest.approx(first_spend.epsilon + small_spend.epsilon)
    assert sales["remaining_epsilon"] == pytest.approx(10 - sales["committed_epsilon"])


def test_a_job_that_reaches_the_limit_mid_run_stops_and_says_why(node):
    assert run(node, dp_job("long"), 1).status == "ok"
    set_budget(node, 3.0)  # the data owner lowers the budget while the job runs
    stopped = run(node, dp_job("long"), 2)
    detail = refusal_detail(node, stopped, "privacy-budget")
    assert detail.startswith("privacy budget reached") and "training stops here" in detail
    again = run(node, dp_job("long"), 3)
    assert "job long is stopped at this node" in refusal_detail(node, again, "privacy-budget")
    agent = NodeAgent(load_node_config(node.node_dir))
    assert agent.ledger.get("sales", "long").status == "stopped"
    changes = [e.details["change"] for e in agent.lineage.events(kind=EventKind.BUDGET_CHANGE)]
    assert changes == ["budget set", "reserved", "spent", "budget set", "stopped"]
    assert len(agent.lineage.events(job_id="long", kind=EventKind.TRAINING)) == 1  # only round 1 trained


def test_a_job_cannot_be_stretched_past_its_plan(node):
    for rnd in (1, 2, 3):
        assert run(node, dp_job("done"), rnd).status == "ok"
    extra = run(node, dp_job("done"), 4)
    assert "round 4 is past the 3 rounds admitted" in refusal_detail(node, extra, "replay")
    agent = NodeAgent(load_node_config(node.node_dir))
    assert agent.ledger.get("sales", "done").status == "complete"
    # A coordinator that replays rounds of a running job gets the update it was sent (the
    # same bytes) or, for round 1 again, a refusal; either way it spends nothing more.
    replies = [run(node, dp_job("replayed", target_epsilon=3.0), rnd) for rnd in (1, 2, 2, 1)]
    assert [r.status for r in replies] == ["ok", "ok", "ok", "refused"]
    assert replies[2].update == replies[1].update
    assert "round 1 again" in refusal_detail(node, replies[-1], "replay")
    spend = agent.ledger.get("sales", "replayed")
    trained = agent.lineage.events(job_id="replayed", kind=EventKind.TRAINING)
    assert len(trained) == 2 and len(spend.history) == 2
    assert spend.epsilon == trained[-1].details["epsilon"] > trained[0].details["epsilon"]  # the replays spent nothing
    # Behind the round book, the plan itself is a hard limit: a round past it is not allowed.
    budget = load_node_config(node.node_dir).budgets["sales"]
    why = round_allowed(spend, spend.planned_epsilon * 1.01, budget, agent.ledger.spends("sales"))
    assert why.startswith("privacy plan reached") and "past the ε = 3" in why
    assert round_allowed(spend, spend.planned_epsilon, budget, agent.ledger.spends("sales")) is None


def test_the_books_survive_a_restart(node):
    run(node, dp_job("kept"), 1)
    before = NodeAgent(load_node_config(node.node_dir)).ledger.get("sales", "kept")
    shutil.copytree(node.node_dir, node.node_dir.with_name("moved"))  # the node's files, on a new process and path
    moved = load_node_config(node.node_dir.with_name("moved"))
    after = NodeAgent(moved).ledger.get("sales", "kept")
    assert after.epsilon == before.epsilon > 0 and after.history == before.history
    assert run(moved, dp_job("kept"), 2).status == "ok"
    continued = NodeAgent(moved).ledger.get("sales", "kept")  # and composition continues from it
    assert continued.epsilon > before.epsilon and continued.history[:1] == before.history and len(continued.history) == 2


@pytest.mark.parametrize("change, job, code, fragment", [
    (lambda c: c.model_copy(update={"budgets": {}}), dp_job("j"), "privacy-budget", "no privacy budget for dataset 'sales'"),
    (lambda c: c.model_copy(update={"limits": c.limits.model_copy(update={"max_delta": 0.9})}),
     dp_job("j", delta=0.5), "privacy-plan", "δ = 0.5 is not below 1/records"),
    (None, dp_job("j", noise_multiplier=0.3), "privacy-plan", "noise σ = 0.3 cannot meet ε = 6 in the planned"),
    (lambda c: c.model_copy(update={"accept_non_private_jobs": False}),
     JobSpec(job_id="j", rounds=1, dp=DPSettings(enabled=False), he=HESettings(enabled=False)), "dp-required",
     "accept_non_private_jobs is false"),
])
def test_bad_privacy_settings_are_refused_before_training(node, change, job, code, fragment):
    if change is not None:
        write_node_config(change(node))
    reply = run(node, job, 1)
    assert fragment in refusal_detail(node, reply, code)
    agent = NodeAgent(load_node_config(node.node_dir))
    assert not agent.lineage.events(kind=EventKind.TRAINING)
    assert agent.ledger.get("sales", "j") is None  # nothing reserved


def test_a_delta_above_the_nodes_limit_is_refused_before_any_data_is_read(node):
    """node.json limits.max_delta is checked at admission: the refusal cannot depend on (or
    hint at) the branch's number of records, since no record has been read."""
    reply = run(node, dp_job("j", delta=2e-4), 1)
    detail = refusal_detail(node, reply, "job-limits")
    assert "δ = 0.0002" in detail and "limits.max_delta is 0.0001" in detail
    agent = NodeAgent(load_node_config(node.node_dir))
    assert not agent.lineage.events(kind=EventKind.DATA_READ) and agent.ledger.get("sales", "j") is None
    assert agent.book.get("j") is None  # not admitted either
    # At the limit the job is admitted and trains.
    assert run(node, dp_job("at-limit", delta=1e-4), 1).status == "ok"
    assert spent(node, "at-limit").delta == 1e-4


def test_a_negative_budget_in_node_json_is_a_one_line_error(node):
    data = json.loads((node.node_dir / "node.json").read_text())
    data["budgets"]["sales"]["epsilon"] = -1
    (node.node_dir / "node.json").write_text(json.dumps(data))
    result = CliRunner().invoke(app, ["node", "budget", "--node-dir", str(node.node_dir)])
    assert result.exit_code == 2 and "field 'budgets.sales.epsilon': Input should be greater than 0" in result.output


def test_the_prv_accountant_can_be_asked_for(node):
    reply = run(node, dp_job("prv-job", accountant="prv"), 1)
    assert reply.status == "ok", reply.code
    spend = spent(node, "prv-job")
    assert spend.accountant == "prv" and 0 < spend.epsilon < spend.planned_epsilon <= 6.0 * 1.0001


def test_a_standing_rule_caps_the_epsilon_jobs_plan_in_any_30_days_before_reading_anything(node):
    limits = node.limits.model_copy(update={"max_epsilon_per_month": 4.0})
    write_node_config(node.model_copy(update={"budgets": {"sales": Budget(epsilon=50, delta=1e-3)}, "limits": limits}))
    assert run(node, dp_job("first", target_epsilon=2.5), 1).status == "ok"
    second = run(node, dp_job("second", target_epsilon=2.0), 1)
    assert "max_epsilon_per_month allows" in refusal_detail(node, second, "privacy-budget")
    agent = NodeAgent(load_node_config(node.node_dir))
    assert not agent.lineage.events(job_id="second", kind=EventKind.DATA_READ)  # refused before the read
    assert agent.book.get("second") is None  # and not admitted: it takes no slot
    assert run(node, dp_job("small", target_epsilon=1.0), 1).status == "ok"  # what fits the month still runs
    assert run(node, dp_job("first", target_epsilon=2.5), 2).status == "ok"  # an admitted job goes on
