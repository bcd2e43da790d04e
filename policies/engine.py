"""Field classification and per-field decisions. Pure functions over pydantic models."""

from __future__ import annotations

import hashlib
import json
from enum import Enum

from pydantic import BaseModel, ConfigDict


class FieldClass(str, Enum):
    PUBLIC = "public"
    INTERNAL = "internal"
    CONFIDENTIAL = "confidential"
    PERSONAL = "personal"
    RESTRICTED = "restricted"


class Treatment(str, Enum):
    ALLOW = "allow"
    DROP = "drop"


class Policy(BaseModel):
    """A branch's declared classification of its tables' fields."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    version: int
    tables: dict[str, dict[str, FieldClass]]


class PolicyDecision(BaseModel):
    """What happens to one field for one job, and the rule that said so."""

    model_config = ConfigDict(frozen=True)

    table: str
    field: str
    field_class: FieldClass | None
    treatment: Treatment
    rule: str
    reason: str


_NEVER_READ = {FieldClass.PERSONAL, FieldClass.RESTRICTED}


def canonical_hash(model: BaseModel) -> str:
    """SHA-256 of a model's canonical JSON: the same content always hashes the same."""
    canonical = json.dumps(model.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def policy_hash(policy: Policy) -> str:
    """Content hash of the policy: every decision and lineage event cites it."""
    return canonical_hash(policy)


def evaluate(policy: Policy, table: str, columns: list[str], purpose: str) -> list[PolicyDecision]:
    """One decision per column: personal/restricted are dropped, unclassified are denied."""
    classes = policy.tables.get(table, {})
    decisions = []
    for column in columns:
        cls = classes.get(column)
        if cls is None:
            decisions.append(
                PolicyDecision(
                    table=table, field=column, field_class=None, treatment=Treatment.DROP,
                    rule="deny-unclassified",
                    reason="field is not classified in the policy; unclassified fields are denied",
                )
            )
        elif cls in _NEVER_READ:
            decisions.append(
                PolicyDecision(
                    table=table, field=column, field_class=cls, treatment=Treatment.DROP,
                    rule="drop-personal",
                    reason=f"{cls.value} fields are never read for {purpose}",
                )
            )
        else:
            decisions.append(
                PolicyDecision(
                    table=table, field=column, field_class=cls, treatment=Treatment.ALLOW,
                    rule="allow-classified",
                    reason=f"{cls.value} field may be used on the node for {purpose}",
                )
            )
    return decisions


def allowed_fields(decisions: list[PolicyDecision]) -> list[str]:
    return [d.field for d in decisions if d.treatment is Treatment.ALLOW]


def default_dealer_policy() -> Policy:
    """The classification a typical dealership declares for its DMS export."""
    personal = FieldClass.PERSONAL
    return Policy(
        name="default-dealer",
        version=1,
        tables={
            "sales": {
                "sale_id": FieldClass.INTERNAL,
                "sale_date": FieldClass.INTERNAL,
                "vin": FieldClass.CONFIDENTIAL,
                "model": FieldClass.INTERNAL,
                "trim": FieldClass.INTERNAL,
                "list_price": FieldClass.INTERNAL,
                "sale_price": FieldClass.CONFIDENTIAL,
                "discount": FieldClass.CONFIDENTIAL,
                "financing_type": FieldClass.INTERNAL,
                "lead_source": FieldClass.INTERNAL,
                "salesperson": personal,
                "customer_name": personal,
                "customer_phone": personal,
                "customer_national_id": FieldClass.RESTRICTED,
                "customer_address": personal,
                "customer_birth_date": personal,
            },
            "branch": {
                "branch_id": FieldClass.PUBLIC,
                "name": FieldClass.PUBLIC,
                "region": FieldClass.PUBLIC,
                "country": FieldClass.PUBLIC,
                "opening_date": FieldClass.PUBLIC,
            },
        },
    )
