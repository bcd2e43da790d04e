"""The federated arms of a panel experiment, on Flower's simulation runtime: one virtual
SuperNode per branch, FedAvg weighted by window count, with or without DP-SGD and CKKS.

A thin Flower adapter over `PanelNode` (node side) and plain sums (coordinator side). The
ServerApp runs every federated arm of the experiment in one simulation, one after another,
and never holds the secret key: under HE it sums ciphertexts with the public context and
sends the encrypted sum back, which each branch decrypts and divides by its weight slot.

Work directory, laid out by `prepare`:
    plan.json                  model, recipe, season, arms, branch of each partition id
    branches/<branch>.json     that branch's training series (node side)
    he/secret.ctx              the CKKS key (node side; the runner reads it in the node's role)
    he/public.ctx              the public context (coordinator side)
    arms/<arm>.json            written by the ServerApp: rounds, seconds, ε, final model
"""

from __future__ import annotations

import base64
import json
import os
import time
from functools import lru_cache
from pathlib import Path

import numpy as np
from flwr.app import ConfigRecord, Context, Message, RecordDict
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid, ServerApp
from pydantic import BaseModel

from common.files import write_secret
from common.he import EncryptedVector, create_secret_context, load_context, public_context_bytes, secret_context_bytes, sum_encrypted
from common.model import get_flat_weights
from common.panel_model import PanelForecaster, PanelModelSpec
from sovereign.experiment.panel import Series, TrainingRecipe
from sovereign.experiment.panel_node import PanelNode, average_of, decrypt_average, encrypt_update

WORKDIR_ENV = "SOVEREIGN_EXPERIMENT_DIR"  # Ray workers inherit it
REPLY_TIMEOUT = 600.0


class FederatedArm(BaseModel):
    name: str
    dp: bool
    he: bool


class Plan(BaseModel):
    spec: PanelModelSpec
    recipe: TrainingRecipe
    season: int
    branches: list[str]
    arms: list[FederatedArm]


def prepare(workdir: Path, by_branch: dict[str, list[Series]], spec: PanelModelSpec, recipe: TrainingRecipe, season: int,
            arms: list[FederatedArm]) -> Plan:
    """Lay out the work directory: the plan, each branch's series, and (when an arm uses HE) a key set."""
    plan = Plan(spec=spec, recipe=recipe, season=season, branches=list(by_branch), arms=arms)
    (workdir / "branches").mkdir(parents=True, exist_ok=True)
    (workdir / "arms").mkdir(exist_ok=True)
    for branch, series in by_branch.items():
        (workdir / "branches" / f"{branch}.json").write_text(json.dumps([s.train.tolist() for s in series]))
    if any(a.he for a in arms):
        ctx = create_secret_context()
        (workdir / "he").mkdir(exist_ok=True)
        write_secret(workdir / "he" / "secret.ctx", secret_context_bytes(ctx))  # 0600 from the first byte
        (workdir / "he" / "public.ctx").write_bytes(public_context_bytes(ctx))
    (workdir / "plan.json").write_text(plan.model_dump_json(indent=2))
    return plan


def _workdir() -> Path:
    return Path(os.environ[WORKDIR_ENV])


@lru_cache(maxsize=1)
def _plan(workdir: Path) -> Plan:
    return Plan.model_validate_json((workdir / "plan.json").read_text())


@lru_cache(maxsize=1)
def _secret(workdir: Path):
    return load_context((workdir / "he" / "secret.ctx").read_bytes())


@lru_cache(maxsize=None)
def _node(workdir: Path, branch: str) -> PanelNode:
    plan = _plan(workdir)
    series = [np.asarray(s, dtype=float) for s in json.loads((workdir / "branches" / f"{branch}.json").read_text())]
    return PanelNode(branch, series, plan.spec, plan.recipe, plan.season)


def _encrypted(record: ConfigRecord) -> EncryptedVector:
    return EncryptedVector(length=int(record["length"]), chunks=list(record["chunks"]))


client_app = ClientApp()


@client_app.train()
def train(msg: Message, context: Context) -> Message:
    """One branch's round: decrypt (or read) the global model, train, send the weighted update."""
    workdir = _workdir()
    plan = _plan(workdir)
    node = _node(workdir, plan.branches[int(context.node_config["partition-id"])])
    config, model = msg.content["config"], msg.content["model"]
    he = bool(config["he"])
    weights = decrypt_average(_secret(workdir), _encrypted(model)) if "chunks" in model else np.frombuffer(model["weights"])
    update = node.train(weights, int(config["round"]), dp=bool(config["dp"]))
    reply = {"windows": update.windows, "epsilon": -1.0 if update.epsilon is None else update.epsilon}
    if he:
        vector = encrypt_update(_secret(workdir), update)
        reply.update(length=vector.length, chunks=vector.chunks)
    else:
        reply["weighted"] = update.weighted.tobytes()
    return Message(content=RecordDict({"update": ConfigRecord(reply)}), reply_to=msg)


