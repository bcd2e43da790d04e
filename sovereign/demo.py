"""`sovereign demo`: a joint forecast on an embedded alliance, end to end.

Simulate (or take) dealer databases, give each its node directory, run the key ceremony,
run the federated job on Flower's simulation runtime, compare with local-only, pooled and
seasonal-naive forecasts on the same held-out months, and write summary.json + report.html.
"""

from __future__ import annotations

import json
import shutil
import time
import uuid
from collections import Counter
from pathlib import Path

import numpy as np
from pydantic import BaseModel, Field, model_validator
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from common.wire import DPSettings, HESettings, JobSpec, NodeDPSettings
from coordinator.rounds import CoordinatorPaths, JobResult, RoundReport
from node_agent.agent import REFUSALS, NodeAgent
from node_agent.data import job_request
from sovereign import baselines
from sovereign.federation import (
    SetupError,
    find_dealer_databases,
    register_lineage_keys,
    run_key_ceremony,
    run_simulation,
    setup_nodes,
)
from sovereign.report import write_report
from sovereign.simulation.dealers import simulate_alliance

METHODS = ("federated", "local", "local_dp", "central", "seasonal_naive")


class DemoOptions(BaseModel):
    branches: int = Field(default=20, ge=1, le=999)
    rounds: int = Field(default=8, ge=1, le=500)
    seed: int = 7
    out: Path = Path("runs/demo")
    data: Path | None = None
    dp: bool = True
    he: bool = True
    epsilon: float = Field(default=8.0, gt=0, le=100)
    node_dp: bool = False
    node_noise: float = Field(default=1.0, gt=0, le=100)
    node_clip: float = Field(default=0.5, gt=0, le=100)

    @model_validator(mode="after")
    def _node_dp_needs_he(self) -> "DemoOptions":
        if self.node_dp and not self.he:
            raise ValueError("node-level DP needs encryption: each node's update carries only its share of the noise")
        return self


class RoundProgress:
    """A progress bar per round, advanced as each node's reply arrives."""

    def __init__(self, progress: Progress, console: Console) -> None:
        self.progress = progress
        self.console = console
        self.task = None
        self.eval_task = None
        self.nodes = 0

    def round_started(self, rnd: int, total_rounds: int, nodes: int) -> None:
        self.nodes = nodes
        self.task = self.progress.add_task(f"round {rnd}/{total_rounds}", total=nodes)

    def reply_received(self, rnd: int, message) -> None:
        if message.metadata.message_type == "evaluate":
            if self.eval_task is None:
                self.eval_task = self.progress.add_task("held-out evaluation on every node", total=self.nodes)
            self.progress.advance(self.eval_task)
        elif self.task is not None:
            self.progress.advance(self.task)

    def round_finished(self, report: RoundReport) -> None:
        eps = f", ε ≤ {report.epsilon_max:.2f}" if report.epsilon_max is not None else ""
        refused = f", {len(report.refused)} refused" if report.refused else ""
        self.progress.update(
            self.task,
            description=f"round {report.round}: {len(report.contributors)} nodes, "
            f"{report.bytes_received / 1e6:.1f} MB up{eps}{refused}",
        )


class Observers:
    """Fan one job's events out to several observers (progress bar, audits)."""

    def __init__(self, *observers) -> None:
        self.observers = observers

    def round_started(self, rnd: int, total_rounds: int, nodes: int) -> None:
        for o in self.observers:
            o.round_started(rnd, total_rounds, nodes)

    def reply_received(self, rnd: int, message) -> None:
        for o in self.observers:
            o.reply_received(rnd, message)

    def round_finished(self, report: RoundReport) -> None:
        for o in self.observers:
            o.round_finished(report)


