"""`sovereign lineage ...`: what a compliance officer runs to check and read lineage.

Stores are named either one by one (`--store URL`, with `--public-key ACTOR=FILE` for the
keys to verify against) or as a whole embedded run (`--run runs/demo`: the coordinator's store
and every node's, verified against the node keys the coordinator registered). Neither side is
trusted: the node chain heads the coordinator recorded (in any of its events) anchor the node
chains, and the coordinator heads the nodes recorded (with each instruction they answered)
are held against the coordinator's chain and key (`lineage.anchors`).
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from lineage.audit import AuditScope
from sovereign.cli.console import err, fail

lineage_app = typer.Typer(help="Verify, query and export the tamper-evident lineage stores.", no_args_is_help=True)
console = Console(width=160) if not Console().is_terminal else Console()

RUN_HELP = "An embedded run directory (e.g. runs/demo): its coordinator and node stores."
STORE_HELP = "A lineage store's SQLAlchemy URL, or a path to a SQLite file (repeatable)."
KEY_HELP = "ACTOR=FILE: the PEM public key to verify ACTOR's signatures against (repeatable)."


def _open_store(where: str):
    from lineage import LineageStore, LineageStoreError

    url = where if "://" in where else f"sqlite:///{Path(where).resolve()}"
    if url.startswith("sqlite:///") and not Path(url.removeprefix("sqlite:///")).is_file():
        fail(f"{where}: no lineage store there")
    try:
        return LineageStore(url, create=False)  # reading never creates tables in what it is pointed at
    except LineageStoreError as exc:
        fail(str(exc))


def _load_key(path: Path, label: str):
    from lineage import SigningKeyError, load_public_key

    try:
        return load_public_key(path)
    except SigningKeyError as exc:
        fail(f"{label}: {exc}")


def open_stores(run: Path | None, stores: list[str], public_keys: list[str]) -> AuditScope:
    from lineage import LineageStoreError, SigningKeyError
    from lineage.audit import add_run

    if not run and not stores:
        fail("name the stores: --run DIR or --store URL")
    found = AuditScope()
    if run:
        if not run.is_dir():
            fail(f"--run {run}: no such directory")
        try:
            add_run(found, run / "coordinator", run / "nodes")
        except (LineageStoreError, SigningKeyError) as exc:
            fail(f"--run {run}: {exc}")
        if not found.stores:
            fail(f"--run {run}: no lineage stores under coordinator/ or nodes/*/")
    for where in stores:
        found.stores[where] = _open_store(where)
    for spec in public_keys:
        actor, sep, path = spec.partition("=")
        if not sep or not actor or not path:
            fail(f"--public-key {spec}: expected ACTOR=FILE")
        found.keys[actor] = _load_key(Path(path), f"--public-key {actor}")
    return found


@lineage_app.command("verify")
def verify_cmd(
    run: Path = typer.Option(None, help=RUN_HELP),
    store: list[str] = typer.Option([], help=STORE_HELP),
    public_key: list[str] = typer.Option([], help=KEY_HELP),
) -> None:
    """Check every chain and signature; name the first edited, deleted, reordered or inserted event."""
    found = open_stores(run, store, public_key)
    table = Table(title="lineage integrity")
    for column in ("store", "chain", "events", "status", "key checked against"):
        table.add_column(column, overflow="fold")
    bad = 0
    for label, reports in found.verify().items():
        for report in reports:
            status = "[green]verified[/]" if report.ok else f"[red]{escape(report.fault.message)}[/]"
            key = "the actor's published key" if report.key_source == "given" else "the key listed in the store (unanchored)"
            table.add_row(label, report.actor, str(report.events), status, key)
            bad += not report.ok
    for chain, message in found.cross_check():
        table.add_row("cross-check", chain, "", f"[red]{escape(message)}[/]", "")
        bad += 1
    console.print(table)
    if bad:
        err.print(f"{bad} chain(s) failed verification", highlight=False)
        raise typer.Exit(1)


def _since(value: str | None, option: str) -> datetime | None:
    if value is None:
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        fail(f"{option} {value}: not an ISO date or time (e.g. 2026-11-23 or 2026-11-23T10:00)")
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)  # lineage keeps UTC


@lineage_app.command("events")
def events_cmd(
    run: Path = typer.Option(None, help=RUN_HELP),
    store: list[str] = typer.Option([], help=STORE_HELP),
    node: str = typer.Option(None, help="Only events of this actor (a branch id, or 'coordinator')."),
    job: str = typer.Option(None, help="Only events of this job."),
    kind: str = typer.Option(None, help="Only this kind (data_read, policy_decision, emission, aggregation, ...)."),
    dataset: str = typer.Option(None, help="Only events about this dataset (e.g. sales)."),
    field_name: str = typer.Option(None, "--field", help="Only events that name this field (e.g. sales.vin)."),
    purpose: str = typer.Option(None, help="Only events of jobs with this purpose."),
    since: str = typer.Option(None, help="From this time (ISO 8601; UTC unless it names a zone)."),
    until: str = typer.Option(None, help="Before this time (ISO 8601; UTC unless it names a zone)."),
    as_json: bool = typer.Option(False, "--json", help="JSON lines instead of a table."),
) -> None:
    """List lineage events matching every filter given, oldest first."""
    from lineage import EventKind
    from lineage.export import to_jsonl

    if kind is not None and kind not in {k.value for k in EventKind}:
        fail(f"--kind {kind}: not one of {', '.join(k.value for k in EventKind)}")
    found = open_stores(run, store, [])
    events = found.events(actor=node, job_id=job, kind=kind, dataset=dataset, field=field_name, purpose=purpose,
                          since=_since(since, "--since"), until=_since(until, "--until"))
    if job is not None and not events and not found.events(job_id=job):
        fail(f"--job {job}: no lineage store here records this job (sovereign lineage jobs lists the ones that do)", 1)
    if as_json:
        typer.echo(to_jsonl(events), nl=False)
        return
    table = Table(title=f"{len(events)} lineage events")
    for column in ("time (UTC)", "actor", "seq", "kind", "job", "round", "fields", "why / what"):
        table.add_column(column, overflow="fold")
    for e in events:
        table.add_row(e.recorded_at.strftime("%Y-%m-%d %H:%M:%S"), e.actor, str(e.seq), e.kind.value, e.job_id,
                      "" if e.round is None else str(e.round), ", ".join(e.fields), gist(e))
    console.print(table)


def gist(event) -> str:
    """One line of what an event says: a refusal's code and reason, a decision, a state, a digest."""
    d = event.details
    if "code" in d or "reason" in d:
        head = " ".join(str(x) for x in (d.get("code"), d.get("decision") or d.get("state")) if x)
        return f"{head}: {d.get('reason', '')}".strip(": ") if head else str(d.get("reason", ""))
    if "decision" in d or "state" in d:
        return str(d.get("decision") or d.get("state"))
    return (event.digest or "")[:16]


