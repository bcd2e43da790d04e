"""Evaluating a policy for a job, and linting a policy. Pure functions: no I/O."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

from policies.document import NEVER_RELEASED, FieldClass, JobRequest, Match, PolicyDocument, Rule, Severity
from policies.treatments import TreatmentError, TreatmentSpec, apply

DROP = TreatmentSpec(kind="drop")


class FieldDecision(BaseModel):
    """What happens to one field for one job, the rule that said so, and why."""

    model_config = ConfigDict(frozen=True)

    table: str
    field: str
    field_class: FieldClass | None
    treatment: TreatmentSpec
    rule: str
    reason: str

    @property
    def name(self) -> str:
        return f"{self.table}.{self.field}"


class FieldTreatmentError(TreatmentError):
    """A row whose value in `field` does not fit the field's treatment (the value is not quoted)."""

    def __init__(self, field: str, cause: TreatmentError) -> None:
        super().__init__(f"{field}: {cause}")
        self.field = field


class JobRefusal(ValueError):
    """The job asks for something this node's policy never gives."""


class Finding(BaseModel):
    severity: Severity
    line: int | None
    message: str


def _matches(match: Match, table: str, field: str, cls: FieldClass, job: JobRequest, home: str) -> bool:
    return (
        (match.fields is None or f"{table}.{field}" in match.fields)
        and (match.classes is None or cls in match.classes)
        and (match.purposes is None or job.purpose in match.purposes)
        and (match.cross_border is None or match.cross_border == (job.destination != home))
        and (match.roles is None or job.recipient_role in match.roles)
    )


def evaluate(policy: PolicyDocument, schema: dict[str, list[str]], job: JobRequest) -> list[FieldDecision]:
    """One decision per column of `schema` ({table: [columns]}) for this job."""
    decisions = []
    for table, columns in schema.items():
        classes = policy.tables.get(table, {})
        for field in columns:
            decisions.append(_decide_field(policy, table, field, classes.get(field), job))
    return decisions


def _decide_field(policy: PolicyDocument, table: str, field: str, cls: FieldClass | None, job: JobRequest) -> FieldDecision:
    if cls is None:
        return FieldDecision(table=table, field=field, field_class=None, treatment=DROP, rule="deny-unclassified",
                             reason="the policy does not classify this field; unclassified fields are denied")
    for rule in policy.rules:
        if _matches(rule.match, table, field, cls, job, policy.jurisdiction):
            treatment = rule.treatment
            if cls in NEVER_RELEASED and not treatment.withholds_value:
                treatment = DROP  # lint refuses such a policy; evaluation fails closed regardless
            return FieldDecision(table=table, field=field, field_class=cls, treatment=treatment, rule=rule.id,
                                 reason=rule.reason or _explain(rule.match, job, policy.jurisdiction))
    return FieldDecision(table=table, field=field, field_class=cls, treatment=DROP, rule="default-deny",
                         reason=f"no rule allows this {cls.value} field for {job.purpose}")


def _explain(match: Match, job: JobRequest, home: str) -> str:
    parts = []
    if match.classes:
        parts.append("class " + "/".join(c.value for c in match.classes))
    if match.purposes:
        parts.append(f"purpose {job.purpose}")
    if match.cross_border is not None:
        parts.append(f"results go {'abroad' if job.destination != home else 'home'} ({job.destination})")
    if match.roles:
        parts.append(f"recipient {job.recipient_role}")
    return "matches " + (", ".join(parts) if parts else "every field")


def release(decisions: list[FieldDecision], row: dict[str, object], *, table: str, key: bytes) -> dict[str, object]:
    """One row as it may be used or sent: dropped fields removed, the others treated.

    Fails closed: a column without a decision is left out, and restricted fields never pass,
    whatever the decision says. A value its treatment cannot handle raises
    `FieldTreatmentError` naming the field (never the value).
    """
    out = {}
    by_field = {d.field: d for d in decisions if d.table == table}
    for name, value in row.items():
        decision = by_field.get(name)
        if decision is None or decision.treatment.kind == "drop" or decision.field_class in NEVER_RELEASED:
            continue
        try:
            out[name] = apply(decision.treatment, value, key=key)
        except TreatmentError as exc:
            raise FieldTreatmentError(name, exc) from None
    return out


def unclassified_columns(policy: PolicyDocument, schema: dict[str, list[str]]) -> list[str]:
    """`table.column` names the database has and the policy does not classify: schema drift."""
    return [f"{t}.{c}" for t, columns in schema.items() for c in columns if c not in policy.tables.get(t, {})]


def check_request(decisions: list[FieldDecision], job: JobRequest) -> None:
    """Refuse a job that needs a field the policy drops (restricted fields first)."""
    by_name = {d.name: d for d in decisions}
    for name in job.fields:
        decision = by_name.get(name)
        if decision is None:
            raise JobRefusal(f"job {job.job_id} asks for unknown field {name}")
        if decision.field_class in NEVER_RELEASED:
            raise JobRefusal(f"job {job.job_id} asks for restricted field {name}")
        if decision.treatment.kind == "drop":
            raise JobRefusal(f"job {job.job_id} asks for {name}, which rule {decision.rule} drops")


def lint(policy: PolicyDocument) -> list[Finding]:
    """Problems a compliance officer should fix before the policy is used."""
    findings: list[Finding] = []
    known = {f"{t}.{f}": cls for t, fields in policy.tables.items() for f, cls in fields.items()}
    seen: dict[Match, Rule] = {}
    for rule in policy.rules:
        for name in rule.match.fields or ():
            if name not in known:
                findings.append(Finding(severity="error", line=rule.line, message=f"rule {rule.id}: unknown field {name}"))
            elif known[name] in NEVER_RELEASED and not rule.treatment.withholds_value:
                findings.append(Finding(severity="error", line=rule.line,
                                        message=f"rule {rule.id}: {name} is restricted and can only be dropped or nulled"))
        for cls in rule.match.classes or ():
            if cls in NEVER_RELEASED and not rule.treatment.withholds_value:
                findings.append(Finding(severity="error", line=rule.line,
                                        message=f"rule {rule.id}: restricted fields can only be dropped or nulled"))
        if rule.match in seen and seen[rule.match].treatment != rule.treatment:
            first = seen[rule.match]
            findings.append(Finding(severity="error", line=rule.line,
                                    message=f"rule {rule.id} contradicts rule {first.id} (line {first.line}): same match, "
                                            f"{rule.treatment.describe()} vs {first.treatment.describe()}"))
        seen.setdefault(rule.match, rule)
    ids = [r.id for r in policy.rules]
    for dup in sorted({i for i in ids if ids.count(i) > 1}):
        findings.append(Finding(severity="error", line=None, message=f"rule id {dup} is used more than once"))
    return findings
