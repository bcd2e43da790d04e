"""Lineage out of the store, in the forms auditors and their tools read: OpenLineage
RunEvents, JSON lines, CSV, and an HTML compliance report. Pure functions over events; the
caller writes the files.

OpenLineage mapping: each (actor, job) is one run. Its START event carries the datasets the
actor read (with a schema facet of the fields used and a facet of the policy treatments); its
COMPLETE event carries what the actor produced: a node's emissions, or the coordinator's
model versions (whose inputs are the node emissions it summed). Every run event also carries
a `sovereign_lineage` run facet listing the chain events behind it (seq, kind, hash), so the
export can be checked against the signed store.
"""

from __future__ import annotations

import csv
import html
import io
import json
import uuid
from collections import defaultdict
from collections.abc import Iterable

from lineage.chain import ChainReport
from lineage.models import EventKind, LineageEvent, format_time

PRODUCER = "https://github.com/sovereign-fl/sovereign"
SCHEMA_URL = "https://openlineage.io/spec/2-0-2/OpenLineage.json#/$defs/RunEvent"
SCHEMA_FACET_URL = "https://openlineage.io/spec/facets/1-2-0/SchemaDatasetFacet.json#/$defs/SchemaDatasetFacet"
FACET_URL = PRODUCER + "/blob/main/lineage/export.py#{name}"
RUN_NAMESPACE = uuid.UUID("6f1c4b0e-6c1f-4c55-9e5e-2f5b0d1a9c01")


def _facet(name: str, **content) -> dict:
    return {"_producer": PRODUCER, "_schemaURL": FACET_URL.format(name=name), **content}


def run_id(actor: str, job_id: str) -> str:
    """Stable per (actor, job): re-exporting gives the same run ids."""
    return str(uuid.uuid5(RUN_NAMESPACE, f"{actor}/{job_id}"))


def to_openlineage(events: Iterable[LineageEvent], *, namespace: str = "sovereign") -> list[dict]:
    """START and COMPLETE RunEvents per (actor, job), in time order."""
    runs: dict[tuple[str, str], list[LineageEvent]] = defaultdict(list)
    for event in events:
        runs[(event.actor, event.job_id)].append(event)
    out = []
    for (actor, job_id), chain in runs.items():
        chain.sort(key=lambda e: (e.seq or 0, e.recorded_at))
        base = {
            "producer": PRODUCER, "schemaURL": SCHEMA_URL,
            "run": {"runId": run_id(actor, job_id), "facets": {"sovereign_lineage": _facet(
                "sovereign_lineage", actor=actor, purpose=chain[0].purpose,
                events=[{"seq": e.seq, "kind": e.kind.value, "round": e.round, "event_hash": e.event_hash} for e in chain],
            )}},
            "job": {"namespace": f"{namespace}/{actor}", "name": job_id},
        }
        inputs = _inputs(actor, chain)
        out.append({**base, "eventType": "START", "eventTime": format_time(chain[0].recorded_at), "inputs": inputs,
                    "outputs": []})
        refused = any(e.kind == EventKind.REFUSAL for e in chain) and not _outputs(actor, chain)
        out.append({**base, "eventType": "FAIL" if refused else "COMPLETE", "eventTime": format_time(chain[-1].recorded_at),
                    "inputs": inputs, "outputs": _outputs(actor, chain)})
    return sorted(out, key=lambda e: (e["eventTime"], e["eventType"] != "START"))


