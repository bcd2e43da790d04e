"""`sovereign demo`: a joint forecast on an embedded alliance, end to end.

The dealers' side (simulated databases, node directories, key ceremony) is set up in its own
process; the federated job runs on Flower's simulation runtime; each node scores the joint
model and its own local forecasts on its held-out months, and only alliance-level sums come
back. This process never opens a dealer database or a node key. Writes summary.json and
report.html.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
import uuid
from collections import Counter
from datetime import date
from pathlib import Path

import numpy as np
from typing import Literal

from pydantic import BaseModel, Field, model_validator
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from common.evaluation import ARMS, NEW_STORE_MONTHS, REGION_SLOTS, YOUNG_MONTHS, best_local, diverged
from common.model import COUNTRY_SLOTS
from common.customer_privacy import composed_epsilon, every_year_epsilon, release_noise_multiplier
from common.privacy import group_privacy
from common.wire import CustomerDPRequest, DPSettings, HESettings, JobSpec, Launch, NodeDPSettings
from sovereign.simulation.dealers import DEFAULT_AS_OF, DMS_WINDOW_START
from coordinator.rounds import RELEASERS, CoordinatorPaths, JobResult, RoundReport
from sovereign.federation import SetupError, run_simulation
from sovereign.report import ARM_NAMES, METHODS, fmt, headline_lines, write_report



class DemoOptions(BaseModel):
    branches: int = Field(default=20, ge=1, le=999)
    rounds: int = Field(default=8, ge=1, le=500)
    seed: int = 7
    out: Path = Path("runs/demo")
    data: Path | None = None
    dp: bool = True
    he: bool = True
    he_scheme: Literal["CKKS", "CKKS-ring"] = "CKKS"
    epsilon: float = Field(default=8.0, gt=0, le=100)
    customer_epsilon: float | None = Field(default=1.0, gt=0, le=20, description="customer ε per year; None: no customer-level DP")
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

    def __init__(self, progress: Progress, console: Console, *, ring: bool = False) -> None:
        self.progress = progress
        self.console = console
        self.ring = ring  # CKKS-ring: the survivors signed the set already; three of them decrypt
        self.task = None
        self.eval_task = None
        self.release_task = None
        self.nodes = 0

    def round_started(self, rnd: int, total_rounds: int, nodes: int) -> None:
        self.nodes = nodes
        self.task = self.progress.add_task(f"round {rnd}/{total_rounds}", total=nodes)

    def reply_received(self, rnd: int, message) -> None:
        kind = message.metadata.message_type
        if kind in ("query.keys", "query.mask"):  # the key ceremony and SecAgg+ steps around each sum
            return
        if kind == "evaluate":
            if self.eval_task is None:
                self.eval_task = self.progress.add_task("held-out evaluation on every node", total=self.nodes)
            self.progress.advance(self.eval_task)
        elif kind == "query":
            if self.release_task is None:
                self.release_task = self.progress.add_task("nodes agree on the contributors, then decrypt their sum",
                                                           total=(0 if self.ring else self.nodes) + min(RELEASERS, self.nodes))
            self.progress.advance(self.release_task)
        elif self.task is not None:
            self.progress.advance(self.task)

    def round_finished(self, report: RoundReport) -> None:
        refused = f", {len(report.refused)} refused" if report.refused else ""
        self.progress.update(
            self.task,
            description=f"round {report.round}: {len(report.contributors)} nodes, "
            f"{report.bytes_received / 1e6:.1f} MB up{refused}",
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


RUN_ITEMS = ("nodes", "coordinator", "alliance", "simulator", "dealers", "summary.json", "report.html")


def archive_earlier_run(out: Path, *, keep_dealers: bool) -> Path | None:
    """Move an earlier run's files out of the way, never delete them: node lineage stores and
    privacy ledgers are an audit trail. Returns where they went (`<out>-<time>` beside
    `out`), or None when `out` holds no earlier run. With `keep_dealers`, the dealer
    databases stay (a run given `--data` reads them)."""
    items = [out / name for name in RUN_ITEMS if (out / name).exists() and not (keep_dealers and name == "dealers")]
    if not items:
        return None
    stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(max(p.stat().st_mtime for p in items)))
    archive = out.parent / f"{out.name}-{stamp}"
    n = 1
    while archive.exists():
        n += 1
        archive = out.parent / f"{out.name}-{stamp}-{n}"
    archive.mkdir(parents=True)
    for item in items:
        shutil.move(str(item), archive / item.name)
    return archive


def refusal_tally(rounds) -> str:
    """Why branches sat out, most common first: each branch's last refusal code, counted
    ("privacy-budget (18 branches), too-little-history (2 branches)")."""
    last: dict[str, str] = {}
    for rnd in rounds:
        last.update(rnd.refused)
    return code_tally(last)


def code_tally(refused: dict[str, str]) -> str:
    """Branch -> refusal code (or "code: detail"), counted by code, most common first."""
    counts = Counter(code.split(":")[0] for code in refused.values())
    return ", ".join(f"{code} ({n} branch{'es' if n > 1 else ''})" for code, n in counts.most_common())


def run_demo(opts: DemoOptions, console: Console, *, observers: tuple = ()) -> dict:
    """Run the whole demo; `observers` also see every round and every reply the coordinator gets.

    This process plays the coordinator and the analyst only: the dealers' side (simulated
    databases, node directories, keys, the pooled experiment) runs in `sovereign.alliance`
    processes, and each node's agent in Flower's ClientApp workers."""
    started = time.perf_counter()
    out = opts.out
    nodes_root, coordinator = out / "nodes", CoordinatorPaths(out / "coordinator")
    if opts.data is not None and not opts.data.is_dir():
        raise SetupError(f"--data {opts.data}: no such directory")
    kept = archive_earlier_run(out, keep_dealers=opts.data is not None)
    if kept is not None:
        console.print(f"the earlier run in {out} (its lineage stores and privacy ledgers included) is kept in {kept}")
    job = JobSpec(
        job_id=f"forecast-{uuid.uuid4().hex[:8]}", rounds=opts.rounds, seed=opts.seed,
        dp=DPSettings(enabled=opts.dp, target_epsilon=opts.epsilon), he=HESettings(enabled=opts.he, scheme=opts.he_scheme),
        customer_dp=customer_request(opts),
        node_dp=NodeDPSettings(enabled=opts.node_dp, clip=opts.node_clip, noise_multiplier=opts.node_noise, nodes=opts.branches),
    )
    coordinator.root.mkdir(parents=True, exist_ok=True)
    with console.status(f"dealers' side: {opts.branches if opts.data is None else 'existing'} dealerships, node directories, "
                        "lineage keys" + (", CKKS key ceremony" if job.he.enabled and job.he.scheme == "CKKS" else "")):
        setup = _alliance_step("setup", out, job, opts)
    branches = setup["branches"]
    if job.node_dp.enabled and job.node_dp.nodes != len(branches):
        job = job.model_copy(update={"node_dp": job.node_dp.model_copy(update={"nodes": len(branches)})})
    job = job.model_copy(update={"regions": job_regions(setup.get("regions", {})),
                                 "countries": job_regions(setup.get("countries", {}))[:COUNTRY_SLOTS],
                                 **manufacturer_calendar()})
    console.print(
        f"[bold]joint forecast[/] {job.job_id}: {len(branches)} dealerships, {job.rounds} rounds, "
        f"DP {'on (ε ≤ %g, δ = %g)' % (job.dp.target_epsilon, job.dp.delta) if job.dp.enabled else 'off'}, "
        f"HE {('CKKS, per-job keys, SecAgg+ masks' if job.he.scheme == 'CKKS-ring' else 'CKKS') if job.he.enabled else 'off (every node opted out in node.json: require_he false)'}"
    )
    progress = Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
        console=console, transient=False,
    )
    with progress:
        run_simulation(job, nodes_root, coordinator, len(branches), Observers(RoundProgress(progress, console, ring=job.he.scheme == "CKKS-ring"), *observers))
    if not coordinator.result.exists():
        raise SetupError("the federated job produced no result; see the log above")
    result = JobResult.model_validate_json(coordinator.result.read_text())
    if not result.evaluated_by:
        trained = any(r.contributors for r in result.rounds)  # then it was the evaluation that nobody could take
        why = code_tally(result.evaluation_refused) if trained else refusal_tally(result.rounds)
        raise SetupError(f"no branch could take part{' in the held-out evaluation' if trained else ''}: "
                         f"{why or 'no refusal recorded'}")
    with console.status("simulator-side experiment: all data pooled (an upper bound no alliance can run)"):
        pooled = _alliance_step("pooled", out, job, opts, only=result.evaluated_by)
    summary = build_summary(opts, job, result, setup, pooled, coordinator, time.perf_counter() - started)
    out.mkdir(parents=True, exist_ok=True)
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    write_report(out / "report.html", summary, result)
    print_summary(console, summary, out)
    return summary


def manufacturer_calendar() -> dict[str, list]:
    """The manufacturer's public calendars a job carries (head office announces them): model
    launches line by line and region by region, incentive campaigns and shortage months (the
    simulated alliance's, `sovereign.simulation.dealers`)."""
    from sovereign.simulation.dealers import INCENTIVE_CAMPAIGNS, SUPPLY_SHORTAGES, launch_calendar

    return {"launches": [Launch(**row) for row in launch_calendar()], "campaigns": [d.strftime("%Y-%m") for d in INCENTIVE_CAMPAIGNS],
            "shortages": [d.strftime("%Y-%m") for d in SUPPLY_SHORTAGES]}


def job_regions(regions: dict[str, str | None]) -> list[str]:
    """The regions (or countries) the job names: those of the alliance's dealerships, largest
    first, as many as a job holds (a region under each node's minimum is released as nothing)."""
    counts = Counter(r for r in regions.values() if r)
    return [r for r, _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))][:REGION_SLOTS]


