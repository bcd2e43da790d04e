"""Setting up an embedded alliance on one machine: node directories, the key ceremony,
and a Flower simulation with one virtual SuperNode per dealership.

Node-side files live under `<run>/nodes/<branch id>/`, coordinator-side files under
`<run>/coordinator/`, as they would on separate machines.
"""

from __future__ import annotations

import json
import logging
import os
import re
import subprocess
import sys
from pathlib import Path

from sqlalchemy import create_engine, text
from sqlalchemy.exc import SQLAlchemyError

from common.wire import JobSpec
from coordinator.rounds import CoordinatorPaths, JobObserver
from lineage.signing import Signer, public_pem
from coordinator.server_app import build_server_app
from node_agent.config import CustomerPrivacy, NodeConfig, write_node_config
from node_agent.data import job_request
from node_agent.ledger import Budget


class SetupError(RuntimeError):
    """The embedded alliance could not be set up; the message says why in one line."""


def find_dealer_databases(data_dir: Path) -> list[Path]:
    if not data_dir.is_dir():
        raise SetupError(f"--data {data_dir}: no such directory")
    dbs = sorted(data_dir.glob("*.db"))
    if not dbs:
        raise SetupError(f"--data {data_dir}: no dealer databases (*.db) in it; write some with `sovereign simulate-dealers`")
    return dbs


EXAMPLE_POLICIES = Path(__file__).resolve().parents[1] / "policies" / "examples"


def branch_facts(db_url: str) -> tuple[str | None, str | None, str | None]:
    """The country, region and opening month (YYYY-MM) a dealer database declares in its
    `branch` table, if it has one (a table without `opening_date` declares no opening)."""
    engine = create_engine(db_url)
    try:
        with engine.connect() as conn:
            row = conn.execute(text("SELECT country, region FROM branch")).first()
            if not row:
                return None, None, None
            try:
                opened = conn.execute(text("SELECT opening_date FROM branch")).scalar()
            except SQLAlchemyError:
                opened = None
            opened = str(opened)[:7] if opened and re.match(r"^\d{4}-(0[1-9]|1[0-2])", str(opened)) else None
            return row[0], row[1], opened
    except SQLAlchemyError:
        return None, None, None
    finally:
        engine.dispose()


def example_policy_for(country: str | None, home: str, index: int) -> str:
    """The policy an embedded branch declares, as its compliance officer would pick it.

    Branches abroad declare the foreign-dealer policy (with their own jurisdiction); every
    third branch at home, and any branch whose country is unknown, the strict one; the rest
    the domestic one. The demo thereby runs all three example policies.
    """
    if country is None:
        return EXAMPLE_POLICIES.joinpath("strict_dealer.yaml").read_text()
    if country != home:
        text_ = EXAMPLE_POLICIES.joinpath("foreign_dealer.yaml").read_text()
        return (f"# policies/examples/foreign_dealer.yaml, declared by a branch in {country}.\n"
                + text_.replace("\njurisdiction: KR\n", f"\njurisdiction: {country}\n"))
    name = "strict_dealer.yaml" if index % 3 == 2 else "domestic_dealer.yaml"
    return EXAMPLE_POLICIES.joinpath(name).read_text()


DEFAULT_BUDGET = Budget(epsilon=32.0, delta=1e-4)  # four jobs at the default epsilon 8


def setup_nodes(
    dealer_dbs: list[Path], nodes_root: Path, *, home: str = "JP", budget: Budget = DEFAULT_BUDGET,
    accept_non_private: bool = False, require_he: bool = True, min_contributors: int = 3,
    customer_privacy: CustomerPrivacy | None = None, data_since: dict[str, str] | None = None,
) -> list[NodeConfig]:
    """One node directory per dealer database (config, privacy budget and branch policy), and
    the simulation's partition index. `home` is the coordinator's country, where results go;
    `customer_privacy`, when given, is every node's customer-level DP setting, with each
    branch's first month of complete data from `data_since` (what its IT would declare)."""
    configs = []
    at_home = 0
    for db in dealer_dbs:
        branch_id, url = db.stem, f"sqlite:///{db.resolve()}"
        country, region, opened = branch_facts(url)
        config = NodeConfig(branch_id=branch_id, db_url=url, node_dir=nodes_root / branch_id, country=country, region=region,
                            opened=opened,
                            budgets={"sales": budget}, accept_non_private_jobs=accept_non_private,
                            require_he=require_he, coordinator_jurisdiction=home, min_contributors=min_contributors,
                            customer_privacy=customer_privacy and customer_privacy.model_copy(
                                update={"first_month": (data_since or {}).get(branch_id)}))
        write_node_config(config)
        config.policy_path.write_text(example_policy_for(country, home, at_home))
        at_home += country == home
        configs.append(config)
    (nodes_root / "index.json").write_text(json.dumps({"nodes": [c.branch_id for c in configs]}, indent=2))
    return configs


