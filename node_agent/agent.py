"""The node agent's service: answer one coordinator instruction, under the branch's rules.

Framework-free (the Flower ClientApp is a thin adapter around it), so it can be driven by
tests and other runtimes alike. Every read, refusal, training step and emission is
recorded in the node's own lineage store; nothing leaves but the encrypted weighted update,
an encrypted held-out metric vector, alliance-level sums over enough contributors, and
refusal codes. The coordinator is not trusted: see `_admitted` and `_open_aggregate`.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from functools import cached_property

import numpy as np

from common.files import create_secret_once
from common import evaluation
from common.evaluation import ARMS, METRICS, metric_vector
from common import ring_ckks, secagg
from common.he import EncryptedVector, context_shape, decrypt_checked, encrypt_vector, load_context, sum_encrypted
from common.metrics import score
from common.customer_privacy import release_noise_multiplier, window_years
from common.privacy import PrivacyPlanError, epsilon, epsilon_spent, group_privacy, windows_per_month
from common.calendar import month_date, month_number, parse_month
from common.model import REGION_SLOTS, BranchContext, branch_context, forecast, get_flat_weights, job_model, make_windows, set_flat_weights
from common.refusals import reason_for
from common.wire import (
    CoordinatorHead,
    EvaluateReply,
    JobSpec,
    KeyInstruction,
    KeyReply,
    LineageHead,
    MaskInstruction,
    MaskReply,
    NodeDPSettings,
    NodeReply,
    ReleaseInstruction,
    commitment_message,
    ReleaseReply,
    RoundFates,
    SealedShare,
    TrainInstruction,
    TrainReply,
    UpdatePayload,
    from_bytes,
    instruction_digest,
    to_bytes,
)
from lineage import EventKind, LineageEvent, LineageStore, Signer
from lineage.signing import SigningKeyError, load_public_key, verify_signature
from node_agent import baselines, outlook
from node_agent.admission import AdmissionBook, Refusal, admission_refusal
from node_agent.approvals import OwnerDecisions
from node_agent.config import NodeConfig
from node_agent.contract import ContractViolation
from node_agent.customer_ledger import CustomerLedger
from node_agent.data import (
    BranchDataset,
    CustomerBounding,
    HoldoutSplit,
    MonthlySeries,
    holdout_split,
    job_request,
    read_branch_dataset,
)
from node_agent.release import make_release
from node_agent.egress import EgressBlocked, check_reply
from node_agent.job_keys import JobKeyRefusal, JobKeys
from node_agent.masking import MaskingParticipant, MaskingRefusal, consent_message, fates_digest
from node_agent.report import write_branch_report
from node_agent.ledger import Budget, BudgetRefusal, JobSpend, PrivacyLedger, monthly_refusal, round_allowed, standing
from node_agent.training import (
    plan_noise_multiplier,
    sample_rate,
    steps_per_round,
    train_dp_round,
    train_plain,
)
from policies import JobRefusal, PolicyDocument, PolicyFileError, lint, load_policy

MIN_TRAIN_WINDOWS = 1
PAYLOAD_CEILING = 2.0**18  # CKKS at scale 2^40 holds sums below about 2^19: anything larger is refused, not sent
GOVERNANCE = "governance"  # the purpose and job id of events no job caused (a policy change)


def evaluation_round(job: JobSpec) -> int:
    """The mask round of a job's held-out evaluation: the one after its last training round."""
    return job.rounds + 1


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


REFUSAL_CODES = {ContractViolation: "data-contract", JobRefusal: "policy", PrivacyPlanError: "privacy-plan",
                 BudgetRefusal: "privacy-budget"}
REFUSALS = (Refusal, *REFUSAL_CODES)


@dataclass(frozen=True)
class Assessment:
    """One series' held-out figures: forecasts and scores per arm, intervals, months ahead."""

    split: HoldoutSplit
    forecasts: dict
    scores: dict
    chosen: str
    held_out: outlook.BranchForecast
    ahead: outlook.BranchForecast


def refusal_code(exc: Exception) -> str:
    return exc.code if isinstance(exc, Refusal) else REFUSAL_CODES.get(type(exc), "node-config")


def customer_window(config: NodeConfig, job: JobSpec, today: date) -> CustomerBounding | None:
    """The public months a customer-level release covers: the job's window, starting no
    earlier than the first month of data the node declares (or its opening month) and ending
    before its current month, so the months never depend on the data. None on a node without
    customer-level privacy (admission has made sure the job asks for none)."""
    settings = config.customer_privacy
    if settings is None or job.customer_dp is None:
        return None
    current = month_number(today)
    asked = job.customer_dp
    last = parse_month(asked.last_month) if asked.last_month else current - 1
    if last >= current:
        raise Refusal("privacy-plan", f"the job's window ends {asked.last_month}, a month not yet over here "
                                      f"(today is {today:%Y-%m-%d}); a release counts only whole months")
    declared = settings.first_month or config.opened
    first = max(parse_month(asked.first_month), parse_month(declared) if declared else 0)
    if last - first + 1 <= job.holdout + 1:
        raise Refusal("too-little-history", f"the job's window gives this branch {max(last - first + 1, 0)} months, "
                                            f"the job holds out {job.holdout}")
    return CustomerBounding(column=settings.customer_column, first=month_date(first), last=month_date(last),
                            bound=settings.bound)