def _round(grid: Grid, node_ids: list[int], content: RecordDict, rnd: int) -> list[ConfigRecord]:
    messages = [Message(content=content, dst_node_id=nid, message_type="train", group_id=str(rnd)) for nid in node_ids]
    replies = list(grid.send_and_receive(messages, timeout=REPLY_TIMEOUT))
    failed = [m for m in replies if m.has_error()]
    if failed or len(replies) < len(node_ids):
        why = failed[0].error.reason if failed else f"{len(node_ids) - len(replies)} branches did not answer"
        raise RuntimeError(f"round {rnd}: {why}")
    return [m.content["update"] for m in replies]


def run_arm(grid: Grid, node_ids: list[int], plan: Plan, arm: FederatedArm, workdir: Path) -> dict:
    """Every round of one arm; returns what `arms/<arm>.json` holds."""
    started = time.perf_counter()
    weights = get_flat_weights(PanelForecaster(plan.spec))  # public, data-free start
    public = load_context((workdir / "he" / "public.ctx").read_bytes()) if arm.he else None
    summed: EncryptedVector | None = None
    rounds, epsilon = [], None
    for rnd in range(1, plan.recipe.rounds + 1):
        config = ConfigRecord({"arm": arm.name, "round": rnd, "dp": arm.dp, "he": arm.he})
        model = (ConfigRecord({"length": summed.length, "chunks": summed.chunks}) if summed is not None
                 else ConfigRecord({"weights": weights.tobytes()}))
        updates = _round(grid, node_ids, RecordDict({"config": config, "model": model}), rnd)
        if arm.he:
            summed = sum_encrypted(public, [_encrypted(u) for u in updates])
            sent = sum(len(c) for u in updates for c in u["chunks"])
        else:
            weights = average_of(np.sum([np.frombuffer(u["weighted"]) for u in updates], axis=0))
            sent = sum(len(u["weighted"]) for u in updates)
        eps = [float(u["epsilon"]) for u in updates if float(u["epsilon"]) >= 0 and int(u["windows"]) > 0]
        epsilon = max(eps) if eps else None
        rounds.append({"round": rnd, "branches": sum(int(u["windows"]) > 0 for u in updates), "bytes_up": sent,
                       "epsilon": epsilon})
    out = {"arm": arm.name, "dp": arm.dp, "he": arm.he, "seconds": time.perf_counter() - started,
           "epsilon": epsilon, "rounds": rounds}
    if summed is not None:
        out["encrypted"] = {"length": summed.length, "chunks": [base64.b64encode(c).decode() for c in summed.chunks]}
    else:
        out["weights"] = weights.tolist()
    return out


server_app = ServerApp()


@server_app.main()
def main(grid: Grid, context: Context) -> None:
    workdir = _workdir()
    plan = _plan(workdir)
    deadline = time.monotonic() + 120
    while len(node_ids := sorted(grid.get_node_ids())) < len(plan.branches):
        if time.monotonic() > deadline:
            raise TimeoutError(f"only {len(node_ids)} of {len(plan.branches)} simulated branches connected")
        time.sleep(0.5)
    for arm in plan.arms:
        result = run_arm(grid, node_ids, plan, arm, workdir)
        (workdir / "arms" / f"{arm.name}.json").write_text(json.dumps(result))


def final_weights(workdir: Path, arm: str) -> tuple[np.ndarray, dict]:
    """The arm's final global model, decrypted in a branch's role when it was encrypted."""
    result = json.loads((workdir / "arms" / f"{arm}.json").read_text())
    if "encrypted" in result:
        enc = result.pop("encrypted")
        vector = EncryptedVector(length=enc["length"], chunks=[base64.b64decode(c) for c in enc["chunks"]])
        return decrypt_average(_secret(workdir), vector), result
    return np.asarray(result.pop("weights")), result


def run_federated(workdir: Path, plan: Plan) -> None:
    """Every federated arm of the plan in one Flower simulation (Ray), one SuperNode per branch."""
    from sovereign.federation import run_flower_simulation

    _plan.cache_clear()
    _secret.cache_clear()
    _node.cache_clear()
    run_flower_simulation(server_app, client_app, len(plan.branches), {WORKDIR_ENV: str(workdir.resolve())})
    missing = [a.name for a in plan.arms if not (workdir / "arms" / f"{a.name}.json").exists()]
    if missing:
        raise RuntimeError(f"the federated simulation ended without results for {', '.join(missing)}")
