"""The data owner's privacy budget: a job that does not fit is refused before any training,
a job that reaches the limit mid-run stops and says why, the books survive a restart, and
bad privacy settings are refused in one line."""

from __future__ import annotations

import json
import shutil

import pytest
from typer.testing import CliRunner

from common.wire import DPSettings, HESettings, JobSpec, TrainInstruction
from lineage import EventKind
from node_agent.agent import NodeAgent
from node_agent.config import NodeConfig, load_node_config, write_node_config
from node_agent.ledger import Budget
from sovereign.cli import app
from tests.conftest import EXAMPLES


@pytest.fixture
def node(tmp_path, small_alliance) -> NodeConfig:
    db = tmp_path / "B002.db"
    shutil.copy(small_alliance / "B002.db", db)
    config = NodeConfig(branch_id="B002", db_url=f"sqlite:///{db}", node_dir=tmp_path / "node",
                        budgets={"sales": Budget(epsilon=10, delta=1e-4)})
    write_node_config(config)
    shutil.copy(EXAMPLES / "domestic_dealer.yaml", config.policy_path)
    return config


def dp_job(job_id: str, **dp) -> JobSpec:
    return JobSpec(job_id=job_id, rounds=3, local_epochs=1, he=HESettings(enabled=False),
                   dp=DPSettings(**{"target_epsilon": 6.0, **dp}))


def run(config: NodeConfig, job: JobSpec, rnd: int):
    return NodeAgent(load_node_config(config.node_dir)).train(TrainInstruction(job=job, round=rnd))  # a fresh process each time


def set_budget(config: NodeConfig, epsilon: float) -> None:
    data = json.loads((config.node_dir / "node.json").read_text())
    data["budgets"]["sales"]["epsilon"] = epsilon
    (config.node_dir / "node.json").write_text(json.dumps(data))


def test_a_job_the_budget_cannot_cover_is_refused_before_training(node):
    first = [run(node, dp_job("first"), r) for r in (1, 2, 3)]
    assert all(r.status == "ok" for r in first) and 5.5 < first[-1].epsilon <= 6.0
    assert first[-1].planned_epsilon == pytest.approx(first[-1].epsilon, abs=0.01)
    refused = run(node, dp_job("second"), 1)
    assert refused.status == "refused" and refused.update is None
    assert "job second plans ε = 6" in refused.reason and "has 4" in refused.reason and "of 10 left" in refused.reason
    agent = NodeAgent(load_node_config(node.node_dir))
    assert not agent.lineage.events(job_id="second", kind=EventKind.TRAINING)
    assert agent.ledger.get("sales", "second") is None  # nothing reserved for a refused job
    spends = [e.details for e in agent.lineage.events(job_id="first", kind=EventKind.BUDGET_CHANGE)]
    assert [s["change"] for s in spends] == ["reserved", "spent", "spent", "spent"]
    assert spends[-1]["job_status"] == "complete" and spends[-1]["remaining_epsilon"] == pytest.approx(10 - first[-1].epsilon, abs=0.01)
    # A smaller job still fits what is left, and the books add up across both.
    small = [run(node, dp_job("small", target_epsilon=3.0), r) for r in (1, 2, 3)]
    assert all(r.status == "ok" for r in small)
    books = json.loads(CliRunner().invoke(app, ["node", "budget", "--node-dir", str(node.node_dir), "--json"]).output)
    sales = books["datasets"]["sales"]
    assert {j["job_id"]: j["status"] for j in sales["jobs"]} == {"first": "complete", "small": "complete"}
    assert sales["committed_epsilon"] == pytest.approx(first[-1].epsilon + small[-1].epsilon, abs=0.02)  # replies round to 0.01
    assert sales["remaining_epsilon"] == pytest.approx(10 - sales["committed_epsilon"])