def _inputs(actor: str, chain: list[LineageEvent]) -> list[dict]:
    datasets: dict[str, dict] = {}
    for event in chain:
        if event.kind == EventKind.DATA_READ and event.dataset:
            entry = datasets.setdefault(event.dataset, {"fields": [], "reads": []})
            entry["fields"] = list(dict.fromkeys(entry["fields"] + event.fields))
            entry["reads"].append({"round": event.round, "row_count": event.row_count, "content_hash": event.content_hash})
        if event.kind == EventKind.AGGREGATION:  # the coordinator's inputs: the node emissions it summed
            for node, digest in event.details.get("contributors", {}).items():
                datasets[f"{node}:{digest}"] = {"node": node, "digest": digest, "round": event.round}
    treatments, policy = {}, {}
    for event in chain:
        if event.kind == EventKind.POLICY_DECISION:
            treatments = {d["field"]: {"treatment": d["treatment"], "rule": d["rule"]} for d in event.details.get("decisions", [])
                          if d["field"] in event.fields}
            policy = {"policy": event.details.get("policy"), "version": event.details.get("version"),
                      "policy_hash": event.policy_hash}
    inputs = []
    for name, entry in datasets.items():
        if "digest" in entry:
            inputs.append({"namespace": f"sovereign://{entry['node']}", "name": f"emission/{entry['digest']}",
                           "facets": {"sovereign_emission": _facet("sovereign_emission", digest=entry["digest"],
                                                                   round=entry["round"])}})
            continue
        schema = {"_producer": PRODUCER, "_schemaURL": SCHEMA_FACET_URL,
                  "fields": [{"name": f.split(".", 1)[-1], "description": treatments.get(f, {}).get("treatment", "")}
                             for f in entry["fields"]]}
        input_facets = {"sovereign_read": _facet("sovereign_read", reads=entry["reads"])}
        if treatments:
            input_facets["sovereign_policy"] = _facet("sovereign_policy", **policy, treatments=treatments)
        inputs.append({"namespace": f"sovereign://{actor}", "name": name, "facets": {"schema": schema},
                       "inputFacets": input_facets})
    return inputs


def _outputs(actor: str, chain: list[LineageEvent]) -> list[dict]:
    outputs = []
    for event in chain:
        if event.kind == EventKind.EMISSION and event.digest:
            outputs.append({
                "namespace": f"sovereign://{event.details.get('destination', 'coordinator')}",
                "name": f"emission/{event.digest}",
                "outputFacets": {"sovereign_emission": _facet(
                    "sovereign_emission", round=event.round, message=event.details.get("message"),
                    status=event.details.get("status"), bytes=event.details.get("bytes"), scheme=event.details.get("scheme"))},
            })
        if event.kind in (EventKind.AGGREGATION, EventKind.MODEL_RELEASE) and event.model_version:
            outputs.append({
                "namespace": f"sovereign://{actor}", "name": f"model/{event.model_version}",
                "outputFacets": {"sovereign_model": _facet("sovereign_model", digest=event.digest, round=event.round,
                                                           released=event.kind == EventKind.MODEL_RELEASE)},
            })
    return outputs


FLAT_COLUMNS = ("actor", "seq", "recorded_at", "kind", "job_id", "round", "purpose", "dataset", "fields", "row_count",
                "content_hash", "policy_hash", "digest", "model_version", "details", "event_id", "prev_hash",
                "event_hash", "signer", "signature")


def _flat(event: LineageEvent) -> dict:
    row = event.model_dump(mode="json")
    row["recorded_at"] = format_time(event.recorded_at)
    row["fields"] = ";".join(event.fields)
    row["details"] = json.dumps(event.details, sort_keys=True, ensure_ascii=False)
    return {c: row[c] for c in FLAT_COLUMNS}


def to_jsonl(events: Iterable[LineageEvent]) -> str:
    """One event per line, every field including the chain (hashes, signature)."""
    return "".join(json.dumps({**e.model_dump(mode="json"), "recorded_at": format_time(e.recorded_at)},
                              ensure_ascii=False, sort_keys=True) + "\n" for e in events)