def _alliance_step(step: str, out: Path, job: JobSpec, opts: DemoOptions, *, only: list[str] | None = None) -> dict:
    """Run one dealers'-side step in its own process (see `sovereign.alliance`)."""
    job_file = out / "coordinator" / "job.json"
    job_file.write_text(job.model_dump_json(indent=2))
    cmd = [sys.executable, "-m", "sovereign.alliance", step, "--run", str(out), "--job", str(job_file),
           "--branches", str(opts.branches), "--seed", str(opts.seed)]
    if opts.data is not None:
        cmd += ["--data", str(opts.data)]
    if not opts.dp:
        cmd.append("--accept-non-private")
    if only:
        cmd += ["--only", ",".join(only)]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        lines = done.stderr.strip().splitlines()
        raise SetupError(lines[-1].split(": ", 1)[-1] if lines else f"{step} failed with exit code {done.returncode}")
    target = out / ("alliance/setup.json" if step == "setup" else "simulator/pooled.json")
    return json.loads(target.read_text())


def build_summary(opts, job: JobSpec, result: JobResult, setup: dict, pooled: dict, coordinator: CoordinatorPaths,
                  seconds: float) -> dict:
    """What the analyst gets: alliance-level figures only (the nodes released them as sums
    over enough contributors), the privacy spent, who sat out and why (by code)."""
    figures = result.metrics or {}

    def group(name: str) -> dict:
        g = figures.get(name) or {}
        mase = {m: (g.get(m) or {}).get("mase") for m in ARMS}
        smape = {m: (g.get(m) or {}).get("smape") for m in ARMS}
        lines = headlines(mase, g.get("versus") or {}, job.dp.enabled)
        best = lines["best_local_arm"]
        mase["best_local"], smape["best_local"] = (mase[best], smape[best]) if best else (None, None)
        return {"nodes": g.get("nodes", 0), "mase": mase, "smape": smape, "interval_coverage": g.get("coverage"), **lines}

    everyone = group("all")
    refusals = {b: reason for r in result.rounds for b, reason in r.refused.items()}
    return {
        "job_id": job.job_id,
        "branches": len(setup["branches"]),
        "branches_evaluated": everyone["nodes"],
        "evaluated_by": result.evaluated_by,
        "released_by": result.released_by,
        "min_contributors": "each node's node.json min_contributors (default 3): no figure is released over fewer",
        "rounds": job.rounds,
        "horizon_months": job.horizon,
        "holdout_months": job.holdout,
        "customer_dp": job.customer_dp is not None,
        "scored_on": ("each node's customer-level release of its held-out months (what may leave a node; its noise "
                      "raises every method's error alike); each branch's report on its node scores its true months")
                     if job.customer_dp else "each node's held-out months",
        "dp": job.dp.enabled,
        "he": {
            "enabled": job.he.enabled,
            "scheme": "CKKS" if job.he.enabled else None,
            "nodes_opted_out": None if job.he.enabled else "every node's node.json sets require_he false for this comparison run",
            "poly_modulus_degree": job.he.params.poly_modulus_degree if job.he.enabled else None,
            "coeff_mod_bit_sizes": list(job.he.params.coeff_mod_bit_sizes) if job.he.enabled else None,
            "bytes_per_round": int(np.mean([r.bytes_received for r in result.rounds])) if result.rounds else 0,
            "bytes_down_per_round": int(np.mean([r.bytes_sent for r in result.rounds])) if result.rounds else 0,
        },
        "mase": {**everyone["mase"], "central": (pooled.get("all") or {}).get("mase")},
        "smape": {**everyone["smape"], "central": (pooled.get("all") or {}).get("smape")},
        **{key: everyone[key] for key in HEADLINE_KEYS},
        "interval_coverage": everyone["interval_coverage"],
        "forecast": _forecast(job, figures.get("totals") or {}),
        "young_branches": _with_pooled({"definition": f"under {YOUNG_MONTHS} months of training history",
                                        "released": bool(group("young")["nodes"]), **group("young")}, pooled.get("young")),
        "new_stores": _with_pooled({"definition": f"under {NEW_STORE_MONTHS} months of training history (stores too new "
                                                  "to score a forecast sit out, among the evaluation refusals)",
                                    "released": bool(group("new_stores")["nodes"]), **group("new_stores")},
                                   pooled.get("new_stores")),
        "launch_window": _with_pooled({"definition": "branches whose held-out months include a model launch in their region",
                                       "released": bool(group("launch_window")["nodes"]), **group("launch_window")},
                                      pooled.get("launch_window")),
        "central": pooled,
        "epsilon": {
            "max": job.dp.target_epsilon if job.dp.enabled and result.rounds else None,
            "bound": "the job's target: each node plans its noise for it and stops at its plan; the exact spend per node "
                     "stays on the node (sovereign node budget), since it would reveal the branch's size",
            "target": job.dp.target_epsilon if job.dp.enabled else None,
            "delta": job.dp.delta if job.dp.enabled else None,
            "accountant": job.dp.accountant if job.dp.enabled else None,
            "unit": f"one training window ({job.lags} months of a branch's units plus the {job.horizon} that follow)",
            "customer": _customer(job, setup) if result.rounds and (job.dp.enabled or job.customer_dp) else None,
            "window_level": _window_level(job) if job.dp.enabled and result.rounds else None,
            "node_level": {
                "epsilon": round(result.rounds[-1].node_level_epsilon, 4), "delta": job.node_dp.delta,
                "clip": job.node_dp.clip, "noise_multiplier": job.node_dp.noise_multiplier, "nodes": job.node_dp.nodes,
                "unit": "one dealership's participation (its whole update)",
            } if job.node_dp.enabled and result.rounds and result.rounds[-1].node_level_epsilon is not None else None,
        },
        "branches_releasing_own_metrics": result.branch_metrics,
        "refusals": refusals,
        "evaluation_refusals": result.evaluation_refused,
        "node_policies": setup["node_policies"],
        "quarantined_rows": result.rounds[0].quarantined if result.rounds else {},
        "final_model_digest": result.final_model_digest,
        "lineage": {
            "coordinator": coordinator.lineage_url,
            "nodes": {b: f"sqlite:///{(opts.out / 'nodes' / b / 'lineage.db').resolve()}" for b in setup["branches"]},
        },
        "seconds": round(seconds, 1),
    }


