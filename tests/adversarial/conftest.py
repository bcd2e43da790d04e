"""A malicious coordinator, driving real node agents through the protocol's own messages.

Every instruction is encoded into the Flower record the nodes receive (`to_record`) and
decoded by the node side exactly as the ClientApp does (`from_record`); every reply is
encoded back, and every byte of it is kept, as a coordinator would keep it. The attacker has
what head office really has: the public CKKS context, the job specs, whatever replies came
back, and it may send anything. It does not have a node's secret key or database.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field

import pytest
from sqlalchemy import create_engine, text

from common.he import load_context
from common.wire import (
    EvaluateReply,
    JobSpec,
    ReleaseInstruction,
    ReleaseReply,
    TrainInstruction,
    TrainReply,
    UpdatePayload,
    from_record,
    to_record,
)
from coordinator.rounds import CoordinatorPaths
from lineage import EventKind
from node_agent.agent import NodeAgent
from node_agent.config import NodeConfig, load_node_config, write_node_config
from sovereign.federation import register_lineage_keys, run_key_ceremony, setup_nodes

CANARY_NAME = "Zelda Canarywhistle-7Q"
CANARY_ID = "CANARY-ID-93170245"


@dataclass
class MaliciousCoordinator:
    """Sends whatever it likes to the node agents and keeps every byte they send back."""

    configs: dict[str, NodeConfig]
    paths: CoordinatorPaths
    received: list[bytes] = field(default_factory=list)

    @property
    def public(self):
        return load_context(self.paths.public_context.read_bytes())

    def agent(self, branch: str) -> NodeAgent:
        return NodeAgent(load_node_config(self.configs[branch].node_dir))

    def _send(self, branch: str, instruction, schema, method, reply_type):
        decoded = from_record(to_record(instruction), schema)  # what the ClientApp decodes
        reply = method(self.agent(branch), decoded)
        record = to_record(reply)
        for value in record["body"].values():
            for item in value if isinstance(value, list) else [value]:
                self.received.append(item if isinstance(item, bytes) else str(item).encode())
        return from_record(record, reply_type)

    def train(self, branch: str, job: JobSpec, rnd: int, model: UpdatePayload | None = None,
              contributors: dict[str, str] | None = None) -> TrainReply:
        instruction = TrainInstruction(job=job, round=rnd, global_model=model, contributors=contributors or {})
        return self._send(branch, instruction, TrainInstruction, NodeAgent.train, TrainReply)

    def evaluate(self, branch: str, job: JobSpec, model: UpdatePayload | None,
                 contributors: dict[str, str] | None = None) -> EvaluateReply:
        instruction = TrainInstruction(job=job, round=job.rounds, global_model=model, contributors=contributors or {})
        return self._send(branch, instruction, TrainInstruction, NodeAgent.evaluate, EvaluateReply)

    def release(self, branch: str, job: JobSpec, contributions: list[EvaluateReply], *, stage: str = "release",
                commitments: dict[str, str] | None = None) -> ReleaseReply:
        instruction = ReleaseInstruction(job=job, round=job.rounds, contributions=contributions, stage=stage,
                                         commitments=commitments or {})
        return self._send(branch, instruction, ReleaseInstruction, NodeAgent.release, ReleaseReply)

    def commit_all(self, job: JobSpec, contributions: list[EvaluateReply]) -> dict[str, str]:
        """The commit stage at every contributor: branch -> its signature over the set."""
        replies = {c.branch_id: self.release(c.branch_id, job, contributions, stage="commit") for c in contributions}
        return {b: r.commitment for b, r in replies.items() if r.status == "ok"}

    def refusals(self, branch: str, code: str) -> list:
        """The refusals with this code in the branch's own lineage (the detail is there)."""
        return [e for e in self.agent(branch).lineage.events(kind=EventKind.REFUSAL) if e.details.get("code") == code]

    def assert_nothing_leaked(self, needles: list[bytes]) -> None:
        stored = [p.read_bytes() for p in self.paths.root.rglob("*") if p.is_file()]
        for blob in self.received + stored:
            for needle in needles:
                assert needle not in blob, needle


@pytest.fixture
def alliance(tmp_path, small_alliance) -> MaliciousCoordinator:
    """Four branches with enough history to train (the longest four of the small alliance),
    each with its node directory, policy, lineage key and alliance key; a canary customer in
    the first. The coordinator directory holds only what head office gets."""
    profiles = sorted(json.loads((small_alliance / "alliance.json").read_text()), key=lambda p: p["history_start"])
    dealers = tmp_path / "dealers"
    dealers.mkdir()
    for p in profiles[:4]:
        shutil.copy(small_alliance / f"{p['branch_id']}.db", dealers)
    first = profiles[0]["branch_id"]
    engine = create_engine(f"sqlite:///{dealers / f'{first}.db'}")
    with engine.begin() as conn:
        conn.execute(text("UPDATE sales SET customer_name = :n, customer_national_id = :i WHERE sale_id = 3"),
                     {"n": CANARY_NAME, "i": CANARY_ID})
    engine.dispose()
    configs = setup_nodes(sorted(dealers.glob("*.db")), tmp_path / "nodes")
    paths = CoordinatorPaths(tmp_path / "coordinator")
    register_lineage_keys(configs, paths)
    run_key_ceremony(configs, paths, JobSpec(job_id="keys"))
    for c in configs:  # node-side caps that keep these tests quick; everything else is the default
        write_node_config(c.model_copy(update={"limits": c.limits.model_copy(update={"max_evaluations": 2})}))
    return MaliciousCoordinator(configs={c.branch_id: load_node_config(c.node_dir) for c in configs}, paths=paths)


def small_job(**kw) -> JobSpec:
    return JobSpec(**{"job_id": "attack", "rounds": 2, "local_epochs": 1, **kw})


def canaries() -> list[bytes]:
    return [CANARY_NAME.encode(), CANARY_ID.encode()]
