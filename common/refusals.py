"""Refusal codes: what a node tells the coordinator when it will not take part.

A refusal leaves the node as one coarse code and its fixed phrase, never the detail: details
can carry numbers that reveal a branch's size ("1/58 training windows"), its policy or its
data. The detail is recorded in the node's own lineage for branch IT and compliance.
"""

from __future__ import annotations

REASONS: dict[str, str] = {
    "too-little-history": "too little history",
    "policy": "the branch policy does not allow this job",
    "data-contract": "the branch data fails the data contract",
    "privacy-budget": "not enough privacy budget left for this job",
    "privacy-plan": "the job's privacy settings cannot be met here",
    "dp-required": "this node takes only differentially private jobs",
    "customer-dp-required": "this node takes only jobs with customer-level privacy",
    "customer-dp-unavailable": "this node is not set up for customer-level privacy",
    "encryption-required": "this node takes only encrypted jobs and models",
    "purpose": "this node does not accept the job's purpose",
    "recipient": "this node does not accept the job's recipient role",
    "destination": "the job's destination is not the coordinator's jurisdiction known to this node",
    "job-limits": "the job is outside this node's per-job limits",
    "job-changed": "the job differs from the one this node admitted",
    "replay": "this round was already taken or is outside the admitted job",
    "aggregate-rejected": "the aggregate failed this node's checks",
    "evaluation-limit": "this job's evaluations at this node are used up",
    "malformed": "the instruction was malformed",
    "node-config": "the node is not configured for this",
    "untrusted-app": "this app is not on the node's allow-list",
    "egress": "the reply was blocked at the node's egress check",
    "not-approved": "this node's owner has not approved this job",
    "owner-denied": "this node's owner denied this job",
    "key-ceremony": "the job's key ceremony failed this node's checks",
    "masking": "the masked round failed this node's checks",
}


def reason_for(code: str) -> str:
    """The fixed phrase sent for `code`; an unknown code is sent as the node-config phrase."""
    return REASONS.get(code, REASONS["node-config"])
