"""`sovereign node ...`: what branch IT runs on the node: its privacy budget and spends, and the
branch's own forecast report (which never leaves the node)."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.table import Table

from sovereign.console import console, fail

node_app = typer.Typer(help="What branch IT runs on the node: its privacy budget, its own forecast and its report.",
                       no_args_is_help=True)


def _node_config(node_dir: Path):
    """The node's configuration, or a one-line error naming the file."""
    from node_agent.config import NodeConfigError, load_node_config

    try:
        return load_node_config(node_dir)
    except NodeConfigError as exc:
        fail(str(exc))


@node_app.command("budget")
def budget_cmd(
    node_dir: Path = typer.Option(..., help="The node's directory (holds node.json and privacy/ledger.db)."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Spent and remaining privacy per dataset, and each job's plan and spend."""
    from node_agent.ledger import PrivacyLedger, standing

    config = _node_config(node_dir)
    ledger_file = config.privacy_dir / "ledger.db"
    spends_by_dataset = {}
    if ledger_file.exists():
        ledger = PrivacyLedger(config.ledger_url)
        spends_by_dataset = {d: ledger.spends(d) for d in set(config.budgets) | {config.dataset}}
        ledger.close()
    report = {}
    for dataset, budget in config.budgets.items():
        spends = spends_by_dataset.get(dataset, [])
        now = standing(dataset, budget, spends)
        report[dataset] = {
            "budget": budget.model_dump(), "committed_epsilon": now.committed_epsilon, "remaining_epsilon": now.remaining_epsilon,
            "committed_delta": now.committed_delta, "remaining_delta": now.remaining_delta,
            "jobs": [{"job_id": s.job_id, "status": s.status, "planned_epsilon": s.planned_epsilon, "epsilon": s.epsilon,
                      "delta": s.delta, "accountant": s.accountant, "reason": s.reason} for s in spends],
        }
    if as_json:
        typer.echo(json.dumps({"node": config.branch_id, "datasets": report}, indent=2))
        return
    if not report:
        console.print(f"{config.branch_id}: no privacy budget set in node.json; the node refuses DP jobs until one is")
        return
    for dataset, r in report.items():
        console.print(f"[bold]{config.branch_id} / {dataset}[/]: ε {r['committed_epsilon']:.3g} committed of "
                      f"{r['budget']['epsilon']:g}, {r['remaining_epsilon']:.3g} left; δ {r['committed_delta']:g} of "
                      f"{r['budget']['delta']:g}")
        table = Table()
        for column in ("job", "status", "planned ε", "spent ε", "δ", "accountant", "note"):
            table.add_column(column, overflow="fold")
        for j in r["jobs"]:
            table.add_row(j["job_id"], j["status"], f"{j['planned_epsilon']:.3f}", f"{j['epsilon']:.3f}", f"{j['delta']:g}",
                          j["accountant"], j["reason"] or "")
        console.print(table)


@node_app.command("report")
def report_cmd(
    node_dir: Path = typer.Option(..., help="The node's directory (holds node.json and reports/)."),
    job: str = typer.Option(None, help="A job id; default the newest job this node evaluated."),
    plot: Path = typer.Option(None, help="Also draw the branch's history, actuals and forecasts to this PNG."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """This branch's own forecast and accuracy for a job: they never leave the node."""
    from node_agent.report import read_branch_reports

    config = _node_config(node_dir)
    reports = [r for r in read_branch_reports(config) if job is None or r["job_id"] == job]
    if not reports:
        fail(f"--node-dir {node_dir}: no forecast report" + (f" for job {job}" if job else "") + " on this node yet")
    report = reports[-1]
    if as_json:
        typer.echo(json.dumps(report, indent=2))
        return
    console.print(f"[bold]{report['branch_id']}[/], job {report['job_id']}: held-out months {report['months'][0]} to "
                  f"{report['months'][-1]} ({report['history_months']} months of history before them)")
    table = Table()
    for column in ("month", "actual", *report["forecasts"]):
        table.add_column(column.replace("_", " "), justify="right")
    for i, month in enumerate(report["months"]):
        table.add_row(month, f"{report['actual'][i]:g}", *(f"{f[i]:.1f}" for f in report["forecasts"].values()))
    table.add_row("MASE", "", *(f"{report['scores'][arm]['mase']:.3f}" for arm in report["forecasts"]))
    console.print(table)
    if plot is not None:
        _plot_branch(report, plot)
        console.print(f"wrote {plot}")


@node_app.command("forecast")
def forecast_cmd(
    node_dir: Path = typer.Option(..., help="The node's directory (holds node.json and reports/)."),
    job: str = typer.Option(None, help="A job id; default the newest job this node evaluated."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """This branch's forecast of the months after its data, from the job's model, with 80 % and
    95 % intervals calibrated on the branch's own history. It never leaves the node; only its
    share of the regional totals does, inside an encrypted sum."""
    from node_agent.report import read_branch_reports

    config = _node_config(node_dir)
    reports = [r for r in read_branch_reports(config) if (job is None or r["job_id"] == job) and r.get("outlook")]
    if not reports:
        fail(f"--node-dir {node_dir}: no forecast" + (f" for job {job}" if job else "") + " on this node yet "
             "(a job delivers one at its held-out evaluation)")
    report = reports[-1]
    ahead, coverage = report["outlook"], report.get("coverage") or {}
    if as_json:
        typer.echo(json.dumps({"branch_id": report["branch_id"], "job_id": report["job_id"], **ahead,
                               "held_out_coverage": coverage}, indent=2))
        return
    table = Table(title=f"{report['branch_id']}: units sold in the months ahead (job {report['job_id']}, stays on this node)")
    for column in ("month", "forecast", "80 % interval", "95 % interval"):
        table.add_column(column, justify="right")
    for i, month in enumerate(ahead["months"]):
        table.add_row(month, f"{ahead['point'][i]:.1f}", f"{ahead['low80'][i]:.1f} – {ahead['high80'][i]:.1f}",
                      f"{ahead['low95'][i]:.1f} – {ahead['high95'][i]:.1f}")
    console.print(table)
    if coverage:
        console.print(f"on the held-out months these intervals held {coverage['80']:.0%} (80 %) and {coverage['95']:.0%} (95 %) "
                      "of the actual months")


def _plot_branch(report: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    history, actual = report["history_tail"], report["actual"]
    fig, ax = plt.subplots(figsize=(7, 3.2))
    ax.plot(range(-len(history), 0), history, color="black", lw=1.2, label="history")
    ax.plot(range(len(actual)), actual, color="black", lw=1.8, label="actual (held out)")
    for arm, values in report["forecasts"].items():
        ax.plot(range(len(values)), values, lw=1.2, ls="-" if arm == "federated" else "--", label=arm.replace("_", " "))
    ax.axvline(-0.5, color="#bbb", lw=0.8)
    ax.set_title(f"{report['branch_id']}: job {report['job_id']}", fontsize=9)
    ax.set_ylabel("units sold")
    ax.legend(fontsize=7)
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)
