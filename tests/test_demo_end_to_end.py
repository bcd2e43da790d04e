"""One real joint forecast (Flower simulation runtime, Opacus, CKKS) on a small alliance,
with canary PII seeded into a branch: it must appear in nothing the coordinator receives,
stores or logs. One run serves every assertion here, to keep the suite fast.

While the demo runs, a Python audit hook records every file this process (the coordinator's
and analyst's) opens and every SQLite database it connects to: the dealers' side runs in its
own processes and the node agents in Flower's workers, so no dealer database and no node key
may show up here."""

from __future__ import annotations

import fnmatch
import io
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest
from rich.console import Console
from sqlalchemy import create_engine, text

from common import evaluation
from common.he import decrypt_vector, encrypt_vector, load_context, EncryptedVector
from lineage import EventKind, LineageStore
from sovereign.demo import DemoOptions, run_demo

CANARY_NAME = "Zelda Canarywhistle-7Q"
CANARY_ID = "CANARY-ID-93170245"

# ------------------------------------------------------------------ the audit of this process
_AUDITING = False  # the hook below records only while run_demo runs
_AUDIT_INSTALLED = False
OPENED: list[tuple[str, str]] = []  # (event, path) for every `open` and `sqlite3.connect` in this process


def _audit(event: str, args: tuple) -> None:
    if not _AUDITING or event not in ("open", "sqlite3.connect"):
        return
    target = args[0] if args else None
    if isinstance(target, (str, bytes, os.PathLike)):
        OPENED.append((event, os.fsdecode(target)))


def _install_audit_hook() -> None:
    global _AUDIT_INSTALLED
    if not _AUDIT_INSTALLED:  # an audit hook cannot be removed: install it once, gate it by the flag
        sys.addaudithook(_audit)
        _AUDIT_INSTALLED = True


def _audited_path(path: str) -> Path:
    """An opened or connected name as a resolved path ('file:' URIs and their query stripped)."""
    if path.startswith("file:"):
        path = path.removeprefix("file:").split("?", 1)[0]
    return Path(path).resolve()


class Recorder:
    """Captures every byte of every reply the coordinator receives, and each reply's JSON body
    by message type."""

    def __init__(self) -> None:
        self.payloads: list[bytes] = []
        self.bodies: list[tuple[str, dict, dict]] = []  # (message type, JSON body, the record's other keys)

    def round_started(self, rnd, total_rounds, nodes):
        pass

    def round_finished(self, report):
        pass

    def reply_received(self, rnd, message):
        if message.has_content():
            body = message.content["body"]
            self.bodies.append((message.metadata.message_type, json.loads(body["json"]),
                                {k: v for k, v in body.items() if k != "json"}))
            for record in message.content.values():
                for value in record.values():
                    items = value if isinstance(value, list) else [value]
                    for v in items:
                        self.payloads.append(v if isinstance(v, bytes) else str(v).encode())


def _ray_logs_since(started: float) -> list[Path]:
    """The log folders of every Ray session begun since `started`: this demo's (`session_latest`
    may name another process's), and any other begun meanwhile, none of which may hold a canary."""
    root = Path(tempfile.gettempdir()) / "ray"
    return [p / "logs" for p in root.glob("session_2*") if (p / "logs").is_dir() and p.stat().st_mtime >= started - 1]


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory, small_alliance):
    root = tmp_path_factory.mktemp("demo")
    dealers = root / "dealers"
    shutil.copytree(small_alliance, dealers)
    profiles = json.loads((dealers / "alliance.json").read_text())
    canary_branch = min(profiles, key=lambda p: p["history_start"])["branch_id"]  # longest history: it trains
    engine = create_engine(f"sqlite:///{dealers / f'{canary_branch}.db'}")
    with engine.begin() as conn:  # a valid sale whose customer is our canary
        conn.execute(
            text("UPDATE sales SET customer_name = :n, customer_national_id = :i WHERE sale_id = 3"),
            {"n": CANARY_NAME, "i": CANARY_ID},
        )
    engine.dispose()
    out = root / "run"
    recorder = Recorder()
    console_text = io.StringIO()
    global _AUDITING
    _install_audit_hook()
    OPENED.clear()
    _AUDITING = True
    started = time.time()
    try:
        summary = run_demo(
            DemoOptions(branches=6, rounds=2, seed=3, out=out, data=dealers),
            Console(file=console_text, width=120),
            observers=(recorder,),
        )
    finally:
        _AUDITING = False
    return {
        "opened": list(OPENED),
        "summary": summary, "out": out, "dealers": dealers, "recorder": recorder,
        "console": console_text.getvalue(), "canary_branch": canary_branch,
        "ray_logs": _ray_logs_since(started),
    }


