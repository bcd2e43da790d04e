"""Wire schemas: what the coordinator and the nodes say to each other, validated both ways.

Every message body is a pydantic model serialised as JSON in a Flower ConfigRecord, with
update payloads carried as raw bytes beside it. Decoding a malformed message raises
`WireError` with a one-line cause, never a traceback for the user.
"""

from __future__ import annotations

import hashlib
import json
from typing import Annotated, Literal

import numpy as np
from flwr.app import ConfigRecord, RecordDict
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from common.evaluation import REGION_SLOTS
from common.model import COUNTRY_SLOTS, LAUNCH_SLOTS
from common.he import CkksParams

PROTOCOL_VERSION = "sovereign/1"


class WireError(ValueError):
    """A message that does not match its schema."""


# A job spec and its parts refuse infinities and NaN (allow_inf_nan=False): JSON has no spelling for them,
# so a stored spec holding one would be unreadable afterwards.
class DPSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, frozen=True)

    enabled: bool = True
    target_epsilon: float = Field(default=8.0, gt=0, le=100)
    delta: float = Field(default=1e-5, gt=0, lt=1)
    max_grad_norm: float = Field(default=0.2, gt=0, le=100)
    accountant: Literal["rdp", "prv"] = "rdp"
    noise_multiplier: float | None = Field(
        default=None, ge=0.1, le=100, description="fix sigma instead of planning it; a node refuses it if it cannot meet target_epsilon",
    )


class NodeDPSettings(BaseModel):
    """Node-level DP (DP-FedAvg style): each node clips its whole model update to `clip` and
    adds its 1/nodes share of Gaussian noise before encryption, so the encrypted sum carries
    noise of standard deviation noise_multiplier x clip: any one dealership's participation
    is protected in the aggregate. Accounted per round (sampling rate 1) by the coordinator."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, frozen=True)

    enabled: bool = False
    clip: float = Field(default=0.5, gt=0, le=1_000, description="L2 bound on one node's update (its model minus the global model)")
    noise_multiplier: float = Field(default=1.0, gt=0, le=100, description="total noise std over clip, once all nodes' shares add up")
    nodes: int = Field(default=20, ge=1, le=10_000, description="nodes expected to contribute: each adds 1/nodes of the variance")
    delta: float = Field(default=1e-3, gt=0, lt=1, description="delta of the node-level guarantee (well below 1/nodes)")


class UpdateBounds(BaseModel):
    """Limits a decrypting node holds the global model to, whatever the coordinator sends."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, frozen=True)

    max_weight: int = Field(default=1_000, ge=1, description="the most training windows one node's update may weigh")
    max_model_norm: float = Field(default=100.0, gt=0, le=1e6, description="L2 bound on the averaged global model's weights")


class MaskingSettings(BaseModel):
    """SecAgg+ (`common.secagg`) as a job asks for it. A request like the rest of the spec:
    each node holds it to its own minimum threshold and to a majority of its neighbours."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, frozen=True)

    threshold: int | None = Field(default=None, ge=2, le=10_000, description="t: shares that rebuild a seed (none: a "
                                  "majority of each node's neighbours); the coordinator with t - 1 nodes learns nothing")
    degree: int | None = Field(default=None, ge=2, le=10_000, description="mask neighbours per node, even (none: every "
                               "other node); SecAgg+'s sparse graph for large alliances")
    clip: float = Field(default=4096.0, gt=0, le=2.0**20, description="the largest |value| a node sends (n x weight); "
                        "a node whose update exceeds it refuses rather than clip")

    def threshold_for(self, neighbours: int) -> int:
        return self.threshold if self.threshold is not None else neighbours // 2 + 1


class HESettings(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, frozen=True)

    enabled: bool = True
    scheme: Literal["CKKS", "CKKS-ring"] = Field(
        default="CKKS", description="CKKS: one alliance key, real-valued updates; CKKS-ring: per-job keys and "
                                    "SecAgg+ masked integer digits (`common.secagg`, `common.ring_ckks`)")
    params: CkksParams = CkksParams()
    masking: MaskingSettings = MaskingSettings()


MONTH_PATTERN = r"^20[0-9]{2}-(0[1-9]|1[0-2])$"
CALENDAR_MONTHS = 120  # months a job's campaign or shortage calendar may list


class CustomerDPRequest(BaseModel):
    """Customer-level DP asked of every node (`common.customer_privacy`): the ε per year of sales
    this job's release may cost, over the months first_month..last_month. The window is public
    and never depends on the data; each node holds the request to its own contribution bound,
    δ and yearly budget, and starts the window no earlier than its own opening month."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, frozen=True)

    epsilon: float = Field(default=1.0, gt=0, le=20, description="customer ε per year of sales this job's release costs")
    first_month: str = Field(default="2020-01", pattern=MONTH_PATTERN, description="the first month released (YYYY-MM)")
    last_month: str | None = Field(default=None, pattern=MONTH_PATTERN,
                                   description="the last month released (YYYY-MM); none: the month before the node's current one")

    @model_validator(mode="after")
    def _ordered(self) -> CustomerDPRequest:
        if self.last_month is not None and self.last_month < self.first_month:
            raise ValueError(f"last_month {self.last_month} is before first_month {self.first_month}")
        return self


