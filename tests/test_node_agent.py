"""The node agent's service, without Flower: what it sends, what it records, when it refuses."""

import hashlib
import json
import shutil

import numpy as np
import pytest
from flwr.app import ConfigRecord, RecordDict
from sqlalchemy import create_engine, text

from common import evaluation
from common.he import CkksParams, create_secret_context, load_context, public_context_bytes, secret_context_bytes
from common.model import build_model, get_flat_weights, set_flat_weights
from common.refusals import REASONS
from common.wire import (
    DPSettings,
    HESettings,
    JobSpec,
    TrainInstruction,
    TrainReply,
    UpdateBounds,
    UpdatePayload,
    WireError,
    from_record,
    to_record,
)
from coordinator.strategy import SecureFedAvg
from lineage import EventKind
from lineage.signing import public_pem
from lineage.signing import verify_signature
from node_agent.agent import NodeAgent
from node_agent.config import NodeConfig, NodeConfigError, load_node_config, write_node_config
from node_agent.ledger import Budget
from node_agent.report import report_path
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
    return JobSpec(**{"job_id": "test-job", "rounds": 3, **kw})


def refusal_detail(agent: NodeAgent, reply, code: str) -> str:
    """A refusal leaves as its code and fixed phrase only; the detail is in the node's lineage."""
    assert (reply.status, reply.code, reply.reason) == ("refused", code, REASONS[code]), (reply.code, reply.reason)
    event = agent.lineage.events(kind=EventKind.REFUSAL)[-1]
    assert event.details["code"] == code
    return event.details["reason"]


def test_train_sends_only_an_encrypted_update_and_records_lineage(node):
    agent = NodeAgent(node)
    reply = agent.train(TrainInstruction(job=job(), round=1))
    assert reply.status == "ok", reply.reason
    assert reply.update.scheme == "CKKS" and reply.update.length == build_model(0).num_parameters() + 2
    kinds = [e.kind for e in agent.lineage.events(job_id="test-job")]
    assert kinds[:4] == [EventKind.POLICY_DECISION, EventKind.JOB_APPROVAL, EventKind.DATA_READ, EventKind.QUARANTINE]
    assert EventKind.TRAINING in kinds and kinds[-1] == EventKind.EMISSION
    read = agent.lineage.events(kind=EventKind.DATA_READ)[0]
    assert read.fields == ["sales.sale_id", "sales.sale_date", "sales.vin", "sales.list_price", "sales.sale_price"]
    assert read.row_count > 0 and len(read.content_hash) == 64 and read.purpose == "forecasting"
    emission = agent.lineage.events(kind=EventKind.EMISSION)[0]
    assert emission.digest == reply.update.digest()
    assert (reply.lineage_head.seq, reply.lineage_head.event_hash) == (emission.seq, emission.event_hash)
    assert verify_signature(agent.signer.public_key, reply.signature, reply.signed_body())  # signed by the node's key
    for change in ({"round": 2}, {"job_id": "other-job"}, {"quarantined": {**reply.quarantined, "duplicate_sale_id": 1}}):
        forged = reply.model_copy(update=change)
        assert not verify_signature(agent.signer.public_key, reply.signature, forged.signed_body()), change
    # No per-node epsilon leaves: with sigma fixed by the coordinator it would give away the branch's size.
    sent = set(reply.model_dump()) | set(json.loads(to_record(reply)["body"]["json"]))  # the fields, and what goes on the wire
    assert not {"epsilon", "planned_epsilon", "window_group_epsilon", "window_group_delta", "steps", "windows"} & sent
    assert agent.ledger.get("sales", "test-job").epsilon > 0  # it is in the node's own ledger
    report, = agent.lineage.verify({"B002": agent.signer.public_key})
    assert report.ok and report.head_seq == emission.seq