def test_summary_and_report_are_written(demo_run):
    out = demo_run["out"]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["branches"] == 6 and summary["rounds"] == 2
    assert summary["quarantined_rows"] == {}  # read off raw rows: under customer-level privacy they stay on the nodes
    for method in ("federated", "local", "central", "seasonal_naive"):
        assert summary["mase"][method] > 0 and summary["smape"][method] > 0
    assert summary["epsilon"]["max"] == 8.0 and summary["epsilon"]["delta"] == 1e-5  # the job's bound, not a node's spend
    assert "per_node" not in summary["epsilon"]  # exact spends would reveal sizes: they stay in each node's ledger
    result = json.loads((out / "coordinator" / "result.json").read_text())
    for branch in result["rounds"][0]["contributors"]:  # every node that trained spent within its plan
        from node_agent.config import load_node_config
        from node_agent.ledger import PrivacyLedger

        config = load_node_config(out / "nodes" / branch)
        spend = PrivacyLedger(config.ledger_url).get("sales", summary["job_id"])
        assert 7.9 <= spend.planned_epsilon <= 8.0 and 7.5 < spend.epsilon <= spend.planned_epsilon * 1.001
    window = summary["epsilon"]["window_level"]  # what the window-level epsilon alone means for one customer's sale
    assert window["windows_per_month"] == 18 and window["epsilon"] == pytest.approx(18 * summary["epsilon"]["max"], rel=0.01)
    assert window["meaningful"] is False
    customer = summary["epsilon"]["customer"]  # the customer-level guarantee over everything the nodes released
    assert customer["meaningful"] is True and customer["epsilon"] <= 1.0 and customer["delta"] <= 1e-6
    assert customer["window"]["years"] == 7 and customer["epsilon"] < customer["every_year_epsilon"] < 7
    from node_agent.customer_ledger import CustomerLedger

    for branch in result["rounds"][0]["contributors"]:  # each node's ledger holds every year to that promise
        config = load_node_config(out / "nodes" / branch)
        spent = CustomerLedger(config.ledger_url).standing("sales", config.customer_privacy.delta)
        assert spent and max(spent.values()) <= customer["requested_epsilon"] + 1e-9
    assert summary["he"]["scheme"] == "CKKS" and summary["he"]["poly_modulus_degree"] == 8192
    assert summary["he"]["bytes_per_round"] > 100_000  # real ciphertexts, not floats
    assert set(summary["lineage"]["nodes"]) == {f"B00{i}" for i in range(1, 7)}
    # Each training branch's impossible rows, counted per reason in its own lineage (the simulator plants them).
    counted = [LineageStore(summary["lineage"]["nodes"][b]).events(kind=EventKind.QUARANTINE, job_id=summary["job_id"])
               for b in result["rounds"][0]["contributors"]]
    assert sum(1 for events in counted if events) >= 4
    for events in filter(None, counted):
        assert {"unparseable_date", "future_sale_date", "negative_price", "duplicate_vin"} <= set(events[0].details["reasons"])
    # Alliance-level figures only: no branch's own scores or forecasts in the analyst's files.
    assert "per_branch" not in summary
    evaluated = summary["evaluated_by"]
    assert summary["branches_evaluated"] == len(evaluated) >= 3
    # a branch too young to train still evaluates: it adds up the signed updates the model sums
    # ... and a store too new to score (under two months to train on) sits out, counted by its code
    assert set(summary["evaluation_refusals"].values()) <= {"too-little-history"}
    assert set(summary["refusals"]) <= set(evaluated) | set(summary["evaluation_refusals"])
    for key in ("new_stores", "launch_window"):
        group = summary[key]
        assert group["released"] is (group["nodes"] >= 3)
        if not group["released"]:
            assert all(v is None for k, v in group["mase"].items())
    assert summary["released_by"] == evaluated[:3]  # three contributors each checked, re-added and decrypted the same sum
    assert set(summary["mase"]) == {*evaluation.ARMS, "best_local", "central"}
    best = summary["best_local_arm"]  # the strongest statistical method a branch runs alone is the yardstick
    assert best in evaluation.STATISTICAL_ARMS and summary["mase"]["best_local"] == min(
        summary["mase"][arm] for arm in evaluation.STATISTICAL_ARMS)
    assert summary["federated_vs_best_local_mase_improvement"] == pytest.approx(
        1 - summary["mase"]["federated"] / summary["mase"]["best_local"], abs=1e-4)
    versus = summary["federated_vs_best_local"]
    assert versus["arm"] == best and 0 <= versus["federated_better_on"] <= len(evaluated)
    low, high = versus["interval95"]
    assert low <= versus["geomean"] <= high
    assert summary["central"]["all"]["nodes"] == summary["branches_evaluated"]  # the pooled experiment, same branches
    young = summary["young_branches"]
    assert young["released"] is (young["nodes"] >= 3)  # a group under each node's min_contributors stays zeroed
    if not young["released"]:
        assert all(v is None for v in young["mase"].values())
    result = json.loads((out / "coordinator" / "result.json").read_text())
    assert "evaluations" not in result and result["metrics"]["all"]["nodes"] == len(evaluated)
    assert result["metrics"]["all"]["federated"]["mase"] == summary["mase"]["federated"]
    html = (out / "report.html").read_text()
    assert html.count("data:image/png;base64,") == 3 and "Joint forecast" in html  # accuracy, forecast and rounds plots
    assert "Accuracy (alliance level)" in html and "Forecast: units sold in the months ahead" in html
    # the deliverable: the alliance's units for the months ahead, with intervals, over every evaluated branch
    alliance = summary["forecast"]["alliance"]
    assert alliance["nodes"] == len(evaluated) and len(alliance["point"]) == summary["horizon_months"]
    assert all(lo95 <= lo80 <= p <= hi80 <= hi95 for lo95, lo80, p, hi80, hi95 in zip(
        alliance["low95"], alliance["low80"], alliance["point"], alliance["high80"], alliance["high95"]))
    released = [g for g in summary["forecast"]["regions"].values() if g["nodes"]]
    assert all(g["nodes"] >= 3 for g in released)  # no region over fewer than the nodes' minimum
    assert set(summary["interval_coverage"]) == {"80", "95"}
    assert "round 2" in demo_run["console"]


