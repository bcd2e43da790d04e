"""Per-job keys: a node-side ceremony the coordinator relays but cannot read or bend."""

from __future__ import annotations

import numpy as np
import pytest
import tenseal as ts
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from common import envelope, ring_ckks
from common.wire import JobSpec
from lineage import Signer
from node_agent.job_keys import JobKeyRefusal, JobKeys, public_context_bytes

IDS = ["b0", "b1", "b2", "b3"]


@pytest.fixture
def branches(tmp_path):
    signers = {b: Signer.generate(b) for b in IDS}
    peers = {b: s.public_key for b, s in signers.items()}
    return {b: JobKeys(b, tmp_path / b, signers[b], peers.get) for b in IDS}, peers


def ceremony(keys, members, job):
    """What the coordinator does: collect adverts, ask the first member to deal, forward."""
    adverts = [keys[b].advertise(job) for b in members]
    deal = keys[members[0]].deal(job, adverts)
    for b in members[1:]:
        keys[b].install(job, deal.for_branch(b))
    return deal


def test_every_participant_decrypts_what_another_encrypted_and_the_coordinator_cannot(branches):
    keys, _ = branches
    job = JobSpec(job_id="job-1")
    deal = ceremony(keys, IDS, job)
    digits = np.arange(-50, 50)
    sent = ring_ckks.encrypt_digits(keys["b2"].context(job), digits)
    public = ts.context_from(bytes.fromhex(deal.public_context))
    assert not public.has_secret_key() and len(deal.public_context) < 400
    total = ring_ckks.sum_digits(public, [sent, sent])
    for b in IDS:
        assert np.array_equal(ring_ckks.decrypt_digits(keys[b].context(job), total), 2 * digits)
    with pytest.raises(PermissionError):
        ring_ckks.decrypt_digits(public, total)
    assert all(len(e) < 300_000 for e in deal.envelopes.values())  # about 131 kB sealed, per holder


def test_a_branch_removed_between_jobs_decrypts_nothing_of_the_next(branches, tmp_path):
    keys, _ = branches
    first, second = JobSpec(job_id="job-1"), JobSpec(job_id="job-2")
    ceremony(keys, IDS, first)
    deal = ceremony(keys, IDS[:3], second)  # b3 left the alliance
    secret = np.random.default_rng(2).integers(-(2**20), 2**20, 8192)
    sent = ring_ckks.encrypt_digits(keys["b0"].context(second), secret)
    with pytest.raises(JobKeyRefusal, match="no key"):
        keys["b3"].context(second)
    with pytest.raises(JobKeyRefusal):  # forwarded anyway: it is not a holder and made no key for the job
        keys["b3"].install(second, deal.for_branch("b0"))
    old = keys["b3"].context(first)  # its key of the job it was in
    old.global_scale = keys["b0"].context(second).global_scale
    try:
        recovered = ring_ckks.decrypt_digits(old, sent)
        assert abs(np.corrcoef(recovered, secret)[0, 1]) < 0.05
    except ValueError:
        pass  # not even whole numbers: the old key reads nothing


def test_the_coordinator_cannot_take_a_key_for_itself(branches):
    keys, peers = branches
    job = JobSpec(job_id="job-3")
    adverts = [keys[b].advertise(job) for b in IDS]
    own = envelope.public_bytes(X25519PrivateKey.generate())  # the coordinator's key, in b2's advert
    swapped = [a.model_copy(update={"public": own.hex()}) if a.branch_id == "b2" else a for a in adverts]
    with pytest.raises(JobKeyRefusal, match="b2 is not signed"):
        keys["b0"].deal(job, swapped)
    deal = keys["b0"].deal(job, adverts)
    forged = deal.model_copy(update={"holders": {**deal.holders, "hq": "0" * 64}})
    with pytest.raises(JobKeyRefusal, match="not signed by its dealer"):
        keys["b1"].install(job, forged.for_branch("b1"))
    with pytest.raises(JobKeyRefusal, match="not signed by its dealer"):
        keys["b1"].install(job, deal.model_copy(update={"scale_bits": deal.scale_bits + 1}).for_branch("b1"))
    moved = deal.model_copy(update={"envelopes": {"b1": deal.envelopes["b2"]}})
    with pytest.raises(JobKeyRefusal, match="envelope"):
        keys["b1"].install(job, moved)
    impostor = JobKeys("hq", keys["b0"].keys_dir.parent / "hq", Signer.generate("hq"), peers.get)
    fake = deal.model_copy(update={"dealer": "hq"})
    fake = fake.model_copy(update={"signature": impostor.signer.sign(fake.signed_body())})
    with pytest.raises(JobKeyRefusal, match="not a branch in this node's peers"):
        keys["b1"].install(job, fake.for_branch("b1"))
    keys["b1"].install(job, deal.for_branch("b1"))  # the real deal still installs


def test_job_keys_are_destroyed_at_the_end_or_when_they_expire(branches):
    keys, _ = branches
    ceremony(keys, IDS, JobSpec(job_id="job-4"))
    ceremony(keys, IDS, JobSpec(job_id="job-5"))
    files = list(keys["b1"].keys_dir.iterdir())
    assert len(files) == 4 and all(f.stat().st_mode & 0o777 == 0o600 for f in files)  # key and holders, per job
    assert keys["b1"].holders(JobSpec(job_id="job-4")) == IDS
    assert keys["b1"].destroy("job-4") and not keys["b1"].destroy("job-4")
    with pytest.raises(JobKeyRefusal):
        keys["b1"].context(JobSpec(job_id="job-4"))
    assert keys["b1"].expire(-1) == 1 and not list(keys["b1"].keys_dir.iterdir())  # one job's key left to expire


def test_public_context_bytes_hold_no_key():
    ctx = ring_ckks.create_job_context(16)
    loaded = ts.context_from(public_context_bytes(ctx))
    assert not loaded.has_secret_key() and not loaded.has_public_key()