def test_epsilon_composes_across_rounds_and_survives_restart(node):
    spec = job()
    eps = []
    for rnd in (1, 2, 3):
        agent = NodeAgent(load_node_config(node.node_dir))  # a fresh process each round
        assert agent.train(TrainInstruction(job=spec, round=rnd)).status == "ok"
        eps.append(NodeAgent(load_node_config(node.node_dir)).ledger.get("sales", spec.job_id).epsilon)
    assert eps[0] < eps[1] < eps[2] <= spec.dp.target_epsilon * 1.01
    assert eps[2] > spec.dp.target_epsilon * 0.9  # the plan spends the budget, not a fraction of it
    spend = NodeAgent(load_node_config(node.node_dir)).ledger.get("sales", spec.job_id)
    assert spend.status == "complete" and len(spend.history) == 3 and spend.delta == spec.dp.delta
    # What it means for one customer stays in the node's lineage: group privacy over the
    # training windows one month's total sits in.
    trained = [e.details for e in agent.lineage.events(job_id=spec.job_id, kind=EventKind.TRAINING)]
    assert [d["epsilon"] for d in trained] == pytest.approx(eps)
    for d in trained:
        group = min(spec.lags + spec.horizon, d["windows"])
        assert d["window_group_size"] == group > 1
        assert d["window_group_epsilon"] == pytest.approx(group * d["epsilon"])
        assert spec.dp.delta * group <= d["window_group_delta"] <= 1.0


def test_no_dp_no_he_sends_plain_weights_with_a_bounded_weight_and_a_count_slot(node):
    """A node that opted out of encryption (node.json require_he false) sends `[n*w, n, 1]` in
    the clear, with n capped at the job's max_weight so one large branch cannot dominate."""
    config = node.model_copy(update={"require_he": False})
    agent = NodeAgent(config)
    spec = job(dp=DPSettings(enabled=False), he=HESettings(enabled=False), bounds=UpdateBounds(max_weight=5))
    reply = agent.train(TrainInstruction(job=spec, round=1))
    assert reply.status == "ok", reply.code
    assert reply.update.scheme == "plain"
    assert agent.ledger.get("sales", spec.job_id) is None  # no DP: nothing planned or spent
    values = reply.update.plain_values()
    assert values.size == build_model(spec.seed, lags=spec.lags, horizon=spec.horizon).num_parameters() + 2
    assert np.isfinite(values).all() and values[-1] == 1.0  # the contributor count slot
    windows = agent.lineage.events(kind=EventKind.TRAINING)[-1].details["windows"]
    assert windows > 5 and values[-2] == 5.0  # the weight is capped at the job's bound, not the window count


def test_a_node_that_requires_encryption_refuses_a_plaintext_job(node):
    agent = NodeAgent(node)  # require_he defaults to true
    reply = agent.train(TrainInstruction(job=job(dp=DPSettings(enabled=False), he=HESettings(enabled=False)), round=1))
    assert "require_he" in refusal_detail(agent, reply, "encryption-required")
    assert reply.update is None and not agent.lineage.events(kind=EventKind.DATA_READ)  # refused before any read


def test_missing_column_refuses_and_records_the_refusal(node):
    engine = create_engine(node.db_url)
    with engine.begin() as conn:
        conn.execute(text("ALTER TABLE sales DROP COLUMN vin"))
    agent = NodeAgent(node)
    reply = agent.train(TrainInstruction(job=job(), round=1))
    assert reply.update is None
    detail = refusal_detail(agent, reply, "data-contract")
    assert "table 'sales' is missing required column 'vin'" in detail
    assert "vin" not in reply.model_dump_json()  # the column name stays on the node
    assert len(agent.lineage.events(kind=EventKind.REFUSAL)) == 1


def test_missing_alliance_key_refuses_encrypted_job(node):
    node.he_secret_path.unlink()
    agent = NodeAgent(node)
    reply = agent.train(TrainInstruction(job=job(), round=1))
    assert "no alliance key" in refusal_detail(agent, reply, "node-config")


