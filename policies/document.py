"""A branch's policy as its compliance officer writes it (YAML), and a job's request.

Rules are ordered: the first rule whose match fits a field decides its treatment, like a
firewall. A classified field no rule matches is denied; an unclassified field is denied.
"""

from __future__ import annotations

import hashlib
import json
from enum import Enum
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from policies.treatments import TreatmentSpec


class FieldClass(str, Enum):
    """Classification levels, from freely shareable to never read."""

    PUBLIC = "public"
    INTERNAL = "internal"
    CONFIDENTIAL = "confidential"
    PERSONAL = "personal"
    RESTRICTED = "restricted"


NEVER_RELEASED = {FieldClass.RESTRICTED}  # only drop or null, whatever a rule says


def canonical_hash(model: BaseModel) -> str:
    """SHA-256 of a model's canonical JSON: the same content always hashes the same."""
    canonical = json.dumps(model.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


class Match(BaseModel):
    """Which fields, for which jobs, a rule applies to. Omitted keys match anything."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    fields: tuple[str, ...] | None = Field(default=None, alias="field")
    classes: tuple[FieldClass, ...] | None = Field(default=None, alias="class")
    purposes: tuple[str, ...] | None = Field(default=None, alias="purpose")
    cross_border: bool | None = None
    roles: tuple[str, ...] | None = Field(default=None, alias="recipient_role")

    @model_validator(mode="before")
    @classmethod
    def _lists(cls, data):
        if isinstance(data, dict):
            return {k: ([v] if isinstance(v, str) else v) for k, v in data.items()}
        return data


class Rule(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(pattern=r"^[a-z0-9][a-z0-9_.-]{0,63}$")
    match: Match = Match()
    treatment: TreatmentSpec
    reason: str | None = None
    line: int | None = Field(default=None, exclude=True)  # where it stands in the file

    @model_validator(mode="before")
    @classmethod
    def _treatment(cls, data):
        if isinstance(data, dict) and "treatment" in data:
            data = {**data, "treatment": parse_treatment(data["treatment"])}
        return data


class PolicyDocument(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    policy: str = Field(min_length=1)
    version: int = Field(ge=1)
    jurisdiction: str = Field(pattern=r"^[A-Z]{2}$", description="ISO country of the node")
    tables: dict[str, dict[str, FieldClass]]
    rules: list[Rule]
    release_branch_metrics: bool = Field(
        default=False,
        description="send this branch's own held-out accuracy (MASE, sMAPE per forecast) to the alliance by name; "
                    "off: it reaches the alliance only inside sums over enough branches",
    )
    # Where the policy came from, for error messages: not part of what it says (nor its hash).
    source: str | None = Field(default=None, exclude=True)
    table_lines: dict[str, int] = Field(default_factory=dict, exclude=True)

    def content_hash(self) -> str:
        """Hash of what the policy says (not of its formatting, comments or line numbers)."""
        return canonical_hash(self)

    def where(self, table: str | None = None) -> str:
        """`file:line` of a table's field map (or just the file), for one-line errors."""
        line = self.table_lines.get(table) if table else None
        where = self.source or f"policy {self.policy} v{self.version}"
        return f"{where}:{line}" if line else where


class JobRequest(BaseModel):
    """What a job asks of a node: purpose, where results go, who receives them, which fields."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    job_id: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
    purpose: str = Field(pattern=r"^[a-z][a-z0-9_-]{0,31}$")
    destination: str = Field(pattern=r"^[A-Z]{2}$", description="ISO country the results go to")
    recipient_role: str = "analyst"
    fields: list[str] = Field(default_factory=list, description="table.field the job needs")


def parse_treatment(raw) -> dict:
    """`drop` | `{mask: {show_last: 4}}` | `{generalise: month}` | `{generalise: {to: bucket, width: 5000}}`."""
    if isinstance(raw, str):
        return {"kind": raw}
    if isinstance(raw, dict) and len(raw) == 1:
        (kind, params), = raw.items()
        if params is None or (kind == "hash" and isinstance(params, str)):
            return {"kind": kind}
        if kind == "generalise" and isinstance(params, str):
            return {"kind": kind, "to": params}
        if isinstance(params, dict):
            return {"kind": kind, **params}
    if isinstance(raw, (dict, TreatmentSpec)):
        return raw if isinstance(raw, dict) else raw.model_dump()
    raise ValueError(f"cannot read treatment {raw!r}")


Severity = Literal["error", "warning"]
