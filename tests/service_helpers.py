"""What the service tests share: a few dealerships' node directories, accounts made with the
CLI as an admin would, and waiting for a service process to answer."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from typer.testing import CliRunner

from common.wire import JobSpec
from coordinator.rounds import CoordinatorPaths
from node_agent.config import NodeConfig, load_node_config, write_node_config
from sovereign.cli import app
from sovereign.deploy_local import wait_until_up  # noqa: F401 - the tests' too
from sovereign.federation import register_lineage_keys, run_key_ceremony, setup_nodes


def cli(*args: str) -> str:
    """Run `sovereign ARGS...`; it must succeed. Returns what it printed."""
    result = CliRunner().invoke(app, list(args))
    assert result.exit_code == 0, result.output
    return result.output


def longest_histories(tmp: Path, small_alliance: Path, count: int, *, approvals: str = "by_hand",
                      **node_settings) -> tuple[list[NodeConfig], CoordinatorPaths]:
    """Node directories for the `count` dealerships with the longest histories (all can train),
    by-hand approvals unless told otherwise, a minimum of 2 contributors, and the key ceremony done."""
    profiles = sorted(json.loads((small_alliance / "alliance.json").read_text()), key=lambda p: p["history_start"])
    dealers = tmp / "dealers"
    dealers.mkdir()
    for p in profiles[:count]:
        shutil.copy(small_alliance / f"{p['branch_id']}.db", dealers)
    configs = []
    for c in setup_nodes(sorted(dealers.glob("*.db")), tmp / "nodes", min_contributors=2):
        write_node_config(c.model_copy(update={"approvals": approvals, **node_settings}))
        configs.append(load_node_config(c.node_dir))
    coordinator = CoordinatorPaths(tmp / "coordinator")
    register_lineage_keys(configs, coordinator)
    run_key_ceremony(configs, coordinator, JobSpec(job_id="keys"))
    return configs, coordinator


def register_with_service(settings: Path, configs: list[NodeConfig], coordinator: CoordinatorPaths) -> dict[str, str]:
    """Each node and a branch IT account per node, an analyst (`hq`) and a compliance
    officer (`audit`), made with `sovereign coordinator ...`. Returns name -> token."""
    tokens = {}
    for c in configs:
        cli("coordinator", "node", "add", c.branch_id, "--public-key", str(coordinator.node_lineage_keys / f"{c.branch_id}.pub"),
            "--region", c.region or "none", "--config", str(settings))
        tokens[c.branch_id] = cli("coordinator", "account", "add", f"it-{c.branch_id}", "--role", "branch_it", "--scope",
                                  c.branch_id, "--config", str(settings)).strip().splitlines()[-1]
    for name, role in (("hq", "analyst"), ("audit", "compliance")):
        tokens[name] = cli("coordinator", "account", "add", name, "--role", role, "--config",
                           str(settings)).strip().splitlines()[-1]
    return tokens
