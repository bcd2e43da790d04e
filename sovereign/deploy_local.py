"""`sovereign deploy-local`: the real topology on one machine, every part its own process on
127.0.0.1 — the coordinator service, a SuperLink with TLS and node authentication, one
SuperNode per dealership running only the signed app bundle — and a joint forecast through
the REST API that each branch's IT approves from its node.

Everything lives under one directory (`--out`, default runs/deploy): simulated dealer
databases and node directories the first time, then reused (node lineage and privacy ledgers
are never deleted); Flower's keys, state and logs; the service's settings, store and the
accounts' tokens (`tokens.json`, owner-only: only their hashes are in the store).
"""

from __future__ import annotations

import json
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

from rich.console import Console

from common.files import write_secret
from common.wire import JobSpec
from coordinator.resources import NodeRecord, Role
from coordinator.rounds import CoordinatorPaths
from coordinator.store import CoordinatorStore
from node_agent.config import NodeConfig, load_node_config
from sovereign.deployment import PUBLISHER_KEY_ID, LocalDeployment, allow_app, free_port, write_trusted_entities

APP_DIR = Path(__file__).resolve().parents[1]


class DeployLocalError(RuntimeError):
    """A step of the local deployment failed; the message names it and the log to read."""


def alliance(out: Path, branches: int, seed: int) -> tuple[list[NodeConfig], CoordinatorPaths]:
    """The node directories under `out/nodes` (made on first use from simulated dealers, with
    the key ceremony), and the coordinator's directory."""
    from sovereign.alliance import setup

    index = out / "nodes" / "index.json"
    if not index.exists():  # the embedded demo's set-up: dealers, node directories, lineage keys, key ceremony
        setup(out, JobSpec(job_id="keys"), branches=branches, seed=seed, data=None, accept_non_private=False)
    return ([load_node_config(out / "nodes" / b) for b in json.loads(index.read_text())["nodes"]],
            CoordinatorPaths(out / "coordinator"))


def accounts(store: CoordinatorStore, configs: list[NodeConfig], coordinator: CoordinatorPaths, tokens_file: Path) -> dict:
    """Register the nodes and make the accounts (admin, an analyst `hq`, a compliance
    officer `audit`, branch IT per node) once; their tokens, kept owner-only in `tokens_file`."""
    from coordinator.api.app import create_account

    tokens = json.loads(tokens_file.read_text()) if tokens_file.exists() else {}
    for c in configs:
        if store.node(c.branch_id) is None:
            store.add_node(NodeRecord(node_id=c.branch_id, region=c.region, country=c.country,
                                      public_key=(coordinator.node_lineage_keys / f"{c.branch_id}.pub").read_text()))
    wanted = [("admin", Role.ADMIN, None), ("hq", Role.ANALYST, None), ("audit", Role.COMPLIANCE, None),
              *[(f"it-{c.branch_id}", Role.BRANCH_IT, c.branch_id) for c in configs]]
    for name, role, scope in wanted:
        if name not in tokens:
            tokens[name] = create_account(store, name, role, scope).token
    write_secret(tokens_file, json.dumps(tokens, indent=2).encode())
    return tokens


def _check_port_free(port: int) -> None:
    import socket

    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            raise DeployLocalError(f"--port {port}: something already listens on 127.0.0.1:{port}; pass another port") from None


def wait_until_up(url: str, seconds: float = 60) -> None:
    import httpx

    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/health").status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise DeployLocalError(f"the coordinator service did not answer at {url} within {seconds:.0f}s")


