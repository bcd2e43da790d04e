"""`sovereign node ...`: what branch IT runs on the node: its privacy budget and spends."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.table import Table

from sovereign.console import console, fail

node_app = typer.Typer(help="The node agent's own books: privacy budget per dataset and per job.", no_args_is_help=True)


@node_app.command("budget")
def budget_cmd(
    node_dir: Path = typer.Option(..., help="The node's directory (holds node.json and privacy/ledger.db)."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Spent and remaining privacy per dataset, and each job's plan and spend."""
    from node_agent.config import NodeConfigError, load_node_config
    from node_agent.ledger import PrivacyLedger, standing

    try:
        config = load_node_config(node_dir)
    except NodeConfigError as exc:
        fail(str(exc))
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
