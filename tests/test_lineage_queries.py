"""Compliance queries and exports over a signed store: by node, dataset, field, job, purpose
and time range; JSON lines, CSV and the HTML report; bad CLI input in one line."""

from __future__ import annotations

import csv
import io
import json
from datetime import datetime, timedelta, timezone

import pytest
from typer.testing import CliRunner

from lineage import ChainFault, EventKind, LineageEvent, LineageStore, Signer
from lineage.export import to_csv, to_html, to_jsonl
from sovereign.cli import app

T0 = datetime(2026, 11, 1, tzinfo=timezone.utc)


@pytest.fixture
def store(tmp_path):
    store = LineageStore(f"sqlite:///{tmp_path / 'lineage.db'}")
    signers = {a: Signer.load_or_create(a, tmp_path / a) for a in ("B001", "B002")}
    for day in range(10):
        for actor, signer in signers.items():
            purpose = "forecasting" if day % 2 == 0 else "statistics"
            fields = ["sales.sale_date", "sales.vin"] if actor == "B001" else ["sales.sale_date"]
            store.append(LineageEvent(kind=EventKind.DATA_READ, actor=actor, job_id=f"job-{day}", round=1, purpose=purpose,
                                      dataset="sales", fields=fields, row_count=10 * day, recorded_at=T0 + timedelta(days=day),
                                      content_hash=f"{day:064x}"), signer)
            store.append(LineageEvent(kind=EventKind.EMISSION, actor=actor, job_id=f"job-{day}", round=1, purpose=purpose,
                                      digest=f"{day + 100:064x}", recorded_at=T0 + timedelta(days=day, hours=1),
                                      details={"destination": "coordinator", "message": "train", "bytes": 1000 + day}), signer)
    yield store, signers, tmp_path
    store.close()


def test_compliance_queries(store):
    store_, _, _ = store
    assert store_.jobs_using_field("sales.vin", actor="B001") == [f"job-{d}" for d in range(10)]
    assert store_.jobs_using_field("sales.vin", actor="B002") == []
    assert store_.jobs_using_field("sales.sale_date") == [f"job-{d}" for d in range(10)]
    left = store_.emissions("B002", "job-3")
    assert [(e.digest, e.details["bytes"]) for e in left] == [(f"{103:064x}", 1003)]
    window = store_.events(since=T0 + timedelta(days=2), until=T0 + timedelta(days=4))
    assert {e.job_id for e in window} == {"job-2", "job-3"} and len(window) == 8
    assert {e.job_id for e in store_.events(purpose="statistics", actor="B001", kind=EventKind.DATA_READ)} == {
        f"job-{d}" for d in range(1, 10, 2)}
    assert len(store_.events(dataset="sales")) == 20 and len(store_.events(field="sales.vin")) == 10
    assert [e.seq for e in store_.events(actor="B001")] == list(range(1, 21))  # chain order is time order


def test_exports_carry_the_chain(store):
    store_, signers, _ = store
    events = store_.events(actor="B001")
    lines = [json.loads(line) for line in to_jsonl(events).splitlines()]
    assert len(lines) == 20 and all(len(line["event_hash"]) == 64 and line["signature"] for line in lines)
    assert lines[0]["recorded_at"] == "2026-11-01T00:00:00.000000Z"
    rows = list(csv.DictReader(io.StringIO(to_csv(events))))
    assert len(rows) == 20 and rows[0]["fields"] == "sales.sale_date;sales.vin" and rows[1]["kind"] == "emission"
    reports = store_.verify({a: s.public_key for a, s in signers.items()})
    page = to_html(store_.events(), title="report", reports=reports)
    assert page.count("verified") == 2 and "TAMPERED" not in page and "job-7" in page
    broken = reports[0].model_copy(update={"fault": ChainFault(actor="B001", seq=3, event_id="x", problem="edited",
                                                               message="B001 event 3: content does not match its hash (edited)")})
    assert "TAMPERED: B001 event 3" in to_html(events, title="r", reports=[broken])


