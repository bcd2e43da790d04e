"""The node agent obeys its branch's policy file: treatments at read, refusals on drift,
restricted fields or a bad policy, every decision and change in lineage, and the egress check."""

from __future__ import annotations

import re
import shutil

import pytest
from sqlalchemy import create_engine, text
from typer.testing import CliRunner

from common.wire import DPSettings, EvaluateReply, HESettings, JobSpec, TrainInstruction, TrainReply
from lineage import EventKind
from node_agent import agent as agent_module
from node_agent.agent import WITHHELD_REASON, NodeAgent
from node_agent.config import NodeConfig, write_node_config
from node_agent.data import read_branch_dataset
from node_agent.egress import EgressBlocked, check_reply
from policies import JobRefusal, load_policy
from sovereign.cli import app
from tests.conftest import EXAMPLES, example_policy, forecast_request


def make_node(tmp_path, small_alliance, policy: str = "domestic_dealer", branch: str = "B002") -> NodeConfig:
    tmp_path.mkdir(parents=True, exist_ok=True)
    db = tmp_path / f"{branch}.db"
    shutil.copy(small_alliance / f"{branch}.db", db)
    config = NodeConfig(branch_id=branch, db_url=f"sqlite:///{db}", node_dir=tmp_path / "node", accept_non_private_jobs=True)
    write_node_config(config)
    shutil.copy(EXAMPLES / f"{policy}.yaml", config.policy_path)
    return config


def plain_job(**kw) -> JobSpec:
    """DP and HE off: these tests are about the policy, and stay fast."""
    return JobSpec(job_id="policy-job", rounds=1, local_epochs=1, dp=DPSettings(enabled=False),
                   he=HESettings(enabled=False), **kw)


def train(config: NodeConfig, **kw) -> TrainReply:
    return NodeAgent(config).train(TrainInstruction(job=plain_job(**kw), round=1))


# --------------------------------------------------------------------- cross-border, end to end
def test_same_job_is_masked_at_the_foreign_dealer_and_not_at_home(tmp_path, small_alliance):
    """One job for Japan, run at a Japanese and a Korean dealer: the Korean dealer's VIN (a
    personal field) is keyed-hashed, its dates cut to the month and its prices bucketed, in
    `policy explain` and in the node's lineage; the forecast data is the same either way."""
    home = make_node(tmp_path / "jp", small_alliance, "domestic_dealer")
    abroad = make_node(tmp_path / "kr", small_alliance, "foreign_dealer")
    replies = {name: train(cfg) for name, cfg in (("home", home), ("abroad", abroad))}
    assert all(r.status == "ok" for r in replies.values()), {k: r.reason for k, r in replies.items()}

    decided = {}
    for name, cfg in (("home", home), ("abroad", abroad)):
        event, = NodeAgent(cfg).lineage.events(job_id="policy-job", kind=EventKind.POLICY_DECISION)
        assert event.policy_hash == load_policy(cfg.policy_path).content_hash()
        decided[name] = {d["field"]: d for d in event.details["decisions"]}
        assert event.details["cross_border"] is (name == "abroad")
    home_d, abroad_d = decided["home"], decided["abroad"]
    assert home_d["sales.vin"]["class"] == abroad_d["sales.vin"]["class"] == "personal"
    assert (home_d["sales.vin"]["kind"], home_d["sales.vin"]["rule"]) == ("allow", "vin-on-node-at-home")
    assert (abroad_d["sales.vin"]["kind"], abroad_d["sales.vin"]["rule"]) == ("hash", "vin-hashed-abroad")
    assert abroad_d["sales.sale_date"]["treatment"] == "generalise to month"
    assert abroad_d["sales.sale_price"]["treatment"] == "generalise to buckets of 5000"
    assert home_d["sales.sale_date"]["kind"] == home_d["sales.sale_price"]["kind"] == "allow"
    for decisions in (home_d, abroad_d):
        assert decisions["sales.customer_name"]["kind"] == "drop"
        assert decisions["sales.customer_national_id"]["rule"] == "national-id-never-read"

    # The treatments cost the forecast nothing: the same months, units and quarantine counts.
    key = b"k" * 32
    a = read_branch_dataset(home.db_url, example_policy("domestic_dealer"), forecast_request(), key=key)
    b = read_branch_dataset(abroad.db_url, example_policy("foreign_dealer"), forecast_request(), key=key)
    assert a.series.months == b.series.months and a.series.units.tolist() == b.series.units.tolist()
    assert a.quarantined == b.quarantined and a.row_count == b.row_count
    assert a.content_hash != b.content_hash  # what was used differs: raw at home, treated abroad

    # The compliance officer sees the same thing in `policy explain`.
    job_file = EXAMPLES / "jobs" / "monthly_forecast.yaml"  # the demo's job, as the README shows it
    runner = CliRunner()
    explained = {p: runner.invoke(app, ["policy", "explain", "--policy", str(EXAMPLES / f"{p}.yaml"), "--job", str(job_file)])
                 for p in ("domestic_dealer", "foreign_dealer")}
    assert all(r.exit_code == 0 for r in explained.values()), {p: r.output for p, r in explained.items()}
    vin_row = {p: next(line for line in r.output.splitlines() if "sales.vin" in line) for p, r in explained.items()}
    assert "keyed hash" in vin_row["foreign_dealer"] and "vin-hashed-abroad" in vin_row["foreign_dealer"]
    assert "allow" in vin_row["domestic_dealer"] and "keyed hash" not in vin_row["domestic_dealer"]
    assert "results abroad (KR → JP)" in explained["foreign_dealer"].output.replace("\n", " ")