def test_a_job_is_frozen_at_admission_and_rounds_only_move_forward(node):
    agent = NodeAgent(node)
    spec = job(job_id="frozen-job", dp=DPSettings(enabled=False))
    first = agent.train(TrainInstruction(job=spec, round=1))
    assert first.status == "ok"
    assert agent.train(TrainInstruction(job=spec, round=1)).update == first.update  # the same request: the same bytes
    replay = agent.train(TrainInstruction(job=spec, round=1, global_model=first.update,
                                          contributors={first.branch_id: first.update.digest()}))
    assert "round 1 again" in refusal_detail(agent, replay, "replay") and replay.update is None
    changed = agent.train(TrainInstruction(job=spec.model_copy(update={"batch_size": 4}), round=2))
    assert "batch_size" in refusal_detail(agent, changed, "job-changed")
    past = agent.train(TrainInstruction(job=spec, round=spec.rounds + 1))
    assert "past the 3 rounds" in refusal_detail(agent, past, "replay")
    assert agent.train(TrainInstruction(job=spec, round=3)).status == "ok"  # skipping ahead within the job is fine
    assert len(agent.lineage.events(job_id="frozen-job", kind=EventKind.TRAINING)) == 2


@pytest.mark.parametrize("claim, code", [
    ({"purpose": "marketing"}, "purpose"),
    ({"recipient_role": "sales"}, "recipient"),
    ({"destination": "US"}, "destination"),
    ({"rounds": 21}, "job-limits"),
    ({"dp": DPSettings(target_epsilon=11)}, "job-limits"),
    ({"bounds": UpdateBounds(max_weight=5001)}, "job-limits"),
])
def test_a_job_is_admitted_by_the_nodes_own_settings_not_by_its_claims(node, claim, code):
    agent = NodeAgent(node)
    reply = agent.train(TrainInstruction(job=JobSpec(**{"job_id": "claims", "rounds": 3, **claim}), round=1))
    assert "node.json" in refusal_detail(agent, reply, code) and reply.update is None
    assert not agent.lineage.events(kind=EventKind.DATA_READ)


def _aggregate(spec: JobSpec, *replies: TrainReply, public=None):
    return SecureFedAvg(job=spec, public_context=public).aggregate_train(list(replies))


def _other_update(spec: JobSpec, branch: str, n: int = 10) -> TrainReply:
    size = get_flat_weights(build_model(spec.seed, lags=spec.lags, horizon=spec.horizon)).size
    w = np.random.default_rng(int.from_bytes(branch.encode(), "little") % 2**32).normal(0, 0.2, size=size)  # another branch's model
    return TrainReply(status="ok", branch_id=branch, update=UpdatePayload.plain(np.concatenate([w * n, [float(n), 1.0]])))


def test_evaluate_scores_held_out_months_and_sends_only_a_metric_vector(node):
    config = node.model_copy(update={"require_he": False, "min_contributors": 2})
    agent = NodeAgent(config)
    spec = job(job_id="eval-job", dp=DPSettings(enabled=False), he=HESettings(enabled=False))
    own = agent.train(TrainInstruction(job=spec, round=1))
    aggregate = _aggregate(spec, own, _other_update(spec, "B999"))
    reply = agent.evaluate(TrainInstruction(job=spec, round=spec.rounds, global_model=aggregate.payload,
                                            contributors=aggregate.contributors))
    assert reply.status == "ok", reply.code
    body = json.loads(reply.model_dump_json(exclude={"metrics"}))
    assert not {"actual", "forecast", "months", "mase", "smape"} & set(body)
    vector = reply.metrics.plain_values()
    assert reply.metrics.length == evaluation.LENGTH
    # The branch's own report (on the node only): six held-out months, every arm, scored.
    report = json.loads(report_path(config, spec.job_id).read_text())
    assert len(report["months"]) == len(report["actual"]) == 6
    assert set(report["forecasts"]) == set(evaluation.ARMS) and all(len(f) == 6 for f in report["forecasts"].values())
    assert report["scores"]["federated"]["mase"] > 0 and 0 <= report["scores"]["federated"]["smape"] <= 200
    young = report["history_months"] < evaluation.YOUNG_MONTHS
    coverage = {int(level): share for level, share in report["coverage"].items()}
    ahead = report["outlook"]  # the months after the data, with intervals: this branch's own forecast
    assert len(ahead["months"]) == 6 and ahead["months"][0] > report["months"][-1]
    assert all(lo <= p <= hi for lo, p, hi in zip(ahead["low95"], ahead["point"], ahead["high95"]))
    assert all(a <= b for a, b in zip(ahead["low95"], ahead["low80"])) and all(
        a <= b for a, b in zip(ahead["high80"], ahead["high95"]))
    new_store = report["history_months"] < evaluation.NEW_STORE_MONTHS
    expected = evaluation.metric_vector(report["scores"], young=young, new_store=new_store, coverage=coverage,
                                        outlook=(np.array(ahead["point"]), np.array(ahead["variance"])))
    np.testing.assert_allclose(vector, expected, atol=0.006)  # the report rounds to 2 decimals
    # The federated arm is the averaged aggregate, not the node's own model.
    summed = aggregate.payload.plain_values()
    model = build_model(spec.seed, lags=spec.lags, horizon=spec.horizon)
    set_flat_weights(model, summed[:-2] / summed[-2])
    assert report["model_digest"] == hashlib.sha256(np.round(get_flat_weights(model), 6).tobytes()).hexdigest()


