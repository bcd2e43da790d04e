"""The coordinator's side of a masked round (SecAgg+): relay, count, and unmask the sum.

It keeps who advertised, routes each sealed share to its recipient (it cannot open them),
and after the masked updates are in, rebuilds from the revealed shares the survivors' self
masks and the dropped nodes' mask keys, and computes the correction that makes the masks
cancel. Invariant: it never holds more than t - 1 shares of any seed it is not owed: the
nodes reveal one kind per neighbour (`node_agent.masking`), and this side only combines.
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np

from common import secagg
from common.wire import JobSpec, MaskAdvert, MaskReply, SealedShare


class UnmaskError(ValueError):
    """Too few shares to rebuild a seed: the round's sum cannot be unmasked."""


class MaskedRound:
    def __init__(self, job: JobSpec, rnd: int) -> None:
        self.job, self.round = job, rnd
        self.adverts: dict[str, MaskAdvert] = {}
        self.inbox: dict[str, list[SealedShare]] = defaultdict(list)  # recipient -> sealed shares for it
        self.shared: set[str] = set()
        self.declined: dict[str, str] = {}  # branch -> why it took no part in the round's opening steps

    def take_adverts(self, replies: list[MaskReply]) -> list[MaskAdvert]:
        """The adverts of this round from ok replies, one per branch, as signed."""
        for r in replies:
            a = r.advert
            if r.status == "ok" and a is not None and a.branch_id == r.branch_id and a.job_id == self.job.job_id \
                    and a.round == self.round:
                self.adverts.setdefault(a.branch_id, a)
        return self.listed()

    def listed(self) -> list[MaskAdvert]:
        """The round's adverts as every participant is shown them, by branch."""
        return [self.adverts[b] for b in sorted(self.adverts)]

    def graph(self) -> dict[str, frozenset[str]]:
        return secagg.advert_graph({b: a.signed_body() for b, a in self.adverts.items()}, self.job.he.masking.degree)

    def take_shares(self, replies: list[MaskReply]) -> set[str]:
        """Route the sealed shares; the branches that shared with all their neighbours."""
        graph = self.graph()
        self.note_declined(replies)
        for r in replies:
            if r.status != "ok" or r.branch_id not in self.adverts:
                continue
            mine = {s.recipient: s for s in r.shares if s.sender == r.branch_id and s.recipient in graph[r.branch_id]}
            if set(mine) == set(graph[r.branch_id]):
                for recipient, share in mine.items():
                    self.inbox[recipient].append(share)
                self.shared.add(r.branch_id)
        return set(self.shared)

    def note_declined(self, replies: list[MaskReply]) -> None:
        """Remember who refused a step of this round's opening, and its refusal code."""
        self.declined |= {r.branch_id: f"masking: {r.code or 'refused'}" for r in replies if r.status != "ok"}

    def shares_for(self, branch: str) -> list[SealedShare]:
        return [s for s in self.inbox.get(branch, []) if s.sender in self.shared]

    def correction(self, length: int, plan: secagg.RingPlan, survivors: set[str], revealed: dict[str, dict[str, str]]) -> np.ndarray:
        """What to add to the survivors' summed masked updates: minus their self masks, minus the
        masks they share with nodes that shared seeds but sent nothing. `revealed` is holder ->
        owner -> revealed share, from the survivors' unmask replies."""
        graph = self.graph()
        dropped = self.shared - survivors
        by_owner: dict[str, list[bytes]] = defaultdict(list)
        for shares in revealed.values():
            for owner, share in shares.items():
                by_owner[owner].append(bytes.fromhex(share))
        seeds = {}
        for owner in self.shared:
            neighbours = len(graph[owner])
            try:
                seeds[owner] = secagg.combine(by_owner[owner], self.job.he.masking.threshold_for(neighbours))
            except ValueError as exc:
                raise UnmaskError(f"the seed of {owner} cannot be rebuilt: {exc}") from None
        context = secagg.mask_context(self.job.job_id, self.round)
        shared_graph = {node: frozenset(p for p in peers if p in self.shared) for node, peers in graph.items()}
        return secagg.correction(length, plan, context, self_seeds={o: seeds[o] for o in survivors},
                                 dropped_seeds={o: seeds[o] for o in dropped},
                                 mask_publics={b: bytes.fromhex(a.mask_public) for b, a in self.adverts.items()},
                                 graph=shared_graph)
