"""This node's side of a masked round (SecAgg+), under rules it holds itself.

Five steps per round, each a call: `advertise` fresh round keys; `share` Shamir shares of the
two round seeds, sealed to each neighbour; `mask` the quantised update; `consent` to the
round's survivor and dropout lists, revealing with the signature the self-mask shares of the
neighbours that survived (`reveal_survivors`); `unmask`, only when a neighbour dropped:
reveal its mask-key share. The coordinator drives the steps and relays
every byte, and may send anything; what it cannot make this node do:

- share with branches whose advert is not signed by a key in this node's own `peers/`, or
  with fewer neighbours than the threshold, or under a threshold below this node's own
  minimum or below a majority of its neighbours (two minorities could then both rebuild);
- share twice in a round over different participants, or mask twice over different
  neighbours (two maskings of one update over different sets would difference it out);
- reveal, for one neighbour, both the share of its mask key (it dropped) and of its self
  mask (it survived): with both, the coordinator would read that neighbour's update;
- sign two different survivor lists in a round, or lists counting fewer branches than its own
  minimum, or reveal a mask-key share for lists that fewer than the threshold of listed
  branches signed (SecAgg's consistency check: to read a node, the coordinator needs t shares
  of its self mask, from nodes that each signed a list where it survived, and t of its mask
  key, for a list where it dropped signed by t; an honest node signs one list, so this holds
  against c colluders while c < 2t - n);
- keep round secrets past the round: they are deleted once this node has revealed, and at
  the job's close for any round it never revealed in (`forget`).

State lives in one owner-only file per round under the node's privacy directory, so a
restarted node (or a new ClientApp process) continues the round it was in.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Callable

import numpy as np
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat
from pydantic import BaseModel, Field

from common import envelope, secagg
from common.files import write_secret
from common.wire import JobSpec, MaskAdvert, SealedShare
from lineage import Signer
from lineage.signing import verify_signature


class MaskingRefusal(Exception):
    """A masking step this node will not take, with the reason (recorded in its lineage)."""


class RoundState(BaseModel):
    """What this node keeps of one round between steps (owner-only file)."""

    job_id: str
    round: int
    mask_seed: str
    self_seed: str
    share_key: str
    adverts: dict[str, MaskAdvert] = Field(default_factory=dict)  # the participants this node shared with
    sent: list[SealedShare] = Field(default_factory=list)
    neighbours: list[str] = Field(default_factory=list)  # those it masked with (neighbours that shared)
    masked: bool = False  # it masked (and so may have sent) an update this round
    bundles: dict[str, str] = Field(default_factory=dict)  # owner -> the share bundle it sent this node
    revealed: dict[str, str] = Field(default_factory=dict)  # owner -> "mask" or "self": one kind each, once
    consented: str | None = None  # digest of the survivor/dropped lists it signed
    revealed_for: str | None = None  # digest of the survivor/dropped lists it revealed for
    revealed_shares: dict[str, str] = Field(default_factory=dict)  # what it revealed: sent again if asked again

    def secrets(self) -> secagg.RoundSecrets:
        return secagg.RoundSecrets(mask_seed=bytes.fromhex(self.mask_seed), self_seed=bytes.fromhex(self.self_seed),
                                   share_key=X25519PrivateKey.from_private_bytes(bytes.fromhex(self.share_key)))


def fates_digest(survivors: list[str], dropped: list[str]) -> str:
    return hashlib.sha256(json.dumps([sorted(survivors), sorted(dropped)]).encode()).hexdigest()


def consent_message(job_id: str, rnd: int, digest: str) -> bytes:
    return f"sovereign/mask-fates/1:{job_id}:{rnd}:{digest}".encode()


def _job_prefix(job_id: str) -> str:
    """The start of the file name of every round state of a job (the round number follows)."""
    return f"{hashlib.sha256(job_id.encode()).hexdigest()[:32]}-r"


def _without_secrets(state: RoundState) -> RoundState:
    """The round's record with its seeds, share key and opened bundles gone."""
    return state.model_copy(update={"mask_seed": "", "self_seed": "", "share_key": "", "bundles": {}})


