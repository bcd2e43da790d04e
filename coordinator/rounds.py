"""The round loop: send instructions, collect replies with a deadline, aggregate, record.

Replies are pulled as they arrive so observers (progress bars, tests that audit what the
coordinator receives) see each one. A node that errs, refuses or sends a malformed reply is
left out of that round and named in the result; it never stops the job.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Protocol

from flwr.app import Message
from flwr.serverapp import Grid
from pydantic import BaseModel, Field

from common.he import load_context
from common.privacy import epsilon_spent
from common.wire import EvaluateReply, JobSpec, TrainReply, WireError, from_record, to_record
from coordinator.strategy import SecureFedAvg
from lineage import EventKind, LineageEvent, LineageStore, Signer

ACTOR = "coordinator"


class RoundReport(BaseModel):
    round: int
    contributors: list[str]
    refused: dict[str, str] = Field(default_factory=dict)
    quarantined: dict[str, dict[str, int]] = Field(default_factory=dict)  # branch -> reason -> rows
    bytes_received: int = 0
    bytes_sent: int = 0
    epsilon_max: float | None = None
    epsilon_by_node: dict[str, tuple[float | None, float | None]] = Field(default_factory=dict)  # planned, spent so far
    customer_epsilon_max: float | None = None
    customer_delta_max: float | None = None
    node_level_epsilon: float | None = None  # node-level DP: any one dealership's participation, so far
    seconds: float = 0.0


class JobResult(BaseModel):
    job: JobSpec
    rounds: list[RoundReport] = Field(default_factory=list)
    evaluations: list[EvaluateReply] = Field(default_factory=list)
    metrics: dict[str, float] = Field(default_factory=dict)
    final_model_digest: str | None = None


class JobObserver(Protocol):
    def round_started(self, rnd: int, total_rounds: int, nodes: int) -> None: ...
    def reply_received(self, rnd: int, message: Message) -> None: ...
    def round_finished(self, report: RoundReport) -> None: ...


class CoordinatorPaths:
    """Where the coordinator keeps its files; nothing node-side lives here."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    @property
    def public_context(self) -> Path:
        return self.root / "he" / "public.ctx"

    @property
    def lineage_url(self) -> str:
        return f"sqlite:///{(self.root / 'lineage.db').resolve()}"

    @property
    def result(self) -> Path:
        return self.root / "result.json"

    @property
    def lineage_key_dir(self) -> Path:
        """The coordinator's Ed25519 lineage signing key (its public half beside it)."""
        return self.root / "keys"

    @property
    def node_lineage_keys(self) -> Path:
        """Each node's lineage public key, `<branch>.pub`, registered when the node joined."""
        return self.root / "node-lineage-keys"


def run_job(
    grid: Grid,
    job: JobSpec,
    paths: CoordinatorPaths,
    *,
    observer: JobObserver | None = None,
    min_nodes: int = 1,
    node_wait_seconds: float = 120.0,
    reply_timeout: float = 600.0,
) -> JobResult:
    paths.root.mkdir(parents=True, exist_ok=True)
    public = load_context(paths.public_context.read_bytes()) if job.he.enabled else None
    strategy = SecureFedAvg(job=job, public_context=public)
    lineage = LineageStore(paths.lineage_url)
    signer = Signer.load_or_create(ACTOR, paths.lineage_key_dir)
    node_ids = _wait_for_nodes(grid, min_nodes, node_wait_seconds)
    result = JobResult(job=job)
    global_model, global_round = None, 0
    node_level_history: list[tuple[float, float, int]] = []
    for rnd in range(1, job.rounds + 1):
        started = time.perf_counter()
        if observer:
            observer.round_started(rnd, job.rounds, len(node_ids))
        instruction = strategy.configure_train(rnd, global_model)
        replies, refused, received = _exchange(grid, node_ids, instruction, "train", rnd, TrainReply, observer, reply_timeout)
        refused.update({r.branch_id: r.reason or "refused" for r in replies if r.status != "ok"})
        aggregate = strategy.aggregate_train(replies)
        refused.update({b: f"update rejected: {why}" for b, why in aggregate.rejected.items()})
        sent = len(node_ids) * (global_model.nbytes() if global_model else 0)
        if aggregate.payload is not None:
            previous_round, global_model, global_round = global_round, aggregate.payload, rnd
            heads = {r.branch_id: [r.lineage_head.seq, r.lineage_head.event_hash]
                     for r in replies if r.branch_id in aggregate.contributors and r.lineage_head}
            lineage.append(
                LineageEvent(
                    kind=EventKind.AGGREGATION, actor=ACTOR, job_id=job.job_id, round=rnd, purpose=job.purpose,
                    digest=global_model.digest(), model_version=model_version(job, rnd),
                    details={
                        "contributors": aggregate.contributors, "scheme": global_model.scheme,
                        "previous_model_version": model_version(job, previous_round) if previous_round else None,
                        "node_heads": heads, "refused": refused,
                    },
                ),
                signer,
            )
        if job.node_dp.enabled and aggregate.payload is not None:
            node_level_history.append((node_level_sigma(job, len(aggregate.contributors)), 1.0, 1))
        ok = [r for r in replies if r.status == "ok"]
        eps = [r.epsilon for r in ok if r.epsilon is not None]
        customer = [(r.customer_epsilon, r.customer_delta) for r in ok if r.customer_epsilon is not None]
        report = RoundReport(
            round=rnd, contributors=sorted(aggregate.contributors), refused=refused,
            quarantined={r.branch_id: r.quarantined for r in replies if r.quarantined},
            bytes_received=received, bytes_sent=sent, epsilon_max=max(eps) if eps else None,
            epsilon_by_node={r.branch_id: (r.planned_epsilon, r.epsilon) for r in ok if r.epsilon is not None},
            customer_epsilon_max=max(c[0] for c in customer) if customer else None,
            customer_delta_max=max((c[1] for c in customer if c[1] is not None), default=None),
            node_level_epsilon=epsilon_spent(node_level_history, job.node_dp.delta) if node_level_history else None,
            seconds=round(time.perf_counter() - started, 3),
        )
        result.rounds.append(report)
        if observer:
            observer.round_finished(report)
    if global_model is not None:
        result.final_model_digest = global_model.digest()
        instruction = strategy.configure_evaluate(job.rounds, global_model)
        evals, _, _ = _exchange(grid, node_ids, instruction, "evaluate", job.rounds, EvaluateReply, observer, reply_timeout)
        result.evaluations = sorted(evals, key=lambda r: r.branch_id)
        result.metrics = strategy.aggregate_evaluate(evals)
        lineage.append(
            LineageEvent(
                kind=EventKind.MODEL_RELEASE, actor=ACTOR, job_id=job.job_id, round=global_round, purpose=job.purpose,
                digest=result.final_model_digest, model_version=model_version(job, global_round),
                details={"rounds": job.rounds, "last_aggregated_round": global_round, "released_to": job.recipient_role, "destination": job.destination,
                         "metrics": result.metrics,
                         "evaluated_by": sorted(e.branch_id for e in result.evaluations if e.status == "ok")},
            ),
            signer,
        )
    paths.result.write_text(result.model_dump_json(indent=2))
    lineage.close()
    return result