def run_demo(opts: DemoOptions, console: Console, *, observers: tuple = ()) -> dict:
    """Run the whole demo; `observers` also see every round and every reply the coordinator gets."""
    started = time.perf_counter()
    out = opts.out
    nodes_root, coordinator = out / "nodes", CoordinatorPaths(out / "coordinator")
    for stale in (nodes_root, coordinator.root):
        shutil.rmtree(stale, ignore_errors=True)
    if opts.data is None:
        dealers_dir = out / "dealers"
        shutil.rmtree(dealers_dir, ignore_errors=True)
        with console.status(f"simulating {opts.branches} dealerships"):
            simulate_alliance(opts.branches, opts.seed, dealers_dir)
    else:
        dealers_dir = opts.data
    dbs = find_dealer_databases(dealers_dir)
    configs = setup_nodes(dbs, nodes_root, accept_non_private=not opts.dp)
    register_lineage_keys(configs, coordinator)
    job = JobSpec(
        job_id=f"forecast-{uuid.uuid4().hex[:8]}", rounds=opts.rounds, seed=opts.seed,
        dp=DPSettings(enabled=opts.dp, target_epsilon=opts.epsilon), he=HESettings(enabled=opts.he),
        node_dp=NodeDPSettings(enabled=opts.node_dp, clip=opts.node_clip, noise_multiplier=opts.node_noise, nodes=len(configs)),
    )
    coordinator.root.mkdir(parents=True, exist_ok=True)
    if job.he.enabled:
        with console.status("key ceremony: one CKKS key set for the nodes, public context for the coordinator"):
            run_key_ceremony(configs, coordinator, job)
    console.print(
        f"[bold]joint forecast[/] {job.job_id}: {len(configs)} dealerships, {job.rounds} rounds, "
        f"DP {'on (ε ≤ %g, δ = %g)' % (job.dp.target_epsilon, job.dp.delta) if job.dp.enabled else 'off'}, "
        f"HE {'CKKS' if job.he.enabled else 'off'}"
    )
    progress = Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
        console=console, transient=False,
    )
    with progress:
        run_simulation(job, nodes_root, coordinator, len(configs), Observers(RoundProgress(progress, console), *observers))
    if not coordinator.result.exists():
        raise SetupError("the federated job produced no result; see the log above")
    result = JobResult.model_validate_json(coordinator.result.read_text())

    baseline_progress = Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=console,
    )
    with baseline_progress:
        splits = {}
        reading = baseline_progress.add_task("baselines: held-out split on each node", total=len(configs))
        for config in configs:
            baseline_progress.advance(reading)
            try:
                splits[config.branch_id] = NodeAgent(config).holdout(job)
            except REFUSALS as exc:  # reported, not fatal
                console.print(f"[yellow]{config.branch_id}: left out of baselines: {exc}[/]")
        fed = {e.branch_id: np.asarray(e.forecast) for e in result.evaluations if e.status == "ok"}
        common_branches = sorted(set(fed) & set(splits))
        if not common_branches:
            reasons = sorted({r for rnd in result.rounds for r in rnd.refused.values()})
            raise SetupError(f"no branch could take part; first refusal: {reasons[0] if reasons else 'none recorded'}")
        splits = {b: splits[b] for b in common_branches}

        def ticker(label: str):
            task = baseline_progress.add_task(label, total=len(splits))
            return lambda: baseline_progress.advance(task)

        forecasts = {
            "federated": {b: fed[b] for b in common_branches},
            "local": baselines.local_forecasts(splits, job, ticker("baselines: each branch alone")),
            "local_dp": (
                baselines.local_dp_forecasts(splits, job, ticker("baselines: each branch alone under DP"))
                if job.dp.enabled else {}
            ),
            "central": baselines.central_forecasts(splits, job),
            "seasonal_naive": baselines.naive_forecasts(splits, job),
        }
        scores = {m: baselines.score_all(splits, forecasts[m]) for m in METHODS}

    history = {b: len(s.history) for b, s in splits.items()}
    summary = build_summary(opts, job, result, scores, history, configs, coordinator, time.perf_counter() - started)
    out.mkdir(parents=True, exist_ok=True)
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    write_report(out / "report.html", summary, splits, forecasts, result)
    print_summary(console, summary, out)
    return summary


def branch_policies(configs, job: JobSpec) -> dict[str, dict]:
    """Each branch's declared policy and what it does to this job's fields (embedded demo only:
    on a real alliance each branch's compliance officer reads this from the node's lineage)."""
    from policies import PolicyFileError, evaluate, load_policy

    out = {}
    for config in configs:
        try:
            policy = load_policy(config.policy_path)
        except PolicyFileError as exc:
            out[config.branch_id] = {"error": str(exc)}
            continue
        request = job_request(job, config.dataset)
        schema = {config.dataset: [f.split(".", 1)[1] for f in request.fields]}
        out[config.branch_id] = {
            "policy": policy.policy, "version": policy.version, "jurisdiction": policy.jurisdiction,
            "hash": policy.content_hash(), "cross_border": policy.jurisdiction != job.destination,
            "treatments": {d.name: d.treatment.describe() for d in evaluate(policy, schema, request)},
        }
    return out


