"""The round loop: send instructions, collect replies with a deadline, aggregate, record.

Replies are pulled as they arrive so observers (progress bars, tests that audit what the
coordinator receives) see each one. A node that errs, refuses or sends a malformed or
unsigned reply is left out of that round and named in the result; it never stops the job.
Every instruction carries the coordinator's lineage head (the nodes record it) and every
accepted reply's lineage head is recorded here, so neither side can rewrite its history alone.
"""

from __future__ import annotations

import time
from typing import Protocol

from typing import Any

import numpy as np
from flwr.app import Message
from flwr.serverapp import Grid
from pydantic import BaseModel, Field

from common.evaluation import LENGTH, METRIC_CLIP, alliance_figures, release_values
from common.he import load_context
from common.privacy import epsilon_spent
from common.wire import (
    CoordinatorHead,
    EvaluateReply,
    JobSpec,
    MaskReply,
    ReleaseInstruction,
    ReleaseReply,
    RoundFates,
    TrainReply,
    WireError,
    from_record,
    to_record,
)
from coordinator import checkpoints, ring_job
from coordinator.paths import CoordinatorPaths
from coordinator.guard import ReplyGuard
from coordinator.strategy import Aggregate, SecureFedAvg, summed_replies
from lineage import EventKind, LineageEvent, LineageStore, Signer
from lineage.anchors import head_message

ACTOR = "coordinator"
RELEASERS = 3  # contributors asked to check and decrypt the metric sum (each gets every contribution)


class RoundReport(BaseModel):
    round: int
    contributors: list[str]
    refused: dict[str, str] = Field(default_factory=dict)  # branch (or node) -> refusal code or why it was left out
    quarantined: dict[str, dict[str, int]] = Field(default_factory=dict)  # branch -> reason -> rows
    bytes_received: int = 0
    bytes_sent: int = 0
    node_level_epsilon: float | None = None  # node-level DP: any one dealership's participation, so far
    seconds: float = 0.0


class JobResult(BaseModel):
    """What the coordinator holds after a job: rounds, and held-out accuracy only as
    alliance-level figures (`common.evaluation.alliance_figures`) over enough contributors."""

    job: JobSpec
    rounds: list[RoundReport] = Field(default_factory=list)
    evaluated_by: list[str] = Field(default_factory=list)
    evaluation_refused: dict[str, str] = Field(default_factory=dict)
    metrics: dict[str, Any] = Field(default_factory=dict)
    released_by: list[str] = Field(default_factory=list)
    branch_metrics: dict[str, dict[str, dict[str, float]]] = Field(
        default_factory=dict, description="only branches whose policy releases their own accuracy by name")
    final_model_digest: str | None = None


class JobObserver(Protocol):
    def round_started(self, rnd: int, total_rounds: int, nodes: int) -> None: ...
    def reply_received(self, rnd: int, message: Message) -> None: ...
    def round_finished(self, report: RoundReport) -> None: ...