def test_a_node_evaluates_only_in_a_job_it_has_trained_in(node):
    """Evaluating (and decrypting a global model) is for a job this node sent an update in:
    training in another job does not count, and the refusal reads no data and uses none of
    the job's evaluations."""
    config = node.model_copy(update={"require_he": False})
    agent = NodeAgent(config)
    spec = job(job_id="eval-first", rounds=1, dp=DPSettings(enabled=False), he=HESettings(enabled=False))
    assert agent.train(TrainInstruction(job=spec.model_copy(update={"job_id": "another-job"}), round=1)).status == "ok"
    reply = agent.evaluate(TrainInstruction(job=spec, round=1))
    assert "has sent no update in this job" in refusal_detail(agent, reply, "aggregate-rejected") and reply.metrics is None
    assert not agent.lineage.events(job_id=spec.job_id, kind=EventKind.DATA_READ)
    assert not report_path(config, spec.job_id).exists() and agent.book.get(spec.job_id).evaluations == 0
    assert agent.train(TrainInstruction(job=spec, round=1)).status == "ok"
    evaluated = agent.evaluate(TrainInstruction(job=spec, round=1))
    assert evaluated.status == "ok", evaluated.code
    assert report_path(config, spec.job_id).exists() and agent.book.get(spec.job_id).evaluations == 1


def test_a_node_decrypts_only_an_aggregate_it_is_part_of_over_enough_contributors(node):
    config = node.model_copy(update={"require_he": False, "min_contributors": 2})
    agent = NodeAgent(config)
    spec = job(job_id="guarded-job", rounds=5, dp=DPSettings(enabled=False), he=HESettings(enabled=False))
    own = agent.train(TrainInstruction(job=spec, round=1))

    def train_on(aggregate, rnd, contributors=None):
        return agent.train(TrainInstruction(job=spec, round=rnd, global_model=aggregate.payload,
                                            contributors=aggregate.contributors if contributors is None else contributors))

    alone = _aggregate(spec, own)  # its own update passed off as the global model
    assert "min_contributors is 2" in refusal_detail(agent, train_on(alone, 2), "aggregate-rejected")
    strangers = _aggregate(spec, _other_update(spec, "B998"), _other_update(spec, "B999", 20))
    assert "does not list an update this node sent" in refusal_detail(agent, train_on(strangers, 3), "aggregate-rejected")
    honest = _aggregate(spec, own, _other_update(spec, "B999"))
    padded = {**honest.contributors, "B997": "0" * 64}  # claims a third contributor the sum does not count
    assert "counts 2.00 contributors but lists 3" in refusal_detail(agent, train_on(honest, 4, padded), "aggregate-rejected")
    assert train_on(honest, 5).status == "ok"  # each rejected aggregate used up its round: no retry of a round


