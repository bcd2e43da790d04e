"""The node agent obeys its branch's policy file: treatments at read, refusals on drift,
restricted fields or a bad policy, every decision and change in lineage, and the egress check."""

from __future__ import annotations

import itertools
import json
import re
import shutil

import numpy as np
import pytest
from sqlalchemy import create_engine, text
from typer.testing import CliRunner

from pydantic import ValidationError

from common import evaluation
from common.refusals import REASONS
from common.wire import (
    DPSettings,
    EvaluateReply,
    HESettings,
    JobSpec,
    NodeReply,
    ReleaseReply,
    TrainInstruction,
    TrainReply,
    UpdatePayload,
    to_record,
)
from lineage import EventKind
from node_agent import agent as agent_module
from node_agent.agent import NodeAgent
from node_agent.config import NodeConfig, write_node_config
from node_agent.data import read_branch_dataset
from node_agent.egress import EgressBlocked, check_reply
from policies import JobRefusal, load_policy
from sovereign.cli import app
from tests.conftest import EXAMPLES, example_policy, forecast_request


def make_node(tmp_path, small_alliance, policy: str = "domestic_dealer", branch: str = "B002", **settings) -> NodeConfig:
    """A node that takes plaintext, non-DP jobs (node.json require_he false), so the policy is
    what decides."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    db = tmp_path / f"{branch}.db"
    shutil.copy(small_alliance / f"{branch}.db", db)
    config = NodeConfig(branch_id=branch, db_url=f"sqlite:///{db}", node_dir=tmp_path / "node", accept_non_private_jobs=True,
                        require_he=False, **settings)
    write_node_config(config)
    shutil.copy(EXAMPLES / f"{policy}.yaml", config.policy_path)
    return config


def plain_job(**kw) -> JobSpec:
    """DP and HE off: these tests are about the policy, and stay fast."""
    return JobSpec(**{"job_id": "policy-job", "rounds": 1, "local_epochs": 1, "dp": DPSettings(enabled=False),
                      "he": HESettings(enabled=False), **kw})


_JOBS = itertools.count(1)


def train(config: NodeConfig, **kw) -> TrainReply:
    """One job's first round; each call after the first is a new job (a node takes a job's
    round once, and a job id only with the spec it was admitted with)."""
    kw.setdefault("job_id", "policy-job" if not NodeAgent(config).book.get("policy-job") else f"policy-job-{next(_JOBS)}")
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
def _refused_and_recorded(config: NodeConfig, reply, *fragments: str, code: str = "policy") -> None:
    """The reply carries the refusal code and its fixed phrase only; the detail (file, line,
    field) is in the node's lineage, recorded before the refusal reply, the only thing that left."""
    assert (reply.status, reply.code, reply.reason) == ("refused", code, REASONS[code]) and reply.update is None
    refusal, sent = NodeAgent(config).lineage.events()[-2:]
    assert refusal.kind is EventKind.REFUSAL and refusal.details["code"] == code
    for fragment in fragments:
        assert fragment in refusal.details["reason"], refusal.details["reason"]
        assert fragment not in reply.model_dump_json()
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
    # node.json admits marketing as a recipient, so the branch policy is what refuses it
    config = make_node(tmp_path, small_alliance, "strict_dealer", accepted_recipient_roles=["analyst", "marketing"])
    assert train(config).status == "ok"
    reply = train(config, recipient_role="marketing")
    _refused_and_recorded(config, reply, "asks for sales.sale_id, which rule default-deny drops")


def test_node_json_refuses_a_recipient_before_the_policy_is_read(tmp_path, small_alliance):
    config = make_node(tmp_path, small_alliance, "strict_dealer")  # node.json: analysts only (the default)
    reply = train(config, recipient_role="marketing")
    _refused_and_recorded(config, reply, "recipient role 'marketing' is not in node.json", code="recipient")
    assert not NodeAgent(config).lineage.events(kind=EventKind.POLICY_DECISION)


