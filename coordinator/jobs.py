"""The job service: the one way a job changes, for the REST routes and the round loop alike.

It checks a request against what the coordinator knows (the invited nodes exist and are not
revoked, enough of them to ever release), moves jobs only along `coordinator.lifecycle`,
accepts a node's approval or denial only with that node's signature over the exact spec, and
records every step in the coordinator's lineage store. It never decides for a node: a node
that denied is never asked to train, and a node trusts none of this (it checks its own
policy, budget and admission whatever the coordinator says).
"""

from __future__ import annotations

import inspect
from typing import Callable

from common.wire import JobSpec, decision_message
from coordinator.lifecycle import Decision, JobState, LifecycleError, check_decision, check_start, next_state
from coordinator.resources import JobRecord, RoundRecord
from coordinator.store import Conflict, CoordinatorStore
from lineage import EventKind, LineageEvent, LineageStore, Signer
from lineage.signing import SigningKeyError, load_public_key, verify_signature


Runner = Callable[..., dict]  # (job, approving nodes[, on_round=callback]) -> the results it released;
# a runner that takes `on_round` reports each round as it closes; one with cancel(job_id) is
# stopped by stopping its job


class InvalidJob(ValueError):
    """A job request the coordinator will not make; the message names the field."""


class NotFound(LookupError):
    """No such job or node."""


class BadSignature(PermissionError):
    """A decision not signed by the node it claims to come from."""


