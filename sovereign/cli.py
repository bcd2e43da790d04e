"""The `sovereign` command. One sub-command per area; each prints a one-line cause and
exits non-zero on bad input, never a traceback."""

from __future__ import annotations

from pathlib import Path

import typer
from pydantic import ValidationError

from sovereign.console import console, fail

app = typer.Typer(
    help="Sovereign: privacy-preserving federated forecasting for dealer and branch networks.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _register_areas() -> None:
    from sovereign.lineage_cli import lineage_app
    from sovereign.policy_cli import policy_app
    from sovereign.node_cli import node_app
    from sovereign.privacy_cli import privacy_app
    from sovereign.experiment_cli import experiment_app
    from sovereign.coordinator_cli import coordinator_app
    from sovereign.job_cli import job_app

    app.add_typer(node_app, name="node")
    app.add_typer(policy_app, name="policy")
    app.add_typer(privacy_app, name="privacy")
    app.add_typer(lineage_app, name="lineage")
    app.add_typer(experiment_app, name="experiment")
    app.add_typer(coordinator_app, name="coordinator")
    app.add_typer(job_app, name="job")


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
    epsilon: float = typer.Option(8.0, help="Target ε per node for the whole job, at δ = 1e-5."),
    node_dp: bool = typer.Option(False, "--node-dp/--no-node-dp", help="Also node-level DP: each node clips its update "
                                 "and adds its share of noise before encryption (protects a dealership's participation)."),
    node_noise: float = typer.Option(1.0, help="Node-level DP: noise multiplier of the summed update."),
    node_clip: float = typer.Option(0.5, help="Node-level DP: L2 bound on each node's update."),
) -> None:
    """Run a joint forecast on embedded defaults, end to end, and report its accuracy."""
    from sovereign.demo import DemoOptions, run_demo
    from sovereign.federation import SetupError

    try:
        opts = DemoOptions(branches=branches, rounds=rounds, seed=seed, out=out, data=data, dp=dp, he=he, epsilon=epsilon,
                           node_dp=node_dp, node_noise=node_noise, node_clip=node_clip)
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
    nodes_root: Path = typer.Option(Path("runs/demo/nodes"), help="Node directories (made by `sovereign demo`)."),
    coordinator_dir: Path = typer.Option(Path("runs/demo/coordinator"), help="Holds the alliance's public context."),
    rounds: int = typer.Option(2, min=1, help="Federated rounds."),
    out: Path = typer.Option(Path("runs/deploy"), help="TLS material, node keys, SuperLink state and logs."),
) -> None:
    """Run a job on Flower's deployment engine on this machine: a SuperLink with TLS and
    SuperNode authentication, one authenticated SuperNode per node directory that runs only
    the app bundle signed by the alliance's publisher key and listed in its node.json, `flwr run`."""
    import json

    from node_agent.config import NodeConfigError
    from sovereign.deployment import PUBLISHER_KEY_ID, DeploymentError, LocalDeployment, allow_app, free_port, write_trusted_entities

    index = nodes_root / "index.json"
    if not index.exists():
        fail(f"--nodes-root {nodes_root}: no index.json; run `sovereign demo` first to set up node directories")
    if not (coordinator_dir / "he" / "public.ctx").exists():
        fail(f"--coordinator-dir {coordinator_dir}: no he/public.ctx; run `sovereign demo` first (key ceremony)")
    branches = json.loads(index.read_text())["nodes"]
    app_dir = Path(__file__).resolve().parents[1]
    if not (app_dir / "pyproject.toml").exists():
        fail("deploy-local needs a source checkout (the Flower app is built from its pyproject.toml)")
    try:
        with LocalDeployment(out, port=free_port()) as dep, console.status("starting SuperLink (TLS, node authentication)") as status:
            dep.start_superlink()
            status.update("building the app bundle and signing it with the publisher key")
            signed = dep.publish(app_dir)
            publisher = dep.publisher_public_key()
            for branch in branches:
                status.update(f"registering and starting SuperNode {branch}")
                node_dir = nodes_root / branch
                allow_app(node_dir, signed)  # the node owner's allow-list: exactly this bundle
                entities = write_trusted_entities(node_dir / "trusted-entities.yaml", {PUBLISHER_KEY_ID: publisher})
                dep.start_supernode(branch, dep.register(branch), node_dir, free_port(), entities)
            status.update(f"flwr run {signed.app_spec}: {rounds} rounds on {len(branches)} SuperNodes (logs in {out / 'logs'})")
            dep.run(signed, {"coordinator-dir": str(coordinator_dir.resolve()), "rounds": rounds,
                             "min-nodes": len(branches)})  # no job-id: each deploy-local run is a new job
    except (DeploymentError, NodeConfigError) as exc:
        fail(str(exc), 1)
    console.print(f"app {signed.app_spec} (FAB sha256 {signed.fab_hash[:12]}…) signed by {out / 'keys' / 'publisher.pub'}; "
                  f"each SuperNode trusts only that key, each node.json lists this build of the app and no other")
    result = json.loads((coordinator_dir / "result.json").read_text())
    for r in result["rounds"]:
        refused = ", ".join(f"{b} {why}" for b, why in sorted(r["refused"].items()))
        console.print(f"round {r['round']}: {len(r['contributors'])} nodes, {r['bytes_received'] / 1e6:.1f} MB up over TLS"
                      + (f"; sat out: {refused}" if refused else ""))
    if not result.get("final_model_digest"):
        from coordinator.rounds import JobResult
        from sovereign.demo import refusal_tally

        fail(f"no round produced a model: {refusal_tally(JobResult.model_validate(result).rounds) or 'no node answered'}", 1)
    metrics = result.get("metrics") or {}
    federated = (metrics.get("all") or {}).get("federated") if "all" in metrics else metrics
    if federated and federated.get("mase") is not None:
        console.print(f"held-out MASE {federated['mase']:.3f}, sMAPE {federated['smape']:.1f}%")


if __name__ == "__main__":
    app()
