"""Lineage store at scale: signed, chained append throughput, and the compliance queries on a
store of one million events (SQLite). Goals: at least 5,000 signed, chained events per
second; each compliance query under one second at one million events.

The store is filled the way an alliance fills it: 127 nodes, jobs of 8 rounds, and per node
and round a policy decision, a data read (5 fields), a training record and an emission, plus
approvals, evaluations and the coordinator's aggregations and release. Writes
experiments/results/lineage_bench.json.

    .venv/bin/python experiments/lineage_bench.py                 # 1,000,000 events, ~3 minutes
    .venv/bin/python experiments/lineage_bench.py --events 100000 # a quicker look
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

from lineage import EventKind, LineageEvent, LineageStore, Signer
from lineage.identity import build_card

HERE = Path(__file__).resolve().parent
FIELDS = ["sales.sale_id", "sales.sale_date", "sales.vin", "sales.list_price", "sales.sale_price"]
START = datetime(2026, 1, 1, tzinfo=timezone.utc)
ROUNDS = 8


def job_events(job: int, node: str) -> list[LineageEvent]:
    """One node's events for one job (35 events)."""
    job_id, day = f"job-{job:05d}", START + timedelta(hours=6 * job)
    purpose = ("forecasting", "statistics", "lead-scoring")[job % 3]
    common = {"actor": node, "job_id": job_id, "purpose": purpose, "dataset": "sales", "policy_hash": f"{job % 7:064x}"}
    out = [LineageEvent(kind=EventKind.JOB_APPROVAL, round=1, recorded_at=day, fields=FIELDS, **common)]
    for rnd in range(1, ROUNDS + 1):
        t = day + timedelta(minutes=rnd)
        out += [
            LineageEvent(kind=EventKind.POLICY_DECISION, round=rnd, recorded_at=t, fields=FIELDS,
                         details={"decisions": [{"field": f, "treatment": "allow", "rule": "business-fields"} for f in FIELDS]},
                         **common),
            LineageEvent(kind=EventKind.DATA_READ, round=rnd, recorded_at=t, fields=FIELDS, row_count=1000 + job,
                         content_hash=f"{job * 1000 + rnd:064x}", **common),
            LineageEvent(kind=EventKind.TRAINING, round=rnd, recorded_at=t, details={"steps": 4, "epsilon": 0.9 * rnd}, **common),
            LineageEvent(kind=EventKind.EMISSION, round=rnd, recorded_at=t, digest=emission_digest(job, rnd, node),
                         details={"destination": "coordinator", "message": "train", "status": "ok", "bytes": 131217}, **common),
        ]
    t = day + timedelta(minutes=ROUNDS + 1)
    out += [LineageEvent(kind=EventKind.EVALUATION, round=ROUNDS, recorded_at=t, details={"mase": 0.7}, **common),
            LineageEvent(kind=EventKind.EMISSION, round=ROUNDS, recorded_at=t, digest=f"{job:032x}{int(node[1:]):032x}",
                         details={"destination": "coordinator", "message": "evaluate", "status": "ok", "bytes": 324}, **common)]
    return out


def emission_digest(job: int, rnd: int, node: str) -> str:
    return f"{job:024x}{rnd:08x}{int(node[1:]):032x}"


def coordinator_events(job: int, nodes: list[str]) -> list[LineageEvent]:
    job_id, day = f"job-{job:05d}", START + timedelta(hours=6 * job)
    out = []
    for rnd in range(1, ROUNDS + 1):
        out.append(LineageEvent(kind=EventKind.AGGREGATION, actor="coordinator", job_id=job_id, round=rnd, purpose="forecasting",
                                recorded_at=day + timedelta(minutes=rnd, seconds=30), digest=f"{job:032x}{rnd:032x}",
                                model_version=f"{job_id}/r{rnd}",
                                details={"contributors": {n: emission_digest(job, rnd, n) for n in nodes}}))
    out.append(LineageEvent(kind=EventKind.MODEL_RELEASE, actor="coordinator", job_id=job_id, round=ROUNDS, purpose="forecasting",
                            recorded_at=day + timedelta(minutes=ROUNDS + 2), digest=f"{job:032x}{ROUNDS:032x}",
                            model_version=f"{job_id}/r{ROUNDS}"))
    return out


