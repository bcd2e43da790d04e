"""A coordinator that bends the masked round to read one node's update.

It drives real participants (`node_agent.masking`) step by step and may send anything: altered
or invented adverts, a threshold of its choosing, shares moved to another recipient, two
stories about who dropped. Each test is one attack; each fails if the node's rule is removed.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from common import secagg
from common.wire import JobSpec, MaskAdvert, SealedShare
from lineage import Signer
from node_agent.masking import MaskingParticipant, MaskingRefusal

IDS = [f"b{i}" for i in range(6)]


@pytest.fixture
def alliance(tmp_path):
    signers = {b: Signer.generate(b) for b in IDS}
    keys = {b: s.public_key for b, s in signers.items()}
    nodes = {b: MaskingParticipant(b, tmp_path / b, signers[b], keys.get) for b in IDS}
    return nodes, JobSpec(job_id="job-x")


def _through_masking(nodes, job, rnd=1):
    adverts = [nodes[b].advertise(job, rnd) for b in IDS]
    shares = {b: nodes[b].share(job, rnd, adverts) for b in IDS}
    inbox = [s for sent in shares.values() for s in sent]
    plan = secagg.plan_ring(len(IDS), job.he.masking.clip)
    for b in IDS:
        nodes[b].mask(job, rnd, np.ones(10), plan, [s for s in inbox if s.recipient == b])
    return adverts, inbox, plan


def test_a_node_never_reveals_both_shares_of_one_neighbour(alliance):
    nodes, job = alliance
    _through_masking(nodes, job)
    everyone = list(IDS)
    consents = {b: nodes[b].consent(job, 1, everyone, []) for b in everyone}
    nodes["b0"].unmask(job, 1, everyone, [], consents)  # b3's self-mask share
    others = [b for b in IDS if b != "b3"]
    with pytest.raises(MaskingRefusal, match="other survivors"):  # now "b3 dropped": its mask-key share too
        nodes["b0"].unmask(job, 1, others, ["b3"], consents)


def test_two_stories_about_one_neighbour_cannot_both_be_signed(alliance):
    """The coordinator tells b1 that b3 survived and b0 that it dropped. b1 signed its story,
    so it will not sign b0's; without a threshold of signatures b0 reveals nothing."""
    nodes, job = alliance
    _through_masking(nodes, job)
    told_b1 = list(IDS)
    told_b0 = [b for b in IDS if b != "b3"]
    nodes["b1"].consent(job, 1, told_b1, [])
    with pytest.raises(MaskingRefusal, match="other survivor lists"):
        nodes["b1"].consent(job, 1, told_b0, ["b3"])
    consents = {b: nodes[b].consent(job, 1, told_b0, ["b3"]) for b in ("b0", "b2")}  # t = 3 of 5 neighbours
    consents["b1"] = Signer.generate("b1").sign(b"forged")  # the coordinator's best effort
    with pytest.raises(MaskingRefusal, match="2 of the branches listed signed"):
        nodes["b0"].unmask(job, 1, told_b0, ["b3"], consents)
    consents["b4"] = nodes["b4"].consent(job, 1, told_b0, ["b3"])
    assert nodes["b0"].unmask(job, 1, told_b0, ["b3"], consents)  # with a third honest signature the lists hold


def test_an_advert_with_the_coordinators_own_mask_key_is_refused(alliance):
    nodes, job = alliance
    adverts = [nodes[b].advertise(job, 1) for b in IDS]
    mine = secagg.RoundSecrets.generate()
    swapped = [a.model_copy(update={"mask_public": mine.mask_public().hex()}) if a.branch_id == "b3" else a for a in adverts]
    with pytest.raises(MaskingRefusal, match="b3 is not signed"):
        nodes["b0"].share(job, 1, swapped)