@lineage_app.command("jobs")
def jobs_cmd(
    run: Path = typer.Option(None, help=RUN_HELP),
    store: list[str] = typer.Option([], help=STORE_HELP),
) -> None:
    """Every job the stores record: when it was first and last seen, its purpose, who recorded it, refusals."""
    from lineage import EventKind

    found = open_stores(run, store, [])
    jobs: dict[str, dict] = {}
    for e in found.events():
        j = jobs.setdefault(e.job_id, {"first": e.recorded_at, "last": e.recorded_at, "purposes": set(), "actors": set(),
                                       "events": 0, "refusals": 0})
        j["first"], j["last"] = min(j["first"], e.recorded_at), max(j["last"], e.recorded_at)
        if e.purpose and e.purpose != "-":
            j["purposes"].add(e.purpose)
        j["actors"].add(e.actor)
        j["events"] += 1
        j["refusals"] += e.kind is EventKind.REFUSAL
    if not jobs:
        console.print("no job recorded")
        return
    table = Table(title=f"{len(jobs)} jobs in lineage")
    for column in ("job", "first seen (UTC)", "last seen", "purpose", "actors", "events", "refusals"):
        table.add_column(column, overflow="fold")
    for job_id, j in sorted(jobs.items(), key=lambda kv: kv[1]["first"]):
        table.add_row(job_id, j["first"].strftime("%Y-%m-%d %H:%M:%S"), j["last"].strftime("%Y-%m-%d %H:%M:%S"),
                      ", ".join(sorted(j["purposes"])), str(len(j["actors"])), str(j["events"]), str(j["refusals"]))
    console.print(table)


@lineage_app.command("jobs-using")
def jobs_using_cmd(
    field_name: str = typer.Argument(..., metavar="FIELD", help="table.column, e.g. sales.vin"),
    run: Path = typer.Option(None, help=RUN_HELP),
    store: list[str] = typer.Option([], help=STORE_HELP),
    node: str = typer.Option(None, help="Only at this node."),
) -> None:
    """Which jobs read FIELD (at a node)?"""
    found = open_stores(run, store, [])
    rows = {(label, job) for label, s in found.stores.items() for job in s.jobs_using_field(field_name, actor=node)}
    if not rows:
        console.print(f"no job read {field_name}" + (f" at {node}" if node else ""))
        return
    table = Table(title=f"jobs that read {field_name}" + (f" at {node}" if node else ""))
    table.add_column("store")
    table.add_column("job")
    for label, job in sorted(rows):
        table.add_row(label, job)
    console.print(table)


