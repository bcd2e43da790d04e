"""What a compliance officer reads off lineage events, as plain data: the graph from datasets
and fields to jobs to model versions, and each node's policy versions with what changed.

Pure functions over events from any number of stores (a node's, the coordinator's): they
read only what the events say, so a view is as trustworthy as the chains it was built from,
which `LineageStore.verify` checks separately.
"""

from __future__ import annotations

from typing import Iterable, Literal

from pydantic import BaseModel

from lineage.models import EventKind, LineageEvent

NodeKind = Literal["dataset", "field", "job", "model"]


class GraphNode(BaseModel):
    id: str
    kind: NodeKind
    label: str


class GraphEdge(BaseModel):
    source: str
    target: str
    relation: Literal["has_field", "read_by", "produced"]


class LineageGraph(BaseModel):
    nodes: list[GraphNode] = []
    edges: list[GraphEdge] = []


def lineage_graph(events: Iterable[LineageEvent]) -> LineageGraph:
    """Dataset -> field -> job -> model version, from data reads (which fields of which node's
    dataset a job read) and aggregations and releases (which model versions a job produced)."""
    nodes: dict[str, GraphNode] = {}
    edges: dict[tuple[str, str], GraphEdge] = {}

    def node(id_: str, kind: NodeKind, label: str) -> str:
        nodes.setdefault(id_, GraphNode(id=id_, kind=kind, label=label))
        return id_

    def edge(source: str, target: str, relation) -> None:
        edges.setdefault((source, target), GraphEdge(source=source, target=target, relation=relation))

    for e in events:
        job = node(f"job:{e.job_id}", "job", e.job_id)
        if e.kind is EventKind.DATA_READ and e.dataset:
            dataset = node(f"dataset:{e.actor}/{e.dataset}", "dataset", f"{e.actor} / {e.dataset}")
            for name in e.fields:
                field = node(f"field:{e.actor}/{name}", "field", name)
                edge(dataset, field, "has_field")
                edge(field, job, "read_by")
        elif e.kind in (EventKind.AGGREGATION, EventKind.MODEL_RELEASE) and e.model_version:
            edge(job, node(f"model:{e.model_version}", "model", e.model_version), "produced")
    used = {x for pair in edges for x in pair}
    return LineageGraph(nodes=[n for n in nodes.values() if n.id in used], edges=list(edges.values()))


class FieldTreatment(BaseModel):
    field: str
    field_class: str | None = None
    treatment: str
    rule: str | None = None


class FieldChange(BaseModel):
    field: str
    before: FieldTreatment | None  # None: the field was not decided by the earlier version
    after: FieldTreatment | None  # None: no longer decided


class PolicyVersion(BaseModel):
    """One policy in force at a node, as its decisions on jobs show it."""

    node: str
    policy: str
    version: str
    policy_hash: str
    first_seen: str
    jobs: list[str] = []
    fields: list[FieldTreatment] = []
    changes: list[FieldChange] = []  # against the node's previous version (empty for its first)


def policy_versions(events: Iterable[LineageEvent]) -> list[PolicyVersion]:
    """Each node's policy versions, oldest first, with the treatment each field got under it
    and what changed from the version before (from the nodes' policy_decision events)."""
    by_node: dict[str, dict[str, PolicyVersion]] = {}
    for e in sorted(events, key=lambda e: e.recorded_at):
        if e.kind is not EventKind.POLICY_DECISION or not e.policy_hash:
            continue
        versions = by_node.setdefault(e.actor, {})
        found = versions.get(e.policy_hash)
        if found is None:
            fields = [FieldTreatment(field=d.get("field", "?"), field_class=d.get("class"), treatment=d.get("treatment", "?"),
                                     rule=d.get("rule")) for d in e.details.get("decisions", [])]
            found = versions[e.policy_hash] = PolicyVersion(
                node=e.actor, policy=str(e.details.get("policy", "?")), version=str(e.details.get("version", "?")),
                policy_hash=e.policy_hash, first_seen=e.recorded_at.isoformat(), fields=sorted(fields, key=lambda f: f.field))
        if e.job_id not in found.jobs:
            found.jobs.append(e.job_id)
    out = []
    for versions in by_node.values():
        previous: PolicyVersion | None = None
        for version in versions.values():
            out.append(version.model_copy(update={"changes": field_changes(previous, version)}) if previous else version)
            previous = version
    return out


def field_changes(before: PolicyVersion, after: PolicyVersion) -> list[FieldChange]:
    """The fields whose class, treatment or rule differ between two versions (or that one lacks)."""
    old, new = {f.field: f for f in before.fields}, {f.field: f for f in after.fields}
    return [FieldChange(field=name, before=old.get(name), after=new.get(name))
            for name in sorted(old.keys() | new.keys()) if old.get(name) != new.get(name)]