YOUNG_MONTHS = 24  # branches with less training history than this are reported apart


def build_summary(
    opts, job, result: JobResult, scores, history: dict[str, int], configs, coordinator: CoordinatorPaths, seconds: float
) -> dict:
    def mean_of(metric: str, branches) -> dict[str, float | None]:
        return {
            m: (round(float(np.mean([scores[m][b][metric] for b in branches])), 4) if branches and scores[m] else None)
            for m in METHODS
        }

    def improvement(mase: dict, baseline: str = "local") -> float | None:
        return round(1 - mase["federated"] / mase[baseline], 4) if mase["federated"] and mase[baseline] else None

    evaluated = sorted(scores["federated"])
    young = [b for b in evaluated if history[b] < YOUNG_MONTHS]
    mase, smape = mean_of("mase", evaluated), mean_of("smape", evaluated)
    eps = [r.epsilon_max for r in result.rounds if r.epsilon_max is not None]
    refusals = {b: reason for r in result.rounds for b, reason in r.refused.items()}
    return {
        "job_id": job.job_id,
        "branches": len(configs),
        "branches_evaluated": len(scores["federated"]),
        "rounds": job.rounds,
        "horizon_months": job.horizon,
        "holdout_months": job.holdout,
        "dp": job.dp.enabled,
        "he": {
            "enabled": job.he.enabled,
            "scheme": "CKKS" if job.he.enabled else None,
            "poly_modulus_degree": job.he.params.poly_modulus_degree if job.he.enabled else None,
            "coeff_mod_bit_sizes": list(job.he.params.coeff_mod_bit_sizes) if job.he.enabled else None,
            "bytes_per_round": int(np.mean([r.bytes_received for r in result.rounds])) if result.rounds else 0,
            "bytes_down_per_round": int(np.mean([r.bytes_sent for r in result.rounds])) if result.rounds else 0,
        },
        "mase": mase,
        "smape": smape,
        "federated_vs_local_mase_improvement": improvement(mase),
        "federated_vs_local_dp_mase_improvement": improvement(mase, "local_dp"),
        "young_branches": {
            "definition": f"under {YOUNG_MONTHS} months of training history",
            "branches": young,
            "mase": mean_of("mase", young),
            "federated_vs_local_mase_improvement": improvement(mean_of("mase", young)) if young else None,
        },
        "epsilon": {
            "max": round(max(eps), 4) if eps else None,
            "target": job.dp.target_epsilon if job.dp.enabled else None,
            "delta": job.dp.delta if job.dp.enabled else None,
            "accountant": job.dp.accountant if job.dp.enabled else None,
            "unit": f"one training window ({job.lags} months of a branch's units plus the {job.horizon} that follow)",
            "per_node": {b: {"planned": p, "spent": a} for b, (p, a) in
                         {b: pa for r in result.rounds for b, pa in r.epsilon_by_node.items()}.items()},  # each node's latest
            "customer": _customer(result, job),
            "node_level": {
                "epsilon": round(result.rounds[-1].node_level_epsilon, 4), "delta": job.node_dp.delta,
                "clip": job.node_dp.clip, "noise_multiplier": job.node_dp.noise_multiplier, "nodes": job.node_dp.nodes,
                "unit": "one dealership's participation (its whole update)",
            } if job.node_dp.enabled and result.rounds and result.rounds[-1].node_level_epsilon is not None else None,
        },
        "per_branch": {
            b: {"history_months": history[b], **{m: scores[m][b] for m in METHODS if b in scores[m]}} for b in evaluated
        },
        "refusals": refusals,
        "node_policies": branch_policies(configs, job),
        "quarantined_rows": result.rounds[0].quarantined if result.rounds else {},
        "final_model_digest": result.final_model_digest,
        "lineage": {
            "coordinator": coordinator.lineage_url,
            "nodes": {c.branch_id: c.lineage_url for c in configs},
        },
        "seconds": round(seconds, 1),
    }


