"""The egress boundary: the last check on everything a node sends, whatever happened upstream.

The policy is applied when rows are read; this is the second line, so that a bug between the
read and the reply cannot leak. Only reply types the protocol knows may leave. Every string in
them must have the shape its field allows (months are `YYYY-MM`, quarantine counts are keyed
by the contract's reasons, digests are hex, the branch id is this node's); every number must
be finite. The one free text, a refusal's reason, must be one short line with nothing shaped
like personal data (runs of 7 or more digits such as phone or ID numbers, e-mail addresses).
"""

from __future__ import annotations

import math
import re

import numpy as np

from common.wire import EvaluateReply, NodeReply, TrainReply
from node_agent.contract import QUARANTINE_REASONS

MAX_REASON = 400
_MONTH = re.compile(r"^\d{4}-(0[1-9]|1[0-2])$")
_DIGEST = re.compile(r"^[0-9a-f]{64}$")
_PII_SHAPES = (
    re.compile(r"(?<![\w.-])\+?\(?\d(?:[\s().-]*\d){6,}(?!\w)"),  # phone numbers, national IDs, card numbers
    re.compile(r"[\w.+-]+@[\w-]+\.[\w.-]+"),  # e-mail addresses
)
WITHHELD_REASON = "the reason was withheld at the node's egress check; the node's lineage has it"


class EgressBlocked(Exception):
    """A reply that must not leave the node; the message names the field, never its value."""


def check_reply(reply: NodeReply, *, branch_id: str) -> None:
    """Raise `EgressBlocked` naming the first field whose content may not leave."""
    if type(reply) not in (TrainReply, EvaluateReply):
        raise EgressBlocked(f"{type(reply).__name__} is not a reply the protocol sends")
    if reply.branch_id != branch_id:
        raise EgressBlocked("field 'branch_id' is not this node's id")
    if reply.reason is not None and not reason_may_leave(reply.reason):
        raise EgressBlocked("field 'reason' is not one short line free of personal-data shapes")
    if isinstance(reply, TrainReply):
        for name in ("epsilon", "planned_epsilon", "customer_epsilon", "customer_delta"):
            _finite(name, [getattr(reply, name)])
        for key, count in reply.quarantined.items():
            if key not in QUARANTINE_REASONS or not isinstance(count, int) or count < 0:
                raise EgressBlocked("field 'quarantined' holds a key that is not a quarantine reason")
        if reply.update is not None and reply.update.scheme == "plain" and not np.isfinite(reply.update.plain_values()).all():
            raise EgressBlocked("field 'update' holds a value that is not a finite number")
    else:
        _finite("mase", [reply.mase])
        _finite("smape", [reply.smape])
        _finite("actual", reply.actual)
        _finite("forecast", reply.forecast)
        for i, month in enumerate(reply.months):
            if not _MONTH.match(month):
                raise EgressBlocked(f"field 'months[{i}]' is not a month label")
        if reply.model_digest is not None and not _DIGEST.match(reply.model_digest):
            raise EgressBlocked("field 'model_digest' is not a SHA-256 digest")


def reason_may_leave(reason: str) -> bool:
    return len(reason) <= MAX_REASON and "\n" not in reason and not any(p.search(reason) for p in _PII_SHAPES)


def _finite(name: str, values: list) -> None:
    for v in values:
        if v is not None and not (isinstance(v, (int, float)) and math.isfinite(v)):
            raise EgressBlocked(f"field '{name}' holds a value that is not a finite number")