def _forecast(job: JobSpec, totals: dict) -> dict:
    """The job's deliverable to the analyst: the alliance's and each region's units for the
    months after the data, with intervals, released as sums over enough branches."""
    return {
        "months_ahead": job.horizon,
        "what": "units sold in each of the next months after every branch's last complete month, summed over the branches "
                "in the group; intervals add the branches' forecast variances (branches taken as independent)",
        "alliance": totals.get("alliance") or {"nodes": 0},
        "regions": {r: totals.get(r) or {"nodes": 0} for r in job.regions},
    }


def _with_pooled(group: dict, pooled: dict | None) -> dict:
    """A group's figures with the simulator-side pooled experiment's row beside them (only
    where the group itself was released: there is nothing to compare with otherwise)."""
    shown = pooled if group["released"] else None
    group["mase"]["central"] = (shown or {}).get("mase")
    group["smape"]["central"] = (shown or {}).get("smape")
    return group


HEADLINE_KEYS = ("best_local_arm", "diverged", "federated_vs_best_local_mase_improvement", "federated_vs_best_local",
                 "federated_vs_local_mase_improvement", "federated_vs_local_dp_mase_improvement",
                 "federated_vs_seasonal_naive_mase_improvement", "federated_vs_moving_average_3_mase_improvement")


