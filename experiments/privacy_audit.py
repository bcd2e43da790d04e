"""An empirical privacy audit: a membership-inference attack on the forecaster, trained with
DP-SGD at epsilon 1, 2, 4, 8 and without DP, and the accuracy each epsilon costs.

The attack is the loss-threshold attack (Yeom et al., 2018): a training window tends to have
a lower loss than one the model never saw, so the attacker scores each window by its negative
loss; its success is the AUC of telling members from non-members (0.5 = guessing). Every
branch's training windows are split at random into members (trained on) and non-members;
the model is the pooled forecaster, trained with DP-SGD (Opacus, the nodes' code and clip
0.3) or plainly, on one schedule for every epsilon: 200 epochs in batches of 8, long enough
that without DP it memorises its windows (the attacker's best case; the federated job trains
far less). The accuracy each epsilon costs is measured with the federated job's own recipe (8 rounds x 2
epochs, batch 32, lr 0.1), pooled, as the mean MASE on every branch's held-out months; the
attack is run on that model too. Writes
experiments/results/privacy_audit.json and privacy_audit.png.

    .venv/bin/python experiments/privacy_audit.py            # 20 branches, 3 seeds, ~10 minutes
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from common.metrics import score
from common.model import BranchContext, build_model, forecast, make_windows
from common.wire import DPSettings, JobSpec
from node_agent.data import fields_needed, holdout_split, read_branch_dataset
from node_agent.training import plan_noise_multiplier, train_dp_round, train_plain
from policies import JobRequest, load_policy
from sovereign.simulation.dealers import simulate_alliance

HERE = Path(__file__).resolve().parent
EPSILONS = [1.0, 2.0, 4.0, 8.0, None]  # None: no DP


def auc(member_scores: np.ndarray, other_scores: np.ndarray) -> float:
    """P(score of a random member > score of a random non-member), ties counted half (Mann-Whitney)."""
    both = np.concatenate([member_scores, other_scores])
    ranks = both.argsort().argsort().astype(float) + 1
    for value in np.unique(both):  # average ranks of ties
        tied = both == value
        ranks[tied] = ranks[tied].mean()
    m, n = len(member_scores), len(other_scores)
    return float((ranks[:m].sum() - m * (m + 1) / 2) / (m * n))


def window_losses(model, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    model.eval()
    with torch.no_grad():
        out = model(torch.from_numpy(x))
        return torch.nn.functional.smooth_l1_loss(out, torch.from_numpy(y), reduction="none").mean(dim=1).numpy()


CONTEXT = BranchContext()  # the audit trains one model on every branch, without country or region slots


def load_alliance(branches: int, seed: int, root: Path, job: JobSpec):
    simulate_alliance(branches, seed, root)
    policy = load_policy(HERE.parent / "policies" / "examples" / "domestic_dealer.yaml")
    request = JobRequest(job_id="audit", purpose="forecasting", destination="JP", fields=fields_needed("monthly_units"))
    splits = {}
    for db in sorted(root.glob("*.db")):
        data = read_branch_dataset(f"sqlite:///{db}", policy, request, key=b"audit-key" * 4)
        if len(data.series.units) > job.holdout + job.lags + job.horizon:
            splits[db.stem] = holdout_split(data.series, job.holdout, job.horizon)
    return splits


def run_seed(seed: int, branches: int, rounds: int, epochs: int, batch_size: int, learning_rate: float) -> list[dict]:
    base = JobSpec(job_id="audit", rounds=rounds, local_epochs=epochs, batch_size=batch_size, learning_rate=learning_rate,
                   seed=seed)
    with tempfile.TemporaryDirectory() as tmp:
        splits = load_alliance(branches, seed, Path(tmp), base)
    rng = np.random.default_rng(seed)
    members, others = ([], []), ([], [])
    for split in splits.values():
        x, y, _ = make_windows(split.history, split.start, CONTEXT, lags=base.lags, horizon=base.horizon)
        chosen = rng.random(len(x)) < 0.5
        members[0].append(x[chosen]), members[1].append(y[chosen])
        others[0].append(x[~chosen]), others[1].append(y[~chosen])
    mx, my = np.concatenate(members[0]), np.concatenate(members[1])
    ox, oy = np.concatenate(others[0]), np.concatenate(others[1])
    recipe = JobSpec(job_id="audit-job-recipe", seed=seed)  # what the federated job runs: 8 rounds x 2 epochs, batch 32
    rows = []
    for eps in EPSILONS:
        started = time.perf_counter()
        row = {"seed": seed, "epsilon": eps, "members": len(mx), "non_members": len(ox)}
        for name, schedule in (("audit", base), ("job", recipe)):
            model, spent = train(schedule, eps, mx, my, seed)
            row[name] = {
                "attack_auc": auc(-window_losses(model, mx, my), -window_losses(model, ox, oy)),
                "mase": float(np.mean([score(s.actual, forecast(model, s.history, s.target, CONTEXT)[: len(s.actual)],
                                             s.history)["mase"] for s in splits.values()])),
                "epsilon_spent": spent,
            }
        row["seconds"] = round(time.perf_counter() - started, 1)
        rows.append(row)
        print(f"  seed {seed} ε={'∞' if eps is None else eps}: AUC {row['audit']['attack_auc']:.3f} (job recipe "
              f"{row['job']['attack_auc']:.3f}), MASE with the job recipe {row['job']['mase']:.3f}", flush=True)
    return rows


def train(schedule: JobSpec, eps: float | None, x: np.ndarray, y: np.ndarray, seed: int):
    """The forecaster trained on `x, y` on `schedule`, with DP-SGD at `eps` or plainly (None)."""
    model = build_model(seed, lags=schedule.lags, horizon=schedule.horizon)
    if eps is None:
        train_plain(model, x, y, epochs=schedule.rounds * schedule.local_epochs, batch_size=schedule.batch_size,
                    learning_rate=schedule.learning_rate, seed=seed)
        return model, None
    job = schedule.model_copy(update={"dp": DPSettings(target_epsilon=eps)})
    sigma, state, result = plan_noise_multiplier(len(x), job), None, None
    for _ in range(job.rounds):
        result = train_dp_round(model, x, y, job, noise_multiplier=sigma, accountant_state=state)
        state = result.accountant_state
    return model, result.epsilon


def plot(summary: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = ["∞ (no DP)" if s["epsilon"] is None else f"{s['epsilon']:g}" for s in summary]
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.8))
    a.bar(labels, [s["attack_auc"] for s in summary], color="#cf222e", label="200 epochs (attacker's best case)")
    a.axhline(0.5, color="black", lw=0.8, ls="--", label="guessing")
    a.axhline(0.55, color="grey", lw=0.8, ls=":", label="0.55")
    a.set_ylim(0.45, max(0.6, max(s["attack_auc"] for s in summary) + 0.02))
    a.set_xlabel("ε (per window)")
    a.set_ylabel("membership-inference AUC")
    a.set_title("loss-threshold attack", fontsize=10)
    a.legend()
    b.bar(labels, [s["mase"] for s in summary], color="#0969da")
    b.set_xlabel("ε (per window)")
    b.set_ylabel("held-out MASE (lower is better)")
    b.set_title("accuracy, trained with the job's recipe", fontsize=10)
    fig.suptitle("Privacy audit: attack success and accuracy by ε")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--branches", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--epochs", type=int, default=25, help="epochs per round (8 x 25 = 200: memorises without DP)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--learning-rate", type=float, default=0.05)
    parser.add_argument("--out", type=Path, default=HERE / "results" / "privacy_audit.json")
    args = parser.parse_args()
    rows = [r for seed in args.seeds
            for r in run_seed(seed, args.branches, args.rounds, args.epochs, args.batch_size, args.learning_rate)]
    summary = []
    for eps in EPSILONS:
        mine = [r for r in rows if r["epsilon"] == eps]

        def mean(schedule: str, key: str, rows=mine) -> float:
            return round(float(np.mean([r[schedule][key] for r in rows])), 4)

        summary.append({"epsilon": eps, "attack_auc": mean("audit", "attack_auc"),
                        "attack_auc_max": round(float(np.max([r["audit"]["attack_auc"] for r in mine])), 4),
                        "attack_auc_job_recipe": mean("job", "attack_auc"), "mase": mean("job", "mase"),
                        "mase_audit_schedule": mean("audit", "mase")})
    no_dp = summary[-1]["mase"]
    for s in summary:
        s["mase_cost_vs_no_dp"] = round(s["mase"] / no_dp - 1, 4)
    report = {"benchmark": "privacy_audit", "attack": "loss threshold (Yeom et al. 2018), AUC", "unit": "training window",
              "branches": args.branches, "rounds": args.rounds, "local_epochs": args.epochs, "batch_size": args.batch_size,
              "learning_rate": args.learning_rate, "seeds": args.seeds,
              "summary": summary, "runs": rows}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    plot(summary, args.out.with_suffix(".png"))
    print("| ε | attack AUC, 200 epochs (mean, max) | attack AUC, job recipe | MASE, job recipe | cost vs no DP |")
    print("|---|---|---|---|---|")
    for s in summary:
        eps = "∞ (no DP)" if s["epsilon"] is None else f"{s['epsilon']:g}"
        print(f"| {eps} | {s['attack_auc']:.3f}, {s['attack_auc_max']:.3f} | {s['attack_auc_job_recipe']:.3f} | "
              f"{s['mase']:.3f} | {s['mase_cost_vs_no_dp']:+.1%} |")


if __name__ == "__main__":
    main()
