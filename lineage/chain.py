"""The hash chain, as pure functions: what an event's hash covers, and checking a chain.

Each actor's events form one chain: event k stores the hash of event k-1 (`prev_hash`) and
its own hash over everything it says, including its position `seq`, its actor and its
signer's key id; the actor signs that hash with Ed25519. Editing, deleting, reordering or
inserting an event therefore breaks a hash, a link or a signature, and the first event where
that shows is named. Deleting the newest events (truncation) leaves a shorter valid chain:
`anchors` — heads the actor published elsewhere, e.g. in any coordinator event that recorded
the heads of the node replies it answers (`lineage.anchors`) — catch that.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from typing import Literal

from pydantic import BaseModel

from lineage.models import GENESIS, LineageEvent, format_time
from lineage.signing import Ed25519PublicKey, verify_signature

HASHED = ("event_id", "recorded_at", "kind", "actor", "job_id", "round", "purpose", "dataset", "fields",
          "row_count", "content_hash", "policy_hash", "digest", "model_version", "details", "seq", "prev_hash", "signer")


def canonical_body(event: LineageEvent) -> bytes:
    """The exact bytes an event's hash covers: its content and place in the chain."""
    data = event.model_dump(mode="json", include=set(HASHED))
    data["recorded_at"] = format_time(event.recorded_at)
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()


def compute_hash(event: LineageEvent) -> str:
    return hashlib.sha256(canonical_body(event)).hexdigest()


# The last three are found by cross-checking chains (`lineage.anchors`): a head recorded by the
# other side that the chain no longer has (rewritten), whose key is not the one verified with
# (resigned), or a record of a head that cannot be read (malformed).
Problem = Literal["edited", "deleted", "reordered", "inserted", "bad_signature", "unknown_signer", "truncated",
                  "rewritten", "resigned", "malformed", "forged"]


class ChainFault(BaseModel):
    """The first place a chain stops being trustworthy, and why, in one line."""

    actor: str
    seq: int | None
    event_id: str | None
    problem: Problem
    message: str


class ChainReport(BaseModel):
    actor: str
    events: int
    head_seq: int
    head_hash: str
    fault: ChainFault | None = None
    key_source: Literal["given", "store"] = "given"  # "store": checked against the key the store itself lists

    @property
    def ok(self) -> bool:
        return self.fault is None


def verify_chain(
    actor: str, events: Iterable[LineageEvent], public_key: Ed25519PublicKey, key_id: str,
    *, anchors: Iterable[tuple[int, str]] = (), lookup_by_hash=None,
) -> ChainReport:
    """Check one actor's chain, events in `seq` order. Stops at the first fault.

    `public_key`/`key_id` come from outside the store (the actor's published key), so a store
    whose attacker swapped in their own key still fails. `lookup_by_hash(h)` (optional) finds
    the seq of the event whose hash is h, to tell a moved event from an edited one. `anchors`
    are (seq, hash) heads published elsewhere; several may name one seq, and all must match.
    """
    expected_seq, prev, count = 1, GENESIS, 0
    published: dict[int, set[str]] = {}
    for anchor_seq, anchor_hash in anchors:
        published.setdefault(anchor_seq, set()).add(anchor_hash)

    def fault(event: LineageEvent | None, problem: Problem, message: str) -> ChainReport:
        return ChainReport(
            actor=actor, events=count, head_seq=expected_seq - 1, head_hash=prev,
            fault=ChainFault(actor=actor, seq=event.seq if event else None, event_id=event.event_id if event else None,
                             problem=problem, message=message),
        )

    for event in events:
        name = f"{actor} event {event.seq} ({event.kind.value}, {event.event_id})"
        if event.actor != actor:
            return fault(event, "inserted", f"{name}: an event of actor {event.actor!r} in {actor}'s chain (moved or inserted)")
        if event.seq is None or event.seq > expected_seq:
            missing = f"{expected_seq}" if event.seq == expected_seq + 1 else f"{expected_seq}..{(event.seq or 0) - 1}"
            return fault(event, "deleted", f"{name}: event(s) {missing} before it are missing (deleted)")
        if event.seq < expected_seq:
            return fault(event, "inserted", f"{name}: a second event at position {event.seq} (inserted)")
        recomputed = compute_hash(event)
        if recomputed != event.event_hash or event.prev_hash != prev:
            moved_from = lookup_by_hash(event.prev_hash) if lookup_by_hash and event.prev_hash != prev else None
            if moved_from is not None and moved_from + 1 != event.seq:
                return fault(event, "reordered", f"{name}: out of order, it links to the event now at position "
                                                 f"{moved_from} (reordered)")
            if recomputed != event.event_hash:
                if event.signer == key_id and event.event_hash and verify_signature(public_key, event.signature or "", bytes.fromhex(event.event_hash)):
                    return fault(event, "edited", f"{name}: content no longer matches its signed hash (edited)")
                return fault(event, "edited", f"{name}: content does not match its hash (edited)")
            return fault(event, "inserted", f"{name}: does not link to the event before it (an event was inserted, "
                                            "deleted or moved before it)")
        if event.signer != key_id:
            return fault(event, "unknown_signer", f"{name}: signed by key {event.signer}, not {actor}'s key {key_id} "
                                                  "(inserted or re-signed by someone else)")
        if not verify_signature(public_key, event.signature or "", bytes.fromhex(event.event_hash)):
            return fault(event, "bad_signature", f"{name}: signature does not verify (rewritten without {actor}'s key)")
        if event.seq in published and published[event.seq] != {event.event_hash}:
            return fault(event, "edited", f"{name}: differs from the head {actor} published at this position")
        prev, expected_seq, count = event.event_hash, expected_seq + 1, count + 1
    beyond = [s for s in published if s >= expected_seq]
    if beyond:
        later = f" (and later ones, up to event {max(beyond)})" if max(beyond) != min(beyond) else ""
        return fault(None, "truncated", f"{actor}: chain ends at event {expected_seq - 1} but {actor} published a head "
                                        f"at event {min(beyond)}{later} (newest events deleted)")
    return ChainReport(actor=actor, events=count, head_seq=expected_seq - 1, head_hash=prev)
