"""A CKKS-ring job's extra exchanges: the key ceremony, and the SecAgg+ steps around each sum.

The coordinator relays and counts; it never holds a key that decrypts or a share it is not
owed (`node_agent.job_keys`, `node_agent.masking` hold the rules). Per job: advertise keys,
one node deals, every node installs, and at the end every node destroys its key. Per sum
(each training round, and the held-out evaluation): advertise round keys, share seeds, send
the instruction with each node's own sealed shares, sum the masked updates as they come, then
ask the survivors to sign who the sum counts and to reveal the shares that unmask it. The
first two steps of the next sum ride on this one's instruction and consent (`MaskStep`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Callable

import tenseal as ts

from common import ring_ckks, secagg
from common.he import EncryptedVector
from common.wire import JobSpec, KeyInstruction, KeyReply, MaskInstruction, MaskReply, MaskStep, RoundFates, UpdatePayload
from coordinator.paths import CoordinatorPaths
from coordinator.strategy import Aggregate
from coordinator.unmasking import MaskedRound, UnmaskError


@dataclass
class RingSetup:
    """What the ceremony leaves the coordinator: a keyless context and who holds the key."""

    public_context: ts.Context
    holders: list[str]

    def plan(self, job: JobSpec, clip: float) -> secagg.RingPlan:
        """The ring of the job's vectors bounded by `clip` (the job's for updates, the metric clip)."""
        return secagg.plan_ring(len(self.holders), clip)


@dataclass
class MaskedSum:
    """One masked sum's outcome: the unmasked aggregate (None if the round failed), its signed
    survivor list, and who was left out and why."""

    aggregate: Aggregate
    fates: RoundFates | None
    refused: dict[str, str] = field(default_factory=dict)
    exchanges: list = field(default_factory=list)
    next: MaskedRound | None = None  # the next mask round, as far as this sum's exchanges took it


def setup_path(paths: CoordinatorPaths, job_id: str):
    return paths.root / "jobs" / job_id / "ring.json"


def load_setup(paths: CoordinatorPaths, job: JobSpec) -> RingSetup | None:
    """The ceremony's outcome kept from an earlier run of the same job (a resumed job does not redeal)."""
    path = setup_path(paths, job.job_id)
    if not path.exists():
        return None
    saved = json.loads(path.read_text())
    return RingSetup(public_context=ts.context_from(bytes.fromhex(saved["public_context"])), holders=saved["holders"])


def key_ceremony(exchange: Callable, node_ids: list[int], job: JobSpec, paths: CoordinatorPaths, head: Callable,
                 node_of: dict[str, int], record: Callable) -> RingSetup:
    """Advertise, deal (the first advertising branch deals), install; RuntimeError when fewer
    than two branches end up holding the key."""
    adverts = exchange({n: KeyInstruction(job=job, stage="advertise", coordinator_head=head()) for n in node_ids},
                       "query.keys", 0, KeyReply)
    listed = sorted((r.advert for r in adverts.replies if r.status == "ok" and r.advert and r.advert.branch_id == r.branch_id),
                    key=lambda a: a.branch_id)
    if len(listed) < 2:
        raise RuntimeError(f"the key ceremony needs two branches; {len(listed)} advertised ({adverts.refused})")
    dealer = listed[0].branch_id
    dealt = exchange({node_of[dealer]: KeyInstruction(job=job, stage="deal", adverts=listed, coordinator_head=head())},
                     "query.keys", 0, KeyReply)
    deal = next((r.deal for r in dealt.replies if r.status == "ok" and r.deal and r.deal.dealer == dealer), None)
    if deal is None:
        raise RuntimeError(f"{dealer} did not deal the job's key ({dealt.refused or [r.code for r in dealt.replies]})")
    public = ts.context_from(bytes.fromhex(deal.public_context))
    if public.has_secret_key():
        raise RuntimeError(f"{dealer} dealt a public context that holds a secret key; refusing to keep it")
    others = [a.branch_id for a in listed if a.branch_id != dealer and a.branch_id in deal.holders]
    installed = exchange({node_of[b]: KeyInstruction(job=job, stage="install", deal=deal.for_branch(b), coordinator_head=head())
                          for b in others}, "query.keys", 0, KeyReply)
    done = sorted([dealer] + [r.branch_id for r in installed.replies if r.status == "ok"])
    setup = RingSetup(public_context=public, holders=sorted(deal.holders))  # the count every holder plans with
    path = setup_path(paths, job.job_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"public_context": deal.public_context, "holders": setup.holders}))
    record({"key_ceremony": "done" if done == setup.holders else "incomplete", "dealer": dealer, "holders": setup.holders,
            "installed": done, "scale_bits": deal.scale_bits})
    return setup


