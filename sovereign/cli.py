"""The `sovereign` command. One sub-command per area; each prints a one-line cause and
exits non-zero on bad input, never a traceback."""

from __future__ import annotations

from pathlib import Path

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.markup import escape

app = typer.Typer(
    help="Sovereign: privacy-preserving federated forecasting for dealer and branch networks.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console()
err = Console(stderr=True)


def fail(message: str, code: int = 2) -> None:
    err.print(f"[red]error:[/] {escape(message)}", soft_wrap=True, highlight=False)
    raise typer.Exit(code)


@app.command("simulate-dealers")
def simulate_dealers(
    branches: int = typer.Option(20, help="How many dealerships to simulate."),
    seed: int = typer.Option(7, help="Random seed; the same seed writes the same databases."),
    out: Path = typer.Option(Path("runs/dealers"), help="Directory for one SQLite database per dealership."),
) -> None:
    """Write realistic dealer-management-system databases (sales with customer PII, branch info)."""
    from sovereign.simulation.dealers import simulate_alliance

    try:
        profiles = simulate_alliance(branches, seed, out)
    except ValueError as exc:
        fail(str(exc))
    young = sum(1 for p in profiles if (p.history_start.year, p.history_start.month) > (2020, 1))
    console.print(f"wrote {len(profiles)} dealer databases to {out} ({young} young branches)")


@app.command()
def demo(
    branches: int = typer.Option(20, help="Dealerships in the simulated alliance."),
    rounds: int = typer.Option(8, help="Federated rounds."),
    seed: int = typer.Option(7, help="Seed for the simulated data and the model's initial weights."),
    out: Path = typer.Option(Path("runs/demo"), help="Run directory: nodes/, coordinator/, summary.json, report.html."),
    data: Path = typer.Option(None, help="Use dealer databases already written by simulate-dealers."),
    dp: bool = typer.Option(True, "--dp/--no-dp", help="Differential privacy (Opacus DP-SGD) on every node."),
    he: bool = typer.Option(True, "--he/--no-he", help="Homomorphic encryption (CKKS) of every update."),
    epsilon: float = typer.Option(8.0, help="Target ε per node for the whole job, at δ = 1e-5."),
) -> None:
    """Run a joint forecast on embedded defaults, end to end, and report its accuracy."""
    from sovereign.demo import DemoOptions, run_demo
    from sovereign.federation import SetupError

    try:
        opts = DemoOptions(branches=branches, rounds=rounds, seed=seed, out=out, data=data, dp=dp, he=he, epsilon=epsilon)
    except ValidationError as exc:
        e = exc.errors()[0]
        fail(f"--{e['loc'][0]}: {e['msg']}")
    try:
        run_demo(opts, console)
    except (SetupError, ValueError) as exc:
        fail(str(exc), 1)


if __name__ == "__main__":
    app()