def _graph(job: JobSpec, adverts: dict[str, MaskAdvert]) -> dict[str, frozenset[str]]:
    return secagg.advert_graph({b: a.signed_body() for b, a in adverts.items()}, job.he.masking.degree)


class MaskingParticipant:
    """One branch's SecAgg+ participant. `peer_key(branch)` is the branch's lineage public key
    as this node holds it (None for a branch it does not know)."""

    def __init__(self, branch_id: str, state_dir: Path, signer: Signer, peer_key: Callable, *, min_threshold: int = 2,
                 min_survivors: int = 2) -> None:
        self.branch_id, self.state_dir, self.signer, self.peer_key = branch_id, Path(state_dir), signer, peer_key
        self.min_threshold, self.min_survivors = min_threshold, min_survivors

    # ----------------------------------------------------------------- steps
    def advertise(self, job: JobSpec, rnd: int) -> MaskAdvert:
        """Fresh round keys (once per round; asked again, the same advert)."""
        state = self._load(job.job_id, rnd)
        if state is not None and not state.mask_seed:
            raise MaskingRefusal("this round is over at this node: its secrets are deleted")
        if state is None:
            fresh = secagg.RoundSecrets.generate()
            raw = fresh.share_key.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())
            state = RoundState(job_id=job.job_id, round=rnd, mask_seed=fresh.mask_seed.hex(), self_seed=fresh.self_seed.hex(),
                               share_key=raw.hex())
            self._save(state)
        return self._advert(state)

    def share(self, job: JobSpec, rnd: int, adverts: list[MaskAdvert]) -> list[SealedShare]:
        """Shares of this round's seeds, sealed to each neighbour the adverts give."""
        state = self._require(job.job_id, rnd)
        listed = self._checked_adverts(job, rnd, adverts, state)
        if state.adverts:
            if state.adverts != listed:
                raise MaskingRefusal("this node already shared in this round over other participants")
            return state.sent
        graph = _graph(job, listed)
        neighbours = sorted(graph[self.branch_id])
        threshold = self._threshold(job, len(neighbours))
        secrets = state.secrets()
        sent = [SealedShare(sender=self.branch_id, recipient=peer, envelope=envelope.pair_seal(
                    secrets.share_key, bytes.fromhex(listed[peer].share_public), bundle,
                    secagg.share_context(job.job_id, rnd, self.branch_id, peer)).hex())
                for peer, bundle in secagg.split_seeds(secrets, threshold, neighbours).items()]
        self._save(state.model_copy(update={"adverts": listed, "sent": sent}))
        return sent

    def mask(self, job: JobSpec, rnd: int, values: np.ndarray, plan: secagg.RingPlan, shares: list[SealedShare]) -> np.ndarray:
        """The masked ring vector of `values`, over the neighbours whose sealed shares arrived
        (at least the threshold of them). Asked again over the same neighbours, the same vector."""
        state = self._require(job.job_id, rnd)
        bundles = self._open_bundles(job, rnd, state, shares)
        neighbours = sorted(bundles)
        if state.neighbours and state.neighbours != neighbours:
            raise MaskingRefusal("this node already masked its update in this round over other neighbours")
        try:
            ring = secagg.quantise(values, plan)
        except ValueError as exc:
            raise MaskingRefusal(str(exc)) from None
        publics = {peer: bytes.fromhex(state.adverts[peer].mask_public) for peer in neighbours}
        masked = secagg.masked_update(ring, self.branch_id, state.secrets(), publics, secagg.mask_context(job.job_id, rnd), plan)
        self._save(state.model_copy(update={"neighbours": neighbours, "bundles": bundles, "masked": True}))
        return masked

    def _open_bundles(self, job: JobSpec, rnd: int, state: RoundState, shares: list[SealedShare]) -> dict[str, str]:
        """The share bundles this node's neighbours sealed to it, opened (at least the threshold)."""
        if not state.adverts:
            raise MaskingRefusal("this node has not shared its seeds in this round")
        graph, secrets, bundles = _graph(job, state.adverts), state.secrets(), {}
        for share in shares:
            if share.recipient != self.branch_id or share.sender not in graph[self.branch_id]:
                continue  # another node's, or not from a neighbour: not this node's to open
            try:
                bundles[share.sender] = envelope.pair_open(
                    secrets.share_key, bytes.fromhex(state.adverts[share.sender].share_public), bytes.fromhex(share.envelope),
                    secagg.share_context(job.job_id, rnd, share.sender, self.branch_id)).hex()
            except envelope.EnvelopeError as exc:
                raise MaskingRefusal(f"the share from {share.sender} does not open: {exc}") from None
        threshold = self._threshold(job, len(graph[self.branch_id]))
        if len(bundles) < threshold:
            raise MaskingRefusal(f"shares arrived from {len(bundles)} neighbours; the round needs at least the "
                                 f"threshold of {threshold}")
        return bundles

    def consent(self, job: JobSpec, rnd: int, survivors: list[str], dropped: list[str],
                shares: list[SealedShare] = ()) -> str:
        """This node's signature over the round's survivor and dropout lists: given for one
        pair of lists per round only, so a coordinator that tells two nodes different stories
        cannot show either of them the other's lists signed by everyone they name. A node
        that shared but sent no update (it refused the round) may be listed as dropped, and
        then helps unmask with the `shares` sealed to it; one that sent an update may not."""
        state = self._require(job.job_id, rnd)
        if self.branch_id in dropped and not state.masked and not state.neighbours:
            bundles = self._open_bundles(job, rnd, state, shares)
            state = state.model_copy(update={"neighbours": sorted(bundles), "bundles": bundles})
            self._save(state)
        digest = self._fates_problem(state, survivors, dropped)
        if len(survivors) < self.min_survivors:
            raise MaskingRefusal(f"the sum would count {len(survivors)} branches; this node's minimum is {self.min_survivors}")
        if state.consented not in (None, digest):
            raise MaskingRefusal("this node already agreed to other survivor lists in this round")
        self._save(state.model_copy(update={"consented": digest}))
        return self.signer.sign(consent_message(job.job_id, rnd, digest))

    def consented(self, job: JobSpec, rnd: int, survivors: list[str], dropped: list[str]) -> bool:
        """Whether this node signed exactly these lists in that round."""
        state = self._load(job.job_id, rnd)
        return state is not None and state.consented == fates_digest(survivors, dropped)

    def reveal_survivors(self, job: JobSpec, rnd: int, survivors: list[str], dropped: list[str]) -> dict[str, str]:
        """With the signature (`consent`): the self-mask shares of this node's neighbours that
        survived, under the lists it just signed. A self mask alone unmasks nothing (the
        pairwise masks still hide the update), and every node revealing one has signed its one
        list, so a second story that dropped that neighbour still needs t signatures of its
        own, as in `unmask`: the same bound, c < 2t - n. Mask-key shares wait for `unmask`.
        When no neighbour dropped, this is the node's whole reveal and the round ends here."""
        digest = fates_digest(survivors, dropped)
        state = self._load(job.job_id, rnd)
        if state is not None and state.revealed_for is not None:
            return self._revealed_before(state, digest)
        state = self._require(job.job_id, rnd)
        if state.consented != digest:
            raise MaskingRefusal("this node did not agree to these survivor lists")
        kinds = self._kinds(state, survivors, dropped)
        revealed = {peer: secagg.reveal(bytes.fromhex(state.bundles[peer]), "self").hex()
                    for peer, kind in kinds.items() if kind == "self"}
        if len(revealed) == len(kinds):
            self._finish(state, kinds, digest, revealed)
        return revealed

    def unmask(self, job: JobSpec, rnd: int, survivors: list[str], dropped: list[str],
               consents: dict[str, str]) -> dict[str, str]:
        """For each neighbour this node masked with: the share of its self mask if it survived,
        of its mask key if it dropped; never both for one neighbour, for one pair of lists
        only, and only for lists at least the threshold of listed branches signed (`consent`)."""
        digest = fates_digest(survivors, dropped)
        state = self._load(job.job_id, rnd)
        if state is not None and state.revealed_for is not None:
            return self._revealed_before(state, digest)
        state = self._require(job.job_id, rnd)
        self._fates_problem(state, survivors, dropped)
        if state.consented != digest:
            raise MaskingRefusal("this node did not agree to these survivor lists")
        self.check_consents(job, rnd, survivors, dropped, consents, state)
        kinds = self._kinds(state, survivors, dropped)
        revealed = {peer: secagg.reveal(bytes.fromhex(state.bundles[peer]), kind).hex() for peer, kind in kinds.items()}
        self._finish(state, kinds, digest, revealed)
        return revealed

    def _kinds(self, state: RoundState, survivors: list[str], dropped: list[str]) -> dict[str, str]:
        """Which share each neighbour's fate calls for: "self" if it survived, "mask" if it dropped."""
        alive, gone = set(survivors), set(dropped)
        kinds = {}
        for peer in state.neighbours:
            kind = "self" if peer in alive else "mask" if peer in gone else None
            if kind is None:
                raise MaskingRefusal(f"the request says neither whether {peer} survived nor whether it dropped")
            kinds[peer] = kind
        return kinds

    @staticmethod
    def _revealed_before(state: RoundState, digest: str) -> dict[str, str]:
        if state.revealed_for != digest:
            raise MaskingRefusal("this node already revealed shares in this round for other survivors")
        return state.revealed_shares

    def _finish(self, state: RoundState, kinds: dict[str, str], digest: str, revealed: dict[str, str]) -> None:
        done = _without_secrets(state).model_copy(update={"revealed": kinds, "revealed_for": digest,
                                                          "revealed_shares": revealed})
        self._save(done)  # the round's secrets and the bundles are gone from here on

    def check_consents(self, job: JobSpec, rnd: int, survivors: list[str], dropped: list[str], consents: dict[str, str],
                       state: RoundState | None = None) -> None:
        """At least the threshold of the branches listed signed exactly these lists (SecAgg's
        consistency check: two stories about one node then need two lists each signed by t
        nodes, while an honest node signs one), and no signature is from outside the list."""
        state = state or self._load(job.job_id, rnd)
        if state is None or not state.adverts:
            raise MaskingRefusal("this node did not share in that round, so it cannot check who it counted")
        message = consent_message(job.job_id, rnd, fates_digest(survivors, dropped))
        listed = [*survivors, *dropped]
        signed = [b for b in listed if consents.get(b) and (key := self.peer_key(b)) is not None
                  and verify_signature(key, consents[b], message)]
        needed = self._threshold(job, len(_graph(job, state.adverts)[self.branch_id]))
        if len(signed) < needed or set(consents) - set(listed):
            raise MaskingRefusal(f"{len(signed)} of the branches listed signed these survivor lists; {needed} must")

    def forget(self, job_id: str) -> int:
        """At the job's close: delete the secrets of every round of it this node still holds
        (one the job ended before it revealed in, or one it opened and then sat out), keeping
        what it signed and revealed. Returns how many rounds still held secrets."""
        held = 0
        for path in sorted(self.state_dir.glob(f"{_job_prefix(job_id)}*.json")) if self.state_dir.is_dir() else []:
            state = RoundState.model_validate_json(path.read_text())
            if state.mask_seed or state.bundles:
                held += 1
                self._save(_without_secrets(state))
        return held

    # ----------------------------------------------------------------- rules
    def _fates_problem(self, state: RoundState, survivors: list[str], dropped: list[str]) -> str:
        """The lists' digest, if this node can take them: it masked, it is a survivor, every
        branch named once and part of the round."""
        alive, gone = set(survivors), set(dropped)
        if not state.neighbours:
            raise MaskingRefusal("this node holds no shares of this round's neighbours")
        if self.branch_id in gone and state.masked:
            raise MaskingRefusal("the request lists this node as dropped, but it sent its masked update")
        if self.branch_id not in alive | gone or (self.branch_id in alive and not state.masked):
            raise MaskingRefusal("the unmasking request does not count this node as what it was in the round")
        if alive & gone or len(alive) != len(survivors) or len(gone) != len(dropped):
            raise MaskingRefusal("the survivor and dropout lists overlap or repeat a branch")
        if not alive | gone <= set(state.adverts):
            raise MaskingRefusal("the unmasking request names branches that did not take part in this round")
        return fates_digest(survivors, dropped)

    def _checked_adverts(self, job: JobSpec, rnd: int, adverts: list[MaskAdvert], state: RoundState) -> dict[str, MaskAdvert]:
        listed: dict[str, MaskAdvert] = {}
        for advert in adverts:
            if advert.branch_id in listed:
                raise MaskingRefusal(f"{advert.branch_id} is listed twice among the round's adverts")
            if advert.job_id != job.job_id or advert.round != rnd:
                raise MaskingRefusal(f"the advert of {advert.branch_id} is for another job or round")
            key = self.peer_key(advert.branch_id)
            if key is None:
                raise MaskingRefusal(f"{advert.branch_id}: no key for this branch in this node's peers/")
            if not advert.signature or not verify_signature(key, advert.signature, advert.signed_body()):
                raise MaskingRefusal(f"the advert of {advert.branch_id} is not signed by that branch's key")
            listed[advert.branch_id] = advert
        if listed.get(self.branch_id) != self._advert(state):
            raise MaskingRefusal("the round's adverts do not hold this node's own advert as it made it")
        return listed

    def _threshold(self, job: JobSpec, neighbours: int) -> int:
        threshold = job.he.masking.threshold_for(neighbours)
        if threshold < self.min_threshold:
            raise MaskingRefusal(f"the job's threshold {threshold} is below this node's minimum of {self.min_threshold}")
        if 2 * threshold <= neighbours:
            raise MaskingRefusal(f"threshold {threshold} is not a majority of this node's {neighbours} neighbours")
        if neighbours < threshold:
            raise MaskingRefusal(f"{neighbours} neighbours cannot hold shares that need {threshold} to rebuild")
        return threshold

    # ----------------------------------------------------------------- state
    def _advert(self, state: RoundState) -> MaskAdvert:
        secrets = state.secrets()
        advert = MaskAdvert(branch_id=self.branch_id, job_id=state.job_id, round=state.round,
                            mask_public=secrets.mask_public().hex(), share_public=secrets.share_public().hex())
        return advert.model_copy(update={"signature": self.signer.sign(advert.signed_body())})

    def _path(self, job_id: str, rnd: int) -> Path:
        return self.state_dir / f"{_job_prefix(job_id)}{rnd}.json"

    def _load(self, job_id: str, rnd: int) -> RoundState | None:
        path = self._path(job_id, rnd)
        return RoundState.model_validate_json(path.read_text()) if path.exists() else None

    def _require(self, job_id: str, rnd: int) -> RoundState:
        state = self._load(job_id, rnd)
        if state is None:
            raise MaskingRefusal("this node made no keys for this round")
        if not state.mask_seed:
            raise MaskingRefusal("this round is over at this node: its secrets are deleted")
        return state

    def _save(self, state: RoundState) -> None:
        write_secret(self._path(state.job_id, state.round), state.model_dump_json().encode())