def masked_sum(exchange: Callable, job: JobSpec, mask_round: int, setup: RingSetup, node_of: dict[str, int],
               node_ids: list[int], instruction_for: Callable, message_type: str, schema, payload_of: Callable,
               length: int, clip: float, ring_sum, head: Callable, *, prepared: MaskedRound | None = None,
               ahead: int | None = None) -> MaskedSum:
    """One sum under SecAgg+: `instruction_for(shares)` is what each node is sent (with its own
    sealed shares), `payload_of(reply)` the masked vector its reply carries, `length` the
    values per vector, `clip` their bound, `ring_sum` the strategy's streaming guarded sum.

    Pipelined: `prepared` is this round as the previous sum's exchanges left it (its adverts,
    and its shares if that sum got as far as consent; ignored if it is another round's); what
    is missing is asked for first, of
    every connected node (one without the job's key refuses). With `ahead` (the next mask
    round), this sum's instruction also asks for that round's adverts, and its consent step
    for that round's shares, so a round costs two exchanges (update, consent with the
    survivors' self-mask shares), and a third (unmask) only when a holder shared and sent nothing."""
    coordinator = prepared if prepared is not None and prepared.round == mask_round else MaskedRound(job, mask_round)

    def ask(stage: str, to: list[str], **fields):
        return exchange({node_of[b]: MaskInstruction(job=job, round=mask_round, stage=stage, coordinator_head=head(), **fields)
                         for b in to}, "query.mask", mask_round, MaskReply)

    refused: dict[str, str] = {}  # who sat the round out, and why
    if not coordinator.adverts:
        advertised = exchange({n: MaskInstruction(job=job, round=mask_round, stage="advertise", coordinator_head=head())
                               for n in node_ids}, "query.mask", mask_round, MaskReply)
        coordinator.note_declined(advertised.replies)
        coordinator.take_adverts([r for r in advertised.replies if r.branch_id in setup.holders])
        refused |= advertised.refused
    if not coordinator.shared:
        sharing = ask("share", sorted(coordinator.adverts), adverts=coordinator.listed())
        coordinator.take_shares(sharing.replies)
        refused |= sharing.refused
    refused |= coordinator.declined
    shared = sorted(coordinator.shared)
    upcoming = MaskedRound(job, ahead) if ahead else None
    step = MaskStep(round=ahead, stage="advertise") if ahead else None
    sitting = {node_of[b] for b in shared if b in node_of}
    others = {n: MaskInstruction(job=job, round=ahead, stage="advertise", coordinator_head=head())
              for n in node_ids if n not in sitting} if ahead else None
    sent = exchange({node_of[b]: instruction_for(coordinator.shares_for(b)).model_copy(update={"ahead": step}) for b in shared},
                    message_type, mask_round, schema, queries=others)
    if upcoming:
        upcoming.note_declined([r.ahead for r in sent.replies if r.ahead] + sent.asides)
        upcoming.take_adverts([r.ahead for r in sent.replies if r.ahead and r.ahead.branch_id in setup.holders]
                              + [r for r in sent.asides if r.branch_id in setup.holders])
    refused |= sent.refused | {r.branch_id: r.code or "refused" for r in sent.replies if r.status != "ok"}
    for reply in sent.replies:
        payload = payload_of(reply)
        if reply.status == "ok" and payload is not None and reply.branch_id in shared:
            ring_sum.add(reply.branch_id, payload)
    masked = ring_sum.result()
    refused |= {b: f"update rejected: {why}" for b, why in masked.rejected.items()}
    survivors = sorted(masked.contributors)
    dropped = sorted(set(shared) - set(survivors))
    failed = MaskedSum(aggregate=Aggregate(payload=None, rejected=masked.rejected), fates=None, refused=refused,
                       exchanges=[sent], next=upcoming)
    if masked.payload is None:
        return failed
    # the survivors, and any node that shared but sent nothing and is still there (it refused
    # the round): it holds shares too, and it is given the ones sealed to it. Whoever
    # advertised the next round is asked for its shares in the same exchange.
    share_ahead = MaskStep(round=ahead, stage="share", adverts=upcoming.listed()) if upcoming and upcoming.adverts else None
    consenting = survivors + dropped
    consented = exchange({node_of[b]: MaskInstruction(
        job=job, round=mask_round, stage="consent", survivors=survivors, dropped=dropped, coordinator_head=head(),
        shares=coordinator.shares_for(b) if b in dropped else [], ahead=share_ahead) for b in consenting},
        "query.mask", mask_round, MaskReply,
        queries={node_of[b]: MaskInstruction(job=job, round=ahead, stage="share", adverts=share_ahead.adverts,
                                             coordinator_head=head())
                 for b in upcoming.adverts if b not in consenting and b in node_of} if share_ahead else None)
    if share_ahead:
        upcoming.take_shares([r.ahead for r in consented.replies if r.ahead] + consented.asides)
    consents = {r.branch_id: r.consent for r in consented.replies if r.status == "ok" and r.consent}
    refused |= consented.refused | {r.branch_id: f"did not sign the survivor list ({r.code})" for r in consented.replies
                                    if r.status != "ok" and r.branch_id in survivors}
    # the survivors' self-mask shares came with the signatures; a dropped node's mask key takes
    # one more step, for which every holder first checks the threshold of signatures
    revealed = {r.branch_id: r.revealed for r in consented.replies if r.status == "ok" and r.consent}
    if dropped:
        unmasked = ask("unmask", sorted(consents), survivors=survivors, dropped=dropped, consents=consents)
        refused |= unmasked.refused | {r.branch_id: f"did not reveal its shares ({r.code})" for r in unmasked.replies
                                       if r.status != "ok"}
        for r in unmasked.replies:
            if r.status == "ok":
                revealed[r.branch_id] = revealed.get(r.branch_id, {}) | r.revealed
    plan = setup.plan(job, clip)
    try:
        fix = coordinator.correction(length, plan, set(survivors), revealed)
    except UnmaskError as exc:
        failed.refused = refused | {"unmasking": str(exc)}
        return failed
    summed = ring_ckks.add_plain(setup.public_context, EncryptedVector(scheme="CKKS-ring", length=masked.payload.length,
                                                                      chunks=masked.payload.chunks), secagg.to_digits(fix, plan))
    aggregate = Aggregate(payload=UpdatePayload(scheme="CKKS-ring", length=summed.length, chunks=summed.chunks),
                          contributors=masked.contributors, rejected=masked.rejected)
    fates = RoundFates(mask_round=mask_round, survivors=survivors, dropped=dropped, consents=consents)
    return MaskedSum(aggregate=aggregate, fates=fates, refused=refused, exchanges=[sent], next=upcoming)


def close(exchange: Callable, job: JobSpec, node_of: dict[str, int], holders: list[str], head: Callable) -> None:
    """Tell every holder the job is over: each destroys its key (nodes also expire keys themselves)."""
    exchange({node_of[b]: KeyInstruction(job=job, stage="close", coordinator_head=head()) for b in holders if b in node_of},
             "query.keys", 0, KeyReply)