def run_job(
    grid: Grid,
    job: JobSpec,
    paths: CoordinatorPaths,
    *,
    observer: JobObserver | None = None,
    min_nodes: int = 1,
    expected_nodes: int | None = None,
    min_contributors: int = 1,
    min_release: int = 3,
    node_wait_seconds: float = 120.0,
    reply_timeout: float = 600.0,
) -> JobResult:
    """Run every round, then the held-out evaluation and the release of its alliance-level
    figures. `min_release` is the fewest contributors whose summed figures the coordinator
    itself publishes in a job without encryption (with it, the decrypting nodes decide).

    A round closes with the nodes that answered within `reply_timeout` (a node that went
    away is named, not waited for); its sum becomes the model only over at least
    `min_contributors`, and the average divides by the weight of those who did contribute.
    After each round the job is checkpointed (`coordinator.checkpoints`): run again on the
    same job, this resumes after the last closed round."""
    paths.root.mkdir(parents=True, exist_ok=True)
    ring = job.he.enabled and job.he.scheme == "CKKS-ring"
    public = load_context(paths.public_context.read_bytes()) if job.he.enabled and not ring else None
    lineage = LineageStore(paths.lineage_url)
    signer = Signer.load_or_create(ACTOR, paths.lineage_key_dir)
    guard = ReplyGuard(paths.node_lineage_keys)
    node_ids = _wait_for_nodes(grid, min_nodes, node_wait_seconds, expected=expected_nodes)

    def exchange_each(instructions, message_type, rnd, schema, queries=None) -> "Exchange":
        return _exchange_each(grid, instructions, message_type, rnd, schema, guard, observer, reply_timeout, queries=queries)

    result = JobResult(job=job)
    model, global_round, model_updates = None, 0, []
    node_level_history: list[tuple[float, float, int]] = []

    def head() -> CoordinatorHead:
        seq, event_hash = lineage.head(ACTOR)
        return CoordinatorHead(seq=seq, event_hash=event_hash, key_id=signer.key_id,
                               signature=signer.sign(head_message(seq, event_hash, signer.key_id)))

    def record(kind: EventKind, rnd: int, **fields) -> None:
        lineage.append(LineageEvent(kind=kind, actor=ACTOR, job_id=job.job_id, round=rnd, purpose=job.purpose, **fields), signer)

    setup = None
    if ring:  # per-job keys from the nodes' ceremony (kept across a resume: nodes deal once per job)
        setup = ring_job.load_setup(paths, job) or ring_job.key_ceremony(
            exchange_each, node_ids, job, paths, head, guard.node_of,
            lambda details: record(EventKind.KEY_CEREMONY, 0, details=details))
        public = setup.public_context
    strategy = SecureFedAvg(job=job, public_context=public)

    saved = checkpoints.load(paths.root, job)
    if saved is not None:  # resume after the last closed round
        result.rounds = [RoundReport.model_validate(r) for r in saved.rounds]
        global_round = saved.global_round
        if saved.model is not None:
            model = Aggregate(payload=saved.model.payload(), contributors=saved.model_contributors,
                              fates=RoundFates.model_validate(saved.model_fates) if saved.model_fates else None)
        model_updates = [checkpoints.reply_of(r) for r in saved.model_updates]
        node_level_history = [tuple(h) for h in saved.node_level_history]
        record(EventKind.JOB_STATE, saved.closed_rounds, details={
            "state": "resumed", "reason": f"resumed after round {saved.closed_rounds} of {job.rounds}",
            "model_version": model_version(job, global_round) if global_round else None})

    prepared = None  # CKKS-ring: the next mask round as the last one's exchanges opened it (in memory: a resume asks again)
    for rnd in range(len(result.rounds) + 1, job.rounds + 1):
        started = time.perf_counter()
        if observer:
            observer.round_started(rnd, job.rounds, len(node_ids))
        instruction = strategy.configure_train(rnd, model, coordinator_head=head())
        if ring:
            outcome = ring_job.masked_sum(
                exchange_each, job, rnd, setup, guard.node_of, node_ids,
                lambda shares, base=instruction: base.model_copy(update={"shares": shares}), "train", TrainReply,
                lambda r: r.update,
                strategy.update_length, job.he.masking.clip,
                strategy.ring_aggregation(strategy.update_length * setup.plan(job, job.he.masking.clip).digits), head,
                prepared=prepared, ahead=rnd + 1)  # the round after the last is the evaluation's
            prepared = outcome.next
            exchange, aggregate, refused = outcome.exchanges[0], outcome.aggregate, dict(outcome.refused)
            aggregate.fates = outcome.fates
            replies = exchange.replies
        else:
            exchange = _exchange(grid, node_ids, instruction, "train", rnd, TrainReply, guard, observer, reply_timeout)
            replies, refused = exchange.replies, exchange.refused
            refused.update({r.branch_id: r.code or "refused" for r in replies if r.status != "ok"})
            aggregate = strategy.aggregate_train(replies)
            refused.update({b: f"update rejected: {why}" for b, why in aggregate.rejected.items()})
        sent = len(node_ids) * (model.payload.nbytes() if model else 0)
        previous_round = global_round
        if aggregate.payload is not None and len(aggregate.contributors) < min_contributors:
            refused.update({b: f"round closed with {len(aggregate.contributors)} contributors, below the job's "
                               f"minimum of {min_contributors}: its sum is not used" for b in aggregate.contributors})
            aggregate = Aggregate(payload=None, rejected=aggregate.rejected)
        if aggregate.payload is not None:
            model, global_round = aggregate, rnd
            model_updates = summed_replies(aggregate, replies)
        record(EventKind.AGGREGATION, rnd, digest=aggregate.payload.digest() if aggregate.payload else None,
               model_version=model_version(job, rnd) if aggregate.payload else None,
               details={"contributors": aggregate.contributors, "scheme": aggregate.payload.scheme if aggregate.payload else None,
                        "previous_model_version": model_version(job, previous_round) if previous_round else None,
                        "node_heads": exchange.heads, "refused": refused})
        if job.node_dp.enabled and aggregate.payload is not None:
            node_level_history.append((node_level_sigma(job, len(aggregate.contributors)), 1.0, 1))
        report = RoundReport(
            round=rnd, contributors=sorted(aggregate.contributors), refused=refused,
            quarantined={r.branch_id: r.quarantined for r in replies if r.quarantined},
            bytes_received=exchange.received, bytes_sent=sent,
            node_level_epsilon=epsilon_spent(node_level_history, job.node_dp.delta) if node_level_history else None,
            seconds=round(time.perf_counter() - started, 3),
        )
        result.rounds.append(report)
        checkpoints.save(paths.root, checkpoints.JobCheckpoint(
            job_id=job.job_id, spec_hash=job.spec_hash(), rounds=[r.model_dump(mode="json") for r in result.rounds],
            global_round=global_round, model=checkpoints.StoredPayload.of(model.payload) if model else None,
            model_contributors=model.contributors if model else {},
            model_fates=model.fates.model_dump(mode="json") if model and model.fates else None,
            model_updates=[checkpoints.stored_reply(r) for r in model_updates],
            node_level_history=[list(h) for h in node_level_history]))
        if observer:
            observer.round_finished(report)
    if model is not None:
        result.final_model_digest = model.payload.digest()
        if ring:
            _evaluate_and_release_ring(exchange_each, node_ids, strategy, setup, model, result, guard, head, record,
                                       global_round, prepared)
        else:
            _evaluate_and_release(grid, node_ids, strategy, model, model_updates, result, guard, observer, reply_timeout,
                                  head, record, min_release, global_round)
    if ring:
        ring_job.close(exchange_each, job, guard.node_of, setup.holders, head)
    paths.result.write_text(result.model_dump_json(indent=2))  # the latest job's; each job's also under results/
    paths.job_result(job.job_id).parent.mkdir(exist_ok=True)
    paths.job_result(job.job_id).write_text(result.model_dump_json(indent=2))
    lineage.close()
    return result