class NodeAgent:
    """One branch's agent. The branch policy is read from its file at every job step, so an
    edit by the compliance officer applies to the next step and is recorded as a change.

    Nothing the coordinator sends is taken on trust: a job is admitted by the node's own
    settings and frozen as admitted; an aggregate is decrypted only when it sums enough
    contributors, this node among them, and its contents are bounded before use."""

    def __init__(self, config: NodeConfig, *, policy: PolicyDocument | None = None, today: date | None = None) -> None:
        self.config = config
        self._fixed_policy = policy
        self.policy_hash: str | None = policy.content_hash() if policy else None
        self.today = today
        self.lineage = LineageStore(config.lineage_url)
        self.signer = Signer.load_or_create(config.branch_id, config.lineage_key_dir)
        config.privacy_dir.mkdir(parents=True, exist_ok=True)
        self.ledger = PrivacyLedger(config.ledger_url)
        self.book = AdmissionBook(config.ledger_url)
        self.owner = OwnerDecisions(config.ledger_url)
        self.customers = CustomerLedger(config.ledger_url)

    # ----------------------------------------------------------------- public actions
    def train(self, instruction: TrainInstruction) -> TrainReply:
        job, rnd, head = instruction.job, instruction.round, instruction.coordinator_head
        ahead = None
        try:
            job = self._admitted(job)
            asked = instruction_digest(instruction)
            if (earlier := self.book.sent(job.job_id, rnd, asked)) is not None:
                return self._send_again(from_bytes(earlier, TrainReply), job, rnd, head)
            ahead = self._ahead(instruction)
            self.book.take_round(job.job_id, rnd)
            data = self._read(job, rnd)
            released = self._released(job, data, rnd)
            train_units = self._split(released, job)[0]
            x, y, _ = make_windows(train_units, month_number(released.start), self._context(job), lags=job.lags,
                                   horizon=job.horizon)
            if len(x) < MIN_TRAIN_WINDOWS:
                raise Refusal("too-little-history", f"{len(train_units)} training months give no {job.horizon}-month window")
            model, opened = self._global_model(instruction, job)
            start = get_flat_weights(model)
            result, spend = self._train(model, x, y, job, rnd)
            group = self._window_group_privacy(job, len(x), spend.epsilon if spend else None)
            self._record(
                EventKind.TRAINING, job, rnd,
                details={
                    "windows": len(x), "steps": result.steps, "dp": job.dp.enabled,
                    "noise_multiplier": result.noise_multiplier,
                    "sample_rate": spend.sample_rate if spend else None,
                    "epsilon": spend.epsilon if spend else None, "delta": spend.delta if spend else None,
                    "planned_epsilon": spend.planned_epsilon if spend else None, **group,
                    "node_level_dp": job.node_dp.model_dump() if job.node_dp.enabled else None,
                    "global_model": opened,
                },
            )
            if job.node_dp.enabled:  # one dealership, one vote: clipped, noised, weight 1
                weights, n = node_level_update(start, result.weights, job.node_dp), 1
            else:  # the weight is bounded by the job, so one large branch cannot dominate the sum
                weights, n = result.weights, min(len(x), job.bounds.max_weight)
            # quarantine counts are read off the raw rows: under customer-level privacy they stay in lineage
            quarantined = data.quarantined if data.bounded is None else {}
            update = self._encode(job, weights, n=n, mask_round=rnd, shares=instruction.shares)
            reply = TrainReply(status="ok", branch_id=self.config.branch_id, update=update, quarantined=quarantined)
        except REFUSALS as exc:
            return self.refused(TrainReply, job, rnd, refusal_code(exc), str(exc), head, ahead=ahead)
        sent = self._egress(reply, job, rnd, head, ahead=ahead)
        if sent.status == "ok":
            self.book.keep_sent(job.job_id, rnd, asked, to_bytes(sent))
        return sent

    def _send_again(self, reply: TrainReply, job: JobSpec, rnd: int, head: CoordinatorHead | None) -> TrainReply:
        """The update already sent for this very round and model, byte for byte: nothing is
        read or trained, no privacy is spent, and the coordinator learns nothing it was not sent."""
        self._record(EventKind.EMISSION, job, rnd, digest=reply.update.digest() if reply.update else None,
                     details={**self._emission_details("train", reply.status, head), "sent_again": True})
        return reply

    def _emission_details(self, message: str, status: str, head: CoordinatorHead | None) -> dict:
        """What every emission event says: where the reply went, what it answered, and the
        coordinator's chain head it answered."""
        return {"destination": "coordinator", "jurisdiction": self.config.coordinator_jurisdiction,
                "message": message, "status": status, "coordinator_head": head.model_dump() if head is not None else None}

    def evaluate(self, instruction: TrainInstruction) -> EvaluateReply:
        """Held-out accuracy of the global model and of this branch's own local forecasts on
        its last `holdout` months. Only an encrypted metric vector leaves (summed across
        nodes by the coordinator); the forecasts and scores stay in this node's report."""
        job, rnd, head = instruction.job, instruction.round, instruction.coordinator_head
        ahead = None
        try:
            job = self._admitted(job)
            ahead = self._ahead(instruction)
            if not self._ring(job) and not self._own_digests(job, "train") and not instruction.contributions:
                raise Refusal("aggregate-rejected", "this node has sent no update in this job and was forwarded no signed "
                                                    "updates to vouch for the model with")
            model, opened = self._global_model(instruction, job, evaluating=True)  # checked before any data is read
            self.book.take(job.job_id, "evaluations", self.config.limits.max_evaluations)
            data = self._read(job, rnd)
            released = self._released(job, data, rnd)
            self._split(data.series, job)
            release_own = self.policy().release_branch_metrics
            context = self._context(job)
            mine = self._assess(model, data.series, job, context)  # the branch's own figures: they stay here
            shared = mine if released is data.series else self._assess(model, released, job, context)
            split = mine.split
            groups = evaluation.branch_groups(len(split.history), split.target, len(split.actual), context.launches)
            digest = hashlib.sha256(np.round(get_flat_weights(model), 6).tobytes()).hexdigest()
            write_branch_report(self.config, job, split, mine.forecasts, mine.scores, model_digest=digest,
                                local_choice=mine.chosen, intervals=mine.held_out, outlook=mine.ahead)
            payload = self._payload(job, metric_vector(
                shared.scores, **groups, coverage=shared.held_out.coverage(shared.split.actual),
                outlook=(shared.ahead.point, shared.ahead.variance),
                region_slot=context.region if context.region < REGION_SLOTS else None),
                mask_round=evaluation_round(job), shares=instruction.shares, clip=evaluation.METRIC_CLIP)
        except REFUSALS as exc:
            return self.refused(EvaluateReply, job, rnd, refusal_code(exc), str(exc), head, ahead=ahead)
        released_scores = {"released_scores": shared.scores} if shared is not mine else {}
        self._record(EventKind.EVALUATION, job, rnd, details={"scores": mine.scores, **released_scores, **groups,
                                                               "model_digest": digest, "history_months": len(split.history),
                                                               "global_model": opened})
        scores = shared.scores
        own = {arm: {m: round(float(scores[arm][m]), 3) for m in METRICS} for arm in ARMS} if release_own else None
        reply = EvaluateReply(status="ok", branch_id=self.config.branch_id, metrics=payload, branch_scores=own)
        return self._egress(reply, job, rnd, head, branch_scores_allowed=release_own, ahead=ahead)

    def _assess(self, model, series: MonthlySeries, job: JobSpec, context: BranchContext) -> Assessment:
        """The global model and the branch's own methods on the last `holdout` months of `series`."""
        split = holdout_split(series, job.holdout, job.horizon)
        statistical, chosen = baselines.statistical_forecasts(split)
        forecasts = {
            "federated": forecast(model, split.history, split.target, context)[: len(split.actual)],
            "local": baselines.local_forecast(split, job, context),
            **statistical,
        }
        forecasts["local_dp"] = baselines.local_dp_forecast(split, job, context) if job.dp.enabled else forecasts["local"]
        return Assessment(
            split=split, forecasts=forecasts, chosen=chosen,
            scores={arm: score(split.actual, forecasts[arm], split.history) for arm in ARMS},
            held_out=outlook.held_out_intervals(model, split, job.horizon, context),
            ahead=outlook.months_ahead(model, series, job.horizon, context),
        )

    def release(self, instruction: ReleaseInstruction) -> ReleaseReply:
        """Two stages over one contributor set per job. Commit: check every contribution
        (signed by a different branch whose key this node holds, for this job, enough of them,
        this node's own among them as it sent it) and sign the set, once per job. Release: the
        same checks, every contributor's signature over that same set, then add the vectors up
        here and decrypt only this node's own sum; only group totals over at least the
        minimum number of contributors are returned."""
        job, rnd, head = instruction.job, instruction.round, instruction.coordinator_head
        if self._ring(instruction.job):
            return self._release_ring(instruction)
        try:
            job = self._admitted(job)
            self._check_contributions(instruction, job)
            digest = instruction.set_digest()
            if instruction.stage == "commit":
                self.book.commit_release_set(job.job_id, digest)
                signature = self.signer.sign(commitment_message(job.job_id, digest))
                self._record(EventKind.EVALUATION, job, rnd, details={"committed_set": digest,
                                                                       "contributors": sorted(c.branch_id for c in instruction.contributions)})
                return self._egress(ReleaseReply(status="ok", branch_id=self.config.branch_id, commitment=signature), job, rnd, head)
            self._check_commitments(instruction, job, digest)
            values = self._decrypt_sum(instruction, job)
            self.book.take(job.job_id, "releases", self.config.limits.max_evaluations)  # counted when something is released
        except REFUSALS as exc:
            return self.refused(ReleaseReply, job, rnd, refusal_code(exc), str(exc), head)
        contributors = sorted(c.branch_id for c in instruction.contributions)
        self._record(EventKind.EVALUATION, job, rnd, details={"released": values, "contributors": contributors,
                                                               "released_set": digest})
        return self._egress(ReleaseReply(status="ok", branch_id=self.config.branch_id, values=values), job, rnd, head)

    def keys(self, instruction: KeyInstruction) -> KeyReply:
        """The job's key ceremony, this node's part (`node_agent.job_keys`); recorded in lineage."""
        job, head, stage = instruction.job, instruction.coordinator_head, instruction.stage
        try:
            job = self._admitted(job)
            if not self._ring(job):
                raise Refusal("node-config", "the job does not use per-job keys (he.scheme is not CKKS-ring)")
            self._job_keys.expire(self.config.job_key_days * 86400)
            advert = deal = None
            if stage == "advertise":
                advert = self._job_keys.advertise(job)
                details = {"stage": "advertised", "public": advert.public}
            elif stage == "deal":
                deal = self._job_keys.deal(job, instruction.adverts)
                details = {"stage": "dealt", "holders": sorted(deal.holders), "scale_bits": deal.scale_bits}
            elif stage == "install":
                if instruction.deal is None:
                    raise JobKeyRefusal("no key deal was forwarded")
                self._job_keys.install(job, instruction.deal)
                details = {"stage": "installed", "dealer": instruction.deal.dealer, "holders": sorted(instruction.deal.holders),
                           "scale_bits": instruction.deal.scale_bits}
            else:
                details = {"stage": "destroyed", "held": self._job_keys.destroy(job.job_id),
                           "round_secrets_deleted": self._masking.forget(job.job_id)}
        except JobKeyRefusal as exc:
            return self.refused(KeyReply, job, None, "key-ceremony", str(exc), head)
        except REFUSALS as exc:
            return self.refused(KeyReply, job, None, refusal_code(exc), str(exc), head)
        self._record(EventKind.KEY_CEREMONY, job, None, details=details)
        return self._egress(KeyReply(status="ok", branch_id=self.config.branch_id, advert=advert, deal=deal), job, None, head)

    def mask(self, instruction: MaskInstruction) -> MaskReply:
        """One SecAgg+ step of a masked round (`node_agent.masking`), under this node's rules."""
        job, rnd, head, stage = instruction.job, instruction.round, instruction.coordinator_head, instruction.stage
        ahead = None
        try:
            job = self._admitted(job)
            ahead = self._ahead(instruction)
            if not self._ring(job):
                raise Refusal("node-config", "the job does not mask its updates (he.scheme is not CKKS-ring)")
            if rnd > evaluation_round(job):
                raise Refusal("replay", f"mask round {rnd} is past the job's {job.rounds} rounds and its evaluation")
            if not self._job_keys.holds(job):
                raise JobKeyRefusal(f"this node holds no key for job {job.job_id}: it masks nothing in it")
            fields: dict = {}
            if stage == "advertise":
                fields["advert"] = self._masking.advertise(job, rnd)
            elif stage == "share":
                fields["shares"] = self._masking.share(job, rnd, instruction.adverts)
            elif stage == "consent":
                fields["consent"] = self._masking.consent(job, rnd, instruction.survivors, instruction.dropped,
                                                          instruction.shares)
                fields["revealed"] = self._masking.reveal_survivors(job, rnd, instruction.survivors, instruction.dropped)
            else:
                fields["revealed"] = self._masking.unmask(job, rnd, instruction.survivors, instruction.dropped,
                                                          instruction.consents)
        except (MaskingRefusal, JobKeyRefusal) as exc:
            return self.refused(MaskReply, job, rnd, "masking", str(exc), head, ahead=ahead)
        except REFUSALS as exc:
            return self.refused(MaskReply, job, rnd, refusal_code(exc), str(exc), head, ahead=ahead)
        if stage in ("consent", "unmask"):
            self._record(EventKind.AGGREGATION, job, rnd, details={
                "mask_stage": stage, "survivors": sorted(instruction.survivors), "dropped": sorted(instruction.dropped),
                "revealed": {p: ("self" if p in instruction.survivors else "mask") for p in fields.get("revealed", {})}})
        return self._egress(MaskReply(status="ok", branch_id=self.config.branch_id, **fields), job, rnd, head, ahead=ahead)

    def _ahead(self, instruction: TrainInstruction | MaskInstruction) -> MaskReply | None:
        """The next mask round's step an instruction carries, taken as that round's own
        `MaskInstruction` under the same rules (its refusal is its own, not this reply's)."""
        step = instruction.ahead
        if step is None:
            return None
        return self.mask(MaskInstruction(job=instruction.job, round=step.round, stage=step.stage, adverts=step.adverts,
                                          coordinator_head=instruction.coordinator_head))

    def holdout(self, job: JobSpec) -> HoldoutSplit:
        """This branch's history and held-out months, read (and recorded) under its policy.

        For simulator-side experiments (the pooled upper bound), never for the coordinator.
        """
        data = self._read(job, None, release=False)
        self._split(data.series, job)
        return holdout_split(data.series, job.holdout, job.horizon)

    def refused(self, reply_type: type[NodeReply], job: JobSpec | None, rnd: int | None, code: str, detail: str,
                head: CoordinatorHead | None = None, *, ahead: NodeReply | None = None) -> NodeReply:
        """The refusal reply to send: a coarse code and its fixed phrase; the detail is
        recorded in this node's lineage only (it may carry numbers that reveal size)."""
        self.refuse(job, rnd, code, detail)
        reply = reply_type(status="refused", branch_id=self.config.branch_id, code=code, reason=reason_for(code))
        return self._egress(reply, job, rnd, head, ahead=ahead)

    def refuse(self, job: JobSpec | None, rnd: int | None, code: str, detail: str) -> None:
        self._record(EventKind.REFUSAL, job, rnd, details={"code": code, "reason": detail})

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
                raise Refusal("policy", f"{path}: no branch policy here; the node takes no job without one")
            try:
                policy = load_policy(path)
            except PolicyFileError as exc:
                raise Refusal("policy", str(exc)) from None
            errors = [f for f in lint(policy) if f.severity == "error"]
            if errors:
                line = f":{errors[0].line}" if errors[0].line else ""
                raise Refusal("policy", f"{path}{line}: {errors[0].message}")
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
    def _read(self, job: JobSpec, rnd: int | None, *, release: bool = True) -> BranchDataset:
        """Read the branch's sales for `job` under its policy. On a node with customer-level
        privacy the job's release is first charged to the yearly budget (before anything is
        read), unless `release` is False (a simulator-side experiment that releases nothing)."""
        customers = self._customer_window(job)
        if customers is not None and release:
            self._charge_customers(job, customers, rnd)
        policy = self.policy()
        table = self.config.dataset
        request = job_request(job, table, destination=self.config.coordinator_jurisdiction,
                              customer_column=self.config.customer_column_for(job))
        data = read_branch_dataset(
            self.config.db_url, policy, request, key=self._policy_key, target=job.target,
            today=self.today, table=table, max_price=self.config.max_sale_price, customers=customers,
        )
        self._record(
            EventKind.POLICY_DECISION, job, rnd, fields=request.fields,
            details={
                "policy": policy.policy, "version": policy.version, "jurisdiction": policy.jurisdiction,
                "destination": request.destination, "claimed_destination": job.destination,
                "cross_border": request.destination != policy.jurisdiction,
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
                         "destination": request.destination, "recipient_role": job.recipient_role,
                         "spec_hash": job.spec_hash()},
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
        if data.bounding is not None:
            self._record(EventKind.CONTRIBUTION_BOUNDING, job, rnd, fields=request.fields,
                         row_count=data.bounding.sales_dropped,
                         details={**data.bounding.details(), **customers.bound.model_dump()})
        return data

    # ----------------------------------------------------------------- customer-level privacy
    def _customer_window(self, job: JobSpec) -> CustomerBounding | None:
        return customer_window(self.config, job, self.today or date.today())

    def _charge_customers(self, job: JobSpec, window: CustomerBounding, rnd: int | None) -> None:
        """Charge the job's release to every year it touches, once per job, within the yearly budget."""
        settings, dataset = self.config.customer_privacy, self.config.dataset
        if self.customers.job_charge(dataset, job.job_id) is not None:
            return
        z = release_noise_multiplier(job.customer_dp.epsilon, settings.delta)
        years = window_years(window.first, window.last)
        try:
            self.customers.reserve(dataset, job.job_id, years, z, budget=settings.epsilon_per_year, delta=settings.delta)
        except BudgetRefusal as exc:
            raise Refusal("privacy-budget", str(exc)) from None
        standing = self.customers.standing(dataset, settings.delta)
        self._record(EventKind.BUDGET_CHANGE, job, rnd, details={
            "dataset": dataset, "scope": "customer", "change": "reserved", "years": years, "noise_multiplier": z,
            "job_epsilon_per_year": job.customer_dp.epsilon, "delta": settings.delta,
            "budget_epsilon_per_year": settings.epsilon_per_year,
            "spent_per_year": {str(y): round(standing[y], 4) for y in years}})

    def _released(self, job: JobSpec, data: BranchDataset, rnd: int | None) -> MonthlySeries:
        """The series anything that leaves the node is computed from: the job's customer-level
        release (made at its first read, then reused), or the branch's series on a node without."""
        if data.bounded is None:
            return data.series
        settings, dataset = self.config.customer_privacy, self.config.dataset
        release = self.customers.release(dataset, job.job_id)
        if release is None:
            z, years = self.customers.job_charge(dataset, job.job_id)
            release = self.customers.keep(dataset, make_release(
                job.job_id, data.series.start, data.bounded, noise_multiplier=z, epsilon=job.customer_dp.epsilon,
                delta=settings.delta, bound=settings.bound))
            self._record(EventKind.CUSTOMER_RELEASE, job, rnd, digest=release.digest(), details={
                "first_month": release.first_month, "months": len(release.values), "years": years,
                "noise_multiplier": z, "sigma": release.sigma, "epsilon_per_year": release.epsilon_per_year,
                "delta": release.delta, "every_year_epsilon": round(release.every_year_epsilon(), 4),
                "sensitivity": settings.bound.l2_sensitivity, "mechanism": "discrete Gaussian (OpenDP)",
                "accountant": "RDP (Opacus)"})
        if release.first != data.series.start or len(release.values) != len(data.series.units):
            raise Refusal("privacy-plan", f"the job's release covers {release.first_month} + {len(release.values)} months; "
                                          f"this read covers {data.series.start:%Y-%m} + {len(data.series.units)}")
        return MonthlySeries(start=release.first, units=release.units())

    def _split(self, series: MonthlySeries, job: JobSpec) -> tuple[np.ndarray, np.ndarray]:
        units = series.units
        if len(units) <= job.holdout + 1:
            raise Refusal("too-little-history", f"{len(units)} months, the job holds out {job.holdout}")
        return units[: -job.holdout], units[-job.holdout :]

    def _admitted(self, job: JobSpec) -> JobSpec:
        """The job as this node admitted it: checked against the node's own settings at every
        instruction, frozen at the first (any later change to its spec is refused)."""
        key_shape = context_shape(self._secret_context) if job.he.enabled and not self._ring(job) else None
        refusal = (self.owner.refusal(job, by_hand=self.config.approvals == "by_hand")
                   or admission_refusal(job, self.config, key_shape))
        if refusal is not None:
            raise refusal
        if self.book.get(job.job_id) is None and job.dp.enabled:
            self._check_monthly(job)
        admitted, _ = self.book.admit(job, max_new_per_day=self.config.limits.max_new_jobs_per_day)
        return admitted.job

    def _check_monthly(self, job: JobSpec) -> None:
        """The standing ε-per-month rule, before a new job reads anything: each job admitted in
        the last 30 days counts at what it commits in the ledger, or at its target if it has
        not spent yet."""
        cap = self.config.limits.max_epsilon_per_month
        if cap is None:
            return
        since = datetime.now(timezone.utc) - timedelta(days=30)
        spends = {s.job_id: s for s in self.ledger.spends(self.config.dataset)}
        recent = [spends[a.job.job_id].committed_epsilon if a.job.job_id in spends else a.job.dp.target_epsilon
                  for a in self.book.admitted_since(since) if a.job.dp.enabled]
        why = monthly_refusal(job.job_id, job.dp.target_epsilon, recent, cap)
        if why:
            raise Refusal("privacy-budget", why)

    def _context(self, job: JobSpec) -> BranchContext:
        """This branch's place in the job's model: its own country, region and opening month (node.json)."""
        return branch_context(job, country=self.config.country, region=self.config.region, opened=self.config.opened)

    def _global_model(self, instruction: TrainInstruction, job: JobSpec, *, evaluating: bool = False):
        """The model to start from, and what its sum held (None for the seeded initial model
        of round 1): the aggregate, decrypted only after `_open_aggregate` (or, CKKS-ring,
        `_open_ring`) accepts it, and bounded before use."""
        model = job_model(job)
        payload = instruction.global_model
        if payload is None:
            return model, None  # the public, seeded initial model
        length, mine = model.num_parameters() + 2, self._own_digests(job, "train")
        if self._ring(job):
            before = evaluation_round(job) if evaluating else instruction.round
            summed = self._open_ring(payload, job, instruction.fates, length=length, before=before, clip=job.he.masking.clip)
            listed = len(instruction.fates.survivors)
        elif mine:
            summed = self._open_aggregate(payload, job, instruction.contributors, mine, length=length)
            listed = len(instruction.contributors)
        else:  # nothing of its own to recognise the sum by: it adds up the signed updates itself
            self._vouch(instruction.contributions, job, length=length, attr="update", latest_round=instruction.round)
            summed = self._add_and_decrypt([c.update for c in instruction.contributions], job)
            listed = len(instruction.contributions)
        weight, count = summed[-2], summed[-1]
        if abs(count - listed) > 0.01:
            raise Refusal("aggregate-rejected", f"the aggregate counts {count:.2f} contributors but lists {listed}")
        if not 0 < weight <= listed * job.bounds.max_weight + 0.01:
            raise Refusal("aggregate-rejected", f"the aggregate's total weight {weight:.3g} is outside (0, "
                                                f"{listed} x {job.bounds.max_weight}]")
        averaged = summed[:-2] / weight
        norm = float(np.linalg.norm(averaged))
        if not np.isfinite(norm) or norm > job.bounds.max_model_norm:
            raise Refusal("aggregate-rejected", f"the averaged model's norm {norm:.3g} exceeds the job's bound "
                                                f"{job.bounds.max_model_norm:g}")
        set_flat_weights(model, averaged)
        # what the sum held: lineage shows which contributors and how much weight made the model started from
        return model, {"contributors": listed, "weight": round(float(weight), 6),
                       "survivors": sorted(instruction.fates.survivors) if instruction.fates else None}

    def _open_aggregate(self, payload: UpdatePayload, job: JobSpec, contributors: dict[str, str], mine: set[str], *,
                        length: int) -> np.ndarray:
        """Decrypt (or read) an aggregate the coordinator sent, if this node accepts it: the
        job's scheme (never a plaintext model in an encrypted job), at least the node's minimum
        number of contributors, this node among them with a digest it really sent (`mine`), the
        expected shape, and ciphertexts that hold nothing but the vector they claim."""
        if job.he.enabled and payload.scheme != "CKKS":
            raise Refusal("encryption-required", "a plaintext aggregate was sent for an encrypted job")
        if not job.he.enabled and payload.scheme == "CKKS":
            raise Refusal("aggregate-rejected", "an encrypted aggregate was sent for a job without encryption")
        minimum = self.config.min_contributors
        if len(contributors) < minimum:
            raise Refusal("aggregate-rejected", f"the aggregate sums {len(contributors)} contributors; node.json "
                                                f"min_contributors is {minimum}")
        if contributors.get(self.config.branch_id) not in mine:
            raise Refusal("aggregate-rejected", "the aggregate does not list an update this node sent in this job")
        if payload.length != length:
            raise Refusal("aggregate-rejected", f"the aggregate has {payload.length} values; this job's needs {length}")
        if payload.scheme == "plain":
            values = payload.plain_values() if sum(map(len, payload.chunks)) == 8 * length else np.full(length, np.nan)
        else:
            slots = job.he.params.slots
            if len(payload.chunks) != -(-length // slots):
                raise Refusal("aggregate-rejected", f"the aggregate has {len(payload.chunks)} ciphertexts; "
                                                    f"{length} values need {-(-length // slots)}")
            values = self._decrypt(EncryptedVector(length=length, chunks=payload.chunks))
        if not np.isfinite(values).all():
            raise Refusal("aggregate-rejected", "the aggregate holds values that are not finite numbers")
        return values

    @staticmethod
    def _ring(job: JobSpec) -> bool:
        return job.he.enabled and job.he.scheme == "CKKS-ring"

    def _plan(self, job: JobSpec, clip: float) -> secagg.RingPlan:
        """The ring of this job's masked vectors bounded by `clip` (the job's, or a metric vector's)."""
        return secagg.plan_ring(len(self._job_keys.holders(job)), clip)

    def _open_ring(self, payload: UpdatePayload, job: JobSpec, fates: RoundFates | None, *, length: int,
                   before: int, clip: float) -> np.ndarray:
        """Decrypt a masked round's unmasked sum, if this node accepts it: masked digits of the
        expected shape, from a mask round before `before`, over a survivor list of at least this
        node's minimum that enough of those survivors signed (`MaskingParticipant.check_consents`
        where this node took part in that round, else every listed survivor's signature)."""
        if payload.scheme != "CKKS-ring":
            raise Refusal("encryption-required", f"a {payload.scheme} aggregate was sent for a CKKS-ring job")
        if fates is None or not 1 <= fates.mask_round < before:
            raise Refusal("aggregate-rejected", "the aggregate comes without the signed survivor list of an earlier round")
        survivors, minimum = fates.survivors, self.config.min_contributors
        if len(set(survivors)) != len(survivors) or len(survivors) < minimum:
            raise Refusal("aggregate-rejected", f"the aggregate sums {len(set(survivors))} survivors; node.json "
                                                f"min_contributors is {minimum}")
        try:
            self._masking.check_consents(job, fates.mask_round, survivors, fates.dropped, fates.consents)
        except MaskingRefusal:
            message = consent_message(job.job_id, fates.mask_round, fates_digest(survivors, fates.dropped))
            for branch in survivors:
                key = self._peer_key(branch)
                if key is None or not verify_signature(key, fates.consents.get(branch, ""), message):
                    raise Refusal("aggregate-rejected", f"{branch} did not sign the survivor list of the aggregate") from None
        try:
            plan = self._plan(job, clip)
            if payload.length != length * plan.digits:
                raise ValueError(f"the aggregate has {payload.length} digits; this job's model needs {length * plan.digits}")
            digits = ring_ckks.decrypt_digits(self._job_keys.context(job), EncryptedVector(
                scheme=payload.scheme, length=payload.length, chunks=payload.chunks))
        except (ValueError, RuntimeError, TypeError, JobKeyRefusal) as exc:
            raise Refusal("aggregate-rejected", f"not an unmasked sum under this job's key ({exc})") from None
        return secagg.dequantise(secagg.from_digits(digits, plan), plan)

    def _release_ring(self, instruction: ReleaseInstruction) -> ReleaseReply:
        """Decrypt the unmasked sum of the held-out metric vectors, only over survivor lists this
        node itself signed (it contributed) and a threshold of the survivors signed too."""
        job, rnd, head = instruction.job, instruction.round, instruction.coordinator_head
        try:
            job = self._admitted(job)
            fates, aggregate = instruction.fates, instruction.aggregate
            if fates is None or aggregate is None or fates.mask_round != evaluation_round(job):
                raise Refusal("aggregate-rejected", "the release comes without the evaluation's sum and signed survivor list")
            if not self._own_digests(job, "evaluate") or self.config.branch_id not in fates.survivors:
                raise Refusal("aggregate-rejected", "this node's metric vector is not in the sum it is asked to release")
            if not self._masking.consented(job, fates.mask_round, fates.survivors, fates.dropped):
                raise Refusal("aggregate-rejected", "this node did not agree to the survivor list of this sum")
            summed = self._open_ring(aggregate, job, fates, length=evaluation.LENGTH, before=fates.mask_round + 1,
                                     clip=evaluation.METRIC_CLIP)
            values = self._checked_metric_sum(summed, len(fates.survivors))
            self.book.take(job.job_id, "releases", self.config.limits.max_evaluations)
        except REFUSALS as exc:
            return self.refused(ReleaseReply, job, rnd, refusal_code(exc), str(exc), head)
        self._record(EventKind.EVALUATION, job, rnd, details={"released": values, "contributors": sorted(fates.survivors)})
        return self._egress(ReleaseReply(status="ok", branch_id=self.config.branch_id, values=values), job, rnd, head)

    def _own_digests(self, job: JobSpec, message: str) -> set[str]:
        """Digests of what this node sent in this job, of one message type ('train' updates,
        'evaluate' metric vectors), from its own lineage."""
        return {e.digest for e in self.lineage.events(actor=self.config.branch_id, job_id=job.job_id, kind=EventKind.EMISSION)
                if e.details.get("message") == message and e.details.get("status") == "ok" and e.digest}

    def _check_contributions(self, instruction: ReleaseInstruction, job: JobSpec) -> None:
        """The metric vectors to release are signed contributions (`_vouch`), this node's own
        among them as it sent it."""
        mine = self._own_digests(job, "evaluate")
        if not mine:
            raise Refusal("aggregate-rejected", "this node has not evaluated in this job, so it releases no sum of it")
        self._vouch(instruction.contributions, job, length=evaluation.LENGTH, attr="metrics", latest_round=job.rounds)
        own = next((c for c in instruction.contributions if c.branch_id == self.config.branch_id), None)
        if own is None or own.metrics is None or own.metrics.digest() not in mine:
            raise Refusal("aggregate-rejected", "the contributions do not hold the metric vector this node sent")

    def _check_commitments(self, instruction: ReleaseInstruction, job: JobSpec, digest: str) -> None:
        """Every contributor, this node included, agreed to exactly this set for this job."""
        if self.book.release_set(job.job_id) != digest:
            raise Refusal("aggregate-rejected", "this node did not agree to this contributor set for this job")
        message = commitment_message(job.job_id, digest)
        for c in instruction.contributions:
            signature, key = instruction.commitments.get(c.branch_id), self._peer_key(c.branch_id)
            if not signature or key is None or not verify_signature(key, signature, message):
                raise Refusal("aggregate-rejected", f"{c.branch_id} did not sign this contributor set")

    def _decrypt_sum(self, instruction: ReleaseInstruction, job: JobSpec) -> list[float]:
        contributions = instruction.contributions  # vouched for by `_check_contributions`
        summed = self._add_and_decrypt([c.metrics for c in contributions], job)
        return self._checked_metric_sum(summed, len(contributions))

    def _checked_metric_sum(self, summed: np.ndarray, contributions: int) -> list[float]:
        """A metric sum that is one over `contributions` bounded vectors, as group totals."""
        counts = [summed[at] for at in evaluation.count_slots()]
        if abs(counts[0] - contributions) > 0.01 or not all(-0.01 <= c <= counts[0] + 0.01 for c in counts):
            raise Refusal("aggregate-rejected", f"the metric sum counts {counts[0]:.2f} contributors but holds "
                                                f"{contributions} contributions")
        ceiling = contributions * evaluation.CEILINGS * (1 + 1e-6) + 0.01
        if not np.isfinite(summed).all() or summed.min() < -0.01 or (summed > ceiling).any():
            raise Refusal("aggregate-rejected", "the metric sum holds values no sum of metric vectors can hold")
        return [float(v) for v in evaluation.release_values(summed, self.config.min_contributors)]

    def _contribution_problem(self, reply: NodeReply, job: JobSpec, *, attr: str = "metrics",
                              length: int = evaluation.LENGTH, rounds: tuple[int, int] | None = None) -> str | None:
        """Why a forwarded contribution is not one a branch of the alliance sent for this job:
        a signed reply of the right round carrying a payload of the agreed shape."""
        payload = getattr(reply, attr, None)
        low, high = rounds or (job.rounds, job.rounds)
        if reply.status != "ok" or payload is None:
            return "not a contribution"
        if reply.job_id != job.job_id or reply.round is None or not low <= reply.round <= high:
            return "not sent for this job and round"
        expected = "CKKS" if job.he.enabled else "plain"
        slots = job.he.params.slots
        if payload.scheme != expected or payload.length != length or (
                expected == "CKKS" and len(payload.chunks) != -(-length // slots)):
            return "not of the agreed shape"
        key = self._peer_key(reply.branch_id)
        if key is None:
            return "no key for this branch in this node's peers/"
        if not reply.signature or not verify_signature(key, reply.signature, reply.signed_body()):
            return "not signed by that branch's key"
        return None

    def _vouch(self, contributions: list, job: JobSpec, *, length: int, attr: str, latest_round: int) -> None:
        """Forwarded contributions this node can vouch for: at least min_contributors, from
        distinct branches, one round of this job, each signed by its branch's key as this node
        holds it, each payload of the agreed shape."""
        branches = [c.branch_id for c in contributions]
        if not contributions:
            raise Refusal("aggregate-rejected", "no signed contributions were forwarded for this node to add up")
        if len(set(branches)) != len(branches):
            raise Refusal("aggregate-rejected", "a branch is listed twice among the contributions")
        if len(branches) < self.config.min_contributors:
            raise Refusal("aggregate-rejected", f"the sum has {len(branches)} contributions; node.json min_contributors "
                                                f"is {self.config.min_contributors}")
        if len({c.round for c in contributions}) != 1:
            raise Refusal("aggregate-rejected", "the contributions come from different rounds")
        for c in contributions:
            problem = self._contribution_problem(c, job, attr=attr, length=length, rounds=(1, latest_round))
            if problem:
                raise Refusal("aggregate-rejected", f"contribution of {c.branch_id}: {problem}")

    def _add_and_decrypt(self, payloads: list[UpdatePayload], job: JobSpec) -> np.ndarray:
        """The sum of vouched-for payloads, added here and decrypted (or read, without HE)."""
        if not job.he.enabled:
            return np.sum([p.plain_values() for p in payloads], axis=0)
        try:
            summed = sum_encrypted(self._secret_context, [EncryptedVector(length=p.length, chunks=p.chunks) for p in payloads])
        except (ValueError, RuntimeError, TypeError) as exc:
            raise Refusal("aggregate-rejected", f"the contributions do not add up under the alliance key ({exc})") from None
        return self._decrypt(summed)

    def _decrypt(self, vector: EncryptedVector) -> np.ndarray:
        """Decrypt with the alliance key, refusing a ciphertext that holds more than it claims."""
        try:
            return decrypt_checked(self._secret_context, vector)
        except (ValueError, RuntimeError, TypeError) as exc:
            raise Refusal("aggregate-rejected", f"not an honest ciphertext under the alliance key ({exc})") from None

    def _peer_key(self, branch: str):
        """A branch's lineage public key as this node holds it (`<node dir>/peers/<branch>.pub`,
        exchanged node to node like the alliance key, never taken from the coordinator)."""
        if branch == self.config.branch_id:
            return self.signer.public_key
        path = self.config.peer_keys_dir / f"{branch}.pub"
        if "/" in branch or not path.is_file():
            return None
        try:
            return load_public_key(path)
        except SigningKeyError:
            return None

    def _train(self, model, x, y, job: JobSpec, rnd: int):
        if not job.dp.enabled:
            if not self.config.accept_non_private_jobs:
                raise Refusal("dp-required", "this node takes only differentially private jobs "
                                             "(node.json: accept_non_private_jobs is false)")
            result = train_plain(
                model, x, y, epochs=job.local_epochs, batch_size=job.batch_size,
                learning_rate=job.learning_rate, seed=int.from_bytes(os.urandom(4), "little"),
            )
            return result, None
        spend, budget = self._admit(job, len(x), rnd)
        q = sample_rate(len(x), job)
        if q > spend.sample_rate * (1 + 1e-9):
            raise Refusal("privacy-plan", f"the data now gives sampling rate {q:.4g}, above the "
                                          f"{spend.sample_rate:.4g} the job was admitted with")
        # Accounting uses the ledger's delta and sampling rate (the admitted ones), never the instruction's.
        history = [*spend.history, [spend.noise_multiplier, spend.sample_rate, steps_per_round(len(x), job)]]
        after = max(epsilon_spent(history, spend.delta, spend.accountant), spend.epsilon)
        why = round_allowed(spend, after, budget, self.ledger.spends(self.config.dataset))
        if why:
            spend = spend.model_copy(update={"status": "stopped", "reason": why})
            self.ledger.record(spend)
            self._record_spend(job, rnd, spend, budget, "stopped")
            raise Refusal("privacy-budget", why)
        result = train_dp_round(model, x, y, job, noise_multiplier=spend.noise_multiplier, accountant_state=None)
        spend = spend.model_copy(update={
            "history": history, "epsilon": after, "status": "complete" if rnd >= job.rounds else "running",
        })
        self.ledger.record(spend)
        self._record_spend(job, rnd, spend, budget, "spent")
        return result, spend

    @staticmethod
    def _window_group_privacy(job: JobSpec, windows: int, window_epsilon: float | None) -> dict:
        """What the window-level epsilon means for one customer: their sale moves one month's
        total, which sits in up to lags + horizon training windows (group privacy over them).
        Kept in the node's lineage; the coordinator works out the job-level bound itself."""
        if window_epsilon is None:
            return {}
        group = windows_per_month(job.lags, job.horizon, windows)
        eps, delta = group_privacy(window_epsilon, job.dp.delta, group)
        return {"window_group_size": group, "window_group_epsilon": eps, "window_group_delta": min(delta, 1.0)}

    def _admit(self, job: JobSpec, windows: int, rnd: int) -> tuple[JobSpend, Budget]:
        """The job's spend record at this node: made at its first round after the preflight
        checks (budget set, delta below 1/records, a fixed sigma that meets the target, room
        left in the budget), and reserved in the ledger in the same transaction."""
        dataset = self.config.dataset
        budget = self.config.budgets.get(dataset)
        if budget is None:
            raise Refusal("privacy-budget", f"{self.config.node_dir / 'node.json'}: no privacy budget for dataset '{dataset}' "
                          f"(set budgets.{dataset}.epsilon and .delta); DP jobs are refused until there is one")
        changed, previous = self.ledger.note_budget(dataset, budget)
        if changed:
            self._record(EventKind.BUDGET_CHANGE, None, None, details={
                "dataset": dataset, "change": "budget set", "epsilon": budget.epsilon, "delta": budget.delta,
                "previous": previous.model_dump() if previous else None})
        spend = self.ledger.get(dataset, job.job_id)
        if spend is not None:
            if spend.status != "running":
                raise Refusal("privacy-budget", f"job {job.job_id} is {spend.status} at this node" + (f": {spend.reason}" if spend.reason else ""))
            return spend, budget
        if job.dp.delta >= 1 / windows:
            raise Refusal("privacy-plan", f"δ = {job.dp.delta:g} is not below 1/records (1/{windows} training windows here): "
                          "it would allow publishing a record outright")
        q, planned_steps = sample_rate(windows, job), job.rounds * steps_per_round(windows, job)
        sigma = job.dp.noise_multiplier or plan_noise_multiplier(windows, job)
        planned = epsilon(q, sigma, planned_steps, job.dp.delta, job.dp.accountant)
        if job.dp.noise_multiplier is not None and planned > job.dp.target_epsilon * 1.0001:
            raise Refusal("privacy-plan", f"noise σ = {sigma:g} cannot meet ε = {job.dp.target_epsilon:g} in the planned "
                          f"{planned_steps} steps here (it gives ε = {planned:.3g}); raise σ or ε, or plan fewer rounds")
        plan = JobSpend(dataset=dataset, job_id=job.job_id, accountant=job.dp.accountant, delta=job.dp.delta,
                        noise_multiplier=sigma, sample_rate=q, planned_steps=planned_steps, planned_epsilon=planned)
        try:
            spend = self.ledger.reserve(plan, budget)
        except BudgetRefusal as exc:
            raise Refusal("privacy-budget", str(exc)) from None
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

    def _encode(self, job: JobSpec, weights: np.ndarray, *, n: int, mask_round: int,
                shares: list[SealedShare]) -> UpdatePayload:
        """The only bytes that leave the node during training: `[n * w, n, 1]`, encrypted
        (the last slot counts contributors, which a decrypting node checks against the list)."""
        return self._payload(job, np.concatenate([weights * n, [float(n), 1.0]]), mask_round=mask_round, shares=shares,
                             clip=job.he.masking.clip)

    def _payload(self, job: JobSpec, values: np.ndarray, *, mask_round: int, shares: list[SealedShare],
                 clip: float | None = None) -> UpdatePayload:
        """Encrypted (or plain) as the job says. CKKS-ring: bounded by `clip` (the job's for an
        update, `evaluation.METRIC_CLIP` for a metric vector), which the ring is planned for."""
        ceiling = clip if self._ring(job) else PAYLOAD_CEILING
        if not np.isfinite(values).all() or np.abs(values).max(initial=0.0) > ceiling:
            raise Refusal("privacy-plan", f"the values to send are not finite or exceed {ceiling:g} "
                                          "(the job's settings made training diverge)")
        if self._ring(job):  # masked in Z_2^K over the round's neighbours, then encrypted under the job's key
            try:
                plan = self._plan(job, clip)
                ring = self._masking.mask(job, mask_round, values, plan, shares)
                enc = ring_ckks.encrypt_digits(self._job_keys.context(job), secagg.to_digits(ring, plan))
            except (MaskingRefusal, JobKeyRefusal) as exc:
                raise Refusal("masking", str(exc)) from None
            return UpdatePayload(scheme="CKKS-ring", length=enc.length, chunks=enc.chunks)
        if job.he.enabled:
            enc = encrypt_vector(self._secret_context, values)
            return UpdatePayload(scheme="CKKS", length=enc.length, chunks=enc.chunks)
        return UpdatePayload.plain(values)

    def _egress(self, reply: NodeReply, job: JobSpec | None, rnd: int | None, head: CoordinatorHead | None = None,
                *, branch_scores_allowed: bool = False, ahead: NodeReply | None = None) -> NodeReply:
        """Every reply passes the egress check (one that fails leaves as a refusal instead), is
        recorded as an emission with the coordinator's chain head it answers, and goes back
        with this node's chain head (the coordinator anchors it, so the node's chain cannot
        lose its tail unseen) and the node's signature. `ahead`: the next mask round's answer
        it carries (itself checked, recorded and signed already)."""
        if ahead is not None:
            reply = reply.model_copy(update={"ahead": ahead})
        try:
            check_reply(reply, branch_id=self.config.branch_id, branch_scores_allowed=branch_scores_allowed)
        except EgressBlocked as exc:
            self.refuse(job, rnd, "egress", f"egress check blocked the reply: {exc}")
            reply = type(reply)(status="refused", branch_id=self.config.branch_id, code="egress", reason=reason_for("egress"))
        payload = reply.carried()
        body = reply.model_dump_json(exclude_none=True, exclude={"update", "metrics"})
        message = {EvaluateReply: "evaluate", ReleaseReply: "release", KeyReply: "keys", MaskReply: "mask"}.get(type(reply), "train")
        details = self._emission_details(message, reply.status, head)
        if payload is not None:
            details |= {"scheme": payload.scheme, "bytes": payload.nbytes()}
        else:
            details |= {"bytes": len(body), "fields_sent": sorted(
                k for k, v in reply.model_dump(exclude_none=True).items() if v not in ([], {}))}
        emitted = self._record(EventKind.EMISSION, job, rnd, details=details,
                               digest=payload.digest() if payload is not None else hashlib.sha256(body.encode()).hexdigest())
        reply = reply.model_copy(update={"lineage_head": LineageHead(seq=emitted.seq, event_hash=emitted.event_hash),
                                         "job_id": job.job_id if job else None, "round": rnd})
        return reply.model_copy(update={"signature": self.signer.sign(reply.signed_body())})

    @cached_property
    def _policy_key(self) -> bytes:
        """The key of keyed-hash treatments, made on first use; it never leaves the node."""
        create_secret_once(self.config.policy_key_path, os.urandom(32))
        return self.config.policy_key_path.read_bytes()

    @cached_property
    def _job_keys(self) -> JobKeys:
        return JobKeys(self.config.branch_id, self.config.privacy_dir / "job-keys", self.signer, self._peer_key)

    @cached_property
    def _masking(self) -> MaskingParticipant:
        return MaskingParticipant(self.config.branch_id, self.config.privacy_dir / "secagg", self.signer, self._peer_key,
                                  min_threshold=self.config.min_mask_threshold, min_survivors=self.config.min_contributors)

    @cached_property
    def _secret_context(self):
        path = self.config.he_secret_path
        if not path.exists():
            raise Refusal("node-config", f"no alliance key at {path}; encrypted jobs cannot run on this node")
        return load_context(path.read_bytes())  # the node's own key file: only ever written by the ceremony

    def _record(self, kind: EventKind, job: JobSpec | None, rnd: int | None, **fields) -> LineageEvent:
        return self.lineage.append(
            LineageEvent(
                kind=kind, actor=self.config.branch_id, job_id=job.job_id if job else "unknown", round=rnd,
                purpose=job.purpose if job else "unknown", dataset=self.config.dataset, policy_hash=self.policy_hash,
                **fields,
            ),
            self.signer,
        )