@lineage_app.command("what-left")
def what_left_cmd(
    node: str = typer.Option(..., help="The node (branch id)."),
    job: str = typer.Option(..., help="The job."),
    run: Path = typer.Option(None, help=RUN_HELP),
    store: list[str] = typer.Option([], help=STORE_HELP),
) -> None:
    """Everything node NODE sent in job JOB: each reply, its digest, bytes and destination."""
    found = open_stores(run, store, [])
    sent = [e for s in found.stores.values() for e in s.emissions(node, job)]
    table = Table(title=f"what left {node} in {job}: {len(sent)} messages, {sum(e.details.get('bytes', 0) for e in sent):,} bytes")
    for column in ("round", "message", "status", "to", "bytes", "what", "digest"):
        table.add_column(column, overflow="fold")
    for e in sent:
        what = e.details.get("scheme") or ", ".join(e.details.get("fields_sent", []))
        table.add_row("" if e.round is None else str(e.round), str(e.details.get("message", "")), str(e.details.get("status", "")),
                      str(e.details.get("destination", "")), f"{e.details.get('bytes', 0):,}", what, (e.digest or "")[:16])
    console.print(table)


@lineage_app.command("card")
def card_cmd(
    run: Path = typer.Option(..., help=RUN_HELP),
    model: str = typer.Option(None, help="Model version (JOB/rN) or digest; default: the newest released model."),
    as_json: bool = typer.Option(False, "--json", help="The card as JSON."),
) -> None:
    """The model identity card: every node emission behind a model, and through them every
    dataset and field read, with the policy treatments that applied."""
    from lineage.identity import CardError, build_card

    found = open_stores(run, [], [])
    if "coordinator" not in found.stores:
        fail(f"--run {run}: no coordinator lineage store")
    nodes = {label: s for label, s in found.stores.items() if label != "coordinator"}
    try:
        card = build_card(found.stores["coordinator"], nodes, model)
    except CardError as exc:
        fail(str(exc))
    if as_json:
        typer.echo(card.model_dump_json(indent=2))
        return
    console.print(f"[bold]model {card.model_version}[/] digest {card.digest}, job {card.job_id} ({card.purpose}), "
                  f"{'released' if card.released else 'not released'}, {len(card.rounds)} rounds, {len(card.nodes)} nodes")
    table = Table(title="what the model is made of")
    for column in ("node", "updates sent (found in node lineage)", "datasets", "fields read, as treated", "rows per read", "policy"):
        table.add_column(column, overflow="fold")
    for node, c in card.nodes.items():
        found_links = sum(link.found for link in c.emissions)
        fields = ", ".join(f"{f} ({c.treatments[f]})" if f in c.treatments else f for f in c.fields)
        rows = sorted({r.row_count for r in c.reads if r.row_count is not None})
        table.add_row(node, f"{found_links}/{len(c.emissions)}", ", ".join(c.datasets), fields,
                      ", ".join(str(r) for r in rows), "; ".join(c.policies))
    console.print(table)
    if card.missing:
        for line in card.missing:
            err.print(f"missing: {line}", highlight=False)
        raise typer.Exit(1)


@lineage_app.command("export")
def export_cmd(
    out: Path = typer.Option(..., help="The file to write."),
    format_: str = typer.Option("openlineage", "--format", help="openlineage (JSON array of RunEvents), jsonl, csv or html."),
    run: Path = typer.Option(None, help=RUN_HELP),
    store: list[str] = typer.Option([], help=STORE_HELP),
    public_key: list[str] = typer.Option([], help=KEY_HELP),
    job: str = typer.Option(None, help="Only this job."),
    node: str = typer.Option(None, help="Only this node (actor)."),
) -> None:
    """Write lineage for a job or a node as OpenLineage RunEvents, JSON lines, CSV, or an HTML
    compliance report (which starts with the integrity check)."""
    from lineage.export import to_csv, to_html, to_jsonl, to_openlineage

    if format_ not in ("openlineage", "jsonl", "csv", "html"):
        fail(f"--format {format_}: choose openlineage, jsonl, csv or html")
    found = open_stores(run, store, public_key)
    events = found.events(job_id=job, actor=node)
    if format_ == "openlineage":
        text = json.dumps(to_openlineage(events), indent=2)
    elif format_ == "jsonl":
        text = to_jsonl(events)
    elif format_ == "csv":
        text = to_csv(events)
    else:
        reports = found.reports({e.actor for e in events})
        scope = " ".join(p for p in (f"job {job}" if job else "", f"node {node}" if node else "") if p) or "all lineage"
        text = to_html(events, title=f"Sovereign compliance report: {scope}", reports=reports)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    console.print(f"wrote {len(events)} events as {format_} to {out}")
