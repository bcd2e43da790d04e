"""The egress boundary: the last check on everything a node sends, whatever happened upstream.

The policy is applied when rows are read; this is the second line, so that a bug between the
read and the reply cannot leak. Only reply types the protocol knows may leave. Every field must
have the shape it allows (quarantine counts keyed by the contract's reasons, the branch id
this node's, key-ceremony and masking replies only this node's own keys and shares); every
number must be finite. A
refusal leaves only as a known code with its fixed phrase (`common.refusals`), so no free
text crosses: details stay in lineage. A held-out evaluation leaves only as a metric vector
of the agreed length, encrypted whenever the job is.
"""

from __future__ import annotations

import math

import numpy as np

from common import evaluation, secagg
from common.refusals import REASONS
from common.wire import EvaluateReply, KeyReply, MaskReply, NodeReply, ReleaseReply, TrainReply
from node_agent.contract import QUARANTINE_REASONS


class EgressBlocked(Exception):
    """A reply that must not leave the node; the message names the field, never its value."""


def check_reply(reply: NodeReply, *, branch_id: str, branch_scores_allowed: bool = False) -> None:
    """Raise `EgressBlocked` naming the first field whose content may not leave."""
    if type(reply) not in (TrainReply, EvaluateReply, ReleaseReply, KeyReply, MaskReply):
        raise EgressBlocked(f"{type(reply).__name__} is not a reply the protocol sends")
    if reply.branch_id != branch_id:
        raise EgressBlocked("field 'branch_id' is not this node's id")
    ahead = getattr(reply, "ahead", None)
    if ahead is not None:  # the next mask round's answer: one level deep, checked as a reply of its own
        if not isinstance(ahead, MaskReply) or ahead.ahead is not None:
            raise EgressBlocked("field 'ahead' is not one mask reply")
        check_reply(ahead, branch_id=branch_id)
    if reply.status == "refused" and (reply.code not in REASONS or reply.reason != REASONS[reply.code]):
        raise EgressBlocked("fields 'code' and 'reason' are not a known refusal code and its phrase")
    if reply.status == "ok" and (reply.code is not None or reply.reason is not None):
        raise EgressBlocked("field 'reason' is set on a reply that is not a refusal")
    if isinstance(reply, TrainReply):
        for key, count in reply.quarantined.items():
            if key not in QUARANTINE_REASONS or not isinstance(count, int) or count < 0:
                raise EgressBlocked("field 'quarantined' holds a key that is not a quarantine reason")
        if reply.update is not None and reply.update.scheme == "plain" and not np.isfinite(reply.update.plain_values()).all():
            raise EgressBlocked("field 'update' holds a value that is not a finite number")
    elif isinstance(reply, EvaluateReply):
        if reply.branch_scores is not None:
            if not branch_scores_allowed:
                raise EgressBlocked("field 'branch_scores' is set but the branch policy does not release its own metrics")
            if set(reply.branch_scores) - set(evaluation.ARMS):
                raise EgressBlocked("field 'branch_scores' names a forecast the protocol does not know")
            for scores in reply.branch_scores.values():
                if set(scores) - set(evaluation.METRICS):
                    raise EgressBlocked("field 'branch_scores' holds a figure that is not a metric")
                _finite("branch_scores", list(scores.values()))
        if reply.metrics is not None:
            digits = secagg.DIGIT_CHOICES if reply.metrics.scheme == "CKKS-ring" else (1,)  # masked: one digit column each
            if reply.metrics.length not in {evaluation.LENGTH * d for d in digits}:
                raise EgressBlocked("field 'metrics' is not a metric vector of the agreed length")
            if reply.metrics.scheme == "plain" and not np.isfinite(reply.metrics.plain_values()).all():
                raise EgressBlocked("field 'metrics' holds a value that is not a finite number")
    elif isinstance(reply, KeyReply):  # public keys and sealed secrets only, all this node's own
        if reply.advert is not None and reply.advert.branch_id != branch_id:
            raise EgressBlocked("field 'advert' is not this node's")
        if reply.deal is not None and reply.deal.dealer != branch_id:
            raise EgressBlocked("field 'deal' is not dealt by this node")
    elif isinstance(reply, MaskReply):  # public keys, shares sealed to neighbours, revealed shares
        if reply.advert is not None and reply.advert.branch_id != branch_id:
            raise EgressBlocked("field 'advert' is not this node's")
        if any(share.sender != branch_id for share in reply.shares):
            raise EgressBlocked("field 'shares' holds a share this node did not seal")
        if any(len(v) != 2 * (2 + secagg.SHARE_VALUE_BYTES) for v in reply.revealed.values()):
            raise EgressBlocked("field 'revealed' holds something that is not one revealed share")
    else:
        if reply.values and len(reply.values) != evaluation.LENGTH:
            raise EgressBlocked("field 'values' is not a released metric sum of the agreed length")
        _finite("values", reply.values)


def _finite(name: str, values: list) -> None:
    for v in values:
        if v is not None and not (isinstance(v, (int, float)) and math.isfinite(v)):
            raise EgressBlocked(f"field '{name}' holds a value that is not a finite number")
