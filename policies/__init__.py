"""The policy engine: which fields of a branch dataset a job may use, and in what form.

A leaf library (it imports neither `coordinator` nor `node_agent`). Evaluation is pure:
`evaluate(policy, schema, job)` gives one `FieldDecision` per column, citing its rule, and
`release` applies those decisions to a row. Only `loader` touches files.
"""

from policies.document import FieldClass, JobRequest, Match, PolicyDocument, Rule, canonical_hash
from policies.loader import PolicyFileError, load_job_request, load_policy
from policies.rules import (
    FieldDecision,
    FieldTreatmentError,
    Finding,
    JobRefusal,
    check_request,
    evaluate,
    lint,
    release,
    unclassified_columns,
)
from policies.treatments import TreatmentError, TreatmentSpec

__all__ = [
    "FieldClass", "FieldDecision", "FieldTreatmentError", "Finding", "JobRefusal", "JobRequest", "Match",
    "PolicyDocument", "PolicyFileError", "Rule", "TreatmentError", "TreatmentSpec", "canonical_hash",
    "check_request", "evaluate", "lint", "load_job_request", "load_policy", "release", "unclassified_columns",
]
