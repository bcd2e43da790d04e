"""Is the joint forecast better than the best each dealership can do alone? Across seeds.

Runs the real demo (Flower simulation, DP-SGD, CKKS) on several simulated alliances and
compares the federated model with `best_local`, the strongest statistical method a branch
runs alone (chosen after the fact on the held-out months), with seasonal naive, and with an
oracle that knows each branch's true expected sales (`expected_sales`: the expected demand,
censored at the allocation in shortage months): no forecaster beats it on average, so the
skill share (best_local − federated) / (best_local − oracle) says how much of the room the
joint model takes. This is a simulator-side experiment: beside the alliance-level sums the
job released, it reads each node's own report (which never leaves a real node) for the
per-branch figures a bootstrap interval needs, and for the subsets (`SUBSETS`: new stores,
branches in a launch window) even where the job withheld them for having too few branches.
Writes <out>/<name>.json (default experiments/results/).

    .venv/bin/python experiments/federated_vs_local.py --seeds 1 2 3 4 5 --branches 20
    .venv/bin/python experiments/federated_vs_local.py --seeds 1 2 3 --branches 127 --name federated_vs_local_127
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import time
from datetime import date
from pathlib import Path

import numpy as np
from rich.console import Console
from scipy.stats import bootstrap

from common.calendar import month_number
from common.evaluation import NEW_STORE_MONTHS, STATISTICAL_ARMS, YOUNG_MONTHS, best_local, in_launch_window
from common.metrics import score
from sovereign.demo import DemoOptions, run_demo
from sovereign.simulation.dealers import MODEL_LAUNCHES, BranchProfile, expected_sales

SUBSETS = ("new_stores", "launch_window")

HERE = Path(__file__).resolve().parent


def branch_reports(out: Path, job_id: str) -> dict[str, dict]:
    return {p.parents[1].name: json.loads(p.read_text()) for p in sorted((out / "nodes").glob(f"*/reports/{job_id}.json"))}


def _profiles(dealers: Path) -> dict[str, BranchProfile]:
    return {p["branch_id"]: BranchProfile(**p) for p in json.loads((dealers / "alliance.json").read_text())}


def oracle_scores(dealers: Path, reports: dict[str, dict], seed: int) -> dict[str, dict]:
    """The true expected sales' scores on each branch's held-out months."""
    profiles = _profiles(dealers)
    out = {}
    for branch, report in reports.items():
        months = [date(int(m[:4]), int(m[5:]), 1) for m in report["months"]]
        expected = expected_sales(profiles[report["branch_id"]], months, seed)
        history = np.asarray(report["history"], dtype=float)
        out[branch] = score(np.asarray(report["actual"]), expected, history)
    return out


def subset_members(dealers: Path, reports: dict[str, dict]) -> dict[str, list[str]]:
    """Which evaluated branches are in each subset, by the same rules the nodes apply."""
    profiles = _profiles(dealers)
    members: dict[str, list[str]] = {name: [] for name in SUBSETS}
    for branch, report in reports.items():
        region = profiles[report["branch_id"]].region
        launches = [month_number(by_region[region]) for by_region in MODEL_LAUNCHES.values() if region in by_region]
        first = month_number(date(int(report["months"][0][:4]), int(report["months"][0][5:]), 1))
        if report["history_months"] < NEW_STORE_MONTHS:
            members["new_stores"].append(branch)
        if in_launch_window(first, len(report["months"]), launches):
            members["launch_window"].append(branch)
    return members


def subset_figures(branches: list[str], reports: dict[str, dict], oracle: dict[str, dict], released: dict) -> dict:
    """Mean MASE per arm over the subset's branches (from their own reports), best_local among
    the statistical arms, the oracle, the pooled figure where the job released the group, and
    the job's released improvement (None where it withheld the group)."""
    if not branches:
        return {"nodes": 0}
    arms = reports[branches[0]]["scores"]
    mase = {arm: round(float(np.mean([reports[b]["scores"][arm]["mase"] for b in branches])), 4) for arm in arms}
    best = best_local({arm: mase.get(arm) for arm in STATISTICAL_ARMS})
    mase["best_local"] = mase[best]
    mase["oracle"] = round(float(np.mean([oracle[b]["mase"] for b in branches])), 4)
    mase["central"] = released.get("mase", {}).get("central")
    return {"nodes": len(branches), "mase": mase, "best_local_arm": best,
            "federated_vs_best_local": round(1 - mase["federated"] / mase["best_local"], 4),
            "released_nodes": released.get("nodes", 0) if released.get("released") else 0,
            "released_federated_vs_best_local": released.get("federated_vs_best_local_mase_improvement")}


def relative_mae(reports: dict[str, dict], arm: str) -> dict:
    """Geometric-mean relative MAE (federated / arm) over branches, with a 95 % bootstrap interval."""
    logs = np.array([np.log(max(r["scores"]["federated"]["mae"], 1e-9) / max(r["scores"][arm]["mae"], 1e-9))
                     for r in reports.values()])
    ci = bootstrap((logs,), np.mean, n_resamples=2000, confidence_level=0.95, method="percentile",
                   random_state=np.random.default_rng(0)).confidence_interval
    return {"geomean": round(float(np.exp(logs.mean())), 4),
            "interval95": [round(float(np.exp(ci.low)), 4), round(float(np.exp(ci.high)), 4)],
            "branches_better_off": int((logs < 0).sum()), "branches": len(logs)}