def test_an_invented_branch_is_refused(alliance):
    nodes, job = alliance
    adverts = [nodes[b].advertise(job, 1) for b in IDS]
    sybil = Signer.generate("b9")
    fake = MaskAdvert(branch_id="b9", job_id=job.job_id, round=1, mask_public="ab" * 32, share_public="cd" * 32)
    fake = fake.model_copy(update={"signature": sybil.sign(fake.signed_body())})
    with pytest.raises(MaskingRefusal, match="no key for this branch"):
        nodes["b0"].share(job, 1, adverts + [fake])


def test_a_minority_threshold_or_one_below_the_nodes_minimum_is_refused(alliance, tmp_path):
    nodes, job = alliance
    adverts = [nodes[b].advertise(job, 1) for b in IDS]
    with pytest.raises(MaskingRefusal, match="not a majority"):
        nodes["b0"].share(job.model_copy(update={"he": job.he.model_copy(update={"masking": job.he.masking.model_copy(
            update={"threshold": 2})})}), 1, adverts)
    strict = MaskingParticipant("b0", tmp_path / "strict", nodes["b0"].signer, nodes["b0"].peer_key, min_threshold=5)
    own = strict.advertise(job, 1)
    with pytest.raises(MaskingRefusal, match="minimum of 5"):
        strict.share(job, 1, [own if a.branch_id == "b0" else a for a in adverts])  # majority of 5 is 3


def test_sharing_again_over_other_participants_is_refused(alliance):
    nodes, job = alliance
    adverts = [nodes[b].advertise(job, 1) for b in IDS]
    first = nodes["b0"].share(job, 1, adverts)
    assert nodes["b0"].share(job, 1, adverts) == first  # asked again: the same envelopes, no new split
    with pytest.raises(MaskingRefusal, match="other participants"):
        nodes["b0"].share(job, 1, [a for a in adverts if a.branch_id != "b5"])


def test_masking_again_over_other_neighbours_is_refused(alliance):
    nodes, job = alliance
    _, inbox, plan = _through_masking(nodes, job)
    mine = [s for s in inbox if s.recipient == "b0"]
    again = nodes["b0"].mask(job, 1, np.ones(10), plan, mine)
    assert np.array_equal(again, nodes["b0"].mask(job, 1, np.ones(10), plan, mine))
    with pytest.raises(MaskingRefusal, match="other neighbours"):
        nodes["b0"].mask(job, 1, np.ones(10), plan, [s for s in mine if s.sender != "b4"])


def test_a_sum_over_fewer_branches_than_the_nodes_minimum_is_not_consented(alliance, tmp_path):
    nodes, job = alliance
    _through_masking(nodes, job)
    strict = MaskingParticipant("b0", nodes["b0"].state_dir, nodes["b0"].signer, nodes["b0"].peer_key, min_survivors=4)
    with pytest.raises(MaskingRefusal, match="minimum is 4"):
        strict.consent(job, 1, ["b0", "b1", "b2"], ["b3", "b4", "b5"])


def test_a_share_moved_to_another_recipient_does_not_open(alliance):
    nodes, job = alliance
    adverts = [nodes[b].advertise(job, 1) for b in IDS]
    inbox = [s for b in IDS for s in nodes[b].share(job, 1, adverts)]
    plan = secagg.plan_ring(len(IDS), job.he.masking.clip)
    for_b2 = next(s for s in inbox if s.sender == "b4" and s.recipient == "b2")
    moved = SealedShare(sender="b4", recipient="b0", envelope=for_b2.envelope)
    mine = [s for s in inbox if s.recipient == "b0" and s.sender != "b4"] + [moved]
    with pytest.raises(MaskingRefusal, match="does not open"):
        nodes["b0"].mask(job, 1, np.ones(10), plan, mine)