def headlines(mase: dict, versus: dict, dp: bool) -> dict:
    """The comparisons a headline may quote. The yardstick is `best_local`, the strongest
    statistical method a branch can run alone (`common.evaluation.best_local`); seasonal naive
    is always beside it; an arm that diverged is named and never quoted as a ratio."""
    best = best_local(mase)
    broken = sorted(arm for arm in ARMS if diverged(mase, arm))
    vs_best = versus.get(best) if best else None
    return {
        "best_local_arm": best,
        "diverged": broken,
        "federated_vs_best_local_mase_improvement": _improvement(mase, best, broken) if best else None,
        "federated_vs_best_local": {"arm": best, **vs_best} if vs_best else None,
        "federated_vs_local_mase_improvement": _improvement(mase, "local", broken),
        "federated_vs_local_dp_mase_improvement": _improvement(mase, "local_dp", broken) if dp else None,
        "federated_vs_seasonal_naive_mase_improvement": _improvement(mase, "seasonal_naive", broken),
        "federated_vs_moving_average_3_mase_improvement": _improvement(mase, "moving_average_3", broken),
    }


def _improvement(mase: dict, baseline: str, broken: list[str]) -> float | None:
    """1 − federated / baseline, or None where either is missing or diverged."""
    if "federated" in broken or baseline in broken or not mase.get("federated") or not mase.get(baseline):
        return None
    return round(1 - mase["federated"] / mase[baseline], 4)


