"""The node agent's service: answer one coordinator instruction, under the branch's rules.

Framework-free (the Flower ClientApp is a thin adapter around it), so it can be driven by
tests and other runtimes alike. Every read, refusal, training step and emission is
recorded in the node's own lineage store; nothing but the (encrypted) weighted update and
held-out accuracy ever leaves.
"""

from __future__ import annotations

import hashlib
import os
from datetime import date
from functools import cached_property

import numpy as np

from common.files import create_secret_once
from common.he import EncryptedVector, decrypt_vector, encrypt_vector, load_context
from common.metrics import score
from common.privacy import PrivacyPlanError, epsilon, epsilon_spent, group_privacy, windows_per_month
from common.model import build_model, forecast, get_flat_weights, make_windows, set_flat_weights
from common.wire import (
    EvaluateReply,
    JobSpec,
    LineageHead,
    NodeDPSettings,
    NodeReply,
    TrainInstruction,
    TrainReply,
    UpdatePayload,
)
from lineage import EventKind, LineageEvent, LineageStore, Signer
from node_agent.config import NodeConfig
from node_agent.contract import ContractViolation
from node_agent.data import BranchDataset, HoldoutSplit, holdout_split, job_request, read_branch_dataset
from node_agent.egress import WITHHELD_REASON, EgressBlocked, check_reply, reason_may_leave
from node_agent.ledger import Budget, BudgetRefusal, JobSpend, PrivacyLedger, round_allowed, standing
from node_agent.training import (
    plan_noise_multiplier,
    sample_rate,
    steps_per_round,
    train_dp_round,
    train_plain,
)
from policies import JobRefusal, PolicyDocument, PolicyFileError, lint, load_policy

MIN_TRAIN_WINDOWS = 1
GOVERNANCE = "governance"  # the purpose and job id of events no job caused (a policy change)


def node_level_update(start: np.ndarray, trained: np.ndarray, settings: NodeDPSettings) -> np.ndarray:
    """The model a node sends under node-level DP: the global model plus its own update,
    clipped to `settings.clip`, plus its share N(0, (sigma * clip)^2 / nodes) of the noise.
    The noise comes from the OS's CSPRNG: it must not be predictable from a seed."""
    delta = trained - start
    norm = float(np.linalg.norm(delta))
    if norm > settings.clip:
        delta = delta * (settings.clip / norm)
    rng = np.random.default_rng(np.frombuffer(os.urandom(32), dtype=np.uint64))
    share = settings.noise_multiplier * settings.clip / np.sqrt(settings.nodes)
    return start + delta + rng.normal(0.0, share, size=start.shape)


class Refusal(Exception):
    """This node will not take part in this step; the message is the one-line reason."""


REFUSALS = (Refusal, ContractViolation, JobRefusal, PrivacyPlanError)