def _customer(result: JobResult, job: JobSpec) -> dict | None:
    """The window-level guarantee restated for one customer (one sale moves one month's
    total, which sits in up to lags + horizon windows): group privacy, as the nodes report it."""
    reported = [r for r in result.rounds if r.customer_epsilon_max is not None]
    if not reported:
        return None
    delta = max((r.customer_delta_max for r in reported if r.customer_delta_max is not None), default=None)
    return {
        "unit": "one customer's sale (one month of one branch)",
        "windows_per_month": job.lags + job.horizon,  # the group bound the nodes report with
        "epsilon": round(max(r.customer_epsilon_max for r in reported), 2),
        "delta": delta,
        "meaningful": delta is not None and delta < 1e-3,
        "note": "group privacy over the windows that hold the sale's month: (k·ε, k·e^((k-1)ε)·δ); "
                "a delta near 1 means the window-level guarantee says little about one customer",
    }


def print_summary(console: Console, summary: dict, out: Path) -> None:
    table = Table(title=f"held-out accuracy, last {summary['holdout_months']} months, {summary['branches_evaluated']} branches")
    table.add_column("forecast")
    table.add_column("MASE (lower is better)", justify="right")
    table.add_column("sMAPE %", justify="right")
    labels = {
        "federated": "federated (this job" + (", DP" if summary["dp"] else "") + (", HE" if summary["he"]["enabled"] else "") + ")",
        "local": "each branch alone", "local_dp": "each branch alone, same DP budget", "central": "all data pooled (upper bound)", "seasonal_naive": "same month last year",
    }
    for m in METHODS:
        if summary["mase"][m] is not None:
            table.add_row(labels[m], _fmt(summary["mase"][m]), _fmt(summary["smape"][m]))
    console.print(table)
    imp = summary["federated_vs_local_mase_improvement"]
    if imp is not None:
        console.print(f"federated vs each branch alone: MASE {imp:+.0%} (positive: federated is better)")
    imp_dp = summary["federated_vs_local_dp_mase_improvement"]
    if imp_dp is not None:
        console.print(f"federated vs each branch alone under the same DP budget: MASE {imp_dp:+.0%}")
    young = summary["young_branches"]
    if young["federated_vs_local_mase_improvement"] is not None:
        console.print(
            f"  for the {len(young['branches'])} young branches ({young['definition']}): "
            f"{young['federated_vs_local_mase_improvement']:+.0%}"
        )
    if summary["epsilon"]["max"] is not None:
        console.print(f"privacy: ε ≤ {summary['epsilon']['max']:.2f} at δ = {summary['epsilon']['delta']:g} per training window, every node")
        customer = summary["epsilon"]["customer"]
        if customer:
            console.print(f"  for one customer's sale (in up to {customer['windows_per_month']} windows): ε ≤ {customer['epsilon']:g}, "
                          f"δ ≤ {customer['delta']:.2g}" + ("" if customer["meaningful"] else " — weak: see summary.json epsilon.customer"))
    node_level = summary["epsilon"]["node_level"]
    if node_level:
        console.print(f"node-level DP (σ = {node_level['noise_multiplier']:g}, clip {node_level['clip']:g}): one dealership's "
                      f"participation is protected at ε ≤ {node_level['epsilon']:.2f}, δ = {node_level['delta']:g}")
    kinds = Counter((p["policy"], p["cross_border"]) for p in summary["node_policies"].values() if "policy" in p)
    console.print("branch policies: " + ", ".join(
        f"{name} ×{n}" + (" (results go abroad: dates to month, prices bucketed, VINs keyed-hashed)" if abroad and name == "foreign-dealer" else "")
        for (name, abroad), n in sorted(kinds.items())
    ))
    if summary["refusals"]:
        causes = Counter(reason.split(":")[0] for reason in summary["refusals"].values())
        listed = ", ".join(f"{cause} ({n})" for cause, n in causes.most_common())
        console.print(f"[yellow]{len(summary['refusals'])} branches sat out training:[/] {listed}; see summary.json")
    console.print(f"wrote {out / 'summary.json'} and {out / 'report.html'} in {summary['seconds']:.0f}s")


def _fmt(v: float | None) -> str:
    return "-" if v is None else f"{v:.3f}"