def customer_request(opts: DemoOptions) -> CustomerDPRequest | None:
    """The demo's customer-level request: ε per year over the simulator's months (its DMS
    window to its last complete month; with --data, up to each node's last complete month)."""
    if opts.customer_epsilon is None:
        return None
    last = None if opts.data is not None else f"{DEFAULT_AS_OF:%Y-%m}"
    return CustomerDPRequest(epsilon=opts.customer_epsilon, first_month=f"{DMS_WINDOW_START:%Y-%m}", last_month=last)


def _customer(job: JobSpec, setup: dict) -> dict:
    """What one customer is promised over everything the nodes released: the job's customer-
    level ε per year at the nodes' δ (each node composes it with its earlier releases and holds
    the total to its yearly budget), and the same release for a customer who bought every year."""
    if job.customer_dp is None:
        return _window_level(job)
    nodes = setup.get("customer_privacy") or {}
    delta = max(n["delta"] for n in nodes.values())
    z = release_noise_multiplier(job.customer_dp.epsilon, delta)
    first = job.customer_dp.first_month
    last = job.customer_dp.last_month or f"{date.today():%Y-%m}"
    years = int(last[:4]) - int(first[:4]) + 1
    bounds = sorted({json.dumps(n["bound"], sort_keys=True) for n in nodes.values()})
    return {
        "unit": "one customer of one dealership: all their purchases there in one calendar year",
        "epsilon": round(composed_epsilon([z], delta), 4),
        "requested_epsilon": job.customer_dp.epsilon,
        "delta": delta,
        "per": "calendar year of purchases, over everything the nodes released",
        "meaningful": delta < 1e-3,
        "every_year_epsilon": round(every_year_epsilon(z, years, delta), 4),
        "every_year_note": f"a customer who bought in each of the {years} years of the window, over this job",
        "window": {"first_month": first, "last_month": job.customer_dp.last_month, "years": years},
        "bound": [json.loads(b) for b in bounds],
        "budget_epsilon_per_year": min(n["epsilon_per_year"] for n in nodes.values()),
        "mechanism": "each node releases its bounded monthly counts once per job with discrete Gaussian noise (OpenDP); "
                     "training, evaluation sums and forecast totals are computed from that release",
        "accountant": "RDP (Opacus), composed per year across jobs by each node's ledger; cross-checked against "
                      "Google's dp_accounting and OpenDP's privacy map in the tests",
        "noise_multiplier": round(z, 4),
    }