@pytest.mark.parametrize("edit, fragment", [
    (lambda t: t.replace("treatment: drop\n    reason: national IDs", "treatment: scramble\n    reason: national IDs"),
     "policy.yaml:33: rules.0.treatment.kind: Input should be"),
    (lambda t: t.replace("match: {field: sales.customer_phone,", "match: {field: sales.customer_fax,"),
     "policy.yaml:39: rule phone-keyed-hash-for-dedup: unknown field sales.customer_fax"),
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
def _metrics(values=None) -> UpdatePayload:
    scores = {arm: {"mase": 0.8, "smape": 12.0, "mae": 2.0} for arm in evaluation.ARMS}
    return UpdatePayload.plain(evaluation.metric_vector(scores, young=False) if values is None else values)


def test_egress_lets_only_known_replies_of_the_agreed_shape_leave():
    ok = EvaluateReply(status="ok", branch_id="B1", metrics=_metrics())
    check_reply(ok, branch_id="B1")
    check_reply(TrainReply(status="refused", branch_id="B1", code="policy", reason=REASONS["policy"]), branch_id="B1")
    check_reply(ReleaseReply(status="ok", branch_id="B1", values=[0.0] * evaluation.LENGTH), branch_id="B1")
    nan = evaluation.metric_vector({arm: {"mase": 1, "smape": 1, "mae": 1} for arm in evaluation.ARMS}, young=False)
    nan[0] = np.nan
    bad = [
        (ok.model_copy(update={"branch_id": "B2"}), "branch_id"),
        (ok.model_copy(update={"metrics": _metrics(np.arange(evaluation.LENGTH + 6.0))}), "metrics"),  # smuggled values
        (ok.model_copy(update={"metrics": _metrics(nan)}), "metrics"),
        (ok.model_copy(update={"reason": "2024-01: 3 units"}), "reason"),
        (TrainReply(status="ok", branch_id="B1", quarantined={"duplicate_vin:JT1234": 1}), "quarantined"),
        (TrainReply(status="ok", branch_id="B1", update=UpdatePayload.plain(np.array([1.0, np.inf]))), "update"),
        (TrainReply(status="refused", branch_id="B1", code="policy", reason="customer phone +81-90-1234-5678"), "reason"),
        (TrainReply(status="refused", branch_id="B1", code="zelda@example.com", reason=REASONS["policy"]), "reason"),
        (TrainReply(status="refused", branch_id="B1", reason="mail zelda@example.com"), "reason"),
        (ReleaseReply(status="ok", branch_id="B1", values=[1.0, 2.0, 3.0]), "values"),
        (ReleaseReply(status="ok", branch_id="B1", values=[float("inf")] * evaluation.LENGTH), "values"),
    ]
    for reply, field in bad:
        with pytest.raises(EgressBlocked, match=re.escape(f"'{field}'")):
            check_reply(reply, branch_id="B1")
    with pytest.raises(EgressBlocked, match="not a reply the protocol sends"):
        check_reply(NodeReply(status="ok", branch_id="B1"), branch_id="B1")
    # CKKS-ring: a metric vector masked as two digits a value (a large alliance's ring) leaves; three do not
    for digits, leaves in ((2, True), (3, False)):
        ring = ok.model_copy(update={"metrics": UpdatePayload(scheme="CKKS-ring", length=digits * evaluation.LENGTH,
                                                              chunks=[b"\x00" * 64])})
        if leaves:
            check_reply(ring, branch_id="B1")
        else:
            with pytest.raises(EgressBlocked, match="'metrics'"):
                check_reply(ring, branch_id="B1")
    # The evaluation reply's schema has no place for a series, actuals or forecasts at all.
    for field in ("actual", "forecast", "months", "mase"):
        with pytest.raises(ValidationError):
            EvaluateReply(status="ok", branch_id="B1", **{field: [3.0]})
    # Nor the training reply's for a per-node epsilon: with σ fixed it would give away the branch's size.
    for field in ("epsilon", "planned_epsilon", "window_group_epsilon", "window_group_delta"):
        with pytest.raises(ValidationError):
            TrainReply(status="ok", branch_id="B1", **{field: 1.0})


def test_a_bug_upstream_cannot_leak_through_the_egress(tmp_path, small_alliance, monkeypatch):
    """Simulate a bug that appends the branch's held-out actuals to its metric vector."""
    config = make_node(tmp_path, small_alliance)
    agent = NodeAgent(config)
    assert agent.train(TrainInstruction(job=plain_job(), round=1)).status == "ok"  # a node evaluates only a job it trained in
    real_vector, leaked = agent_module.metric_vector, []

    def leaky_vector(scores, **kwargs):
        leaked.extend([4242.125, 4343.25])
        return np.concatenate([real_vector(scores, **kwargs), leaked])

    monkeypatch.setattr(agent_module, "metric_vector", leaky_vector)
    reply = agent.evaluate(TrainInstruction(job=plain_job(), round=1))
    assert (reply.status, reply.code, reply.reason) == ("refused", "egress", REASONS["egress"]) and reply.metrics is None
    wire = str(to_record(reply)["body"])
    assert leaked and not any(f"{v}" in wire for v in leaked)
    detail = agent.lineage.events(kind=EventKind.REFUSAL)[-1].details
    assert detail["code"] == "egress" and "egress check blocked the reply: field 'metrics'" in detail["reason"]


def test_a_refusal_leaves_as_a_code_and_its_phrase_and_the_detail_stays_in_lineage(tmp_path, small_alliance):
    config = make_node(tmp_path, small_alliance)
    agent = NodeAgent(config)
    reply = agent.refused(TrainReply, plain_job(), 1, "data-contract", "row with phone 090-1234-5678 failed")
    assert (reply.status, reply.code, reply.reason) == ("refused", "data-contract", REASONS["data-contract"])
    assert "090-1234-5678" not in json.dumps(reply.model_dump(mode="json"))
    assert "090-1234-5678" in agent.lineage.events(kind=EventKind.REFUSAL)[-1].details["reason"]
    # A code the protocol does not know cannot carry anything out either: the egress turns it into its own refusal.
    odd = agent.refused(TrainReply, plain_job(), 1, "phone-090-1234-5678", "a bug picked a code")
    assert (odd.code, odd.reason) == ("egress", REASONS["egress"])
    assert "090-1234-5678" not in json.dumps(odd.model_dump(mode="json"))
    emitted = [e for e in agent.lineage.events(kind=EventKind.EMISSION)][-2:]
    assert [e.details["status"] for e in emitted] == ["refused", "refused"]