def timed(fn, repeat: int = 5) -> tuple[float, object]:
    times, result = [], None
    for _ in range(repeat):
        started = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times), result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--nodes", type=int, default=127)
    parser.add_argument("--single", type=int, default=3000, help="events appended one transaction each")
    parser.add_argument("--out", type=Path, default=HERE / "results" / "lineage_bench.json")
    args = parser.parse_args()
    nodes = [f"B{i:03d}" for i in range(1, args.nodes + 1)]
    per_job = 35 * len(nodes) + ROUNDS + 1
    jobs = max(1, args.events // per_job)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        signers = {n: Signer.load_or_create(n, root / "keys" / n) for n in [*nodes, "coordinator"]}

        single = LineageStore(f"sqlite:///{root / 'single.db'}")
        sample = [e for job in range(args.single // 35 + 1) for e in job_events(job, nodes[0])][: args.single]
        started = time.perf_counter()
        for event in sample:
            single.append(event, signers[nodes[0]])
        single_rate = args.single / (time.perf_counter() - started)
        single.close()

        store = LineageStore(f"sqlite:///{root / 'lineage.db'}")
        started, build_seconds, appended = time.perf_counter(), 0.0, 0
        for job in range(jobs):
            for node in nodes:
                t = time.perf_counter()
                batch = job_events(job, node)
                build_seconds += time.perf_counter() - t
                appended += len(store.append_many(batch, signers[node]))
            appended += len(store.append_many(coordinator_events(job, nodes), signers["coordinator"]))
            if job % 20 == 0:
                print(f"  {appended:,} events, {appended / (time.perf_counter() - started - build_seconds):,.0f}/s", flush=True)
        append_seconds = time.perf_counter() - started - build_seconds
        total = store.count()
        size = (root / "lineage.db").stat().st_size

        node, job_id, mid = nodes[len(nodes) // 2], f"job-{jobs // 2:05d}", START + timedelta(hours=6 * (jobs // 2))
        queries = {
            "by node (one node's events in one day)": lambda: store.events(actor=node, since=mid, until=mid + timedelta(days=1)),
            "by dataset at a node (one job)": lambda: store.events(dataset="sales", actor=node, job_id=job_id),
            "which jobs used field F at node N": lambda: store.jobs_using_field("sales.vin", actor=node),
            "by job (all nodes)": lambda: store.events(job_id=job_id),
            "by purpose in a time range (one day)": lambda: store.events(purpose="statistics", since=mid, until=mid + timedelta(days=1)),
            "by time range (ten minutes)": lambda: store.events(since=mid, until=mid + timedelta(minutes=10)),
            "what left node N in job J": lambda: store.emissions(node, job_id),
            "what data contributed to model version V (identity card)": lambda: build_card(
                store, {n: store for n in nodes}, f"{job_id}/r{ROUNDS}"),
        }
        results = {}
        for name, query in queries.items():
            seconds, found = timed(query)
            rows = len(found) if isinstance(found, list) else len(found.nodes)
            results[name] = {"seconds": round(seconds, 4), "rows": rows}
            print(f"  {name}: {seconds * 1000:.1f} ms ({rows} rows)", flush=True)
        verify_seconds, reports = timed(lambda: store.verify({node: signers[node].public_key}, actors=[node]), repeat=1)
        store.close()
    report = {
        "benchmark": "lineage_store", "backend": "sqlite (WAL)", "events": total, "nodes": len(nodes), "jobs": jobs,
        "store_megabytes": round(size / 1e6, 1),
        "append": {
            "batched_events_per_second": round(appended / append_seconds),
            "batch": "one transaction per node per job (35 events)",
            "single_events_per_second": round(single_rate),
            "single": "one transaction per event",
            "goal_events_per_second": 5000,
        },
        "queries_seconds": results,
        "query_goal_seconds": 1.0,
        "verify_one_node_chain": {"events": reports[0].events, "seconds": round(verify_seconds, 2), "ok": reports[0].ok},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