def _window_level(job: JobSpec) -> dict:
    """The window-level guarantee restated for one customer (one sale moves one month's
    total, which sits in up to lags + horizon windows): group privacy over the job's target."""
    eps, delta = group_privacy(job.dp.target_epsilon, job.dp.delta, job.lags + job.horizon)
    delta = float(f"{min(delta, 1.0):.2g}")
    return {
        "unit": "one customer's sale (one month of one branch)",
        "windows_per_month": job.lags + job.horizon,
        "epsilon": round(eps, 2),
        "delta": delta,
        "meaningful": delta is not None and delta < 1e-3,
        "note": "group privacy over the windows that hold the sale's month: (k·ε, k·e^((k-1)ε)·δ); "
                "a delta near 1 means the window-level guarantee says little about one customer",
    }


def print_forecast(console: Console, forecast: dict) -> None:
    """The regional and alliance forecast for the months ahead, with its 80 % interval."""
    groups = {"alliance": forecast["alliance"], **forecast["regions"]}
    shown = {name: g for name, g in groups.items() if g.get("nodes")}
    if not shown:
        console.print("[yellow]no forecast total was released (fewer branches than the nodes' minimum)[/]")
        return
    table = Table(title="forecast: units sold in the months ahead (80 % interval), released as sums over enough branches")
    table.add_column("month")
    for name, g in shown.items():  # a column per group, a row per month: fits an 80-column terminal
        table.add_column(f"{name}\n{g['nodes']} branches", justify="right", overflow="fold")
    for h in range(forecast["months_ahead"]):
        table.add_row(f"+{h + 1}", *(f"{g['point'][h]:,.0f} ({g['low80'][h]:,.0f}–{g['high80'][h]:,.0f})"
                                     for g in shown.values()))
    withheld = [name for name, g in groups.items() if not g.get("nodes")]
    console.print(table)
    if withheld:
        console.print(f"  withheld (too few branches to release): {', '.join(withheld)}")


