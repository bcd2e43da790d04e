"""The model identity card: what data a model version came from, traced across stores.

A global model after round R depends on every round up to R. The coordinator's aggregation
events name, per round, the digest of each node's emission it summed; each node's own chain
holds that emission, and before it the reads (dataset, fields, row count, content hash) and
policy decisions of the same job. The card follows those links and says where one is missing.
"""

from __future__ import annotations

from pydantic import BaseModel, Field

from lineage.models import EventKind, LineageEvent
from lineage.store import LineageStore


class CardError(LookupError):
    """No model with that version or digest in the coordinator's lineage."""


class EmissionLink(BaseModel):
    round: int
    digest: str
    found: bool  # the node's chain holds an emission with this digest
    seq: int | None = None
    event_hash: str | None = None


class ReadRecord(BaseModel):
    round: int | None
    dataset: str | None
    fields: list[str]
    row_count: int | None
    content_hash: str | None
    policy_hash: str | None


class NodeContribution(BaseModel):
    node: str
    emissions: list[EmissionLink]
    reads: list[ReadRecord]
    datasets: list[str]
    fields: list[str]
    treatments: dict[str, str] = Field(default_factory=dict)  # field -> treatment, from the policy decision
    policies: list[str] = Field(default_factory=list)  # "name vN (hash prefix)"


class RoundLink(BaseModel):
    round: int
    model_version: str | None
    digest: str | None
    contributors: dict[str, str]  # node -> emission digest


class ModelIdentityCard(BaseModel):
    model_version: str | None
    digest: str | None
    job_id: str
    purpose: str
    released: bool
    rounds: list[RoundLink]
    nodes: dict[str, NodeContribution]
    missing: list[str] = Field(default_factory=list)  # links the card could not follow

    @property
    def complete(self) -> bool:
        return not self.missing


def build_card(coordinator: LineageStore, nodes: dict[str, LineageStore], model: str | None = None) -> ModelIdentityCard:
    """The card for `model` (a model version like `job/r8`, or a digest); the newest release if None."""
    target = _find_model(coordinator, model)
    aggregations = [a for a in coordinator.events(job_id=target.job_id, kind=EventKind.AGGREGATION)
                    if a.round is not None and a.round <= (target.round or 0)]
    released = bool(coordinator.events(job_id=target.job_id, kind=EventKind.MODEL_RELEASE, digest=target.digest))
    rounds = [RoundLink(round=a.round, model_version=a.model_version, digest=a.digest,
                        contributors=dict(a.details.get("contributors", {}))) for a in aggregations]
    card_nodes: dict[str, NodeContribution] = {}
    missing: list[str] = []
    for node in sorted({n for r in rounds for n in r.contributors}):
        store = nodes.get(node)
        if store is None:
            missing.append(f"{node}: no lineage store given for this node")
            continue
        card_nodes[node] = _contribution(node, store, target.job_id, target.round or 0, rounds, missing)
    return ModelIdentityCard(
        model_version=target.model_version, digest=target.digest, job_id=target.job_id, purpose=target.purpose,
        released=released, rounds=rounds, nodes=card_nodes, missing=missing,
    )


def _find_model(coordinator: LineageStore, model: str | None) -> LineageEvent:
    if model is None:
        releases = coordinator.events(kind=EventKind.MODEL_RELEASE)
        if not releases:
            raise CardError("the coordinator's lineage records no released model")
        return releases[-1]
    found = coordinator.events(model_version=model)
    for kind in (EventKind.AGGREGATION, EventKind.MODEL_RELEASE):
        found = found or coordinator.events(kind=kind, digest=model)
    found = [e for e in found if e.kind in (EventKind.AGGREGATION, EventKind.MODEL_RELEASE)]
    if found:
        return found[-1]
    raise CardError(f"no model version or digest {model!r} in the coordinator's lineage")


def _contribution(node: str, store: LineageStore, job_id: str, last_round: int, rounds: list[RoundLink],
                  missing: list[str]) -> NodeContribution:
    links = []
    for r in rounds:
        digest = r.contributors.get(node)
        if digest is None:
            continue
        sent = store.events(actor=node, job_id=job_id, kind=EventKind.EMISSION, digest=digest)
        links.append(EmissionLink(round=r.round, digest=digest, found=bool(sent),
                                  seq=sent[0].seq if sent else None, event_hash=sent[0].event_hash if sent else None))
        if not sent:
            missing.append(f"{node}: round {r.round} emission {digest[:16]} is not in the node's lineage")
    in_scope = [e for e in store.events(actor=node, job_id=job_id) if e.round is not None and e.round <= last_round]
    reads = [ReadRecord(round=e.round, dataset=e.dataset, fields=e.fields, row_count=e.row_count,
                        content_hash=e.content_hash, policy_hash=e.policy_hash)
             for e in in_scope if e.kind == EventKind.DATA_READ]
    if not reads:
        missing.append(f"{node}: no data read recorded for job {job_id}")
    decisions = [e for e in in_scope if e.kind == EventKind.POLICY_DECISION]
    treatments, policies = {}, []
    for decision in decisions:
        used = set(decision.fields)
        treatments.update({d["field"]: d["treatment"] for d in decision.details.get("decisions", []) if d["field"] in used})
        label = f"{decision.details.get('policy')} v{decision.details.get('version')} ({(decision.policy_hash or '')[:16]})"
        if label not in policies:
            policies.append(label)
    return NodeContribution(
        node=node, emissions=links, reads=reads,
        datasets=sorted({r.dataset for r in reads if r.dataset}), fields=sorted({f for r in reads for f in r.fields}),
        treatments=treatments, policies=policies,
    )
