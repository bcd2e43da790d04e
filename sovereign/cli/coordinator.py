"""`sovereign coordinator ...`: run the coordinator service and manage who may use it.

    sovereign coordinator serve [--config coordinator.yaml] [--host H --port P]
    sovereign coordinator account add NAME --role ROLE [--scope S]   (prints the token once)
    sovereign coordinator node add NODE_ID --public-key FILE [--region R --country CC]
"""

from __future__ import annotations

from pathlib import Path

import typer

from sovereign.cli.console import console, fail

coordinator_app = typer.Typer(help="The coordinator service (REST API, OpenAPI at /docs) and its accounts and nodes.",
                              no_args_is_help=True)
account_app = typer.Typer(help="Accounts and their tokens (admin, analyst, regional_analyst, branch_it, compliance).",
                          no_args_is_help=True)
node_app = typer.Typer(help="The nodes the coordinator may request jobs of.", no_args_is_help=True)
coordinator_app.add_typer(account_app, name="account")
coordinator_app.add_typer(node_app, name="node")

CONFIG_HELP = "Coordinator settings (YAML); without it: SQLite under ./var, 127.0.0.1:8080."


def _settings(config: Path | None):
    from coordinator.settings import SettingsError, load_settings

    try:
        return load_settings(config)
    except SettingsError as exc:
        fail(str(exc))


def _store(config: Path | None):
    from coordinator.store import CoordinatorStore, StoreError

    try:
        return CoordinatorStore(_settings(config).jobs_url())
    except StoreError as exc:
        fail(str(exc))


@coordinator_app.command("serve")
def serve(
    config: Path | None = typer.Option(None, "--config", help=CONFIG_HELP),
    host: str | None = typer.Option(None, help="Address to listen on (default from settings: 127.0.0.1)."),
    port: int | None = typer.Option(None, help="Port to listen on (default from settings: 8080)."),
    nodes_root: Path | None = typer.Option(None, help="Run started jobs on Flower's simulation runtime over these node "
                                                      "directories (e.g. runs/demo/nodes); without it, jobs are only tracked."),
    coordinator_dir: Path | None = typer.Option(None, help="With --nodes-root: the coordinator directory holding the "
                                                           "alliance's public context and the nodes' lineage keys."),
) -> None:
    """Serve the coordinator's REST API and its web console (at /) until interrupted."""
    import uvicorn

    from coordinator.api.app import create_app

    settings = _settings(config)
    settings = settings.model_copy(update={k: v for k, v in (("host", host), ("port", port)) if v is not None})
    settings.var.mkdir(parents=True, exist_ok=True)
    if nodes_root is not None:
        from coordinator.settings import RunnerSettings

        if coordinator_dir is None or not (nodes_root / "index.json").is_file():
            fail("--nodes-root needs node directories with an index.json (sovereign demo makes them) and --coordinator-dir")
        settings = settings.model_copy(update={"runner": RunnerSettings(kind="simulation", nodes_root=nodes_root,
                                                                        coordinator_dir=coordinator_dir)})
    from sovereign.service_runner import runner_from_settings

    from sovereign.console.web import mount_console

    app = mount_console(create_app(settings, runner=runner_from_settings(settings.runner)))
    where = {None: "jobs are only tracked (no runner configured)", "simulation": "jobs run on Flower's simulation runtime",
             "deployment": "jobs run on the SuperLink in "
                           f"{settings.runner.flower.flwr_home if settings.runner and settings.runner.flower else ''}"}
    console.print(f"coordinator on http://{settings.host}:{settings.port} (console: /, OpenAPI: /docs); jobs store "
                  f"{settings.jobs_url()}; {where[settings.runner.kind if settings.runner else None]}")
    uvicorn.run(app, host=settings.host, port=settings.port, log_level="warning")


@account_app.command("add")
def account_add(
    name: str = typer.Argument(..., help="Account name."),
    role: str = typer.Option(..., help="admin, analyst, regional_analyst, branch_it or compliance."),
    scope: str | None = typer.Option(None, help="The region of a regional_analyst, the node id of branch_it."),
    config: Path | None = typer.Option(None, "--config", help=CONFIG_HELP),
) -> None:
    """Make an account and print its token (once: only its hash is kept)."""
    from coordinator.api.app import create_account
    from coordinator.jobs import InvalidJob
    from coordinator.resources import Role
    from coordinator.store import Conflict

    try:
        made = create_account(_store(config), name, Role(role), scope)
    except ValueError as exc:
        if isinstance(exc, InvalidJob):
            fail(str(exc))
        fail(f"--role {role}: choose one of {', '.join(r.value for r in Role)}")
    except Conflict as exc:
        fail(str(exc))
    console.print(f"account {made.account.name} ({made.account.role.value}"
                  f"{', ' + made.account.scope if made.account.scope else ''}); its token, shown once:")
    typer.echo(made.token)


@node_app.command("add")
def node_add(
    node_id: str = typer.Argument(..., help="The node's id (its branch id)."),
    public_key: Path = typer.Option(..., help="The node's Ed25519 public key (PEM), which signs its approvals."),
    region: str | None = typer.Option(None, help="The node's region."),
    country: str | None = typer.Option(None, help="The node's ISO country code."),
    config: Path | None = typer.Option(None, "--config", help=CONFIG_HELP),
) -> None:
    """Register a node the coordinator may request jobs of."""
    from pydantic import ValidationError

    from common.validation import first_error
    from coordinator.resources import NodeRecord
    from coordinator.store import Conflict
    from lineage.signing import SigningKeyError, load_public_key

    try:
        load_public_key(public_key)
        node = NodeRecord(node_id=node_id, public_key=public_key.read_text(), region=region, country=country)
        _store(config).add_node(node)
    except SigningKeyError as exc:
        fail(str(exc))
    except ValidationError as exc:
        fail(first_error(exc))
    except Conflict as exc:
        fail(str(exc))
    console.print(f"node {node_id} registered")