def test_the_egress_check_lets_out_only_this_nodes_own_keys_and_shares(alliance):
    """The last line on the node: a masking reply carrying another branch's advert or share, or
    anything but revealed shares, does not leave (whatever a bug upstream put in it)."""
    from common.wire import MaskReply, TrainReply
    from node_agent.egress import EgressBlocked, check_reply

    nodes, job = alliance
    adverts = [nodes[b].advertise(job, 1) for b in IDS]
    mine = nodes["b0"].share(job, 1, adverts)
    check_reply(MaskReply(status="ok", branch_id="b0", advert=adverts[0], shares=mine), branch_id="b0")
    theirs = nodes["b1"].share(job, 1, adverts)
    for reply in (MaskReply(status="ok", branch_id="b0", advert=adverts[1]),
                  MaskReply(status="ok", branch_id="b0", shares=mine + theirs[:1]),
                  MaskReply(status="ok", branch_id="b0", revealed={"b1": "ab" * 100}),
                  # the next round's answer riding on this one is checked as a reply of its own
                  TrainReply(status="ok", branch_id="b0", ahead=MaskReply(status="ok", branch_id="b0", advert=adverts[1])),
                  TrainReply(status="ok", branch_id="b0", ahead=MaskReply(status="ok", branch_id="b1", advert=adverts[1])),
                  MaskReply(status="ok", branch_id="b0", ahead=MaskReply(
                      status="ok", branch_id="b0", ahead=MaskReply(status="ok", branch_id="b0", shares=theirs)))):
        with pytest.raises(EgressBlocked):
            check_reply(reply, branch_id="b0")
    check_reply(TrainReply(status="ok", branch_id="b0", ahead=MaskReply(status="ok", branch_id="b0", advert=adverts[0])),
                branch_id="b0")


def test_a_step_ahead_is_only_ever_an_advert_or_a_share():
    """The next round's step a message may carry is the opening of that round, nothing more: a
    coordinator cannot slip a consent or an unmask into a training instruction."""
    from common.wire import MaskStep, TrainInstruction, WireError, from_record, to_record

    job = JobSpec(job_id="job-x")
    ok = TrainInstruction(job=job, round=1, ahead=MaskStep(round=2, stage="advertise"))
    assert from_record(to_record(ok), TrainInstruction).ahead.stage == "advertise"
    for stage in ("consent", "unmask"):
        forged = to_record(ok)
        body = json.loads(forged["body"]["json"])
        body["ahead"]["stage"] = stage
        forged["body"]["json"] = json.dumps(body)
        with pytest.raises(WireError, match="ahead.stage"):
            from_record(forged, TrainInstruction)


def test_self_mask_shares_come_with_the_signature_and_mask_keys_only_with_the_threshold(alliance):
    """The consent step reveals the self-mask shares of the neighbours the signed lists say
    survived, nothing of a dropped one; its mask-key share needs t signatures on those lists."""
    nodes, job = alliance
    _through_masking(nodes, job)
    everyone = list(IDS)
    nodes["b0"].consent(job, 1, everyone, [])
    told_b0 = nodes["b0"].reveal_survivors(job, 1, everyone, [])
    assert sorted(told_b0) == [b for b in IDS if b != "b0"]  # no neighbour dropped: b0's whole reveal
    with pytest.raises(MaskingRefusal, match="other survivors"):  # ... and its round is over
        nodes["b0"].unmask(job, 1, [b for b in IDS if b != "b3"], ["b3"], {})
    others, gone = [b for b in IDS if b != "b3"], ["b3"]
    consents = {"b1": nodes["b1"].consent(job, 1, others, gone)}
    told_b1 = nodes["b1"].reveal_survivors(job, 1, others, gone)
    assert "b3" not in told_b1 and sorted(told_b1) == [b for b in others if b != "b1"]
    with pytest.raises(MaskingRefusal, match="1 of the branches listed signed"):
        nodes["b1"].unmask(job, 1, others, gone, consents)  # b3's mask key: not on one signature
    consents |= {b: nodes[b].consent(job, 1, others, gone) for b in ("b2", "b4")}
    assert len(nodes["b1"].unmask(job, 1, others, gone, consents)["b3"]) == len(told_b1["b2"])  # with t = 3 it is