def test_the_coordinators_process_opens_no_dealer_database_and_no_node_key(demo_run):
    """The audit hook's record of this process while the demo ran: the coordinator's own files
    (its lineage store, the public context) are there; no dealer database and no node-side
    secret (lineage or policy key, alliance secret key, privacy ledger, node lineage store)."""
    out, dealers = demo_run["out"].resolve(), demo_run["dealers"].resolve()
    opened = [(event, _audited_path(path)) for event, path in demo_run["opened"]]
    # Positive control: the hook saw this process's own reads and connections.
    assert ("sqlite3.connect", out / "coordinator" / "lineage.db") in opened
    assert ("open", out / "coordinator" / "he" / "public.ctx") in opened
    forbidden = [str(dealers / "*.db"), str(out / "dealers" / "*.db")] + [
        str(out / "nodes" / "*" / pattern) for pattern in ("keys/*", "he/*", "privacy/*", "lineage.db", "lineage.db-*")
    ]
    touched = sorted({str(path) for _, path in opened if any(fnmatch.fnmatch(str(path), f) for f in forbidden)})
    assert not touched, touched
    # And the node-side files do exist: the dealers' side and the node agents made and used them.
    for branch in demo_run["summary"]["lineage"]["nodes"]:
        node = out / "nodes" / branch
        assert (node / "he" / "secret.ctx").is_file() and (node / "lineage.db").is_file()
        assert (node / "privacy" / "ledger.db").is_file() and any((node / "keys").iterdir())


