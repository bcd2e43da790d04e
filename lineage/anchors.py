"""Anchors between chains, as pure functions: what one side recorded of the other's chain head.

Neither side trusts the other, so each keeps the other's head:

- the coordinator records, in any of its events (aggregation, evaluation, release...), the
  chain head every node sent with its reply: `details["node_heads"] = {branch: [seq, hash]}`.
  Those are anchors for the node chains (`verify_chain(anchors=...)`): a node cannot later
  delete or rewrite the events it had when it replied.
- a node records, in the event of the reply it sent, the coordinator's head as the
  instruction carried it: `details["coordinator_head"] = {"seq", "event_hash", "key_id"}`.
  `check_coordinator_heads` holds the coordinator's chain to it: the coordinator cannot
  rewrite, truncate or re-sign (with a new key) its history without the nodes' lineage
  showing it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass

from lineage.signing import verify_signature
from lineage.chain import ChainFault
from lineage.models import GENESIS, LineageEvent

COORDINATOR = "coordinator"  # the coordinator's actor name in lineage (`coordinator.rounds.ACTOR`)

_HASH = re.compile(r"^[0-9a-f]{64}$")
_KEY_ID = re.compile(r"^[0-9a-f]{32}$")


def _name(event: LineageEvent) -> str:
    return f"{event.actor} event {event.seq} ({event.kind.value}, {event.event_id})"


def _seq(value) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


def published_node_heads(events: Iterable[LineageEvent]) -> tuple[dict[str, list[tuple[int, str]]], list[ChainFault]]:
    """The node heads recorded in the coordinator's events, whatever their kind: anchors per
    branch; and a fault for each record that is not `{branch: [seq, 64-hex hash]}`."""
    anchors: dict[str, list[tuple[int, str]]] = {}
    faults: list[ChainFault] = []
    for event in events:
        heads = event.details.get("node_heads") if isinstance(event.details, dict) else None
        if heads is None:
            continue
        if not isinstance(heads, dict):
            faults.append(ChainFault(actor=event.actor, seq=event.seq, event_id=event.event_id, problem="malformed",
                                     message=f"{_name(event)}: node_heads is not a map of branch to [seq, hash]"))
            continue
        for branch, head in heads.items():
            if (isinstance(head, (list, tuple)) and len(head) == 2 and _seq(head[0]) is not None
                    and isinstance(head[1], str) and _HASH.match(head[1])):
                anchors.setdefault(str(branch), []).append((head[0], head[1]))
            else:
                faults.append(ChainFault(actor=event.actor, seq=event.seq, event_id=event.event_id, problem="malformed",
                                         message=f"{_name(event)}: node_heads[{branch!r}] is not [seq, 64-hex hash]"))
    return anchors, faults


@dataclass(frozen=True)
class CoordinatorHeadClaim:
    """A node event and the coordinator head it recorded (None: the record is malformed)."""

    event: LineageEvent
    seq: int | None
    event_hash: str | None
    key_id: str | None
    signature: str | None = None

    @property
    def malformed(self) -> bool:
        return self.seq is None


def coordinator_head_claims(events: Iterable[LineageEvent]) -> Iterator[CoordinatorHeadClaim]:
    """The events that recorded a coordinator head (`details["coordinator_head"]` not None)."""
    for event in events:
        head = event.details.get("coordinator_head") if isinstance(event.details, dict) else None
        if head is None:
            continue
        if (isinstance(head, dict) and _seq(head.get("seq")) is not None and isinstance(head.get("event_hash"), str)
                and _HASH.match(head["event_hash"]) and isinstance(head.get("key_id"), str) and _KEY_ID.match(head["key_id"])):
            signature = head.get("signature") if isinstance(head.get("signature"), str) else None
            yield CoordinatorHeadClaim(event, head["seq"], head["event_hash"], head["key_id"], signature)
        else:
            yield CoordinatorHeadClaim(event, None, None, None)


def head_message(seq: int, event_hash: str, key_id: str) -> bytes:
    """What the coordinator signs when it hands its chain head to a node with an instruction:
    with the signature recorded beside it, a node cannot later claim a head it was never sent."""
    return f"sovereign/coordinator-head/1:{seq}:{event_hash}:{key_id}".encode()


def check_coordinator_heads(
    claims: Iterable[CoordinatorHeadClaim], held: Mapping[int, str], last_seq: int, key_id: str | None,
    *, coordinator: str = COORDINATOR, public_key=None,
) -> list[ChainFault]:
    """Hold the coordinator's chain to the heads the nodes recorded. One fault per node event
    that disagrees, naming it (its actor, seq and id) and what does not match.

    `held` maps seq to the event hash the coordinator's chain holds there (at least every seq
    claimed), `last_seq` is where that chain ends (0: empty or absent), `key_id` is the id of
    the coordinator public key the auditor verifies with (None: no key at all).
    A claim at seq 0 says the chain was still empty: its hash must be GENESIS. With the
    coordinator's `public_key`, each claim must also carry the coordinator's signature over the
    head (`head_message`), so a node cannot frame the coordinator with a head it never sent.
    """
    faults = []
    for claim in claims:
        found = _head_mismatch(claim, held, last_seq, key_id, coordinator)
        if found is None and public_key is not None and not (
                claim.signature and verify_signature(public_key, claim.signature, head_message(claim.seq, claim.event_hash, claim.key_id))):
            found = ("forged", f"recorded a coordinator head (event {claim.seq}) that carries no valid signature of "
                               f"{coordinator}'s key: the node cannot show {coordinator} sent it")
        if found is not None:
            problem, message = found
            faults.append(ChainFault(actor=claim.event.actor, seq=claim.event.seq, event_id=claim.event.event_id,
                                     problem=problem, message=f"{_name(claim.event)}: {message}"))
    return faults


def _head_mismatch(claim: CoordinatorHeadClaim, held: Mapping[int, str], last_seq: int, key_id: str | None,
                   coordinator: str) -> tuple[str, str] | None:
    if claim.malformed:
        return "malformed", "its coordinator_head is not {seq, event_hash (64 hex), key_id (32 hex)}"
    where = f"the coordinator's head it received (event {claim.seq}, {claim.event_hash[:16]}…, key {claim.key_id})"
    if key_id is None:
        return "resigned", f"recorded {where}, but there is no {coordinator} public key to check it against"
    if claim.key_id != key_id:
        return "resigned", (f"recorded {where}, but the {coordinator} key verified against is {key_id} "
                            f"({coordinator}'s chain re-signed with another key)")
    if claim.seq == 0:
        if claim.event_hash != GENESIS:
            return "rewritten", f"recorded {where}: an empty chain, whose head must be the genesis hash"
        return None
    if claim.seq > last_seq:
        return "truncated", (f"recorded {where}, but {coordinator}'s chain ends at event {last_seq} "
                             "(its newest events deleted: truncated)")
    if claim.seq not in held:
        return "truncated", f"recorded {where}, but {coordinator}'s chain has no event {claim.seq} (deleted)"
    if held[claim.seq] != claim.event_hash:
        return "rewritten", (f"recorded {where}, but {coordinator}'s chain holds {held[claim.seq][:16]}… there "
                             f"({coordinator}'s chain rewritten)")
    return None