class JobService:
    def __init__(self, store: CoordinatorStore, *, lineage: LineageStore | None = None, signer: Signer | None = None,
                 actor: str = "coordinator") -> None:
        self.store, self.lineage, self.signer, self.actor = store, lineage, signer, actor

    def get(self, job_id: str) -> JobRecord:
        job = self.store.job(job_id)
        if job is None:
            raise NotFound(f"no job {job_id}")
        return job

    def submit(self, spec: JobSpec, *, nodes: list[str], min_contributors: int, actor: str,
               request: bool = True) -> JobRecord:
        """A new job, as a draft or (by default) requested of its nodes at once."""
        self._check_request(spec, nodes, min_contributors)
        self.store.create_job(spec, nodes=nodes, min_contributors=min_contributors, actor=actor,
                              reason=f"submitted by {actor}")
        self._record(spec, JobState.DRAFT, f"submitted by {actor}", nodes=nodes)
        if request:
            return self.transition(spec.job_id, "request", reason=f"requested of {len(nodes)} nodes", actor=actor)
        return self.get(spec.job_id)

    def check(self, spec: JobSpec, *, nodes: list[str], min_contributors: int) -> None:
        """What `submit` would refuse, without storing or recording anything (a launch form's
        validation as the analyst types)."""
        self._check_request(spec, nodes, min_contributors)
        if self.store.job(spec.job_id) is not None:
            raise InvalidJob(f"spec.job_id: job {spec.job_id} exists already")

    def transition(self, job_id: str, action: str, *, reason: str, actor: str, results: dict | None = None) -> JobRecord:
        job = self.get(job_id)
        target = next_state(job.state, action)
        if action == "start":
            approved = check_start(job.decisions(), job.min_contributors)
            reason = f"{reason}; training on {len(approved)} approving nodes: {', '.join(approved)}"
        self.store.move(job_id, job.state, target, reason=reason, actor=actor, results=results)
        self._record(job.spec, target, reason)
        return self.get(job_id)

    def run(self, job_id: str, runner: Runner) -> JobRecord:
        """Run a running job on its approving nodes to its end: completed with the results
        the run released, or failed with the reason, in one line. The round loop's word on
        what it released is all that is stored; the nodes decided what to release."""
        job = self.get(job_id)
        approved = sorted(n for n, d in job.decisions().items() if d is Decision.APPROVED)
        progress = {"on_round": lambda report: self.close_round(job_id, report)} \
            if "on_round" in inspect.signature(runner).parameters else {}
        try:
            results = runner(job, approved, **progress)
        except Exception as exc:  # noqa: BLE001 - whatever broke, the job ends failed with why
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else exc.__class__.__name__
            try:
                return self.transition(job_id, "fail", reason=reason, actor=self.actor)
            except (LifecycleError, Conflict):
                return self.get(job_id)
        for report in results.get("rounds", []):  # rounds the runner did not report as they closed
            self.close_round(job_id, report)
        contributors = sorted({c for r in results.get("rounds", []) for c in r.get("contributors", [])})
        try:
            return self.transition(job_id, "complete", actor=self.actor, results=results,
                                   reason=f"{len(results.get('rounds', []))} rounds; contributors: "
                                          f"{', '.join(contributors) or 'none'}")
        except (LifecycleError, Conflict):  # stopped while it ran: the stop stands, its results are not kept
            return self.get(job_id)

    def close_round(self, job_id: str, report: dict) -> None:
        """Keep a round the round loop closed (each once, whoever reports it first)."""
        self.store.record_round(job_id, RoundRecord.model_validate(
            {k: report.get(k) for k in RoundRecord.model_fields if report.get(k) is not None}))

    def resume_running(self, start: Callable[[str], None]) -> list[str]:
        """The jobs that were running when the service last stopped: `start(job_id)` each
        again (the round loop resumes after its last closed round). Returns their ids."""
        jobs = [j.job_id for j in self.store.jobs(state=JobState.RUNNING)]
        for job_id in jobs:
            self._record(self.get(job_id).spec, JobState.RUNNING, "the service started again; the job resumes")
            start(job_id)
        return jobs

    def decide(self, job_id: str, node_id: str, decision: Decision, *, reason: str, signature: str) -> JobRecord:
        """A node's answer, accepted only under that node's key and only once."""
        if decision is Decision.PENDING:
            raise InvalidJob("decision: must be approved or denied")
        job = self.get(job_id)
        answers = job.decisions()
        if node_id not in answers:
            raise NotFound(f"job {job_id} was not requested of node {node_id}")
        node = self.store.node(node_id)
        if node is None or node.revoked:
            raise BadSignature(f"node {node_id} is unknown or revoked")
        try:
            key = load_public_key(node.public_key)
        except SigningKeyError as exc:
            raise BadSignature(f"node {node_id}: {exc}") from None
        if not verify_signature(key, signature, decision_message(job_id, job.spec_hash, decision.value, reason)):
            raise BadSignature(f"the {decision.value} of job {job_id} is not signed by node {node_id}'s key")
        check_decision(job.state, answers[node_id], node_id)
        self.store.decide(job_id, node_id, decision, reason=reason, signature=signature)
        self.store.touch_node(node_id)
        self._record(job.spec, job.state, reason, kind=EventKind.JOB_DECISION,
                     node=node_id, decision=decision.value, signature=signature)
        return self.get(job_id)

    def _check_request(self, spec: JobSpec, nodes: list[str], min_contributors: int) -> None:
        if not nodes:
            raise InvalidJob("nodes: a job needs at least one node")
        if len(set(nodes)) != len(nodes):
            raise InvalidJob("nodes: a node is listed twice")
        for node_id in nodes:
            node = self.store.node(node_id)
            if node is None:
                raise InvalidJob(f"nodes: unknown node {node_id!r}")
            if node.revoked:
                raise InvalidJob(f"nodes: node {node_id!r} is revoked")
        if min_contributors > len(nodes):
            raise InvalidJob(f"min_contributors: {min_contributors} is more than the {len(nodes)} nodes invited")

    def _record(self, spec: JobSpec, state: JobState, reason: str, *, kind: EventKind = EventKind.JOB_STATE,
                **details) -> None:
        if self.lineage is None or self.signer is None:
            return
        self.lineage.append(LineageEvent(kind=kind, actor=self.actor, job_id=spec.job_id, purpose=spec.purpose,
                                         details={"state": state.value, "reason": reason, "spec_hash": spec.spec_hash(),
                                                  **details}), self.signer)


__all__ = ["BadSignature", "InvalidJob", "JobService", "LifecycleError", "NotFound", "Runner"]