# --------------------------------------------------------------------- refusals
def _refused_and_recorded(config: NodeConfig, reply, *fragments: str) -> None:
    assert reply.status == "refused" and reply.update is None
    for fragment in fragments:
        assert fragment in reply.reason, reply.reason
    # The refusal is recorded, then the refusal reply as the only thing that left: no update.
    refusal, sent = NodeAgent(config).lineage.events()[-2:]
    assert refusal.kind is EventKind.REFUSAL and refusal.details["reason"] == reply.reason
    assert sent.kind is EventKind.EMISSION and (sent.details["message"], sent.details["status"]) == ("train", "refused")


def test_schema_drift_refuses_naming_policy_file_line_and_column(tmp_path, small_alliance):
    config = make_node(tmp_path, small_alliance)
    engine = create_engine(config.db_url)
    with engine.begin() as conn:
        conn.execute(text("ALTER TABLE sales ADD COLUMN loyalty_tier TEXT"))
    engine.dispose()
    reply = train(config)
    _refused_and_recorded(config, reply, f"{config.policy_path}:6: sales.loyalty_tier:", "schema drift")


def test_a_needed_field_classified_restricted_refuses(tmp_path, small_alliance):
    config = make_node(tmp_path, small_alliance)
    config.policy_path.write_text(config.policy_path.read_text().replace("sale_date: internal", "sale_date: restricted"))
    reply = train(config)
    _refused_and_recorded(config, reply, "asks for restricted field sales.sale_date")


def test_a_job_asking_for_a_restricted_field_is_refused_before_any_read(small_alliance):
    request = forecast_request(fields=["sales.sale_date", "sales.customer_national_id"])
    with pytest.raises(JobRefusal, match=r"domestic_dealer.yaml:6: job test-job asks for restricted field sales.customer_national_id"):
        read_branch_dataset(f"sqlite:///{small_alliance / 'B001.db'}", example_policy(), request, key=b"k")


def test_a_treatment_too_coarse_for_the_forecast_refuses(tmp_path, small_alliance):
    config = make_node(tmp_path, small_alliance, "foreign_dealer")
    config.policy_path.write_text(config.policy_path.read_text().replace("{generalise: month}", "{generalise: year}"))
    reply = train(config)
    _refused_and_recorded(config, reply, "sales.sale_date: rule dates-to-month-abroad", "generalise to year")


def test_the_strict_dealer_takes_only_forecasting_for_analysts(tmp_path, small_alliance):
    config = make_node(tmp_path, small_alliance, "strict_dealer")
    assert train(config).status == "ok"
    reply = train(config, recipient_role="marketing")
    _refused_and_recorded(config, reply, "asks for sales.sale_id, which rule default-deny drops")


@pytest.mark.parametrize("edit, fragment", [
    (lambda t: t.replace("treatment: drop\n    reason: national IDs", "treatment: scramble\n    reason: national IDs"),
     "policy.yaml:32: rules.0.treatment.kind: Input should be"),
    (lambda t: t.replace("match: {field: sales.customer_phone,", "match: {field: sales.customer_fax,"),
     "policy.yaml:34: rule phone-keyed-hash-for-dedup: unknown field sales.customer_fax"),
    (lambda t: t + "  - id: contradiction\n    match: {class: [public, internal, confidential]}\n    treatment: drop\n",
     "rule contradiction contradicts rule business-fields"),
    (lambda t: t.replace("national-id-never-read\n    match: {class: restricted}\n    treatment: drop",
                         "national-id-never-read\n    match: {class: restricted}\n    treatment: allow"),
     "restricted fields can only be dropped or nulled"),
    (lambda t: "", "policy.yaml: the file is empty"),
])
def test_a_bad_policy_refuses_every_job_with_file_and_line(tmp_path, small_alliance, edit, fragment):
    config = make_node(tmp_path, small_alliance)
    config.policy_path.write_text(edit(config.policy_path.read_text()))
    _refused_and_recorded(config, train(config), fragment)


