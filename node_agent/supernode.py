"""The Flower SuperNode of this node, as `sovereign node run` starts it: one pure function
from the node's configuration to the command, so what runs is exactly what node.json says.

The SuperNode always gets TLS (`--root-certificates`), the node's registered key
(`--auth-supernode-private-key`), the trusted publishers (`--trusted-entities`: without it a
SuperNode runs any bundle) and the node directory (`--node-config node-dir=...`, where the
ClientApp finds node.json). Problems are one line naming node.json's field.
"""

from __future__ import annotations

import stat
import sys
from pathlib import Path

from node_agent.config import NodeConfig


class SuperNodeConfigError(ValueError):
    """node.json cannot start a SuperNode; the message names the field."""


def supernode_problems(config: NodeConfig) -> list[str]:
    """What keeps this node's SuperNode from starting safely (empty: nothing)."""
    where = config.node_dir / "node.json"
    settings = config.supernode
    if settings is None:
        return [f"{where}: no 'supernode' section (superlink, root_certificates, auth_key, trusted_entities)"]
    problems = []
    for name in ("root_certificates", "auth_key", "trusted_entities"):
        path = config.node_dir / getattr(settings, name)
        if not path.is_file():
            problems.append(f"{where}: supernode.{name}: no file {path}")
    key = config.node_dir / settings.auth_key
    if key.is_file() and key.stat().st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        problems.append(f"{where}: supernode.auth_key: {key} is readable by others (chmod 600 it)")
    entities = config.node_dir / settings.trusted_entities
    if entities.is_file() and not entities.read_text().strip():
        problems.append(f"{where}: supernode.trusted_entities: {entities} is empty, which would let the SuperNode run any app")
    if not config.trusted_apps:
        problems.append(f"{where}: trusted_apps is empty: the node would refuse every app it is sent")
    return problems


def supernode_command(config: NodeConfig) -> list[str]:
    """The `flower-supernode` command line for this node; raises SuperNodeConfigError."""
    problems = supernode_problems(config)
    if problems:
        raise SuperNodeConfigError(problems[0])
    settings = config.supernode
    node_dir = config.node_dir.resolve()
    return [str(Path(sys.executable).with_name("flower-supernode")),
            "--superlink", settings.superlink,
            "--root-certificates", str(node_dir / settings.root_certificates),
            "--auth-supernode-private-key", str(node_dir / settings.auth_key),
            "--trusted-entities", str(node_dir / settings.trusted_entities),
            "--host", "127.0.0.1", "--port", str(settings.runtime_port),
            "--node-config", f"node-dir='{node_dir}'"]