def test_evaluate_replies_carry_no_held_out_series(demo_run):
    """Each node's held-out actuals and forecasts stay in its own report; what the coordinator
    received from the evaluation is a signed body and an encrypted metric vector."""
    summary, out = demo_run["summary"], demo_run["out"]
    evaluations = [(body, payload) for kind, body, payload in demo_run["recorder"].bodies if kind == "evaluate"]
    assert len(evaluations) == summary["branches"]
    for body, payload in evaluations:
        assert not {"actual", "forecast", "months", "mase", "smape", "scores"} & set(body), body
        if body["status"] == "ok":
            assert payload["metrics.scheme"] == "CKKS" and payload["metrics.length"] == evaluation.LENGTH
            assert body["signature"] and body["lineage_head"]
    queries = [body for kind, body, _ in demo_run["recorder"].bodies if kind == "query"]
    commitments = [b for b in queries if b.get("commitment")]
    releases = [b for b in queries if b.get("values")]
    assert len(commitments) == len(summary["evaluated_by"])  # every contributor signed the one set
    assert releases and all(len(b["values"]) == evaluation.LENGTH for b in releases)
    received = demo_run["recorder"].payloads
    for branch in summary["evaluated_by"]:
        report = json.loads((out / "nodes" / branch / "reports" / f"{summary['job_id']}.json").read_text())
        actual, federated = report["actual"], report["forecasts"]["federated"]
        assert len(actual) == len(report["months"]) == summary["holdout_months"]  # positive control: the node has them
        needles = [json.dumps(actual).encode(), ", ".join(f"{v:g}" for v in actual).encode(),
                   np.asarray(actual, dtype=np.float64).tobytes(), json.dumps(federated).encode(),
                   json.dumps(report["months"]).encode()]
        for blob in received:
            assert not any(n in blob for n in needles), branch


def test_canary_pii_never_reaches_the_coordinator(demo_run):
    needles = [CANARY_NAME.encode(), CANARY_ID.encode()]
    # Positive control: the canary is really in the branch database.
    raw_db = (demo_run["dealers"] / f"{demo_run['canary_branch']}.db").read_bytes()
    assert all(n in raw_db for n in needles)
    received = demo_run["recorder"].payloads
    assert len(received) >= 6 * 3  # two training rounds and one evaluation from every node
    for payload in received:
        assert not any(n in payload for n in needles)
    coordinator_files = [p for p in (demo_run["out"] / "coordinator").rglob("*") if p.is_file()]
    assert any(p.name == "lineage.db" for p in coordinator_files)
    for path in coordinator_files + [demo_run["out"] / "summary.json", demo_run["out"] / "report.html"]:
        data = path.read_bytes()
        assert not any(n in data for n in needles), path
    assert not any(n.decode() in demo_run["console"] for n in needles)
    # Nor in the runtime's own logs (Ray's session logs from this run).
    assert demo_run["ray_logs"], "the demo left no Ray session logs to check"
    ray_logs = [p for logs in demo_run["ray_logs"] for p in logs.rglob("*") if p.is_file()]
    for path in ray_logs:
        assert not any(n in path.read_bytes() for n in needles), path


def test_coordinator_files_hold_no_secret_key(demo_run):
    out = demo_run["out"]
    public = load_context((out / "coordinator" / "he" / "public.ctx").read_bytes())
    assert not public.has_secret_key()
    secret = load_context((out / "nodes" / demo_run["canary_branch"] / "he" / "secret.ctx").read_bytes())
    enc = encrypt_vector(secret, [1.0, 2.0])
    with pytest.raises(PermissionError):
        decrypt_vector(public, EncryptedVector(length=2, chunks=enc.chunks))
    assert not any("secret" in p.name for p in (out / "coordinator").rglob("*"))


def test_lineage_traces_every_read_and_every_contribution(demo_run):
    canary_branch = demo_run["canary_branch"]
    summary = demo_run["summary"]
    coordinator = LineageStore(summary["lineage"]["coordinator"])
    aggregations = coordinator.events(kind=EventKind.AGGREGATION)
    assert [a.round for a in aggregations] == [1, 2]
    for branch, url in summary["lineage"]["nodes"].items():
        store = LineageStore(url)
        reads = store.events(job_id=summary["job_id"], kind=EventKind.DATA_READ)
        assert len(reads) >= 2 and all(r.content_hash and r.policy_hash for r in reads)
        emissions = store.emissions(branch, summary["job_id"])
        updates = [e for e in emissions if e.details["message"] == "train" and e.details["status"] == "ok"]
        assert [e.details["message"] for e in emissions].count("evaluate") == 1  # every reply that left is recorded
        if branch in aggregations[0].details["contributors"]:
            assert len(updates) == 2
            for agg, emission in zip(aggregations, updates):
                assert agg.details["contributors"][branch] == emission.digest
                assert agg.details["node_heads"][branch] == [emission.seq, emission.event_hash]
        else:  # a branch that sat out says why, in its own lineage, and sent no update
            assert not updates and store.events(job_id=summary["job_id"], kind=EventKind.REFUSAL)
    assert canary_branch in aggregations[0].details["contributors"]  # the canary branch took part
    assert len(aggregations[0].details["contributors"]) >= 4


