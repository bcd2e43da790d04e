"""The node agent's service, without Flower: what it sends, what it records, when it refuses."""

import shutil

import numpy as np
import pytest
from flwr.app import ConfigRecord, RecordDict
from sqlalchemy import create_engine, text

from common.he import CkksParams, create_secret_context, secret_context_bytes
from common.wire import (
    DPSettings,
    HESettings,
    JobSpec,
    TrainInstruction,
    TrainReply,
    WireError,
    from_record,
    to_record,
)
from lineage import EventKind
from node_agent.agent import NodeAgent
from node_agent.config import NodeConfig, NodeConfigError, load_node_config, write_node_config
from node_agent.ledger import Budget
from tests.conftest import EXAMPLES


@pytest.fixture
def node(tmp_path, small_alliance):
    db = tmp_path / "B002.db"
    shutil.copy(small_alliance / "B002.db", db)
    config = NodeConfig(branch_id="B002", db_url=f"sqlite:///{db}", node_dir=tmp_path / "node",
                        budgets={"sales": Budget(epsilon=20, delta=1e-4)}, accept_non_private_jobs=True)
    write_node_config(config)
    shutil.copy(EXAMPLES / "domestic_dealer.yaml", config.policy_path)
    ctx = create_secret_context(CkksParams())
    config.he_secret_path.parent.mkdir(parents=True)
    config.he_secret_path.write_bytes(secret_context_bytes(ctx))
    return config


def job(**kw):
    return JobSpec(job_id="test-job", rounds=3, **kw)


def test_train_sends_only_an_encrypted_update_and_records_lineage(node):
    agent = NodeAgent(node)
    reply = agent.train(TrainInstruction(job=job(), round=1))
    assert reply.status == "ok", reply.reason
    assert reply.update.scheme == "CKKS" and reply.update.length > 1000
    kinds = [e.kind for e in agent.lineage.events(job_id="test-job")]
    assert kinds[:4] == [EventKind.POLICY_DECISION, EventKind.JOB_APPROVAL, EventKind.DATA_READ, EventKind.QUARANTINE]
    assert EventKind.TRAINING in kinds and kinds[-1] == EventKind.EMISSION
    read = agent.lineage.events(kind=EventKind.DATA_READ)[0]
    assert read.fields == ["sales.sale_id", "sales.sale_date", "sales.vin", "sales.list_price", "sales.sale_price"]
    assert read.row_count > 0 and len(read.content_hash) == 64 and read.purpose == "forecasting"
    emission = agent.lineage.events(kind=EventKind.EMISSION)[0]
    assert emission.digest == reply.update.digest()
    assert (reply.lineage_head.seq, reply.lineage_head.event_hash) == (emission.seq, emission.event_hash)
    report, = agent.lineage.verify({"B002": agent.signer.public_key})
    assert report.ok and report.head_seq == emission.seq


def test_epsilon_composes_across_rounds_and_survives_restart(node):
    spec = job()
    eps = []
    for rnd in (1, 2, 3):
        agent = NodeAgent(load_node_config(node.node_dir))  # a fresh process each round
        eps.append(agent.train(TrainInstruction(job=spec, round=rnd)).epsilon)
    assert eps[0] < eps[1] < eps[2] <= spec.dp.target_epsilon * 1.01
    assert eps[2] > spec.dp.target_epsilon * 0.9  # the plan spends the budget, not a fraction of it


def test_no_dp_no_he_sends_plain_weights(node):
    reply = NodeAgent(node).train(
        TrainInstruction(job=job(dp=DPSettings(enabled=False), he=HESettings(enabled=False)), round=1)
    )
    assert reply.update.scheme == "plain" and reply.epsilon is None
    values = reply.update.plain_values()
    assert values[-1] > 0 and np.isfinite(values).all()


def test_missing_column_refuses_and_records_the_refusal(node):
    engine = create_engine(node.db_url)
    with engine.begin() as conn:
        conn.execute(text("ALTER TABLE sales DROP COLUMN vin"))
    agent = NodeAgent(node)
    reply = agent.train(TrainInstruction(job=job(), round=1))
    assert reply.status == "refused" and reply.update is None
    assert "table 'sales' is missing required column 'vin'" in reply.reason
    refusals = agent.lineage.events(kind=EventKind.REFUSAL)
    assert len(refusals) == 1 and refusals[0].details["reason"] == reply.reason


def test_missing_alliance_key_refuses_encrypted_job(node):
    node.he_secret_path.unlink()
    reply = NodeAgent(node).train(TrainInstruction(job=job(), round=1))
    assert reply.status == "refused" and "no alliance key" in reply.reason


def test_evaluate_scores_held_out_months(node):
    agent = NodeAgent(node)
    spec = job(dp=DPSettings(enabled=False))
    train = agent.train(TrainInstruction(job=spec, round=1))
    reply = agent.evaluate(TrainInstruction(job=spec, round=1, global_model=train.update))
    assert reply.status == "ok" and len(reply.actual) == len(reply.forecast) == 6
    assert reply.mase > 0 and 0 <= reply.smape <= 200


def test_wire_round_trip_and_malformed_messages():
    instruction = TrainInstruction(job=job(), round=2)
    assert from_record(to_record(instruction), TrainInstruction) == instruction
    bad = to_record(instruction)
    bad["body"]["json"] = bad["body"]["json"].replace('"round": 2', '"round": -1')
    with pytest.raises(WireError, match="field 'round'"):
        from_record(bad, TrainInstruction)
    with pytest.raises(WireError, match="malformed"):
        from_record(RecordDict({"body": ConfigRecord({"json": "{not json"})}), TrainReply)


def test_node_config_errors_name_the_file(tmp_path):
    with pytest.raises(NodeConfigError, match="no node configuration"):
        load_node_config(tmp_path)
    (tmp_path / "node.json").write_text('{"branch_id": "B 1", "db_url": "x"}')
    with pytest.raises(NodeConfigError, match="field 'branch_id'"):
        load_node_config(tmp_path)


def test_client_app_refuses_a_malformed_instruction_and_records_it(node, monkeypatch):
    from flwr.app import Context, Message
    from flwr.supercore.task_identity import TaskIdentity

    from node_agent import client_app

    for attr in ("_run_id", "_task_id", "_node_id"):  # what a Flower runtime sets per process
        monkeypatch.setattr(TaskIdentity, attr, 1)

    bad = to_record(TrainInstruction(job=job(), round=1))
    bad["body"]["json"] = bad["body"]["json"].replace('"horizon": 6', '"horizon": "six"')
    msg = Message(content=bad, dst_node_id=1, message_type="train")
    ctx = Context(run_id=1, node_id=1, node_config={"node-dir": str(node.node_dir)}, state=RecordDict(), run_config={})
    out = client_app.train(msg, ctx)
    reply = from_record(out.content, TrainReply)
    assert reply.status == "refused" and reply.update is None
    assert "field 'job.horizon'" in reply.reason
    refusals = NodeAgent(node).lineage.events(kind=EventKind.REFUSAL)
    assert refusals and "job.horizon" in refusals[-1].details["reason"]


def test_a_database_that_is_not_one_is_refused_in_one_line(node):
    db_path = node.db_url.removeprefix("sqlite:///")
    with open(db_path, "wb") as f:
        f.write(b"this is not a database, just bytes " * 100)
    agent = NodeAgent(node)
    reply = agent.train(TrainInstruction(job=job(), round=1))
    assert reply.status == "refused" and reply.update is None
    assert "cannot read table 'sales'" in reply.reason and "\n" not in reply.reason
    assert agent.lineage.events(kind=EventKind.REFUSAL)