def node_level_sigma(job: JobSpec, contributors: int) -> float:
    """The noise multiplier the aggregate really carried: each of `nodes` expected nodes adds
    1/nodes of the variance, so fewer contributors leave less noise (and spend more epsilon)."""
    return job.node_dp.noise_multiplier * (min(contributors, job.node_dp.nodes) / job.node_dp.nodes) ** 0.5


def model_version(job: JobSpec, rnd: int) -> str:
    """The global model after round `rnd` of a job: what lineage and identity cards call it."""
    return f"{job.job_id}/r{rnd}"


def _wait_for_nodes(grid: Grid, min_nodes: int, deadline_seconds: float) -> list[int]:
    """Wait for at least `min_nodes`, but never forever."""
    deadline = time.monotonic() + deadline_seconds
    while True:
        node_ids = sorted(grid.get_node_ids())
        if len(node_ids) >= min_nodes:
            return node_ids
        if time.monotonic() > deadline:
            raise TimeoutError(f"only {len(node_ids)} of {min_nodes} nodes connected within {deadline_seconds:.0f}s")
        time.sleep(1.0)


def _exchange(grid, node_ids, instruction, message_type, rnd, schema, observer, timeout):
    """Send one instruction to every node and pull the replies until all came or time ran out."""
    content = to_record(instruction)
    messages = [
        Message(content=content, dst_node_id=nid, message_type=message_type, group_id=str(rnd)) for nid in node_ids
    ]
    pending = set(grid.push_messages(messages))
    replies, refused, received = [], {}, 0
    deadline = time.monotonic() + timeout
    while pending and time.monotonic() < deadline:
        for msg in grid.pull_messages(list(pending)):
            pending.discard(msg.metadata.reply_to_message_id)
            if observer:
                observer.reply_received(rnd, msg)
            node = f"node-{msg.metadata.src_node_id}"
            if msg.has_error():
                refused[node] = f"node error: {msg.error.reason}"
                continue
            received += _content_bytes(msg)
            try:
                replies.append(from_record(msg.content, schema))
            except WireError as exc:
                refused[node] = f"malformed reply: {exc}"
        if pending:
            time.sleep(0.05)
    for _ in pending:
        refused[f"pending-{len(refused)}"] = f"no reply within {timeout:.0f}s"
    return replies, refused, received


def _content_bytes(msg: Message) -> int:
    body = msg.content.get("body") if msg.has_content() else None
    if body is None:
        return 0
    total = 0
    for value in body.values():
        if isinstance(value, bytes):
            total += len(value)
        elif isinstance(value, list):
            total += sum(len(v) for v in value if isinstance(v, (bytes, str)))
        elif isinstance(value, str):
            total += len(value)
    return total