def test_a_missing_policy_refuses(tmp_path, small_alliance):
    config = make_node(tmp_path, small_alliance)
    config.policy_path.unlink()
    _refused_and_recorded(config, train(config), "no branch policy here")


# --------------------------------------------------------------------- policy changes
def test_policy_changes_are_recorded_with_old_and_new_hash(tmp_path, small_alliance):
    config = make_node(tmp_path, small_alliance)
    assert train(config).status == "ok" and train(config).status == "ok"
    changes = NodeAgent(config).lineage.events(kind=EventKind.POLICY_CHANGE)
    assert len(changes) == 1 and changes[0].details["previous_hash"] is None  # adopted once, not per job
    first = changes[0].policy_hash
    config.policy_path.write_text(config.policy_path.read_text().replace("version: 2", "version: 3")
                                  .replace("treatment: allow\n    reason: business", "treatment: allow\n    reason: Business"))
    assert train(config).status == "ok"
    changes = NodeAgent(config).lineage.events(kind=EventKind.POLICY_CHANGE)
    assert len(changes) == 2
    assert changes[1].details["previous_hash"] == first and changes[1].details["version"] == 3
    decision = NodeAgent(config).lineage.events(kind=EventKind.POLICY_DECISION)[-1]
    assert decision.policy_hash == changes[1].policy_hash != first
    # Formatting and comments are not a change: the hash is of what the policy says.
    config.policy_path.write_text("# reviewed 2026-11\n" + config.policy_path.read_text())
    assert train(config).status == "ok"
    assert len(NodeAgent(config).lineage.events(kind=EventKind.POLICY_CHANGE)) == 2


# --------------------------------------------------------------------- egress
def test_egress_blocks_row_content_in_any_reply_field():
    ok = EvaluateReply(status="ok", branch_id="B1", mase=0.5, smape=10.0, months=["2024-01"], actual=[3.0],
                       forecast=[2.5], model_digest="0" * 64)
    check_reply(ok, branch_id="B1")
    bad = [
        (ok.model_copy(update={"months": ["Zelda Canarywhistle"]}), "months[0]"),
        (ok.model_copy(update={"branch_id": "B2"}), "branch_id"),
        (ok.model_copy(update={"model_digest": "VIN123"}), "model_digest"),
        (ok.model_copy(update={"actual": [float("nan")]}), "actual"),
        (TrainReply(status="ok", branch_id="B1", quarantined={"duplicate_vin:JT1234": 1}), "quarantined"),
        (TrainReply(status="refused", branch_id="B1", reason="customer phone +81-90-1234-5678"), "reason"),
        (TrainReply(status="refused", branch_id="B1", reason="mail zelda@example.com"), "reason"),
    ]
    for reply, field in bad:
        with pytest.raises(EgressBlocked, match=re.escape(f"'{field}'")):
            check_reply(reply, branch_id="B1")


def test_a_bug_upstream_cannot_leak_through_the_egress(tmp_path, small_alliance, monkeypatch):
    """Simulate a bug that puts a customer's name into the evaluation's month labels."""
    config = make_node(tmp_path, small_alliance)
    real_split = agent_module.holdout_split

    def leaky_split(*args, **kwargs):
        split = real_split(*args, **kwargs)
        return split.__class__(**{**split.__dict__, "months": ["Zelda Canarywhistle"] + split.months[1:]})

    monkeypatch.setattr(agent_module, "holdout_split", leaky_split)
    agent = NodeAgent(config)
    reply = agent.evaluate(TrainInstruction(job=plain_job(), round=1))
    assert reply.status == "refused" and "egress check blocked the reply: field 'months[0]'" in reply.reason
    assert "Zelda" not in reply.model_dump_json()
    assert agent.lineage.events(kind=EventKind.REFUSAL)[-1].details["reason"] == reply.reason


def test_a_refusal_reason_shaped_like_personal_data_is_withheld_but_kept_in_lineage(tmp_path, small_alliance):
    config = make_node(tmp_path, small_alliance)
    agent = NodeAgent(config)
    sent = agent.refuse(plain_job(), 1, "row with phone 090-1234-5678 failed")
    assert sent == WITHHELD_REASON
    assert "090-1234-5678" in agent.lineage.events(kind=EventKind.REFUSAL)[-1].details["reason"]