def test_two_nodes_release_only_the_checked_sum_of_their_metric_vectors(node, small_alliance, tmp_path):
    """Two encrypted nodes (min_contributors 2), one alliance key: each trains, evaluates the
    summed model and sends an encrypted metric vector; the coordinator sums them, and each
    node decrypts the sum only when it lists both, itself with what it really sent."""
    secret = load_context(node.he_secret_path.read_bytes())
    public = load_context(public_context_bytes(secret))
    other_db = tmp_path / "B006.db"
    shutil.copy(small_alliance / "B006.db", other_db)
    other = NodeConfig(branch_id="B006", db_url=f"sqlite:///{other_db}", node_dir=tmp_path / "node6",
                       accept_non_private_jobs=True, min_contributors=2)
    write_node_config(other)
    shutil.copy(EXAMPLES / "domestic_dealer.yaml", other.policy_path)
    other.he_secret_path.parent.mkdir(parents=True)
    other.he_secret_path.write_bytes(node.he_secret_path.read_bytes())
    agents = {"B002": NodeAgent(node.model_copy(update={"min_contributors": 2})), "B006": NodeAgent(other)}
    for a, peer in ((agents["B002"], agents["B006"]), (agents["B006"], agents["B002"])):  # keys exchanged node to node
        a.config.peer_keys_dir.mkdir(parents=True, exist_ok=True)
        (a.config.peer_keys_dir / f"{peer.config.branch_id}.pub").write_text(public_pem(peer.signer.public_key))
    spec = JobSpec(job_id="release-job", rounds=1, local_epochs=1, dp=DPSettings(enabled=False))
    strategy = SecureFedAvg(job=spec, public_context=public)
    model = strategy.aggregate_train([a.train(TrainInstruction(job=spec, round=1)) for a in agents.values()])
    assert set(model.contributors) == set(agents)
    evals = [a.evaluate(strategy.configure_evaluate(1, model)) for a in agents.values()]
    assert all(r.status == "ok" and r.metrics.scheme == "CKKS" for r in evals), [r.code for r in evals]
    metrics = strategy.aggregate_evaluate(evals)
    commit = strategy.configure_release(1, metrics, evals, stage="commit")
    commitments = {b: a.release(commit).commitment for b, a in agents.items()}
    release = commit.model_copy(update={"stage": "release", "commitments": commitments})
    released = {b: a.release(release) for b, a in agents.items()}
    assert all(r.status == "ok" for r in released.values()), {b: r.code for b, r in released.items()}
    assert np.allclose(released["B002"].values, released["B006"].values, atol=1e-2)
    figures = evaluation.alliance_figures(released["B002"].values)
    reports = [json.loads(report_path(a.config, spec.job_id).read_text()) for a in agents.values()]
    assert figures["all"]["nodes"] == 2
    assert figures["all"]["federated"]["mase"] == pytest.approx(
        np.mean([r["scores"]["federated"]["mase"] for r in reports]), abs=1e-3)
    # A "sum" of one contribution is a single branch's scores: not decrypted.
    single = release.model_copy(update={"contributions": [r for r in evals if r.branch_id == "B002"]})
    refused = agents["B002"].release(single)
    assert "min_contributors is 2" in refusal_detail(agents["B002"], refused, "aggregate-rejected") and not refused.values


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
    assert reply.update is None
    assert (reply.status, reply.code, reply.reason) == ("refused", "malformed", REASONS["malformed"])
    refusals = NodeAgent(node).lineage.events(kind=EventKind.REFUSAL)
    assert refusals and "field 'job.horizon'" in refusals[-1].details["reason"]


def test_a_database_that_is_not_one_is_refused_in_one_line(node):
    db_path = node.db_url.removeprefix("sqlite:///")
    with open(db_path, "wb") as f:
        f.write(b"this is not a database, just bytes " * 100)
    agent = NodeAgent(node)
    reply = agent.train(TrainInstruction(job=job(), round=1))
    assert reply.update is None
    detail = refusal_detail(agent, reply, "data-contract")
    assert "cannot read table 'sales'" in detail and "\n" not in detail
