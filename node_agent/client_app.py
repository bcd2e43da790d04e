"""The Flower ClientApp: a thin adapter from Flower messages to the `NodeAgent`.

Where the node's files are:
- deployment: the SuperNode's `--node-config "node-dir='/srv/sovereign/node'"`;
- simulation: `<nodes-root>/index.json` maps Flower's partition id to a node directory;
  nodes-root comes from $SOVEREIGN_NODES_ROOT or the run config key `nodes-root`.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from flwr.app import Context, Message
from flwr.clientapp import ClientApp

from common.refusals import reason_for
from common.wire import (
    EvaluateReply,
    KeyInstruction,
    KeyReply,
    MaskInstruction,
    MaskReply,
    ReleaseInstruction,
    ReleaseReply,
    TrainInstruction,
    TrainReply,
    WireError,
    from_record,
    to_record,
)
from node_agent.agent import NodeAgent
from node_agent.config import NodeConfigError, load_node_config

app = ClientApp()

_AGENTS: dict[Path, NodeAgent] = {}


def resolve_node_dir(context: Context) -> Path:
    if "node-dir" in context.node_config:
        return Path(str(context.node_config["node-dir"]))
    root = os.environ.get("SOVEREIGN_NODES_ROOT") or context.run_config.get("nodes-root")
    if not root:
        raise NodeConfigError("no node-dir in the node config and no nodes-root for simulation")
    index_path = Path(str(root)) / "index.json"
    try:
        index = json.loads(index_path.read_text())
        return Path(str(root)) / index["nodes"][int(context.node_config["partition-id"])]
    except (OSError, ValueError, KeyError, IndexError) as exc:
        raise NodeConfigError(f"{index_path}: cannot map this simulated node ({exc})") from None


def _agent(context: Context) -> NodeAgent:
    node_dir = resolve_node_dir(context).resolve()
    if node_dir not in _AGENTS:
        _AGENTS[node_dir] = NodeAgent(load_node_config(node_dir))
    return _AGENTS[node_dir]


ACTIONS = {  # Flower message type -> (instruction schema, reply schema, agent method)
    "train": (TrainInstruction, TrainReply, NodeAgent.train),
    "evaluate": (TrainInstruction, EvaluateReply, NodeAgent.evaluate),
    "query": (ReleaseInstruction, ReleaseReply, NodeAgent.release),
    "query.keys": (KeyInstruction, KeyReply, NodeAgent.keys),
    "query.mask": (MaskInstruction, MaskReply, NodeAgent.mask),
}


def _handle(msg: Message, context: Context, action: str) -> Message:
    torch.set_num_threads(1)
    schema, reply_type, method = ACTIONS[action]
    try:
        agent = _agent(context)
    except NodeConfigError:  # nothing to sign with or record in: a bare refusal, no detail
        return Message(content=to_record(reply_type(status="refused", branch_id="unknown", code="node-config",
                                                    reason=reason_for("node-config"))), reply_to=msg)
    try:
        instruction = from_record(msg.content, schema)
    except WireError as exc:
        return Message(content=to_record(agent.refused(reply_type, None, None, "malformed", f"malformed instruction: {exc}")),
                       reply_to=msg)
    from node_agent.app_identity import deployed_app_refusal  # the FAB must be on the node's allow-list

    if (why := deployed_app_refusal(context, agent.config)) is not None:  # before any branch data is read
        return Message(content=to_record(agent.refused(reply_type, None, None, "untrusted-app", why)), reply_to=msg)
    try:
        reply = method(agent, instruction)
    except Exception as exc:  # noqa: BLE001 - nothing unforeseen may leave as an error text; lineage keeps it
        reply = agent.refused(reply_type, None, None, "node-config", f"unexpected {type(exc).__name__}: {exc}")
    return Message(content=to_record(reply), reply_to=msg)


@app.train()
def train(msg: Message, context: Context) -> Message:
    return _handle(msg, context, "train")


@app.evaluate()
def evaluate(msg: Message, context: Context) -> Message:
    return _handle(msg, context, "evaluate")


@app.query()
def release(msg: Message, context: Context) -> Message:
    """The alliance asks this node to decrypt a sum of held-out metric vectors."""
    return _handle(msg, context, "query")


@app.query("keys")
def keys(msg: Message, context: Context) -> Message:
    """The job's key ceremony (per-job CKKS keys, CKKS-ring jobs)."""
    return _handle(msg, context, "query.keys")


@app.query("mask")
def mask(msg: Message, context: Context) -> Message:
    """One SecAgg+ step of a masked round (CKKS-ring jobs)."""
    return _handle(msg, context, "query.mask")