def test_each_branch_obeys_its_own_policy_across_the_border(demo_run):
    """The demo's Japanese coordinator: Chinese and Korean branches run the foreign-dealer
    policy with their own jurisdiction, so the same job reaches them as cross-border."""
    summary = demo_run["summary"]
    countries = {p["branch_id"]: p["country"] for p in json.loads((demo_run["dealers"] / "alliance.json").read_text())}
    assert {"JP", "CN", "KR"} <= set(countries.values())
    for branch, declared in summary["node_policies"].items():
        abroad = countries[branch] != "JP"
        assert declared["policy"] == ("foreign-dealer" if abroad else "domestic-dealer")
        assert declared["jurisdiction"] == countries[branch] and declared["cross_border"] is abroad
        assert declared["treatments"]["sales.vin"] == ("keyed hash (HMAC-SHA256, node key)" if abroad else "allow")
        store = LineageStore(summary["lineage"]["nodes"][branch])
        assert store.events(kind=EventKind.POLICY_CHANGE)[0].policy_hash == declared["hash"]
        decisions = store.events(job_id=summary["job_id"], kind=EventKind.POLICY_DECISION)
        assert len(decisions) >= 2 and all(e.policy_hash == declared["hash"] for e in decisions)
        by_field = {d["field"]: d for d in decisions[0].details["decisions"]}
        assert by_field["sales.vin"]["kind"] == ("hash" if abroad else "allow")
        assert by_field["sales.sale_date"]["kind"] == ("generalise" if abroad else "allow")
        assert by_field["sales.customer_national_id"]["kind"] == "drop"
    html = (demo_run["out"] / "report.html").read_text()
    assert "Branch policies" in html and "foreign-dealer v3" in html


def test_every_store_of_the_run_verifies_and_a_tampered_copy_is_caught(demo_run, tmp_path):
    from typer.testing import CliRunner

    from sovereign.cli import app

    runner = CliRunner()
    ok = runner.invoke(app, ["lineage", "verify", "--run", str(demo_run["out"])])
    assert ok.exit_code == 0, ok.output
    assert ok.output.count("verified") == 7 and "unanchored" not in ok.output  # coordinator + 6 nodes, published keys
    copy = tmp_path / "run"
    shutil.copytree(demo_run["out"], copy)
    branch = demo_run["canary_branch"]
    engine = create_engine(f"sqlite:///{copy / 'nodes' / branch / 'lineage.db'}")
    with engine.begin() as conn:  # hide how many rows a read used
        seq = conn.execute(text("SELECT min(seq) FROM lineage_chain_events WHERE kind = 'data_read'")).scalar()
        conn.execute(text("UPDATE lineage_chain_events SET row_count = 1 WHERE seq = :s"), {"s": seq})
    engine.dispose()
    edited = runner.invoke(app, ["lineage", "verify", "--run", str(copy)])
    assert edited.exit_code == 1 and f"{branch} event {seq} (data_read" in edited.output and "(edited)" in edited.output


def test_a_node_deleting_its_newest_events_is_caught_by_the_coordinators_anchors(demo_run, tmp_path):
    from typer.testing import CliRunner

    from sovereign.cli import app

    copy = tmp_path / "run"
    shutil.copytree(demo_run["out"], copy)
    branch = demo_run["canary_branch"]
    engine = create_engine(f"sqlite:///{copy / 'nodes' / branch / 'lineage.db'}")
    with engine.begin() as conn:  # delete everything from the last update it sent, and fix the head row
        last = conn.execute(text("SELECT max(seq) FROM lineage_chain_events WHERE kind = 'emission' AND digest IN "
                                 "(SELECT digest FROM lineage_chain_events WHERE kind = 'emission' "
                                 "AND details LIKE '%\"scheme\"%')")).scalar()
        conn.execute(text("DELETE FROM lineage_chain_fields WHERE seq >= :s"), {"s": last})
        conn.execute(text("DELETE FROM lineage_chain_events WHERE seq >= :s"), {"s": last})
        conn.execute(text("UPDATE lineage_chain_heads SET seq = :p, event_hash = "
                          "(SELECT event_hash FROM lineage_chain_events WHERE seq = :p)"), {"p": last - 1})
    engine.dispose()
    result = CliRunner().invoke(app, ["lineage", "verify", "--run", str(copy)])
    assert result.exit_code == 1 and f"published a head at event {last}" in result.output


