"""What customer-level privacy costs in accuracy: the demo job at customer ε ∈ {0.5, 1, 2, 4}
per year against the very same job without it, on simulated alliances, across seeds.

Every arm runs the real demo (Flower simulation, DP-SGD at the same window-level ε, CKKS); the
customer-level arms add each node's bounded, discrete-Gaussian release of its monthly counts,
which training, evaluation sums and totals are computed from. Accuracy is read from each
node's own report (which never leaves a real node): the federated model applied to the
branch's true history, judged on its true held-out months, over the branches evaluated in
every arm of the seed. The cost is MASE(ε) / MASE(off) − 1, per seed, then its mean and range. This is a simulator-side
experiment. Writes <out>/<name>.json and <name>.png (default experiments/results/).

    .venv/bin/python experiments/customer_dp.py --branches 20 127 --seeds 1 2 3
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import time
from pathlib import Path

import numpy as np
from rich.console import Console

from common.evaluation import STATISTICAL_ARMS, best_local
from sovereign.demo import DemoOptions, run_demo

HERE = Path(__file__).resolve().parent
EPSILONS = (0.5, 1.0, 2.0, 4.0)


def _reports(out: Path, job_id: str) -> dict[str, dict]:
    return {p.parents[1].name: json.loads(p.read_text()) for p in sorted((out / "nodes").glob(f"*/reports/{job_id}.json"))}


def run_arm(branches: int, seed: int, epsilon: float | None, rounds: int, results: Path) -> dict:
    name = "off" if epsilon is None else f"e{epsilon:g}"
    out = results / "runs" / f"customer-b{branches}-s{seed}-{name}"
    started = time.perf_counter()
    if (out / "summary.json").is_file():  # an arm this benchmark already ran (it resumes after an interruption)
        summary = json.loads((out / "summary.json").read_text())
    else:
        summary = run_demo(DemoOptions(branches=branches, rounds=rounds, seed=seed, out=out, customer_epsilon=epsilon),
                           Console(file=io.StringIO()))
    reports = _reports(out, summary["job_id"])
    return {"epsilon": epsilon, "seconds": summary.get("seconds", round(time.perf_counter() - started, 1)),
            "customer": summary["epsilon"]["customer"] if epsilon is not None else None,
            "scores": {b: {arm: r["scores"][arm]["mase"] for arm in r["scores"]} for b, r in reports.items()}}


def seed_figures(arms: list[dict]) -> dict:
    """Mean MASE per arm over the branches every arm evaluated, and each ε's cost against off."""
    common = sorted(set.intersection(*(set(a["scores"]) for a in arms)))
    out = {"branches": len(common), "by_epsilon": {}}
    base = None
    for arm in arms:
        mase = {m: float(np.mean([arm["scores"][b][m] for b in common])) for m in arm["scores"][common[0]]}
        best = best_local({m: mase[m] for m in STATISTICAL_ARMS if m in mase})
        row = {"federated_mase": round(mase["federated"], 4), "best_local_arm": best,
               "best_local_mase": round(mase[best], 4),
               "federated_vs_best_local": round(1 - mase["federated"] / mase[best], 4), "seconds": arm["seconds"]}
        if arm["epsilon"] is None:
            base = mase["federated"]
        else:
            row["cost_vs_off"] = round(mase["federated"] / base - 1, 4)
            row["every_year_epsilon"] = arm["customer"]["every_year_epsilon"]
        out["by_epsilon"]["off" if arm["epsilon"] is None else f"{arm['epsilon']:g}"] = row
    return out


def summarise(per_seed: list[dict]) -> dict:
    keys = per_seed[0]["by_epsilon"].keys()
    out = {}
    for key in keys:
        rows = [s["by_epsilon"][key] for s in per_seed]
        out[key] = {"federated_mase": round(float(np.mean([r["federated_mase"] for r in rows])), 4),
                    "federated_vs_best_local": round(float(np.mean([r["federated_vs_best_local"] for r in rows])), 4)}
        if key != "off":
            costs = [r["cost_vs_off"] for r in rows]
            out[key] |= {"cost_vs_off": round(float(np.mean(costs)), 4),
                         "cost_range": [round(min(costs), 4), round(max(costs), 4)]}
    return out


def plot(report: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    for branches, block in report["alliances"].items():
        eps = [float(k) for k in block["mean"] if k != "off"]
        mean = [100 * block["mean"][k]["cost_vs_off"] for k in block["mean"] if k != "off"]
        low = [100 * block["mean"][k]["cost_range"][0] for k in block["mean"] if k != "off"]
        high = [100 * block["mean"][k]["cost_range"][1] for k in block["mean"] if k != "off"]
        ax.plot(eps, mean, marker="o", label=f"{branches} branches (mean of {len(block['seeds'])} seeds)")
        ax.fill_between(eps, low, high, alpha=0.2)
    ax.axhline(3, color="grey", linestyle="--", linewidth=1, label="target at ε = 1: 3 %")
    ax.axhline(0, color="black", linewidth=0.5)
    ax.set_xscale("log", base=2)
    ax.set_xticks(list(EPSILONS), [f"{e:g}" for e in EPSILONS])
    ax.set_xlabel("customer ε per year of purchases (δ = 1e-6)")
    ax.set_ylabel("federated MASE vs the same job without it (%)")
    ax.set_title("The accuracy cost of customer-level privacy (band: range over seeds)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--branches", type=int, nargs="+", default=[20, 127])
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--epsilons", type=float, nargs="+", default=list(EPSILONS))
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--name", default="customer_dp")
    parser.add_argument("--out", type=Path, default=HERE / "results")
    args = parser.parse_args()
    report = {"benchmark": "customer_dp", "rounds": args.rounds, "epsilons": args.epsilons,
              "machine": {"python": platform.python_version(), "cpus": os.cpu_count()},
              "measure": "mean MASE of the federated model on the branches' true held-out months (their own reports), "
                         "customer-level release at each ε against the same job without it; DP-SGD ε 8 per window in all",
              "alliances": {}}
    for branches in args.branches:
        seeds = []
        for seed in args.seeds:
            arms = [run_arm(branches, seed, eps, args.rounds, args.out) for eps in (None, *args.epsilons)]
            figures = seed_figures(arms) | {"seed": seed}
            seeds.append(figures)
            print(json.dumps({"branches": branches, **figures}), flush=True)
        report["alliances"][str(branches)] = {"seeds": seeds, "mean": summarise(seeds)}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{args.name}.json").write_text(json.dumps(report, indent=2))
    plot(report, args.out / f"{args.name}.png")
    print(json.dumps({b: block["mean"] for b, block in report["alliances"].items()}, indent=1))


if __name__ == "__main__":
    main()