def _evaluate_and_release(grid, node_ids, strategy: SecureFedAvg, model: Aggregate, model_updates: list[TrainReply],
                          result: JobResult, guard: ReplyGuard,
                          observer, timeout: float, head, record, min_release: int, global_round: int) -> None:
    """Held-out evaluation on every node, summed; then (encrypted jobs) the nodes decrypt the
    sum, each checking it first. Only group figures over enough contributors come back."""
    job = strategy.job
    instruction = strategy.configure_evaluate(job.rounds, model, coordinator_head=head())
    # Nodes whose update is in the model recognise it by their own digest; the others (a branch
    # too young to train) get the signed updates the model sums, to add up and check themselves.
    own = {guard.node_of[b] for b in model.contributors if b in guard.node_of}
    evals = _exchange(grid, [n for n in node_ids if n in own], instruction, "evaluate", job.rounds, EvaluateReply, guard,
                      observer, timeout)
    others = [n for n in node_ids if n not in own]
    if others:
        vouched = instruction.model_copy(update={"contributions": model_updates})
        more = _exchange(grid, others, vouched, "evaluate", job.rounds, EvaluateReply, guard, observer, timeout)
        evals = Exchange(replies=evals.replies + more.replies, refused={**evals.refused, **more.refused},
                         heads={**evals.heads, **more.heads}, received=evals.received + more.received)
    metrics = strategy.aggregate_evaluate(evals.replies)
    result.evaluated_by = sorted(metrics.contributors)
    result.branch_metrics = {r.branch_id: r.branch_scores for r in evals.replies if r.status == "ok" and r.branch_scores}
    result.evaluation_refused = {**evals.refused, **{r.branch_id: r.code or "refused" for r in evals.replies if r.status != "ok"},
                                 **{b: f"metrics rejected: {why}" for b, why in metrics.rejected.items()}}
    record(EventKind.EVALUATION, job.rounds, digest=metrics.payload.digest() if metrics.payload else None,
           details={"contributors": metrics.contributors, "node_heads": evals.heads, "refused": result.evaluation_refused})
    values = None
    release_heads: dict[str, list] = {}
    if metrics.payload is not None and job.he.enabled:
        # Commit: every contributor signs the one contributor set (once per job); release: three of
        # them check every signature, add the vectors up themselves and decrypt.
        commit = strategy.configure_release(job.rounds, metrics, evals.replies, stage="commit", coordinator_head=head())
        contributors = [guard.node_of[b] for b in sorted(metrics.contributors)]
        agreed = _exchange(grid, contributors, commit, "query", job.rounds, ReleaseReply, guard, observer, timeout)
        commitments = {r.branch_id: r.commitment for r in agreed.replies if r.status == "ok" and r.commitment}
        release_heads = agreed.heads
        if set(commitments) == set(metrics.contributors):
            release = commit.model_copy(update={"stage": "release", "commitments": commitments, "coordinator_head": head()})
            answers = _exchange(grid, contributors[:RELEASERS], release, "query", job.rounds, ReleaseReply, guard, observer,
                                timeout)
            release_heads = {**agreed.heads, **answers.heads}
            values, result.released_by = agreed_release(answers.replies)
        else:
            result.evaluation_refused |= {b: "did not agree to the contributor set" for b in metrics.contributors
                                          if b not in commitments}
    elif metrics.payload is not None:  # nodes that opted out of encryption sent plain vectors
        values = list(release_values(metrics.payload.plain_values(), min_release))
    if values is not None:
        result.metrics = alliance_figures(values, regions=job.regions, horizon=job.horizon)
    _record_release(record, job, result, global_round, release_heads)