def test_a_job_that_reaches_the_limit_mid_run_stops_and_says_why(node):
    assert run(node, dp_job("long"), 1).status == "ok"
    set_budget(node, 3.0)  # the data owner lowers the budget while the job runs
    stopped = run(node, dp_job("long"), 2)
    assert stopped.status == "refused" and stopped.reason.startswith("privacy budget reached")
    assert "training stops here" in stopped.reason
    again = run(node, dp_job("long"), 3)
    assert again.status == "refused" and "job long is stopped at this node" in again.reason
    agent = NodeAgent(load_node_config(node.node_dir))
    assert agent.ledger.get("sales", "long").status == "stopped"
    changes = [e.details["change"] for e in agent.lineage.events(kind=EventKind.BUDGET_CHANGE)]
    assert changes == ["budget set", "reserved", "spent", "budget set", "stopped"]
    assert len(agent.lineage.events(job_id="long", kind=EventKind.TRAINING)) == 1  # only round 1 trained


def test_a_job_cannot_be_stretched_past_its_plan(node):
    for rnd in (1, 2, 3):
        assert run(node, dp_job("done"), rnd).status == "ok"
    extra = run(node, dp_job("done"), 4)
    assert extra.status == "refused" and "job done is complete at this node" in extra.reason
    # A coordinator that replays rounds of a running job gets no more than the plan either.
    replies = [run(node, dp_job("replayed", target_epsilon=3.0), rnd) for rnd in (1, 2, 2, 2)]
    assert [r.status for r in replies] == ["ok", "ok", "ok", "refused"]
    assert replies[-1].reason.startswith("privacy plan reached") and "past the ε = 3" in replies[-1].reason


def test_the_books_survive_a_restart(node):
    run(node, dp_job("kept"), 1)
    before = NodeAgent(load_node_config(node.node_dir)).ledger.get("sales", "kept")
    shutil.copytree(node.node_dir, node.node_dir.with_name("moved"))  # the node's files, on a new process and path
    moved = load_node_config(node.node_dir.with_name("moved"))
    after = NodeAgent(moved).ledger.get("sales", "kept")
    assert after.epsilon == before.epsilon > 0 and after.history == before.history
    assert run(moved, dp_job("kept"), 2).epsilon > before.epsilon  # and composition continues from it


@pytest.mark.parametrize("change, job, fragment", [
    (lambda c: c.model_copy(update={"budgets": {}}), dp_job("j"), "no privacy budget for dataset 'sales'"),
    (None, dp_job("j", delta=0.5), "δ = 0.5 is not below 1/records"),
    (None, dp_job("j", noise_multiplier=0.3), "noise σ = 0.3 cannot meet ε = 6 in the planned"),
    (lambda c: c.model_copy(update={"accept_non_private_jobs": False}),
     JobSpec(job_id="j", rounds=1, dp=DPSettings(enabled=False), he=HESettings(enabled=False)), "only differentially private jobs"),
])
def test_bad_privacy_settings_are_refused_before_training(node, change, job, fragment):
    if change is not None:
        write_node_config(change(node))
    reply = run(node, job, 1)
    assert reply.status == "refused" and fragment in reply.reason, reply.reason
    agent = NodeAgent(load_node_config(node.node_dir))
    assert not agent.lineage.events(kind=EventKind.TRAINING)
    assert agent.lineage.events(kind=EventKind.REFUSAL)[-1].details["reason"] == reply.reason


def test_a_negative_budget_in_node_json_is_a_one_line_error(node):
    data = json.loads((node.node_dir / "node.json").read_text())
    data["budgets"]["sales"]["epsilon"] = -1
    (node.node_dir / "node.json").write_text(json.dumps(data))
    result = CliRunner().invoke(app, ["node", "budget", "--node-dir", str(node.node_dir)])
    assert result.exit_code == 2 and "field 'budgets.sales.epsilon': Input should be greater than 0" in result.output


def test_the_prv_accountant_can_be_asked_for(node):
    reply = run(node, dp_job("prv-job", accountant="prv"), 1)
    assert reply.status == "ok" and 0 < reply.epsilon <= 6.0
    spend = NodeAgent(load_node_config(node.node_dir)).ledger.get("sales", "prv-job")
    assert spend.accountant == "prv" and spend.planned_epsilon <= 6.0 * 1.0001
