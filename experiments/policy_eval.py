"""How long the policy engine takes per field: a 200-field schema against a 100-rule policy;
and what treating every row at read costs a node (one branch read under each example policy).

The engine is pure Python over pydantic models and runs once per job and dataset, so the
goal is well under a millisecond per field. The read comparison is a ratio measured in one
run: the foreign and strict policies keyed-hash every VIN and generalise every date and price,
the domestic one releases them as they are. Writes experiments/results/policy_eval.json.

    .venv/bin/python experiments/policy_eval.py
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

from policies.document import JobRequest, PolicyDocument
from policies.rules import evaluate

HERE = Path(__file__).resolve().parent
CLASSES = ["public", "internal", "confidential", "personal", "restricted"]
TREATMENTS = ["allow", "drop", {"hash": "node-key"}, {"mask": {"show_last": 4}}, {"generalise": "month"}, "null", "redact"]


def build(fields: int, rules: int) -> tuple[PolicyDocument, dict[str, list[str]]]:
    columns = [f"f{i:03d}" for i in range(fields)]
    tables = {"wide": {c: CLASSES[i % len(CLASSES)] for i, c in enumerate(columns)}}
    rule_list = []
    for i in range(rules - 1):  # specific rules first, most of which match nothing for this job
        treatment = TREATMENTS[i % len(TREATMENTS)]
        if CLASSES[(i * 7) % fields % len(CLASSES)] == "restricted":
            treatment = "drop"
        rule_list.append({"id": f"r{i:03d}", "match": {"field": f"wide.{columns[(i * 7) % fields]}",
                                                        "purpose": ["statistics", "forecasting"][i % 2],
                                                        "cross_border": bool(i % 3)}, "treatment": treatment})
    rule_list.append({"id": "catch-all", "match": {"class": ["public", "internal"]}, "treatment": "allow"})
    policy = PolicyDocument.model_validate(
        {"policy": "bench", "version": 1, "jurisdiction": "JP", "tables": tables, "rules": rule_list}
    )
    return policy, {"wide": columns}


def read_costs(repeat: int) -> dict:
    """Median seconds to read the largest simulated branch under each example policy."""
    from node_agent.data import fields_needed, read_branch_dataset
    from policies import load_policy
    from sovereign.simulation.dealers import simulate_alliance

    examples = HERE.parent / "policies" / "examples"
    request = JobRequest(job_id="bench", purpose="forecasting", destination="JP", fields=fields_needed("monthly_units"))
    with tempfile.TemporaryDirectory() as tmp:
        simulate_alliance(20, 7, Path(tmp))
        db = max(Path(tmp).glob("*.db"), key=lambda p: p.stat().st_size)
        url = f"sqlite:///{db}"
        declared = {name: load_policy(examples / f"{name}.yaml") for name in ("domestic_dealer", "foreign_dealer", "strict_dealer")}
        times: dict[str, list[float]] = {name: [] for name in declared}
        for _ in range(repeat):  # interleaved, so machine noise hits every policy alike
            for name, policy in declared.items():
                started = time.perf_counter()
                data = read_branch_dataset(url, policy, request, key=b"k" * 32)
                times[name].append(time.perf_counter() - started)
        rows = data.row_count
    median = {name: statistics.median(t) for name, t in times.items()}
    return {
        "rows": rows,
        "median_seconds": {name: round(t, 4) for name, t in median.items()},
        "microseconds_per_row": {name: round(t / rows * 1e6, 1) for name, t in median.items()},
        "ratio_to_domestic": {name: round(t / median["domestic_dealer"], 2) for name, t in median.items()},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--fields", type=int, default=200)
    parser.add_argument("--rules", type=int, default=100)
    parser.add_argument("--repeat", type=int, default=50)
    parser.add_argument("--out", type=Path, default=HERE / "results" / "policy_eval.json")
    args = parser.parse_args()
    policy, schema = build(args.fields, args.rules)
    job = JobRequest(job_id="bench", purpose="forecasting", destination="KR")
    evaluate(policy, schema, job)  # warm up
    times = []
    for _ in range(args.repeat):
        started = time.perf_counter()
        decisions = evaluate(policy, schema, job)
        times.append(time.perf_counter() - started)
    best, median = min(times), sorted(times)[len(times) // 2]
    report = {
        "benchmark": "policy_eval", "fields": args.fields, "rules": args.rules, "repeat": args.repeat,
        "seconds_per_evaluation": {"best": round(best, 6), "median": round(median, 6)},
        "microseconds_per_field": {"best": round(best / args.fields * 1e6, 2), "median": round(median / args.fields * 1e6, 2)},
        "decisions": len(decisions),
        "read_under_policy": read_costs(max(3, args.repeat // 10)),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