def _evaluate_and_release_ring(exchange_each, node_ids, strategy: SecureFedAvg, setup, model: Aggregate, result: JobResult,
                               guard: ReplyGuard, head, record, global_round: int, prepared=None) -> None:
    """CKKS-ring: held-out evaluation on every key holder as one more masked sum (mask round
    rounds + 1), then three of its survivors check the signed survivor list, decrypt the sum
    and release its group totals."""
    job = strategy.job
    instruction = strategy.configure_evaluate(job.rounds, model, coordinator_head=head())
    outcome = ring_job.masked_sum(
        exchange_each, job, job.rounds + 1, setup, guard.node_of, node_ids,
        lambda shares: instruction.model_copy(update={"shares": shares}), "evaluate", EvaluateReply, lambda r: r.metrics,
        LENGTH, METRIC_CLIP, strategy.ring_aggregation(LENGTH * setup.plan(job, METRIC_CLIP).digits), head,
        prepared=prepared)
    metrics, evals = outcome.aggregate, outcome.exchanges[0]
    result.evaluated_by = sorted(metrics.contributors)
    result.branch_metrics = {r.branch_id: r.branch_scores for r in evals.replies if r.status == "ok" and r.branch_scores}
    result.evaluation_refused = dict(outcome.refused)
    record(EventKind.EVALUATION, job.rounds, digest=metrics.payload.digest() if metrics.payload else None,
           details={"contributors": metrics.contributors, "node_heads": evals.heads, "refused": result.evaluation_refused,
                    "survivors": outcome.fates.survivors if outcome.fates else None})
    release_heads: dict[str, list] = {}
    if metrics.payload is not None and outcome.fates is not None:
        release = ReleaseInstruction(job=job, round=job.rounds, aggregate=metrics.payload, fates=outcome.fates,
                                     coordinator_head=head())
        releasers = [guard.node_of[b] for b in outcome.fates.survivors[:RELEASERS] if b in guard.node_of]
        answers = exchange_each({n: release for n in releasers}, "query", job.rounds, ReleaseReply)
        release_heads = answers.heads
        values, result.released_by = agreed_release(answers.replies)
        if values is not None:
            result.metrics = alliance_figures(values, regions=job.regions, horizon=job.horizon)
    _record_release(record, job, result, global_round, release_heads)


def _record_release(record, job: JobSpec, result: JobResult, global_round: int, release_heads: dict) -> None:
    """The coordinator's account of what the job released, to whom, decrypted by whom."""
    record(EventKind.MODEL_RELEASE, global_round, digest=result.final_model_digest,
           model_version=model_version(job, global_round),
           details={"rounds": job.rounds, "last_aggregated_round": global_round, "released_to": job.recipient_role,
                    "destination": job.destination, "metrics": result.metrics, "evaluated_by": result.evaluated_by,
                    "released_by": result.released_by, "node_heads": release_heads})


def agreed_release(replies: list[ReleaseReply]) -> tuple[list[float] | None, list[str]]:
    """The values the releasing nodes agree on, and who released them. A reply that is not a
    full, finite metric sum is left out; if the rest disagree, nothing is released (a node
    misreported), and one odd reply never stops the job."""
    released = [r for r in replies if r.status == "ok" and len(r.values) == LENGTH and np.isfinite(r.values).all()]
    if not released:
        return None, []
    values = released[0].values
    if any(not np.allclose(r.values, values, atol=1e-2) for r in released):
        return None, sorted(r.branch_id for r in released)
    return values, sorted(r.branch_id for r in released)


