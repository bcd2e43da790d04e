"""The policy engine: which fields of a branch dataset a job may read, and how.

A pure library (no I/O in evaluation) and a leaf: it imports neither `coordinator` nor
`node_agent`. This first version classifies fields and drops every personal, restricted
or unclassified one; masking treatments come with the full engine.
"""

from policies.engine import (
    FieldClass,
    Policy,
    PolicyDecision,
    Treatment,
    allowed_fields,
    default_dealer_policy,
    evaluate,
    policy_hash,
)

__all__ = [
    "FieldClass",
    "Policy",
    "PolicyDecision",
    "Treatment",
    "allowed_fields",
    "default_dealer_policy",
    "evaluate",
    "policy_hash",
]
