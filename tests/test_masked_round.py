"""A masked round through the node-side participants and the coordinator's bookkeeping:
adverts, sealed shares, masked CKKS updates, a dropout, unmasking, an exact sum."""

from __future__ import annotations

import numpy as np
import pytest

from common import ring_ckks, secagg
from common.he import load_context, public_context_bytes
from common.wire import JobSpec, MaskReply
from coordinator.unmasking import MaskedRound, UnmaskError
from lineage import Signer
from node_agent.masking import MaskingParticipant, MaskingRefusal

LENGTH = 3000


class Alliance:
    """n branches, each with its lineage key and a participant that knows every peer's key."""

    def __init__(self, tmp_path, n: int, **job):
        self.ids = [f"b{i:02d}" for i in range(n)]
        self.signers = {b: Signer.generate(b) for b in self.ids}
        keys = {b: s.public_key for b, s in self.signers.items()}
        self.nodes = {b: MaskingParticipant(b, tmp_path / b, self.signers[b], keys.get) for b in self.ids}
        self.job = JobSpec(job_id="job-m", **job)
        self.plan = secagg.plan_ring(n, self.job.he.masking.clip)
        self.ctx = ring_ckks.create_job_context(self.plan.scale_bits)
        rng = np.random.default_rng(5)
        self.updates = {b: rng.normal(0, 0.3, LENGTH) * rng.integers(1, 50) for b in self.ids}

    def reply(self, branch, **fields) -> MaskReply:
        return MaskReply(status="ok", branch_id=branch, **fields)

    def run(self, rnd: int = 1, *, no_share: frozenset = frozenset(), no_update: frozenset = frozenset()):
        """One round; `no_share` drop before sharing, `no_update` after sharing but before sending."""
        coord = MaskedRound(self.job, rnd)
        adverts = coord.take_adverts([self.reply(b, advert=self.nodes[b].advertise(self.job, rnd)) for b in self.ids])
        shared = coord.take_shares([self.reply(b, shares=self.nodes[b].share(self.job, rnd, adverts))
                                    for b in self.ids if b not in no_share])
        sent = {}
        for b in sorted(shared - no_update):
            ring = self.nodes[b].mask(self.job, rnd, self.updates[b], self.plan, coord.shares_for(b))
            sent[b] = ring_ckks.encrypt_digits(self.ctx, secagg.to_digits(ring, self.plan))
        survivors, dropped = sorted(sent), sorted(shared - set(sent))
        consents = {b: self.nodes[b].consent(self.job, rnd, survivors, dropped) for b in survivors}
        revealed = {b: self.nodes[b].unmask(self.job, rnd, survivors, dropped, consents) for b in survivors}
        fix = coord.correction(LENGTH, self.plan, set(survivors), revealed)
        public = load_context(public_context_bytes(self.ctx))
        total = ring_ckks.sum_digits(public, list(sent.values()), addend=secagg.to_digits(fix, self.plan))
        summed = secagg.dequantise(secagg.from_digits(ring_ckks.decrypt_digits(self.ctx, total), self.plan), self.plan)
        return summed, survivors


def test_a_round_with_dropouts_before_and_after_sharing_sums_exactly(tmp_path):
    alliance = Alliance(tmp_path, 7)
    summed, survivors = alliance.run(no_share=frozenset({"b01"}), no_update=frozenset({"b04"}))
    assert survivors == ["b00", "b02", "b03", "b05", "b06"]
    assert np.abs(summed - sum(alliance.updates[b] for b in survivors)).max() < 1e-3


def test_a_sparse_graph_round_sums_exactly_and_the_next_round_has_fresh_keys(tmp_path):
    alliance = Alliance(tmp_path, 9, he={"masking": {"degree": 4}})
    summed, survivors = alliance.run(1, no_update=frozenset({"b03"}))
    assert np.abs(summed - sum(alliance.updates[b] for b in survivors)).max() < 1e-3
    first, second = alliance.nodes["b03"].advertise(alliance.job, 1), alliance.nodes["b03"].advertise(alliance.job, 2)
    assert first.mask_public != second.mask_public  # b03 joins round 2 with keys nobody rebuilt
    summed, survivors = alliance.run(2)
    assert "b03" in survivors and np.abs(summed - sum(alliance.updates.values())).max() < 1e-3


def test_too_many_dropouts_leave_the_sum_unmaskable_not_wrong(tmp_path):
    alliance = Alliance(tmp_path, 5)  # threshold 3 of 4 neighbours
    with pytest.raises((UnmaskError, MaskingRefusal)):
        alliance.run(no_update=frozenset({"b00", "b01", "b02"}))


def test_round_secrets_are_gone_once_the_node_revealed(tmp_path):
    alliance = Alliance(tmp_path, 4)
    alliance.run()
    files = list((tmp_path / "b00").iterdir())
    assert len(files) == 1 and (files[0].stat().st_mode & 0o777) == 0o600
    state = files[0].read_text()
    assert '"mask_seed":""' in state and '"self_seed":""' in state and '"bundles":{}' in state
    with pytest.raises(MaskingRefusal, match="over"):
        alliance.nodes["b00"].advertise(alliance.job, 1)


def test_a_round_the_job_ended_before_keeps_no_secret_past_the_jobs_close(tmp_path):
    """A round opened (adverts, shares) but never revealed in, as when a job ends before its
    evaluation: at the close the node deletes its secrets; it refuses to go on with that round."""
    a = Alliance(tmp_path, 4)
    adverts = [a.nodes[b].advertise(a.job, 2) for b in a.ids]
    for b in a.ids:
        a.nodes[b].share(a.job, 2, adverts)
    node = a.nodes[a.ids[0]]
    assert node.forget(a.job.job_id) == 1 and node.forget(a.job.job_id) == 0  # once held, now gone
    state = node._load(a.job.job_id, 2)
    assert state.mask_seed == state.self_seed == state.share_key == "" and state.adverts  # what it shared stays on record
    with pytest.raises(MaskingRefusal, match="secrets are deleted"):
        node.mask(a.job, 2, np.ones(LENGTH), a.plan, [])