class NodeAgent:
    """One branch's agent. The branch policy is read from its file at every job step, so an
    edit by the compliance officer applies to the next step and is recorded as a change."""

    def __init__(self, config: NodeConfig, *, policy: PolicyDocument | None = None, today: date | None = None) -> None:
        self.config = config
        self._fixed_policy = policy
        self.policy_hash: str | None = policy.content_hash() if policy else None
        self.today = today
        self.lineage = LineageStore(config.lineage_url)
        self.signer = Signer.load_or_create(config.branch_id, config.lineage_key_dir)
        config.privacy_dir.mkdir(parents=True, exist_ok=True)
        self.ledger = PrivacyLedger(config.ledger_url)

    # ----------------------------------------------------------------- public actions
    def train(self, instruction: TrainInstruction) -> TrainReply:
        job, rnd = instruction.job, instruction.round
        try:
            data = self._read(job, rnd)
            train_units = self._split(data, job)[0]
            x, y, _ = make_windows(train_units, data.series.start.month, lags=job.lags, horizon=job.horizon)
            if len(x) < MIN_TRAIN_WINDOWS:
                raise Refusal(
                    f"insufficient history: {len(train_units)} training months give no "
                    f"{job.horizon}-month window"
                )
            model = self._global_model(instruction)
            start = get_flat_weights(model)
            result, spend = self._train(model, x, y, job, rnd)
            customer = self._customer_privacy(job, len(x), result.epsilon)
            self._record(
                EventKind.TRAINING, job, rnd,
                details={
                    "windows": len(x), "steps": result.steps, "dp": job.dp.enabled,
                    "noise_multiplier": result.noise_multiplier,
                    "sample_rate": spend.sample_rate if spend else None,
                    "epsilon": result.epsilon, "delta": job.dp.delta if job.dp.enabled else None,
                    "planned_epsilon": spend.planned_epsilon if spend else None, **customer,
                    "node_level_dp": job.node_dp.model_dump() if job.node_dp.enabled else None,
                },
            )
            if job.node_dp.enabled:  # one dealership, one vote: clipped, noised, weight 1
                weights, n = node_level_update(start, result.weights, job.node_dp), 1
            else:
                weights, n = result.weights, len(x)
            reply = TrainReply(
                status="ok", branch_id=self.config.branch_id, update=self._encode(job, weights, n=n),
                epsilon=round(result.epsilon, 2) if result.epsilon is not None else None,
                planned_epsilon=round(spend.planned_epsilon, 2) if spend else None,
                customer_epsilon=customer.get("customer_epsilon"), customer_delta=customer.get("customer_delta"),
                quarantined=data.quarantined,
            )
        except REFUSALS as exc:
            return self.refused(TrainReply, job, rnd, str(exc))
        return self._egress(reply, job, rnd)

    def evaluate(self, instruction: TrainInstruction) -> EvaluateReply:
        """Held-out accuracy of the global model on this branch's last `holdout` months."""
        job, rnd = instruction.job, instruction.round
        try:
            data = self._read(job, rnd)
            self._split(data, job)
            model = self._global_model(instruction)
        except REFUSALS as exc:
            return self.refused(EvaluateReply, job, rnd, str(exc))
        split = holdout_split(data.series, job.holdout, job.horizon)
        predicted = forecast(model, split.history, split.target_month)[: len(split.actual)]
        digest = hashlib.sha256(np.round(get_flat_weights(model), 6).tobytes()).hexdigest()
        reply = EvaluateReply(
            status="ok", branch_id=self.config.branch_id, **score(split.actual, predicted, split.history),
            months=split.months, actual=[float(v) for v in split.actual],
            forecast=[round(float(v), 3) for v in predicted], model_digest=digest,
        )
        self._record(EventKind.EVALUATION, job, rnd, details={"mase": reply.mase, "smape": reply.smape, "model_digest": digest})
        return self._egress(reply, job, rnd)

    def holdout(self, job: JobSpec) -> HoldoutSplit:
        """This branch's history and held-out months, read (and recorded) under its policy.

        For benchmarks that compare the federated model with what the branch could do alone.
        """
        data = self._read(job, None)
        self._split(data, job)
        return holdout_split(data.series, job.holdout, job.horizon)

    def refused(self, reply_type: type[NodeReply], job: JobSpec | None, rnd: int | None, reason: str) -> NodeReply:
        """The refusal reply to send, recorded (refusal and emission) like every other reply."""
        reply = reply_type(status="refused", branch_id=self.config.branch_id, reason=self.refuse(job, rnd, reason))
        return self._egress(reply, job, rnd)

    def refuse(self, job: JobSpec | None, rnd: int | None, reason: str) -> str:
        """Record a refusal in lineage and return the reason to send back (withheld if it
        looks like it carries personal data: lineage keeps it, the coordinator does not get it)."""
        self._record(EventKind.REFUSAL, job, rnd, details={"reason": reason})
        return reason if reason_may_leave(reason) else WITHHELD_REASON

    def policy(self) -> PolicyDocument:
        """The branch policy in force now; a change since the last one used is recorded.

        A policy file that is missing, malformed or fails lint refuses every job: the node
        fails closed rather than guess what its compliance officer meant.
        """
        if self._fixed_policy is not None:
            policy = self._fixed_policy
        else:
            path = self.config.policy_path
            if not path.exists():
                raise Refusal(f"{path}: no branch policy here; the node takes no job without one")
            try:
                policy = load_policy(path)
            except PolicyFileError as exc:
                raise Refusal(str(exc)) from None
            errors = [f for f in lint(policy) if f.severity == "error"]
            if errors:
                line = f":{errors[0].line}" if errors[0].line else ""
                raise Refusal(f"{path}{line}: {errors[0].message}")
        digest, previous = policy.content_hash(), self._last_policy_hash()
        if digest != previous:
            self.lineage.append(LineageEvent(
                kind=EventKind.POLICY_CHANGE, actor=self.config.branch_id, job_id=GOVERNANCE, purpose=GOVERNANCE,
                dataset=self.config.dataset, policy_hash=digest,
                details={"policy": policy.policy, "version": policy.version, "jurisdiction": policy.jurisdiction,
                         "previous_hash": previous, "source": policy.source},
            ), self.signer)
        self.policy_hash = digest
        return policy

    def _last_policy_hash(self) -> str | None:
        changes = self.lineage.events(kind=EventKind.POLICY_CHANGE, actor=self.config.branch_id)
        return changes[-1].policy_hash if changes else None

    # ----------------------------------------------------------------- steps
    def _read(self, job: JobSpec, rnd: int) -> BranchDataset:
        policy = self.policy()
        table = self.config.dataset
        request = job_request(job, table)
        data = read_branch_dataset(
            self.config.db_url, policy, request, key=self._policy_key, target=job.target,
            today=self.today, table=table,
        )
        self._record(
            EventKind.POLICY_DECISION, job, rnd, fields=request.fields,
            details={
                "policy": policy.policy, "version": policy.version, "jurisdiction": policy.jurisdiction,
                "destination": job.destination, "cross_border": job.destination != policy.jurisdiction,
                "recipient_role": job.recipient_role,
                "decisions": [
                    {"field": d.name, "class": d.field_class.value if d.field_class else None,
                     "treatment": d.treatment.describe(), "kind": d.treatment.kind, "rule": d.rule, "reason": d.reason}
                    for d in data.decisions
                ],
            },
        )
        if not self.lineage.events(actor=self.config.branch_id, job_id=job.job_id, kind=EventKind.JOB_APPROVAL):
            self._record(
                EventKind.JOB_APPROVAL, job, rnd, fields=request.fields,
                details={"approved_by": f"policy {policy.policy} v{policy.version}", "purpose": job.purpose,
                         "destination": job.destination, "recipient_role": job.recipient_role},
            )
        self._record(
            EventKind.DATA_READ, job, rnd, fields=request.fields, row_count=data.row_count,
            content_hash=data.content_hash, details={"valid_rows": data.valid_count},
        )
        if data.quarantined:
            self._record(
                EventKind.QUARANTINE, job, rnd, row_count=sum(data.quarantined.values()),
                details={"reasons": data.quarantined},
            )
        return data

    def _split(self, data: BranchDataset, job: JobSpec) -> tuple[np.ndarray, np.ndarray]:
        units = data.series.units
        if len(units) <= job.holdout + 1:
            raise Refusal(f"insufficient history: {len(units)} months, the job holds out {job.holdout}")
        return units[: -job.holdout], units[-job.holdout :]

    def _global_model(self, instruction: TrainInstruction):
        job = instruction.job
        model = build_model(job.seed, lags=job.lags, horizon=job.horizon)
        payload = instruction.global_model
        if payload is None:
            return model  # round 1: the public, seeded initial model
        if payload.scheme == "CKKS":
            if not job.he.enabled:
                raise Refusal("job says encryption is off but the global model is encrypted")
            summed = decrypt_vector(self._secret_context, EncryptedVector(length=payload.length, chunks=payload.chunks))
        else:
            summed = payload.plain_values()
        total_weight = summed[-1]
        if not total_weight > 0:
            raise Refusal("global model carries no weight; nothing was aggregated")
        try:
            set_flat_weights(model, summed[:-1] / total_weight)
        except ValueError as exc:
            raise Refusal(f"global model does not fit the job's model: {exc}") from None
        return model

    def _train(self, model, x, y, job: JobSpec, rnd: int):
        seed = job.seed * 100_003 + rnd * 1_009 + int(hashlib.sha256(self.config.branch_id.encode()).hexdigest()[:6], 16)
        if not job.dp.enabled:
            if not self.config.accept_non_private_jobs:
                raise Refusal("this node takes only differentially private jobs (node.json: accept_non_private_jobs is false)")
            result = train_plain(
                model, x, y, epochs=job.local_epochs, batch_size=job.batch_size,
                learning_rate=job.learning_rate, seed=seed,
            )
            return result, None
        spend, budget = self._admit(job, len(x), rnd)
        steps = steps_per_round(len(x), job)
        after = epsilon_spent([*spend.history, [spend.noise_multiplier, spend.sample_rate, steps]], spend.delta, spend.accountant)
        why = round_allowed(spend, after, budget, self.ledger.spends(self.config.dataset))
        if why:
            spend = spend.model_copy(update={"status": "stopped", "reason": why})
            self.ledger.record(spend)
            self._record_spend(job, rnd, spend, budget, "stopped")
            raise Refusal(why)
        result = train_dp_round(
            model, x, y, job, noise_multiplier=spend.noise_multiplier,
            accountant_state=spend.accountant_state(), seed=seed,
        )
        spend = spend.model_copy(update={
            "history": [list(h) for h in result.accountant_state["history"]], "epsilon": result.epsilon,
            "status": "complete" if rnd >= job.rounds else "running",
        })
        self.ledger.record(spend)
        self._record_spend(job, rnd, spend, budget, "spent")
        return result, spend

    @staticmethod
    def _customer_privacy(job: JobSpec, windows: int, window_epsilon: float | None) -> dict:
        """What the window-level epsilon means for one customer: their sale moves one month's
        total, which sits in up to lags + horizon training windows (group privacy over them).

        What is sent is derived from the rounded epsilon and the public group bound lags +
        horizon only, so it says nothing more about the node's size than the rounded epsilon."""
        if window_epsilon is None:
            return {}
        group = windows_per_month(job.lags, job.horizon, windows)
        eps, delta = group_privacy(window_epsilon, job.dp.delta, group)
        sent_eps, sent_delta = group_privacy(round(window_epsilon, 2), job.dp.delta, job.lags + job.horizon)
        return {"customer_group_size": group, "customer_epsilon_exact": eps, "customer_delta_exact": min(delta, 1.0),
                "customer_epsilon": round(sent_eps, 2), "customer_delta": float(f"{min(sent_delta, 1.0):.2g}")}

    def _admit(self, job: JobSpec, windows: int, rnd: int) -> tuple[JobSpend, Budget]:
        """The job's spend record at this node: made at its first round after the preflight
        checks (budget set, delta below 1/records, a fixed sigma that meets the target, room
        left in the budget), and reserved in the ledger in the same transaction."""
        dataset = self.config.dataset
        budget = self.config.budgets.get(dataset)
        if budget is None:
            raise Refusal(f"{self.config.node_dir / 'node.json'}: no privacy budget for dataset '{dataset}' "
                          f"(set budgets.{dataset}.epsilon and .delta); DP jobs are refused until there is one")
        changed, previous = self.ledger.note_budget(dataset, budget)
        if changed:
            self._record(EventKind.BUDGET_CHANGE, None, None, details={
                "dataset": dataset, "change": "budget set", "epsilon": budget.epsilon, "delta": budget.delta,
                "previous": previous.model_dump() if previous else None})
        spend = self.ledger.get(dataset, job.job_id)
        if spend is not None:
            if spend.status != "running":
                raise Refusal(f"job {job.job_id} is {spend.status} at this node" + (f": {spend.reason}" if spend.reason else ""))
            return spend, budget
        if job.dp.delta >= 1 / windows:
            raise Refusal(f"δ = {job.dp.delta:g} is not below 1/records (1/{windows} training windows here): "
                          "it would allow publishing a record outright")
        q, planned_steps = sample_rate(windows, job), job.rounds * steps_per_round(windows, job)
        sigma = job.dp.noise_multiplier or plan_noise_multiplier(windows, job)
        planned = epsilon(q, sigma, planned_steps, job.dp.delta, job.dp.accountant)
        if job.dp.noise_multiplier is not None and planned > job.dp.target_epsilon * 1.0001:
            raise Refusal(f"noise σ = {sigma:g} cannot meet ε = {job.dp.target_epsilon:g} in the planned "
                          f"{planned_steps} steps here (it gives ε = {planned:.3g}); raise σ or ε, or plan fewer rounds")
        plan = JobSpend(dataset=dataset, job_id=job.job_id, accountant=job.dp.accountant, delta=job.dp.delta,
                        noise_multiplier=sigma, sample_rate=q, planned_steps=planned_steps, planned_epsilon=planned)
        try:
            spend = self.ledger.reserve(plan, budget)
        except BudgetRefusal as exc:
            raise Refusal(str(exc)) from None
        self._record_spend(job, rnd, spend, budget, "reserved")
        return spend, budget

    def _record_spend(self, job: JobSpec, rnd: int, spend: JobSpend, budget: Budget, change: str) -> None:
        now = standing(self.config.dataset, budget, self.ledger.spends(self.config.dataset))
        self._record(EventKind.BUDGET_CHANGE, job, rnd, details={
            "dataset": self.config.dataset, "change": change, "job_status": spend.status,
            "job_planned_epsilon": spend.planned_epsilon, "job_epsilon": spend.epsilon, "delta": spend.delta,
            "committed_epsilon": now.committed_epsilon, "remaining_epsilon": now.remaining_epsilon,
            "budget_epsilon": budget.epsilon, "reason": spend.reason,
        })

    def _encode(self, job: JobSpec, weights: np.ndarray, *, n: int) -> UpdatePayload:
        """The only bytes that leave the node during training: `[n * w, n]`, encrypted."""
        weighted = np.concatenate([weights * n, [float(n)]])
        if job.he.enabled:
            enc = encrypt_vector(self._secret_context, weighted)
            return UpdatePayload(scheme="CKKS", length=enc.length, chunks=enc.chunks)
        return UpdatePayload.plain(weighted)

    def _egress(self, reply: NodeReply, job: JobSpec | None, rnd: int | None) -> NodeReply:
        """Every reply passes the egress check (one that fails leaves as a refusal instead) and
        is then recorded as an emission. A training update's emission event goes back with it as
        the node's chain head: the coordinator records it, so the node's chain cannot later lose
        its tail unseen."""
        try:
            check_reply(reply, branch_id=self.config.branch_id)
        except EgressBlocked as exc:
            reason = self.refuse(job, rnd, f"egress check blocked the reply: {exc}")
            reply = type(reply)(status="refused", branch_id=self.config.branch_id, reason=reason)
        update = getattr(reply, "update", None)
        body = reply.model_dump_json(exclude_none=True, exclude={"update"})
        message = "evaluate" if isinstance(reply, EvaluateReply) else "train"
        details = {"destination": "coordinator", "message": message, "status": reply.status}
        if update is not None:
            details |= {"scheme": update.scheme, "bytes": update.nbytes()}
        else:
            details |= {"bytes": len(body), "fields_sent": sorted(
                k for k, v in reply.model_dump(exclude_none=True).items() if v not in ([], {}))}
        emitted = self._record(EventKind.EMISSION, job, rnd, details=details,
                               digest=update.digest() if update is not None else hashlib.sha256(body.encode()).hexdigest())
        if update is not None:
            reply = reply.model_copy(update={"lineage_head": LineageHead(seq=emitted.seq, event_hash=emitted.event_hash)})
        return reply

    @cached_property
    def _policy_key(self) -> bytes:
        """The key of keyed-hash treatments, made on first use; it never leaves the node."""
        create_secret_once(self.config.policy_key_path, os.urandom(32))
        return self.config.policy_key_path.read_bytes()

    @cached_property
    def _secret_context(self):
        path = self.config.he_secret_path
        if not path.exists():
            raise Refusal(f"no alliance key at {path}; encrypted jobs cannot run on this node")
        return load_context(path.read_bytes())

    def _record(self, kind: EventKind, job: JobSpec | None, rnd: int | None, **fields) -> LineageEvent:
        return self.lineage.append(
            LineageEvent(
                kind=kind, actor=self.config.branch_id, job_id=job.job_id if job else "unknown", round=rnd,
                purpose=job.purpose if job else "unknown", dataset=self.config.dataset, policy_hash=self.policy_hash,
                **fields,
            ),
            self.signer,
        )