def test_model_identity_card_traces_every_emission_to_datasets_and_fields(demo_run):
    from lineage.identity import build_card

    summary = demo_run["summary"]
    coordinator = LineageStore(summary["lineage"]["coordinator"])
    nodes = {b: LineageStore(url) for b, url in summary["lineage"]["nodes"].items()}
    card = build_card(coordinator, nodes)  # the newest released model
    assert card.complete, card.missing
    assert card.released and card.digest == summary["final_model_digest"] and card.model_version.endswith("/r2")
    aggregations = coordinator.events(kind=EventKind.AGGREGATION)
    assert [r.round for r in card.rounds] == [1, 2]
    behind = {(node, digest) for a in aggregations for node, digest in a.details["contributors"].items()}
    listed = {(node, link.digest) for node, c in card.nodes.items() for link in c.emissions if link.found}
    assert listed == behind  # every node emission behind the model, each found in its node's chain
    for node, contribution in card.nodes.items():
        assert contribution.datasets == ["sales"]
        assert contribution.fields == sorted(["sales.sale_id", "sales.sale_date", "sales.vin", "sales.list_price",
                                              "sales.sale_price", "sales.customer_id"])
        assert contribution.reads and all(r.content_hash and r.policy_hash for r in contribution.reads)
        abroad = summary["node_policies"][node]["cross_border"]
        assert contribution.treatments["sales.vin"] == ("keyed hash (HMAC-SHA256, node key)" if abroad else "allow")
    # A model version that was never made is a one-line error, not an empty card.
    from typer.testing import CliRunner

    from sovereign.cli import app

    missing = CliRunner().invoke(app, ["lineage", "card", "--run", str(demo_run["out"]), "--model", "nope/r9"])
    assert missing.exit_code == 2 and "no model version or digest 'nope/r9'" in missing.output


def test_openlineage_export_validates_against_the_spec(demo_run, tmp_path):
    from jsonschema import Draft202012Validator
    from referencing import Registry, Resource
    from typer.testing import CliRunner

    from sovereign.cli import app

    spec_dir = Path(__file__).parent / "data" / "openlineage"
    spec = json.loads((spec_dir / "OpenLineage.json").read_text())
    facet = json.loads((spec_dir / "SchemaDatasetFacet.json").read_text())
    registry = Registry().with_resources([(s["$id"], Resource.from_contents(s)) for s in (spec, facet)])
    run_event = Draft202012Validator(spec, registry=registry, format_checker=Draft202012Validator.FORMAT_CHECKER)
    schema_facet = Draft202012Validator({"$ref": facet["$id"] + "#/$defs/SchemaDatasetFacet"}, registry=registry,
                                        format_checker=Draft202012Validator.FORMAT_CHECKER)
    out = tmp_path / "openlineage.json"
    job_id = demo_run["summary"]["job_id"]
    result = CliRunner().invoke(app, ["lineage", "export", "--run", str(demo_run["out"]), "--job", job_id, "--out", str(out)])
    assert result.exit_code == 0, result.output
    events = json.loads(out.read_text())
    assert len(events) == 2 * 7  # START and COMPLETE/FAIL for the coordinator and every node
    for event in events:
        errors = sorted(run_event.iter_errors(event), key=lambda e: e.path)
        assert not errors, (event["job"], errors[0].message)
        for dataset in event.get("inputs", []):
            if "schema" in dataset.get("facets", {}):
                assert not list(schema_facet.iter_errors(dataset["facets"]["schema"]))
    coordinator_done = next(e for e in events if e["job"]["namespace"].endswith("/coordinator") and e["eventType"] == "COMPLETE")
    assert any(o["name"].startswith("model/") for o in coordinator_done["outputs"])
    assert len(coordinator_done["inputs"]) >= 4  # the node emissions it summed
    # The validator is not a rubber stamp: a broken event fails it.
    broken = {**events[0], "run": {"runId": "not-a-uuid"}}
    assert list(run_event.iter_errors(broken))