def test_the_html_report_shows_what_a_node_wrote_as_text_and_runs_no_script():
    bait = "<img src=x onerror=alert(1)>"
    events = [LineageEvent(kind=kind, actor="B001", job_id="j<b>", purpose="forecasting", digest="d" * 64,
                           details={"bytes": bait, "message": bait, "destination": bait, "reason": bait})
              for kind in (EventKind.EMISSION, EventKind.REFUSAL)]
    page = to_html(events, title="report <script>")
    assert "<img" not in page and "<script>" not in page and "j<b>" not in page
    assert page.count("&lt;img src=x onerror=alert(1)&gt;") >= 4
    assert "default-src 'none'" in page  # opened from disk, it still runs nothing


def test_cli_queries_and_one_line_errors(store):
    store_, signers, tmp_path = store
    runner = CliRunner()
    url = store_.url
    jobs = runner.invoke(app, ["lineage", "jobs-using", "sales.vin", "--store", url, "--node", "B001"])
    assert jobs.exit_code == 0 and "job-9" in jobs.output
    keys = [f"--public-key={a}={tmp_path / a / 'lineage-ed25519.pub'}" for a in signers]
    verified = runner.invoke(app, ["lineage", "verify", "--store", url, *keys])
    assert verified.exit_code == 0 and verified.output.count("published key") == 2
    listed = runner.invoke(app, ["lineage", "events", "--store", url, "--node", "B002", "--since", "2026-11-08", "--json"])
    assert listed.exit_code == 0 and len(listed.output.splitlines()) == 6  # days 7, 8 and 9: a read and an emission each
    for args, message in [
        (["lineage", "verify", "--store", str(tmp_path / "nope.db")], "no lineage store there"),
        (["lineage", "verify"], "name the stores"),
        (["lineage", "events", "--store", url, "--kind", "gossip"], "--kind gossip: not one of"),
        (["lineage", "events", "--store", url, "--since", "yesterday"], "--since yesterday: not an ISO date"),
        (["lineage", "verify", "--store", url, "--public-key", "B001"], "expected ACTOR=FILE"),
        (["lineage", "verify", "--store", url, "--public-key", f"B001={tmp_path / 'lineage.db'}"], "not a PEM public key"),
        (["lineage", "export", "--store", url, "--format", "pdf", "--out", str(tmp_path / "x")], "--format pdf"),
    ]:
        result = runner.invoke(app, args)
        assert result.exit_code == 2 and message in result.output, (args, result.output)
        assert "Traceback" not in result.output
    not_a_store = tmp_path / "plain.txt"
    not_a_store.write_text("hello")
    result = runner.invoke(app, ["lineage", "verify", "--store", str(not_a_store)])
    assert result.exit_code == 2 and "cannot open lineage store" in result.output


def test_reading_never_writes_to_a_database_that_is_not_a_lineage_store(tmp_path, small_alliance):
    import shutil

    from sqlalchemy import create_engine, inspect

    dealer = tmp_path / "dealer.db"
    shutil.copy(small_alliance / "B001.db", dealer)
    before = set(inspect(create_engine(f"sqlite:///{dealer}")).get_table_names())
    result = CliRunner().invoke(app, ["lineage", "verify", "--store", str(dealer)])
    assert result.exit_code == 2 and "not a lineage store" in result.output
    assert set(inspect(create_engine(f"sqlite:///{dealer}")).get_table_names()) == before


def test_jobs_are_listed_an_unknown_job_is_an_error_and_refusals_say_why(store):
    store_, signers, _ = store
    store_.append(LineageEvent(kind=EventKind.REFUSAL, actor="B001", job_id="job-3", round=2, purpose="forecasting",
                               details={"code": "replay", "reason": "round 2 again: round 2 was already taken"}),
                  signers["B001"])
    runner = CliRunner(env={"COLUMNS": "200"})
    listed = runner.invoke(app, ["lineage", "jobs", "--store", store_.url])
    assert listed.exit_code == 0 and "10 jobs in lineage" in listed.output and "job-0" in listed.output
    unknown = runner.invoke(app, ["lineage", "events", "--store", store_.url, "--job", "job-42"])
    assert unknown.exit_code == 1 and "--job job-42: no lineage store here records this job" in unknown.output
    refusals = runner.invoke(app, ["lineage", "events", "--store", store_.url, "--kind", "refusal"])
    assert refusals.exit_code == 0 and "replay: round 2 again: round 2 was already taken" in refusals.output
    empty = runner.invoke(app, ["lineage", "events", "--store", store_.url, "--job", "job-3", "--kind", "aggregation"])
    assert empty.exit_code == 0 and "0 lineage events" in empty.output  # a known job with nothing of that kind