def deploy_local(out: Path, *, branches: int, rounds: int, seed: int, port: int, once: bool, console: Console) -> dict:
    """Bring everything up, run one joint forecast through the service, and (unless `once`)
    keep serving until interrupted. Returns the finished job."""
    from coordinator.settings import load_settings
    from node_agent.approvals import APPROVED, record_owner_decision
    from sovereign.cli.api_client import CoordinatorClient
    from sovereign.cli.job import follow_job

    if not (APP_DIR / "pyproject.toml").exists():
        raise DeployLocalError("deploy-local needs a source checkout (the Flower app is built from its pyproject.toml)")
    out = out.resolve()
    _check_port_free(port)
    with console.status("setting up the dealerships' nodes"):
        configs, coordinator = alliance(out, branches, seed)
    with LocalDeployment(out / "flower", port=free_port()) as dep:
        with console.status("starting the SuperLink (TLS, node authentication)") as status:
            dep.start_superlink()
            status.update("building the app bundle and signing it with the publisher key")
            signed = dep.publish(APP_DIR)
            publisher = dep.publisher_public_key()
            for c in configs:
                status.update(f"registering and starting SuperNode {c.branch_id}")
                allow_app(c.node_dir, signed)  # the node owner's allow-list: exactly this bundle
                entities = write_trusted_entities(c.node_dir / "trusted-entities.yaml", {PUBLISHER_KEY_ID: publisher})
                dep.start_node(c.node_dir, entities)  # `sovereign node run`, as branch IT starts it
            status.update("starting the coordinator service")
            connection = dep.connection(signed)
            settings_file = out / "coordinator.yaml"
            settings_file.write_text(
                f"# written by sovereign deploy-local\nvar: {out / 'var'}\nport: {port}\nrunner:\n  kind: deployment\n"
                f"  coordinator_dir: {coordinator.root}\n  flower:\n    flwr_home: {connection.flwr_home}\n"
                f"    federation: {connection.federation}\n    app: '{connection.app}'\n")
            settings = load_settings(settings_file)
            store = CoordinatorStore(settings.jobs_url())
            tokens = accounts(store, configs, coordinator, out / "tokens.json")
            store.close()
            url = f"http://127.0.0.1:{port}"
            dep.spawn("coordinator-service", [sys.executable, "-m", "sovereign.cli", "coordinator", "serve", "--config",
                                              str(settings_file)])
            wait_until_up(url)
        console.print(f"coordinator service {url} (OpenAPI {url}/docs), SuperLink 127.0.0.1:{dep.port} with TLS and node "
                      f"authentication, {len(configs)} SuperNodes running only {signed.app_spec} "
                      f"(FAB sha256 {signed.fab_hash[:12]}…, signed by {dep.publisher_key}.pub)")
        hq = CoordinatorClient(url, tokens["hq"])
        job_id = f"deploy-{datetime.now(timezone.utc):%Y%m%d-%H%M%S}"
        minimum = min(3, len(configs))
        job = hq.post("/jobs", {"spec": {"job_id": job_id, "rounds": rounds, "local_epochs": 1},
                                "nodes": [c.branch_id for c in configs], "min_contributors": minimum})
        console.print(f"head office (hq) requested {job_id} of {len(configs)} nodes; each branch's IT approves it on its node:")
        spec = JobSpec.model_validate(job["spec"])
        for c in configs:
            reason = "approved by branch IT (deploy-local)"
            signature = record_owner_decision(c, spec, APPROVED, reason)
            CoordinatorClient(url, tokens[f"it-{c.branch_id}"]).post(
                f"/jobs/{job_id}/decisions", {"node_id": c.branch_id, "decision": APPROVED, "reason": reason,
                                              "signature": signature})
            console.print(f"  {c.branch_id}: approved, signed with its lineage key, in its lineage")
        hq.post(f"/jobs/{job_id}/start", {"reason": "started by hq (deploy-local)"})
        job = follow_job(hq, job_id)
        if job["state"] == "completed":
            accuracy = ((job.get("results") or {}).get("accuracy") or {}).get("federated") or {}
            if accuracy.get("mase") is not None:
                console.print(f"held-out MASE {accuracy['mase']:.3f} over the alliance")
        else:
            console.print(f"[red]{job_id} {job['state']}[/]: {job['steps'][-1]['reason']} (logs in {dep.directory / 'logs'})")
        console.print(f"tokens (admin, hq, audit, it-<branch>): {out / 'tokens.json'}; try\n"
                      f"  SOVEREIGN_TOKEN=$(jq -r .hq {out / 'tokens.json'}) .venv/bin/sovereign job status {job_id} "
                      f"--coordinator {url}")
        if not once:
            console.print("serving until Ctrl-C")
            try:
                while all(p.poll() is None for p in dep.named.values()):
                    time.sleep(1)
                console.print("[red]a process of the deployment ended[/]; see the logs in " + str(dep.directory / "logs"))
            except KeyboardInterrupt:
                console.print("stopping")
        return job