def print_summary(console: Console, summary: dict, out: Path) -> None:
    released = "the customer-level release of " if summary["customer_dp"] else ""
    table = Table(title=f"held-out accuracy on {released}the last {summary['holdout_months']} months, alliance-level over "
                        f"{summary['branches_evaluated']} branches (released as encrypted sums)")
    table.add_column("forecast")
    table.add_column("mean MASE (lower is better)", justify="right")
    table.add_column("mean sMAPE %", justify="right")
    for m in METHODS:
        if summary["mase"].get(m) is not None:
            broken = m in summary["diverged"]
            table.add_row(LABELS[m](summary) + (" [red](diverged)[/]" if broken else ""),
                          fmt(summary["mase"][m]), fmt(summary["smape"][m]))
    console.print(table)
    if not summary["branches_evaluated"]:
        console.print("[yellow]no alliance-level accuracy was released (fewer contributors than the nodes' minimum)[/]")
    for line in headline_lines(summary):
        console.print(line)
    for key, name in (("young_branches", "young branches"), ("new_stores", "new stores"),
                      ("launch_window", "branches in a launch window")):
        group = summary[key]
        if group["federated_vs_best_local_mase_improvement"] is not None:
            console.print(f"  for the {group['nodes']} {name} ({group['definition']}): "
                          f"{group['federated_vs_best_local_mase_improvement']:+.1%} vs the best a branch can do alone "
                          f"({ARM_NAMES[group['best_local_arm']]})")
    coverage = summary["interval_coverage"]
    if coverage:
        console.print(f"intervals of the federated forecast on the held-out months: {coverage['80']:.0%} inside the 80 % "
                      f"interval, {coverage['95']:.0%} inside the 95 % one")
    print_forecast(console, summary["forecast"])
    customer = summary["epsilon"]["customer"]
    if customer and "per" in customer:
        bound = customer["bound"][0] if len(customer["bound"]) == 1 else None
        console.print(f"privacy: every customer, ε ≤ {customer['epsilon']:.2f} per year of purchases (δ = {customer['delta']:g}) "
                      "over everything the nodes released" + (f", at most {bound['max_sales_per_year']} of a customer's sales "
                                                              "counted a year" if bound else "")
                      + f"; one who bought in all {customer['window']['years']} years: ε ≤ {customer['every_year_epsilon']:.2f}")
    if summary["epsilon"]["max"] is not None:
        console.print(f"{'  and' if customer and 'per' in customer else 'privacy:'} ε ≤ {summary['epsilon']['max']:.2f} at "
                      f"δ = {summary['epsilon']['delta']:g} per training window (DP-SGD), every node (each stops at its plan; "
                      "exact spends stay on the nodes)")
        window = summary["epsilon"]["window_level"]
        if window and not (customer and "per" in customer):
            console.print(f"  for one customer's sale (in up to {window['windows_per_month']} windows): ε ≤ {window['epsilon']:g}, "
                          f"δ ≤ {window['delta']:.2g}" + ("" if window["meaningful"] else " — weak: see summary.json epsilon.customer"))
    node_level = summary["epsilon"]["node_level"]
    if node_level:
        console.print(f"node-level DP (σ = {node_level['noise_multiplier']:g}, clip {node_level['clip']:g}): one dealership's "
                      f"participation is protected at ε ≤ {node_level['epsilon']:.2f}, δ = {node_level['delta']:g}")
    if not summary["he"]["enabled"]:
        console.print("[yellow]encryption off:[/] " + summary["he"]["nodes_opted_out"])
    kinds = Counter((p["policy"], p["cross_border"]) for p in summary["node_policies"].values() if "policy" in p)
    console.print("branch policies: " + ", ".join(
        f"{name} ×{n}" + (" (results go abroad: dates to month, prices bucketed, VINs keyed-hashed)" if abroad and name == "foreign-dealer" else "")
        for (name, abroad), n in sorted(kinds.items())
    ))
    if summary["refusals"]:
        causes = Counter(summary["refusals"].values())
        listed = ", ".join(f"{cause} ({n})" for cause, n in causes.most_common())
        console.print(f"[yellow]{len(summary['refusals'])} branches sat out training:[/] {listed}; see summary.json")
    console.print(f"wrote {out / 'summary.json'} and {out / 'report.html'} in {summary['seconds']:.0f}s; each branch's own "
                  f"forecast stays on its node: sovereign node report --node-dir {out / 'nodes' / '<branch>'}")


LABELS = {
    "federated": lambda s: "federated (this job" + (", DP" if s["dp"] else "") + (", HE" if s["he"]["enabled"] else "") + ")",
    "central": lambda s: "all data pooled (simulator-side upper bound)",
    "best_local": lambda s: f"best a branch can do alone: {ARM_NAMES.get(s['best_local_arm'], '-')}",
    **{arm: (lambda s, name=name: f"  each branch alone: {name}") for arm, name in ARM_NAMES.items()},
}