class Launch(BaseModel):
    """One model line reaching one region (or, without a region, every region at once): a
    date from the manufacturer's public launch calendar."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, frozen=True)

    line: str = Field(min_length=1, max_length=64)
    month: str = Field(pattern=MONTH_PATTERN)
    region: str | None = Field(default=None, min_length=1, max_length=64)


class JobSpec(BaseModel):
    """A joint forecast as the analytics team launches it."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, frozen=True)

    job_id: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
    purpose: str = Field(default="forecasting", pattern=r"^[a-z][a-z0-9_-]{0,31}$")
    destination: str = Field(
        default="JP", pattern=r"^[A-Z]{2}$",
        description="ISO country the results go to (the coordinator's); a node in another country treats the job as cross-border",
    )
    recipient_role: str = Field(default="analyst", pattern=r"^[a-z][a-z0-9_-]{0,31}$", description="who receives the results")
    target: Literal["monthly_units"] = "monthly_units"
    horizon: int = Field(default=6, ge=1, le=12)
    holdout: int = Field(default=6, ge=1, le=24)
    lags: int = Field(default=12, ge=2, le=36)
    rounds: int = Field(default=8, ge=1, le=500)
    local_epochs: int = Field(default=2, ge=1, le=50)
    batch_size: int = Field(default=128, ge=1, le=4096)
    learning_rate: float = Field(default=1.0, gt=0, le=10)
    seed: int = 7
    dp: DPSettings = DPSettings()
    customer_dp: CustomerDPRequest | None = Field(
        default=None, description="customer-level DP over everything the nodes release (nodes that require it refuse jobs without)")
    node_dp: NodeDPSettings = NodeDPSettings()
    he: HESettings = HESettings()
    bounds: UpdateBounds = UpdateBounds()
    regions: list[Annotated[str, Field(min_length=1, max_length=64)]] = Field(
        default_factory=list, max_length=REGION_SLOTS,
        description="regions whose forecast totals the job asks for (each released only over enough branches); "
                    "each listed region also gets its own trend in the model")
    countries: list[Annotated[str, Field(pattern=r"^[A-Z]{2}$")]] = Field(
        default_factory=list, max_length=COUNTRY_SLOTS, description="countries that get their own seasonality in the model")
    launches: list[Launch] = Field(
        default_factory=list, max_length=LAUNCH_SLOTS * (1 + REGION_SLOTS) * 2,
        description="the manufacturer's launch calendar, line by line and region by region (a bare 'YYYY-MM' is a "
                    "launch everywhere that month): public dates the model learns an effect after; each branch reads "
                    f"its own region's, the latest {LAUNCH_SLOTS} lines")
    campaigns: list[Annotated[str, Field(pattern=MONTH_PATTERN)]] = Field(
        default_factory=list, max_length=CALENDAR_MONTHS,
        description="months (YYYY-MM) of the manufacturer's alliance-wide incentive campaigns (public calendar)")
    shortages: list[Annotated[str, Field(pattern=MONTH_PATTERN)]] = Field(
        default_factory=list, max_length=CALENDAR_MONTHS,
        description="months (YYYY-MM) in which the manufacturer allocated cars short of demand (announced production "
                    "cuts): sales were capped, and the model learns by how much")

    @field_validator("launches", mode="before")
    @classmethod
    def _bare_months_launch_everywhere(cls, value):
        if isinstance(value, list):
            return [{"line": v, "month": v} if isinstance(v, str) else v for v in value]
        return value

    def spec_hash(self) -> str:
        """SHA-256 over the canonical JSON of the whole spec: what a node freezes at admission."""
        canonical = json.dumps(self.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()

    @model_validator(mode="after")
    def _listed_once(self) -> "JobSpec":
        for name in ("regions", "countries"):
            if len(set(getattr(self, name))) != len(getattr(self, name)):
                raise ValueError(f"{name}: an entry is listed twice")
        return self

    @model_validator(mode="after")
    def _node_dp_needs_encryption(self) -> "JobSpec":
        if self.node_dp.enabled and not self.he.enabled:
            raise ValueError("node-level DP needs encryption: in the clear, each node's update carries only its "
                             "1/nodes share of the noise")
        return self


class UpdatePayload(BaseModel):
    """A node's weighted update `[n_k * w_k ..., n_k]`, CKKS ciphertexts or plain float64."""

    scheme: Literal["CKKS", "CKKS-ring", "plain"]
    length: int = Field(ge=0)
    chunks: list[bytes]

    def nbytes(self) -> int:
        return sum(len(c) for c in self.chunks)

    def digest(self) -> str:
        """SHA-256 over the chunk digests: the identity lineage gives to what was sent."""
        h = hashlib.sha256()
        for c in self.chunks:
            h.update(hashlib.sha256(c).digest())
        return h.hexdigest()

    @classmethod
    def plain(cls, values: np.ndarray) -> "UpdatePayload":
        flat = np.asarray(values, dtype=np.float64).ravel()
        return cls(scheme="plain", length=flat.size, chunks=[flat.tobytes()])

    def plain_values(self) -> np.ndarray:
        if self.scheme != "plain":
            raise WireError("payload is encrypted; it has no plain values")
        return np.frombuffer(b"".join(self.chunks), dtype=np.float64)[: self.length].copy()


class CoordinatorHead(BaseModel):
    """Where the coordinator's lineage chain stood when it sent an instruction, and the key
    that signs it: each node records it, so the coordinator cannot rewrite or re-sign its
    history alone."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    seq: int = Field(ge=0)
    event_hash: str = Field(pattern=r"^[0-9a-f]{64}$")
    key_id: str = Field(pattern=r"^[0-9a-f]{32}$")
    signature: str = Field(pattern=r"^[0-9a-f]{128}$", description="the coordinator's Ed25519 signature over the head")


class TrainInstruction(BaseModel):
    """Coordinator -> node, each round and for the held-out evaluation. `global_model` is
    None in round 1 (seeded init); otherwise it is the sum of the updates of `contributors`
    (branch id -> the digest of the update that branch sent)."""

    model_config = ConfigDict(extra="forbid")

    protocol: Literal["sovereign/1"] = PROTOCOL_VERSION
    job: JobSpec
    round: int = Field(ge=1)
    global_model: UpdatePayload | None = None
    contributors: dict[str, str] = Field(default_factory=dict)
    contributions: list["TrainReply"] = Field(
        default_factory=list,
        description="the signed updates the global model sums, for a node that sent none itself: it re-adds them")
    shares: list["SealedShare"] = Field(default_factory=list, description="CKKS-ring: this node's sealed seed shares")
    fates: "RoundFates | None" = Field(default=None, description="CKKS-ring: who the global model sums, as they signed it")
    ahead: "MaskStep | None" = Field(default=None, description="CKKS-ring: the next mask round's first step, done too")
    coordinator_head: CoordinatorHead | None = None


class LineageHead(BaseModel):
    """Where the node's lineage chain stood when it replied: the coordinator keeps it, so
    the node's newest events cannot later be deleted without it showing."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    seq: int = Field(ge=1)
    event_hash: str = Field(pattern=r"^[0-9a-f]{64}$")


class NodeReply(BaseModel):
    """What every node reply says first: did it take part, and if not, why (a coarse code
    from `common.refusals`; the detail stays in the node's lineage). Every reply carries the
    node's lineage head and is signed with the node's lineage key, so the coordinator can
    bind the branch id to the node that holds that key."""

    model_config = ConfigDict(extra="forbid")

    status: Literal["ok", "refused"]
    branch_id: str
    job_id: str | None = None  # the job and round this reply answers: signed, so it cannot be replayed elsewhere
    round: int | None = None
    code: str | None = None
    reason: str | None = None
    lineage_head: LineageHead | None = None
    signature: str | None = None

    def carried(self) -> UpdatePayload | None:
        """The payload this reply carries (a training update or a metric vector), if any."""
        return getattr(self, "update", None) or getattr(self, "metrics", None)

    def signed_body(self) -> bytes:
        """What the signature covers: every field but the signature, payloads by digest."""
        data = self.model_dump(mode="json", exclude={"signature", "update", "metrics"})
        for name in ("update", "metrics"):
            payload = getattr(self, name, None)
            data[name] = payload.digest() if payload is not None else None
        return json.dumps(data, sort_keys=True, separators=(",", ":")).encode()


class TrainReply(NodeReply):
    """Node -> coordinator. A refusal carries a code and no update.

    Deliberately no step count, noise multiplier or per-node epsilon: each would reveal the
    branch's number of training windows (a coordinator that fixes sigma can read the size off
    a rounded epsilon), which the encrypted weighting keeps from the coordinator. They stay in
    the node's lineage and ledger; the job's guarantee is its target, which no node exceeds."""

    update: UpdatePayload | None = None
    quarantined: dict[str, int] = Field(default_factory=dict)
    ahead: "MaskReply | None" = Field(default=None, description="the answer to the instruction's `ahead` step")


class EvaluateReply(NodeReply):
    """Node -> coordinator after the last round: held-out accuracy as an encrypted metric
    vector (`common.evaluation`), to be summed across nodes. No series, actuals or forecasts:
    those stay on the node."""

    metrics: UpdatePayload | None = None
    branch_scores: dict[str, dict[str, float]] | None = None  # only where the branch's policy releases them
    ahead: "MaskReply | None" = Field(default=None, description="the answer to the instruction's `ahead` step")


class ReleaseInstruction(BaseModel):
    """Coordinator -> node: release the alliance-level sum of these held-out metric vectors.

    The coordinator forwards every contribution as its node signed it (the signed reply, with
    its encrypted metric vector); a node checks each signature against the branch keys it
    holds itself. In the commit stage every contributor signs the contributor set, once per
    job; in the release stage a node adds the vectors up itself and decrypts that sum only if
    every contributor signed the same set, so a coordinator can neither pass off one branch's
    scores (or a padded ciphertext) as a sum nor difference two sums over different sets."""

    model_config = ConfigDict(extra="forbid")

    protocol: Literal["sovereign/1"] = PROTOCOL_VERSION
    job: JobSpec
    round: int = Field(ge=1)
    stage: Literal["commit", "release"] = "release"
    contributions: list[EvaluateReply] = Field(default_factory=list)
    commitments: dict[str, str] = Field(default_factory=dict, description="branch -> its signature over this set")
    aggregate: UpdatePayload | None = Field(default=None, description="CKKS-ring: the unmasked sum of the metric vectors")
    fates: "RoundFates | None" = Field(default=None, description="CKKS-ring: who that sum counts, as they signed it")
    coordinator_head: CoordinatorHead | None = None

    def set_digest(self) -> str:
        """The contributor set: which branch contributed which metric vector, in one hash."""
        pairs = sorted((c.branch_id, c.metrics.digest() if c.metrics else "") for c in self.contributions)
        return hashlib.sha256(json.dumps(pairs).encode()).hexdigest()


def commitment_message(job_id: str, set_digest: str) -> bytes:
    """What a node signs when it agrees to the one contributor set its job's metrics may be
    released over: one set per job, so releases cannot be differenced against each other."""
    return f"sovereign/release-set/1:{job_id}:{set_digest}".encode()


def decision_message(job_id: str, spec_hash: str, decision: str, reason: str) -> bytes:
    """What a node's owner signs to approve or deny a job: the job, the exact spec judged
    (its hash: an altered spec is another request) and the word, with the reason given."""
    return f"sovereign/job-decision/1:{job_id}:{spec_hash}:{decision}:{reason}".encode()


class ReleaseReply(NodeReply):
    """Node -> coordinator: at the commit stage, the node's signature over the contributor set
    it agrees to (once per job); at the release stage, the decrypted sum (rounded)."""

    commitment: str | None = Field(default=None, pattern=r"^[0-9a-f]{128}$")
    values: list[float] = Field(default_factory=list)


# ----------------------------------------------------------------- masked aggregation (SecAgg+)
HEX_KEY = r"^[0-9a-f]{64}$"
BRANCH_ID = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"


class MaskAdvert(BaseModel):
    """One node's public keys for one round of masked aggregation (`common.secagg`), signed
    with its lineage key: every peer checks that the coordinator relayed them unaltered."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    branch_id: str = Field(pattern=BRANCH_ID)
    job_id: str = Field(min_length=1, max_length=64)
    round: int = Field(ge=1)
    mask_public: str = Field(pattern=HEX_KEY, description="X25519 key the pairwise masks are agreed with")
    share_public: str = Field(pattern=HEX_KEY, description="X25519 key the shares sent to this node are sealed to")
    signature: str = Field(default="", pattern=r"^([0-9a-f]{128})?$")

    def signed_body(self) -> bytes:
        return (f"sovereign/mask-advert/1:{self.job_id}:{self.round}:{self.branch_id}:"
                f"{self.mask_public}:{self.share_public}").encode()


class SealedShare(BaseModel):
    """One node's Shamir share bundle for one neighbour, sealed between the two of them."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    sender: str = Field(pattern=BRANCH_ID)
    recipient: str = Field(pattern=BRANCH_ID)
    envelope: str = Field(pattern=r"^([0-9a-f]{2}){34,128}$")


class MaskInstruction(BaseModel):
    """Coordinator -> node, the stages of one masked round around its training step:
    `advertise` (fresh round keys), `share` (seal seed shares to the neighbours the round's
    adverts give), `consent` (sign the survivor and dropout lists, once), `unmask` (reveal,
    for each neighbour, the one share its fate calls for)."""

    model_config = ConfigDict(extra="forbid")

    protocol: Literal["sovereign/1"] = PROTOCOL_VERSION
    job: JobSpec
    round: int = Field(ge=1)
    stage: Literal["advertise", "share", "consent", "unmask"]
    adverts: list[MaskAdvert] = Field(default_factory=list, description="share: every participant's signed advert")
    survivors: list[str] = Field(default_factory=list, description="consent, unmask: whose masked update is in the sum")
    dropped: list[str] = Field(default_factory=list, description="consent, unmask: who shared seeds but sent no update")
    consents: dict[str, str] = Field(default_factory=dict, description="unmask: each survivor's signature over the lists")
    shares: list[SealedShare] = Field(default_factory=list, description="consent, to a node listed as dropped that is "
                                      "still there: the shares sealed to it, so it can help unmask")
    ahead: "MaskStep | None" = Field(default=None, description="the next mask round's first step, done too")
    coordinator_head: CoordinatorHead | None = None


class MaskStep(BaseModel):
    """The next mask round's opening step, carried by a message of this one, so a masked round
    costs two exchanges (three with a dropout), not five: its adverts come back with this
    round's updates, its shares with this round's consents. The node takes it as the `MaskInstruction` of that
    round and stage, under the same rules; its answer rides in the reply's `ahead`."""

    model_config = ConfigDict(extra="forbid")

    round: int = Field(ge=1)
    stage: Literal["advertise", "share"]
    adverts: list[MaskAdvert] = Field(default_factory=list, description="share: every participant's signed advert")


class MaskReply(NodeReply):
    advert: MaskAdvert | None = None
    shares: list[SealedShare] = Field(default_factory=list)
    consent: str | None = Field(default=None, pattern=r"^[0-9a-f]{128}$")
    revealed: dict[str, str] = Field(default_factory=dict, description="owner branch -> revealed share (hex)")
    ahead: "MaskReply | None" = Field(default=None, description="the answer to the instruction's `ahead` step")


class JobKeyAdvert(BaseModel):
    """A node's X25519 key for one job's key ceremony, signed with its lineage key: the
    dealing node seals the job's CKKS secret key to it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    branch_id: str = Field(pattern=BRANCH_ID)
    job_id: str = Field(min_length=1, max_length=64)
    public: str = Field(pattern=HEX_KEY)
    signature: str = Field(default="", pattern=r"^([0-9a-f]{128})?$")

    def signed_body(self) -> bytes:
        return f"sovereign/job-key-advert/1:{self.job_id}:{self.branch_id}:{self.public}".encode()


class JobKeyDeal(BaseModel):
    """The dealing node's answer: the job's keyless public CKKS context (for the coordinator)
    and the secret context sealed to each participant's advert. The dealer signs the holders
    and the digest of each one's envelope, so the coordinator can neither swap a key nor add
    a holder; it forwards each participant the deal with that participant's envelope only."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    dealer: str = Field(pattern=BRANCH_ID)
    job_id: str = Field(min_length=1, max_length=64)
    scale_bits: int = Field(ge=10, le=40)
    public_context: str = Field(max_length=4096, pattern=r"^([0-9a-f]{2})*$")
    holders: dict[str, str] = Field(description="branch -> SHA-256 of its sealed secret context")
    envelopes: dict[str, str] = Field(default_factory=dict, description="branch -> its sealed secret context (hex)")
    signature: str = Field(default="", pattern=r"^([0-9a-f]{128})?$")

    def signed_body(self) -> bytes:
        body = {"dealer": self.dealer, "job_id": self.job_id, "scale_bits": self.scale_bits,
                "public_context": self.public_context, "holders": dict(sorted(self.holders.items()))}
        return ("sovereign/job-key-deal/1:" + json.dumps(body, sort_keys=True, separators=(",", ":"))).encode()

    def for_branch(self, branch: str) -> "JobKeyDeal":
        """What one participant is forwarded: the signed deal with its own envelope only."""
        return self.model_copy(update={"envelopes": {b: e for b, e in self.envelopes.items() if b == branch}})


class KeyInstruction(BaseModel):
    """Coordinator -> node, the job's key ceremony (`node_agent.job_keys`): `advertise` a
    per-job X25519 key; `deal` (one node) the job's CKKS key to the adverts; `install` the
    dealt key forwarded to this node; `close`: the job is over, destroy its key."""

    model_config = ConfigDict(extra="forbid")

    protocol: Literal["sovereign/1"] = PROTOCOL_VERSION
    job: JobSpec
    stage: Literal["advertise", "deal", "install", "close"]
    adverts: list[JobKeyAdvert] = Field(default_factory=list)
    deal: JobKeyDeal | None = None
    coordinator_head: CoordinatorHead | None = None


class KeyReply(NodeReply):
    advert: JobKeyAdvert | None = None
    deal: JobKeyDeal | None = None


class RoundFates(BaseModel):
    """Who a masked sum counts, as its survivors signed it (`node_agent.masking.consent`)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    mask_round: int = Field(ge=1)
    survivors: list[str] = Field(min_length=1)
    dropped: list[str] = Field(default_factory=list)
    consents: dict[str, str] = Field(default_factory=dict)


TrainInstruction.model_rebuild()  # `contributions` names TrainReply, defined after it
TrainReply.model_rebuild()  # `ahead` names MaskReply, defined after it
EvaluateReply.model_rebuild()
ReleaseInstruction.model_rebuild()

PAYLOADS = ("update", "global_model", "metrics", "aggregate")  # carried as bytes beside the JSON body


def to_record(model: BaseModel) -> RecordDict:
    """A pydantic message as a Flower RecordDict: JSON meta plus payload bytes."""
    payloads = {}
    data = model.model_dump(mode="json", exclude=set(PAYLOADS) | {"contributions"})
    contributions = getattr(model, "contributions", None)
    if contributions:  # forwarded signed replies: JSON beside their payload bytes
        carried = [c.carried() for c in contributions]
        data["contributions"] = [c.model_dump(mode="json", exclude=set(PAYLOADS)) for c in contributions]
        payloads["contributions.schemes"] = [p.scheme if p else "" for p in carried]
        payloads["contributions.lengths"] = [p.length if p else 0 for p in carried]
        payloads["contributions.counts"] = [len(p.chunks) if p else 0 for p in carried]
        payloads["contributions.chunks"] = [chunk for p in carried if p for chunk in p.chunks]
    for name in PAYLOADS:
        payload = getattr(model, name, None)
        if payload is not None:
            payloads[f"{name}.scheme"] = payload.scheme
            payloads[f"{name}.length"] = payload.length
            payloads[f"{name}.chunks"] = list(payload.chunks)
    return RecordDict({"body": ConfigRecord({"json": json.dumps(data), **payloads})})


def from_record(content: RecordDict, schema: type[BaseModel]) -> BaseModel:
    """Decode and validate; raises `WireError` naming the bad field."""
    try:
        body = content["body"]
        data = json.loads(body["json"])
        if "contributions.counts" in body:
            chunks, at = list(body["contributions.chunks"]), 0
            for item, scheme, length, count in zip(data["contributions"], body["contributions.schemes"],
                                                   body["contributions.lengths"], body["contributions.counts"], strict=True):
                if count:
                    field = "metrics" if schema is ReleaseInstruction else "update"
                    item[field] = UpdatePayload(scheme=scheme, length=length, chunks=chunks[at : at + count])
                at += count
        for name in PAYLOADS:
            if f"{name}.scheme" in body:
                data[name] = UpdatePayload(
                    scheme=body[f"{name}.scheme"],
                    length=body[f"{name}.length"],
                    chunks=list(body[f"{name}.chunks"]),
                )
        return schema.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = ".".join(str(p) for p in err["loc"]) or "message"
        raise WireError(f"{schema.__name__}: field '{loc}': {err['msg']}") from None
    except (KeyError, TypeError, ValueError) as exc:
        raise WireError(f"{schema.__name__}: malformed message ({exc})") from None


def to_bytes(model: BaseModel) -> bytes:
    """A message as bytes (Flower's own protobuf of `to_record`): for keeping one on disk."""
    from flwr.common.serde import recorddict_to_proto

    return recorddict_to_proto(to_record(model)).SerializeToString()


def from_bytes(data: bytes, schema: type[BaseModel]) -> BaseModel:
    """The message `to_bytes` kept; raises `WireError` like `from_record`."""
    from flwr.common.serde import recorddict_from_proto
    from flwr.proto.recorddict_pb2 import RecordDict as RecordDictProto
    from google.protobuf.message import DecodeError

    try:
        content = recorddict_from_proto(RecordDictProto.FromString(data))
    except DecodeError as exc:
        raise WireError(f"{schema.__name__}: not a stored message ({exc})") from None
    return from_record(content, schema)


def instruction_digest(instruction: "TrainInstruction") -> str:
    """What makes two training instructions the same request: the job's spec, the round, and
    the model to start from (the aggregate and who it sums, or the signed updates to add up).
    The coordinator's lineage head is left out: it moves with every event it records."""
    data = {"spec": instruction.job.spec_hash(), "round": instruction.round,
            "model": instruction.global_model.digest() if instruction.global_model else None,
            "contributors": sorted(instruction.contributors.items()),
            "contributions": sorted(c.signature or "" for c in instruction.contributions)}
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()