def node_level_sigma(job: JobSpec, contributors: int) -> float:
    """The noise multiplier the aggregate really carried: each of `nodes` expected nodes adds
    1/nodes of the variance, so fewer contributors leave less noise (and spend more epsilon)."""
    return job.node_dp.noise_multiplier * (min(contributors, job.node_dp.nodes) / job.node_dp.nodes) ** 0.5


def model_version(job: JobSpec, rnd: int) -> str:
    """The global model after round `rnd` of a job: what lineage and identity cards call it."""
    return f"{job.job_id}/r{rnd}"


def _wait_for_nodes(grid: Grid, min_nodes: int, deadline_seconds: float, *, expected: int | None = None) -> list[int]:
    """Wait for the `expected` nodes (default `min_nodes`), but never forever: after the
    deadline, go on with at least `min_nodes` (a node that went away does not hold the job)."""
    deadline = time.monotonic() + deadline_seconds
    expected = max(expected or min_nodes, min_nodes)
    while True:
        node_ids = sorted(grid.get_node_ids())
        if len(node_ids) >= expected:
            return node_ids
        if time.monotonic() > deadline:
            if len(node_ids) >= min_nodes:
                return node_ids
            raise TimeoutError(f"only {len(node_ids)} of {min_nodes} nodes connected within {deadline_seconds:.0f}s")
        time.sleep(1.0)


class Exchange(BaseModel):
    replies: list = Field(default_factory=list)  # accepted replies (signed by the branch they name)
    asides: list = Field(default_factory=list)  # accepted replies to the mask queries sent alongside (`queries`)
    refused: dict[str, str] = Field(default_factory=dict)  # who was left out, and why
    heads: dict[str, list] = Field(default_factory=dict)  # branch -> [seq, hash]: anchors of every accepted reply
    received: int = 0


def _exchange(grid, node_ids, instruction, message_type, rnd, schema, guard: ReplyGuard, observer, timeout) -> Exchange:
    """Send one instruction to every node and pull the replies until all came or time ran
    out. A reply must decode and be signed by the branch it names, from the node that branch
    answers from; anything else is left out and named."""
    return _exchange_each(grid, {nid: instruction for nid in node_ids}, message_type, rnd, schema, guard, observer, timeout)


def _exchange_each(grid, instructions: dict, message_type, rnd, schema, guard: ReplyGuard, observer, timeout, *,
                   queries: dict | None = None) -> Exchange:
    """`_exchange` with each node's own instruction (its sealed shares, its key envelope).
    `queries`: node -> a `MaskInstruction` sent in the same exchange to nodes the main
    instruction is not for (the next mask round's adverts or shares); answers in `asides`."""
    contents: dict[int, object] = {}
    messages = []
    for nid, instruction, kind in [*((n, i, message_type) for n, i in instructions.items()),
                                   *((n, i, "query.mask") for n, i in (queries or {}).items())]:
        key = id(instruction)
        if key not in contents:  # one record per distinct instruction
            contents[key] = to_record(instruction)
        messages.append(Message(content=contents[key], dst_node_id=nid, message_type=kind, group_id=str(rnd)))
    ids = list(grid.push_messages(messages))
    aside = set(ids[len(instructions):])
    pending = set(ids)
    out = Exchange()
    deadline = time.monotonic() + timeout
    while pending and time.monotonic() < deadline:
        for msg in grid.pull_messages(list(pending)):
            mid = msg.metadata.reply_to_message_id
            pending.discard(mid)
            if observer:
                observer.reply_received(rnd, msg)
            node = f"node-{msg.metadata.src_node_id}"
            if msg.has_error():
                out.refused[node] = f"node error: {msg.error.reason}"
                continue
            out.received += _content_bytes(msg)
            try:
                reply = from_record(msg.content, MaskReply if mid in aside else schema)
            except WireError as exc:
                out.refused[node] = f"malformed reply: {exc}"
                continue
            problem = guard.problem(msg.metadata.src_node_id, reply)
            ahead = getattr(reply, "ahead", None)
            if problem is None and ahead is not None and (ahead.branch_id != reply.branch_id
                                                          or guard.problem(msg.metadata.src_node_id, ahead)):
                problem = "its 'ahead' answer is not signed by the same branch"
            if problem:
                out.refused[f"{node} (claims {reply.branch_id})"] = f"reply rejected: {problem}"
                continue
            (out.asides if mid in aside else out.replies).append(reply)
            if reply.lineage_head is not None:
                out.heads[reply.branch_id] = [reply.lineage_head.seq, reply.lineage_head.event_hash]
        if pending:
            time.sleep(0.05)
    for _ in pending:
        out.refused[f"pending-{len(out.refused)}"] = f"no reply within {timeout:.0f}s"
    return out


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
