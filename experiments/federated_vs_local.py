"""How much better is the federated forecast than each branch alone, across seeds?

Runs the real demo (Flower simulation, DP-SGD, CKKS) on several simulated alliances and, for
scale, the error of an oracle that knows each branch's true expected demand: no forecaster
can beat it on average, so `1 - oracle / local` bounds the improvement any model could show
on that alliance. Writes experiments/results/federated_vs_local.json.

    .venv/bin/python experiments/federated_vs_local.py --seeds 1 2 3 --branches 20
"""

from __future__ import annotations

import argparse
import io
import json
import platform
import time
from datetime import date
from pathlib import Path

import numpy as np
from rich.console import Console

from common.metrics import score
from sovereign.demo import DemoOptions, run_demo
from sovereign.simulation.dealers import BranchProfile, monthly_demand

HERE = Path(__file__).resolve().parent


def oracle_mase(dealers: Path, job_id: str, seed: int, out: Path) -> dict[str, float]:
    """MASE of the true expected demand on each branch's held-out months. A simulator-side
    experiment: it reads each node's own report (which never leaves a real node)."""
    profiles = {p["branch_id"]: BranchProfile(**p) for p in json.loads((dealers / "alliance.json").read_text())}
    scores = {}
    for report_file in sorted((out / "nodes").glob(f"*/reports/{job_id}.json")):
        report = json.loads(report_file.read_text())
        months = [date(int(m[:4]), int(m[5:]), 1) for m in report["months"]]
        expected = monthly_demand(profiles[report["branch_id"]], months, seed)
        history = _history(report_file.parents[1], len(months))
        scores[report["branch_id"]] = score(np.asarray(report["actual"]), expected, history)["mase"]
    return scores


def _history(node_dir: Path, holdout: int) -> np.ndarray:
    """The branch's training months, read by its own agent under its own policy."""
    from common.wire import JobSpec
    from node_agent.agent import NodeAgent
    from node_agent.config import load_node_config

    job = JobSpec(job_id="oracle-history", holdout=holdout)
    return NodeAgent(load_node_config(node_dir)).holdout(job).history


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--branches", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--out", type=Path, default=HERE / "results" / "federated_vs_local.json")
    args = parser.parse_args()
    runs = []
    for seed in args.seeds:
        out = HERE / "results" / "runs" / f"seed{seed}"
        started = time.perf_counter()
        summary = run_demo(DemoOptions(branches=args.branches, rounds=args.rounds, seed=seed, out=out), Console(file=io.StringIO()))
        oracle = oracle_mase(out / "dealers", summary["job_id"], seed, out)
        mase = {**summary["mase"], "oracle": round(float(np.mean(list(oracle.values()))), 4)}
        run = {
            "seed": seed,
            "mase": mase,
            "smape": summary["smape"],
            "federated_vs_local": summary["federated_vs_local_mase_improvement"],
            "federated_vs_local_dp": summary["federated_vs_local_dp_mase_improvement"],
            "central_vs_local": round(1 - mase["central"] / mase["local"], 4),
            "oracle_vs_local": round(1 - mase["oracle"] / mase["local"], 4),
            "young_branches": summary["young_branches"],
            "epsilon_max": summary["epsilon"]["max"],
            "seconds": round(time.perf_counter() - started, 1),
        }
        runs.append(run)
        print(json.dumps({k: run[k] for k in ("seed", "federated_vs_local", "federated_vs_local_dp", "central_vs_local", "oracle_vs_local")}), flush=True)
    keys = ("federated_vs_local", "federated_vs_local_dp", "central_vs_local", "oracle_vs_local")
    report = {
        "benchmark": "federated_vs_local",
        "branches": args.branches,
        "rounds": args.rounds,
        "machine": {"python": platform.python_version(), "cpus": __import__("os").cpu_count()},
        "runs": runs,
        "mean": {k: round(float(np.mean([r[k] for r in runs])), 4) for k in keys},
        "young_mean": round(float(np.mean([r["young_branches"]["federated_vs_local_mase_improvement"] for r in runs if r["young_branches"]["federated_vs_local_mase_improvement"] is not None])), 4),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    print(json.dumps(report["mean"]), "young:", report["young_mean"])


if __name__ == "__main__":
    main()