def to_csv(events: Iterable[LineageEvent]) -> str:
    """A flat table (fields `;`-separated, details as JSON) for spreadsheets."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=FLAT_COLUMNS)
    writer.writeheader()
    for event in events:
        writer.writerow(_flat(event))
    return buffer.getvalue()


def to_html(events: list[LineageEvent], *, title: str, reports: list[ChainReport] = ()) -> str:
    """A compliance report a person reads: integrity first, then what was used, what left, what was refused."""
    esc = html.escape
    integrity = "".join(
        f"<tr><td>{esc(r.actor)}</td><td>{r.events}</td><td class={'ok' if r.ok else 'bad'}>"
        f"{'verified' if r.ok else 'TAMPERED: ' + esc(r.fault.message)}</td><td>{esc(r.key_source)}</td></tr>"
        for r in reports
    )
    uses = defaultdict(set)
    for e in events:
        if e.kind == EventKind.DATA_READ:
            for f in e.fields:
                uses[(e.actor, e.dataset or "", f)].add(e.job_id)
    use_rows = "".join(f"<tr><td>{esc(a)}</td><td>{esc(d)}</td><td>{esc(f)}</td><td>{esc(', '.join(sorted(jobs)))}</td></tr>"
                       for (a, d, f), jobs in sorted(uses.items()))
    left = "".join(
        f"<tr><td>{esc(e.actor)}</td><td>{esc(e.job_id)}</td><td>{e.round if e.round is not None else ''}</td>"
        f"<td>{esc(str(e.details.get('message', '')))} {esc(str(e.details.get('status', '')))}</td>"
        f"<td>{esc(str(e.details.get('destination', '')))}</td><td>{esc(str(e.details.get('bytes', '')))}</td>"
        f"<td><code>{esc((e.digest or '')[:16])}</code></td></tr>"
        for e in events if e.kind == EventKind.EMISSION
    )
    refusals = "".join(f"<tr><td>{esc(e.actor)}</td><td>{esc(e.job_id)}</td><td>{esc(str(e.details.get('reason', '')))}</td></tr>"
                       for e in events if e.kind == EventKind.REFUSAL)
    timeline = "".join(
        f"<tr><td>{esc(e.actor)}</td><td>{e.seq}</td><td>{format_time(e.recorded_at)}</td><td>{esc(e.kind.value)}</td>"
        f"<td>{esc(e.job_id)}</td><td>{'' if e.round is None else e.round}</td><td>{esc(e.purpose)}</td>"
        f"<td><code>{esc((e.event_hash or '')[:16])}</code></td></tr>"
        for e in events
    )

    def table(head: str, rows: str, empty: str) -> str:
        return f"<table><tr>{head}</tr>{rows}</table>" if rows else f"<p>{empty}</p>"

    # A node writes its own events' details: the report escapes every value, and runs no script whatever it holds.
    return f"""<!doctype html><html><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; style-src 'unsafe-inline'"><title>{esc(title)}</title>
<style>body{{font-family:system-ui,sans-serif;margin:2em;max-width:1400px}}table{{border-collapse:collapse;margin-bottom:1em}}
td,th{{border:1px solid #ddd;padding:3px 8px;text-align:left}}.ok{{color:#1a7f37}}.bad{{color:#cf222e;font-weight:bold}}</style>
</head><body><h1>{esc(title)}</h1><p>{len(events)} lineage events.</p>
<h2>Integrity</h2>{table("<th>chain</th><th>events</th><th>status</th><th>key</th>", integrity, "Not verified.")}
<h2>Which fields were used, by which jobs</h2>{table("<th>node</th><th>dataset</th><th>field</th><th>jobs</th>", use_rows, "No data was read.")}
<h2>What left</h2>{table("<th>node</th><th>job</th><th>round</th><th>message</th><th>to</th><th>bytes</th><th>digest</th>", left, "Nothing left.")}
<h2>Refusals</h2>{table("<th>node</th><th>job</th><th>reason</th>", refusals, "No refusals.")}
<h2>Every event</h2>{table("<th>actor</th><th>seq</th><th>time (UTC)</th><th>kind</th><th>job</th><th>round</th><th>purpose</th><th>hash</th>", timeline, "")}
</body></html>"""