def run_seed(seed: int, branches: int, rounds: int, results: Path = HERE / "results") -> dict:
    out = results / "runs" / f"b{branches}-seed{seed}"
    started = time.perf_counter()
    summary = run_demo(DemoOptions(branches=branches, rounds=rounds, seed=seed, out=out), Console(file=io.StringIO()))
    reports = branch_reports(out, summary["job_id"])
    for branch, report in reports.items():
        report["history"] = _history(out / "nodes" / branch, len(report["months"]))
    oracle = oracle_scores(out / "dealers", reports, seed)
    members = subset_members(out / "dealers", reports)
    best = summary["best_local_arm"]
    young = [b for b, r in reports.items() if r["history_months"] < YOUNG_MONTHS]
    mase = {**summary["mase"], "oracle": round(float(np.mean([o["mase"] for o in oracle.values()])), 4)}
    young_oracle = float(np.mean([oracle[b]["mase"] for b in young])) if young else None
    return {
        "seed": seed,
        "mase": mase,
        "smape": summary["smape"],
        "best_local_arm": best,
        "federated_vs_best_local": summary["federated_vs_best_local_mase_improvement"],
        "federated_vs_seasonal_naive": summary["federated_vs_seasonal_naive_mase_improvement"],
        "federated_vs_moving_average_3": summary["federated_vs_moving_average_3_mase_improvement"],
        "federated_vs_central": round(1 - mase["federated"] / mase["central"], 4),
        "oracle_vs_best_local": round(1 - mase["oracle"] / mase["best_local"], 4),
        "skill_share": _skill(mase["best_local"], mase["federated"], mase["oracle"]),
        "relative_mae_vs_best_local": relative_mae(reports, best),
        "interval_coverage": summary["interval_coverage"],
        "young_branches": {
            "nodes": len(young),
            "mase": summary["young_branches"]["mase"] if summary["young_branches"]["released"] else None,
            "oracle": round(young_oracle, 4) if young_oracle is not None else None,
            "federated_vs_best_local": summary["young_branches"]["federated_vs_best_local_mase_improvement"],
            "best_local_arm": summary["young_branches"]["best_local_arm"],
        },
        **{name: subset_figures(members[name], reports, oracle, summary.get(name) or {}) for name in SUBSETS},
        "evaluation_refusals": len(summary.get("evaluation_refusals") or {}),
        "epsilon_max": summary["epsilon"]["max"],
        "seconds": round(time.perf_counter() - started, 1),
    }


def _skill(best: float, federated: float, oracle: float) -> float | None:
    return round((best - federated) / (best - oracle), 4) if best > oracle else None


def _history(node_dir: Path, holdout: int) -> list[float]:
    """The branch's training months, read by its own agent under its own policy."""
    from common.wire import JobSpec
    from node_agent.agent import NodeAgent
    from node_agent.config import load_node_config

    job = JobSpec(job_id="oracle-history", holdout=holdout)
    return [float(v) for v in NodeAgent(load_node_config(node_dir)).holdout(job).history]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3, 4, 5])
    parser.add_argument("--branches", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--name", default="federated_vs_local")
    parser.add_argument("--out", type=Path, default=HERE / "results", help="where runs/ and <name>.json go")
    args = parser.parse_args()
    runs = []
    for seed in args.seeds:
        run = run_seed(seed, args.branches, args.rounds, args.out)
        runs.append(run)
        print(json.dumps({**{k: run[k] for k in ("seed", "mase", "best_local_arm", "federated_vs_best_local",
                                                   "federated_vs_central", "skill_share")},
                          **{name: run[name] for name in SUBSETS}}), flush=True)
    keys = ("federated_vs_best_local", "federated_vs_seasonal_naive", "federated_vs_moving_average_3",
            "federated_vs_central", "oracle_vs_best_local", "skill_share")
    young = [r["young_branches"]["federated_vs_best_local"] for r in runs if r["young_branches"]["federated_vs_best_local"] is not None]
    report = {
        "benchmark": "federated_vs_local",
        "branches": args.branches,
        "rounds": args.rounds,
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count()},
        "yardstick": "best_local: the statistical method a branch runs alone (seasonal naive, moving average of 3, "
                     "12-month mean, AutoETS, AutoTheta, per-branch rolling-origin choice) with the lowest mean MASE on "
                     "the held-out months",
        "runs": runs,
        "mean": {k: round(float(np.mean([r[k] for r in runs if r[k] is not None])), 4) for k in keys},
        "mean_mase": {arm: round(float(np.mean([r["mase"][arm] for r in runs])), 4) for arm in runs[0]["mase"]
                      if all(r["mase"].get(arm) is not None for r in runs)},
        "young_mean_federated_vs_best_local": round(float(np.mean(young)), 4) if young else None,
        **{f"{name}_mean": _subset_mean([r[name] for r in runs]) for name in SUBSETS},
        "mean_interval_coverage": {level: round(float(np.mean([r["interval_coverage"][level] for r in runs])), 4)
                                   for level in ("80", "95")},
    }
    out = args.out / f"{args.name}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    print(json.dumps(report["mean"]), "young:", report["young_mean_federated_vs_best_local"],
          json.dumps({name: report[f"{name}_mean"] for name in SUBSETS}))


def _subset_mean(runs: list[dict]) -> dict:
    """A subset's MASE per arm averaged over the branches of every seed (each branch counts once)."""
    scored = [r for r in runs if r["nodes"]]
    if not scored:
        return {"nodes": 0}
    weights = np.array([r["nodes"] for r in scored], dtype=float)
    mase = {arm: round(float(np.average([r["mase"][arm] for r in scored], weights=weights)), 4)
            for arm in ("federated", "best_local", "oracle", "seasonal_naive", "local")}
    return {"nodes": int(weights.sum()), "mase": mase, "federated_vs_best_local": round(1 - mase["federated"] / mase["best_local"], 4)}


if __name__ == "__main__":
    main()
