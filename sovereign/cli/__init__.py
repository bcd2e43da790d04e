"""The `sovereign` command. One sub-command per area; each prints a one-line cause and
exits non-zero on bad input, never a traceback."""

from __future__ import annotations

from pathlib import Path

import typer
from pydantic import ValidationError

from sovereign.cli.console import console, fail

app = typer.Typer(
    help="Sovereign: privacy-preserving federated forecasting for dealer and branch networks.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _register_areas() -> None:
    from sovereign.cli.lineage import lineage_app
    from sovereign.cli.policy import policy_app
    from sovereign.cli.node import node_app
    from sovereign.cli.privacy import privacy_app
    from sovereign.cli.experiment import experiment_app
    from sovereign.cli.coordinator import coordinator_app
    from sovereign.cli.job import job_app
    from sovereign.cli.bench import bench_app

    app.add_typer(node_app, name="node")
    app.add_typer(policy_app, name="policy")
    app.add_typer(privacy_app, name="privacy")
    app.add_typer(lineage_app, name="lineage")
    app.add_typer(experiment_app, name="experiment")
    app.add_typer(coordinator_app, name="coordinator")
    app.add_typer(job_app, name="job")
    app.add_typer(bench_app, name="bench")


_register_areas()


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
    he_scheme: str = typer.Option("CKKS", help="CKKS-ring: per-job keys from a node-side ceremony and SecAgg+ masks "
                                  "(collusion-resistant); CKKS: one alliance key."),
    epsilon: float = typer.Option(8.0, help="Target ε per node for the whole job, at δ = 1e-5, per training window (DP-SGD)."),
    customer_epsilon: float = typer.Option(1.0, help="Customer-level ε per year of sales, at each node's δ (1e-6): what "
                                           "the job's release of each branch's monthly counts costs. 0 turns it off."),
    node_dp: bool = typer.Option(False, "--node-dp/--no-node-dp", help="Also node-level DP: each node clips its update "
                                 "and adds its share of noise before encryption (protects a dealership's participation)."),
    node_noise: float = typer.Option(1.0, help="Node-level DP: noise multiplier of the summed update."),
    node_clip: float = typer.Option(0.5, help="Node-level DP: L2 bound on each node's update."),
) -> None:
    """Run a joint forecast on embedded defaults, end to end, and report its accuracy."""
    from sovereign.demo import DemoOptions, run_demo
    from sovereign.federation import SetupError

    try:
        opts = DemoOptions(branches=branches, rounds=rounds, seed=seed, out=out, data=data, dp=dp, he=he, he_scheme=he_scheme, epsilon=epsilon,
                           customer_epsilon=customer_epsilon or None, node_dp=node_dp, node_noise=node_noise, node_clip=node_clip)
    except ValidationError as exc:
        e = exc.errors()[0]
        message = e["msg"].removeprefix("Value error, ")
        fail(f"--{str(e['loc'][0]).replace('_', '-')}: {message}" if e["loc"] else message)
    try:
        run_demo(opts, console)
    except (SetupError, ValueError) as exc:
        fail(str(exc), 1)


@app.command("deploy-local")
def deploy_local(
    branches: int = typer.Option(5, min=2, max=50, help="Simulated dealerships, the first time (later runs reuse --out's nodes)."),
    rounds: int = typer.Option(2, min=1, help="Federated rounds of the joint forecast."),
    out: Path = typer.Option(Path("runs/deploy"), help="Nodes, Flower's keys and state, the service's store, tokens, logs."),
    port: int = typer.Option(8080, min=1, max=65535, help="The coordinator service's port on 127.0.0.1."),
    seed: int = typer.Option(7, help="Seed of the simulated dealerships."),
    once: bool = typer.Option(False, "--once", help="Stop everything after the job instead of serving until Ctrl-C."),
) -> None:
    """The service path on this machine: coordinator service, TLS SuperLink, a SuperNode per dealership.

    Every part is its own process on 127.0.0.1: the coordinator service, a SuperLink with TLS
    and SuperNode authentication, and one SuperNode per dealership running only the app
    bundle signed by the alliance's publisher key and listed in its node.json. Head office
    submits a joint forecast through the REST API, each branch's IT approves it from its
    node, and the rounds run on the SuperNodes; then everything keeps serving until Ctrl-C."""
    from node_agent.config import NodeConfigError
    from sovereign.cli.api_client import ClientError
    from sovereign.deploy_local import DeployLocalError, deploy_local as run
    from sovereign.deployment import DeploymentError

    try:
        job = run(out, branches=branches, rounds=rounds, seed=seed, port=port, once=once, console=console)
    except (DeploymentError, DeployLocalError, NodeConfigError, ClientError) as exc:
        fail(str(exc), 1)
    if job["state"] != "completed":
        raise typer.Exit(1)


