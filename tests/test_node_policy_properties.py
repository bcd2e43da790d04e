"""Property, at the node agent: whatever the branch's policy, schema and the job asking, no
value of a restricted, unclassified or untreated personal field ever appears in anything the
node agent produces: its replies to the coordinator (the only things that leave) and, stricter
still, its own lineage records. Canary values fill every such column of a real SQLite branch
database; the agent really trains and evaluates when the policy lets it."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import yaml
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from sqlalchemy import create_engine, text

from common.refusals import REASONS
from common.wire import DPSettings, HESettings, JobSpec, TrainInstruction, to_record
from node_agent.agent import NodeAgent
from node_agent.config import NodeConfig, write_node_config
from tests.policy_strategies import CLASSES, PURPOSES, ROLES, rule_dicts

REQUIRED = ["sale_id", "sale_date", "vin", "list_price", "sale_price"]
PERSONAL = ["customer_name", "customer_phone", "customer_national_id"]
EXTRA = ["loyalty_tier", "trade_in_notes"]
TREATMENTS = ["allow", "drop", "redact", "null", {"hash": "node-key"}, {"mask": {"show_last": 3}},
              {"generalise": "month"}, {"generalise": "year"}, {"generalise": {"to": "bucket", "width": 5000}},
              {"generalise": {"to": "prefix", "keep": 3}}]
# A prefix that makes the required fields usable, so that many examples really train.
FORECAST_FRIENDLY = [
    {"id": "ff-dates", "match": {"field": "sales.sale_date"}, "treatment": {"generalise": "month"}},
    {"id": "ff-vin", "match": {"field": "sales.vin"}, "treatment": {"hash": "node-key"}},
    {"id": "ff-rest", "match": {"field": ["sales.sale_id", "sales.list_price", "sales.sale_price"]}, "treatment": "allow"},
]
MONTHS = 30


def canary(column: str, i: int) -> str:
    return f"CANARY{column.upper().replace('_', '')}{i:05d}Q"


@st.composite
def scenario(draw):
    columns = REQUIRED + PERSONAL + [c for c in EXTRA if draw(st.booleans())]
    classes = {}
    for c in columns:
        # Any level or none (schema drift), weighted so that a fair share of jobs can run at all.
        levels = CLASSES + ["personal"] * 4 + [None] if c in PERSONAL + EXTRA else CLASSES + CLASSES[:4] * 3 + [None]
        choice = draw(st.sampled_from(levels))
        if choice is not None:
            classes[c] = choice
    rules = list(FORECAST_FRIENDLY) if draw(st.integers(0, 3)) else []
    rules += draw(rule_dicts([f"sales.{c}" for c in columns], TREATMENTS, max_rules=6))
    if draw(st.booleans()):
        rules = rules[len(FORECAST_FRIENDLY):] + rules[: len(FORECAST_FRIENDLY)]  # friendly rules last
    policy = {"policy": "random", "version": 1, "jurisdiction": "JP", "tables": {"sales": classes}, "rules": rules}
    job = {"purpose": draw(st.sampled_from(PURPOSES)), "destination": draw(st.sampled_from(["JP", "KR"])),
           "recipient_role": draw(st.sampled_from(ROLES))}
    return columns, policy, job


def write_branch(db: Path, columns: list[str]) -> None:
    engine = create_engine(f"sqlite:///{db}")
    with engine.begin() as conn:
        conn.execute(text(f"CREATE TABLE sales ({', '.join(columns)})"))
        rows = []
        for i in range(MONTHS * 2):
            year, month = 2022 + (i // 2) // 12, (i // 2) % 12 + 1
            row = {c: canary(c, i) for c in columns}
            row.update(sale_id=i + 1, sale_date=f"{year}-{month:02d}-{(i % 27) + 1:02d}",
                       vin=canary("vin", i), list_price=31000.0 + i, sale_price=29500.0 + i)
            rows.append(row)
        conn.execute(text(f"INSERT INTO sales VALUES ({', '.join(':' + c for c in columns)})"), rows)
    engine.dispose()


def wire_text(reply) -> str:
    """Everything a reply puts on the wire (JSON body and payload bytes), as searchable text."""
    out = []
    for record in to_record(reply).values():
        for value in record.values():
            for v in value if isinstance(value, list) else [value]:
                out.append(v.decode("latin-1") if isinstance(v, bytes) else str(v))
    return "\n".join(out)


def protected(column: str, policy: dict, decisions: dict) -> bool:
    """Restricted, unclassified, or personal that no rule gives a treatment (the acceptance's set)."""
    cls = policy["tables"]["sales"].get(column)
    untreated = decisions.get(f"sales.{column}", {}).get("rule") in (None, "default-deny", "deny-unclassified")
    return cls in (None, "restricted") or (cls == "personal" and untreated)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(scenario())
def test_protected_values_never_leave_the_node_agent(case):
    columns, policy, job_kw = case
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        write_branch(root / "branch.db", columns)
        # node.json takes plaintext non-DP jobs, for any purpose and role the job draws, its coordinator in the
        # country the job names: the branch policy alone decides (a KR coordinator makes the job cross-border).
        config = NodeConfig(branch_id="B900", db_url=f"sqlite:///{root / 'branch.db'}", node_dir=root / "node",
                            accept_non_private_jobs=True, require_he=False, accepted_purposes=list(PURPOSES),
                            accepted_recipient_roles=list(ROLES), coordinator_jurisdiction=job_kw["destination"])
        write_node_config(config)
        config.policy_path.write_text(yaml.safe_dump(policy, sort_keys=False))
        job = JobSpec(job_id="prop-job", rounds=1, local_epochs=1, holdout=3, lags=6, horizon=3,
                      dp=DPSettings(enabled=False), he=HESettings(enabled=False), **job_kw)
        agent = NodeAgent(config)
        train = agent.train(TrainInstruction(job=job, round=1))
        evaluation = agent.evaluate(TrainInstruction(job=job, round=1))
        event(f"train {train.status} {train.code or ''}")
        for reply in (train, evaluation):  # a refusal leaves as a known code and its fixed phrase, nothing else
            assert reply.status == "ok" or (reply.code in REASONS and reply.reason == REASONS[reply.code]), reply
            assert reply.code not in ("purpose", "recipient", "destination", "encryption-required", "dp-required")
        sent = wire_text(train) + wire_text(evaluation)
        recorded = json.dumps([e.model_dump(mode="json") for e in agent.lineage.events()])
        report = config.node_dir / "reports" / f"{job.job_id}.json"  # the branch's own forecast report, on the node
        kept = report.read_text() if report.exists() else ""
        agent.lineage.close()
    decisions = {}
    for e in json.loads(recorded):
        if e["kind"] == "policy_decision":
            decisions = {d["field"]: d for d in e["details"]["decisions"]}
    if train.status == "ok":
        assert decisions, "a job that ran has its policy decisions in lineage"
    for column in columns:
        if column in ("sale_id", "sale_date", "list_price", "sale_price"):
            continue  # numbers and dates: their values are not distinctive enough to search for
        values = [canary(column, i) for i in range(MONTHS * 2)]
        if protected(column, policy, decisions):
            assert not any(v in sent for v in values), (column, "sent")
            assert not any(v in recorded for v in values), (column, "recorded")
        # Stricter: no row value of any column is ever sent, recorded or kept in a report, treated or not.
        assert not any(v in sent or v in recorded or v in kept for v in values), column
