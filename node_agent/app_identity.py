"""Which Flower app bundle (FAB) this ClientApp process is, and whether the node runs it.

Under the deployment engine the SuperNode has already checked the FAB's signature against
the node's `--trusted-entities` before it started this process: that is the guard against
code nobody the node trusts has signed. `NodeConfig.trusted_apps` narrows it further to the
exact apps (id, version, SHA-256 of the FAB) the node owner approved, so that an older or
unreviewed bundle signed by the same publisher does not touch the node's data either.
This check runs inside the app it checks: it binds every genuine build of Sovereign, not an
app written to skip it (the SuperNode's signature check is what keeps those out).

Under the simulation runtime there is no FAB: the check does not apply there.
"""

from __future__ import annotations

import hashlib
import sys
from dataclasses import dataclass
from pathlib import Path

from flwr.app import Context

from node_agent.config import NodeConfig

# Flower 1.41 runs a deployed ClientApp from this function (flwr-clientapp); its locals
# `run` and `fab` are the run and the bundle the SuperNode handed over.
_RUNNER_MODULE = "flwr.supernode.runtime.run_clientapp"
_RUNNER_FUNCTION = "run_clientapp"


@dataclass(frozen=True)
class AppIdentity:
    """A Flower app bundle as the node sees it: `publisher/name`, version, SHA-256 of the FAB."""

    fab_id: str
    fab_version: str
    fab_hash: str

    def __str__(self) -> str:
        return f"{self.fab_id} {self.fab_version} (FAB sha256 {self.fab_hash[:12]}…)"


class AppIdentityError(Exception):
    """The running app's identity cannot be established; the message says why in one line."""


def app_refusal(identity: AppIdentity | None, config: NodeConfig) -> str | None:
    """None if the node's allow-list holds exactly this app; otherwise a one-line reason.

    Pure. `identity` None means the identity is unknown, which is refused like a stranger.
    """
    if identity is None:
        return "app refused: cannot tell which app bundle is running; this node runs only the apps it lists"
    if not config.trusted_apps:
        return f"app refused: {identity} — this node's trusted_apps is empty, it runs no deployed app"
    for app in config.trusted_apps:
        if (app.fab_id, app.fab_version, app.fab_hash) == (identity.fab_id, identity.fab_version, identity.fab_hash):
            return None
    same_version = [a for a in config.trusted_apps if (a.fab_id, a.fab_version) == (identity.fab_id, identity.fab_version)]
    if same_version:
        return (f"app refused: {identity} — its content hash is not the one this node trusts for that version "
                f"({', '.join(a.fab_hash[:12] + '…' for a in same_version)})")
    versions = sorted({a.fab_version for a in config.trusted_apps if a.fab_id == identity.fab_id})
    if versions:
        return f"app refused: {identity} — version not in this node's trusted_apps (trusted: {', '.join(versions)})"
    return f"app refused: {identity} — not in this node's trusted_apps"


def running_app() -> AppIdentity | None:
    """The FAB this process runs, as Flower's ClientApp runner received it; None if this
    code is not running under that runner (simulation, or called in-process).

    Flower does not put the app's identity in the `Context`. The runner
    (`flwr.supernode.runtime.run_clientapp`) pulls the run and the FAB from the SuperNode,
    installs the FAB under `$FLWR_HOME/apps/<publisher>.<name>.<version>.<hash[:8]>` and
    calls the ClientApp from the same thread: its frame holds both. The hash is computed
    here from the FAB's bytes rather than taken on trust, and the code running must be the
    code that FAB installed.

    Raises AppIdentityError when the runner is there but what it holds does not add up.
    """
    frame = sys._getframe(1)
    while frame is not None:
        if frame.f_code.co_name == _RUNNER_FUNCTION and frame.f_globals.get("__name__") == _RUNNER_MODULE:
            return _identity_from_runner(frame.f_locals)
        frame = frame.f_back
    return None


def _identity_from_runner(runner_locals: dict) -> AppIdentity:
    from flwr.common.config import get_project_dir
    from flwr.supercore.fab import Fab
    from flwr.supercore.run import Run

    run, fab = runner_locals.get("run"), runner_locals.get("fab")
    if not isinstance(run, Run) or not isinstance(fab, Fab):
        raise AppIdentityError("app refused: Flower's ClientApp runner holds no run and FAB (unsupported Flower version?)")
    digest = hashlib.sha256(fab.content).hexdigest()
    if digest != run.fab_hash or digest != fab.hash_str:
        raise AppIdentityError(f"app refused: the FAB's content hash {digest[:12]}… is not the run's {run.fab_hash[:12]}…")
    identity = AppIdentity(fab_id=run.fab_id, fab_version=run.fab_version, fab_hash=digest)
    try:
        installed = get_project_dir(run.fab_id, run.fab_version, digest).resolve()
    except ValueError as exc:
        raise AppIdentityError(f"app refused: {exc}") from None
    here = Path(__file__).resolve()
    if not here.is_relative_to(installed):
        raise AppIdentityError(f"app refused: the code running ({here.parent}) is not the bundle {identity} installed at {installed}")
    return identity


def is_simulation(context: Context) -> bool:
    """True only under Flower's simulation runtime: a virtual node (a `partition-id`, no
    `node-dir`) and no deployed FAB. A deployed SuperNode always has `node-dir`."""
    node_config = context.node_config
    return "node-dir" not in node_config and "partition-id" in node_config and running_app() is None


def deployed_app_refusal(context: Context, config: NodeConfig) -> str | None:
    """None if this app may touch the node's data; otherwise the one-line refusal reason.

    Simulation: None (no FAB, nothing to check). Anything else is treated as a deployment:
    the running FAB must be in `config.trusted_apps`, and an identity that cannot be
    established is refused.
    """
    if is_simulation(context):
        return None
    try:
        identity = running_app()
    except AppIdentityError as exc:
        return str(exc)
    return app_refusal(identity, config)