def register_lineage_keys(configs: list[NodeConfig], coordinator: CoordinatorPaths) -> None:
    """Each node makes its lineage signing key (node side) and hands its public half to the
    coordinator (what an auditor verifies that node's lineage against, and what binds a reply
    to its branch) and to every other node (what a node checks forwarded contributions
    against before it decrypts their sum): node to node, like the alliance key."""
    coordinator.node_lineage_keys.mkdir(parents=True, exist_ok=True)
    publics = {}
    for config in configs:
        signer = Signer.load_or_create(config.branch_id, config.lineage_key_dir)
        publics[config.branch_id] = public_pem(signer.public_key)
        (coordinator.node_lineage_keys / f"{config.branch_id}.pub").write_text(publics[config.branch_id])
    for config in configs:
        config.peer_keys_dir.mkdir(parents=True, exist_ok=True)
        for branch, pem in publics.items():
            if branch != config.branch_id:
                (config.peer_keys_dir / f"{branch}.pub").write_text(pem)


def run_key_ceremony(configs: list[NodeConfig], coordinator: CoordinatorPaths, job: JobSpec) -> None:
    """In a separate process, so the secret key never enters the coordinator's process."""
    cmd = [
        sys.executable, "-m", "node_agent.keys",
        "--public", str(coordinator.public_context),
        "--params", job.he.params.model_dump_json(),
        *[str(c.he_secret_path) for c in configs],
    ]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        raise SetupError(f"key ceremony failed: {done.stderr.strip().splitlines()[-1] if done.stderr else done.returncode}")


def run_flower_simulation(server_app, client_app, num_nodes: int, env: dict[str, str]) -> None:
    """Flower's simulation runtime (Ray) on this machine: at most two actors of one CPU each,
    no dashboard, quiet logs. `env` reaches the Ray workers (they inherit the environment)."""
    from flwr.simulation import run_simulation as flwr_run_simulation

    os.environ.update(env)
    os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    os.environ.setdefault("RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", "0")
    cpus = max(1, min(2, os.cpu_count() or 1))
    backend_config = {
        "init_args": {
            "num_cpus": cpus, "include_dashboard": False, "logging_level": logging.ERROR,
            "log_to_driver": False, "configure_logging": True,
        },
        "client_resources": {"num_cpus": 1, "num_gpus": 0.0},
    }
    flwr_logger = logging.getLogger("flwr")
    level = flwr_logger.level
    flwr_logger.setLevel(logging.ERROR)
    try:
        flwr_run_simulation(server_app=server_app, client_app=client_app, num_supernodes=num_nodes,
                            backend_config=backend_config)
    finally:
        flwr_logger.setLevel(level)


def run_simulation(
    job: JobSpec, nodes_root: Path, coordinator: CoordinatorPaths, num_nodes: int, observer: JobObserver | None,
    *, min_contributors: int = 1,
) -> None:
    """Run the job on Flower's simulation runtime (Ray), one virtual SuperNode per branch."""
    from node_agent.client_app import app as client_app

    run_flower_simulation(build_server_app(job, coordinator, observer, min_contributors=min_contributors), client_app,
                          num_nodes,
                          {"SOVEREIGN_NODES_ROOT": str(nodes_root.resolve())})


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
        request = job_request(job, config.dataset, customer_column=config.customer_column_for(job))
        schema = {config.dataset: [f.split(".", 1)[1] for f in request.fields]}
        out[config.branch_id] = {
            "policy": policy.policy, "version": policy.version, "jurisdiction": policy.jurisdiction,
            "hash": policy.content_hash(), "cross_border": policy.jurisdiction != job.destination,
            "treatments": {d.name: d.treatment.describe() for d in evaluate(policy, schema, request)},
        }
    return out
