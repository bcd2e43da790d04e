"""Per-job CKKS keys: made on one participating node, sealed to the others, destroyed at the end.

The job's key ceremony, node side. Each participant makes an X25519 key for the job and
signs it (`advertise`); one of them, the dealer, makes the job's CKKS key set and seals the
secret context to each advert (`deal`); every other participant checks the deal and keeps
its key (`install`). The coordinator relays all of it and keeps only the keyless public
context: it can add ciphertexts, never decrypt them.

Invariants, held by this node whatever the coordinator sends:
- it decrypts a job's data only with a key a branch in its own `peers/` dealt for that job,
  under a CKKS scale it works out itself from the job and the number of holders;
- the key is sealed to the X25519 key this node made for that job, so a branch that left the
  alliance (no longer advertised, or no longer in the dealer's peers) gets nothing of a later
  job, and an old key decrypts nothing new;
- the key files are owner-only and go away with the job (`destroy`, `expire`).
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import Callable

import tenseal as ts
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat

from common import envelope, ring_ckks, secagg
from common.files import create_secret_once, write_secret
from common.he import context_shape
from common.wire import JobKeyAdvert, JobKeyDeal, JobSpec
from lineage import Signer
from lineage.signing import verify_signature

KEY_DEGREE = 8192


class JobKeyRefusal(Exception):
    """A key step this node will not take, with the reason."""


def sealed_context(job_id: str, branch: str) -> bytes:
    return f"sovereign/job-key/1|{job_id}|{branch}".encode()


def job_scale_bits(job: JobSpec, holders: int) -> int:
    """The CKKS scale a job's masked digits need with `holders` participants (`common.secagg`)."""
    return secagg.plan_ring(holders, job.he.masking.clip).scale_bits


def public_context_bytes(ctx: ts.Context) -> bytes:
    """The coordinator's context: parameters only, no key at all (nodes encrypt symmetrically)."""
    return ctx.serialize(save_public_key=False, save_secret_key=False, save_galois_keys=False, save_relin_keys=False)


def secret_context_bytes(ctx: ts.Context) -> bytes:
    """A participant's context: the secret key and nothing it does not need (about 131 kB)."""
    return ctx.serialize(save_public_key=False, save_secret_key=True, save_galois_keys=False, save_relin_keys=False)


class JobKeys:
    """One branch's per-job keys. `peer_key(branch)` is the branch's lineage public key as this
    node holds it (None for a branch it does not know)."""

    def __init__(self, branch_id: str, keys_dir: Path, signer: Signer, peer_key: Callable) -> None:
        self.branch_id, self.keys_dir, self.signer, self.peer_key = branch_id, Path(keys_dir), signer, peer_key
        self._loaded: dict[str, ts.Context] = {}  # job id -> its context, while its key file is there

    # ----------------------------------------------------------------- ceremony
    def advertise(self, job: JobSpec) -> JobKeyAdvert:
        """This node's X25519 key for `job` (made once; asked again, the same advert)."""
        if self._path(job.job_id, "ckks").exists():
            raise JobKeyRefusal("this node already holds this job's key")
        raw = X25519PrivateKey.generate().private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())
        create_secret_once(self._path(job.job_id, "x25519"), raw)
        return self._advert(job.job_id)

    def deal(self, job: JobSpec, adverts: list[JobKeyAdvert]) -> JobKeyDeal:
        """Make the job's key set and seal it to every advertised participant (this node among
        them, as it advertised). This node keeps its own key."""
        holders = self._checked(job, adverts)
        scale = job_scale_bits(job, len(holders))
        ctx = ring_ckks.create_job_context(scale)
        secret = secret_context_bytes(ctx)
        envelopes = {b: envelope.seal(bytes.fromhex(a.public), secret, sealed_context(job.job_id, b)).hex()
                     for b, a in holders.items() if b != self.branch_id}
        deal = JobKeyDeal(dealer=self.branch_id, job_id=job.job_id, scale_bits=scale,
                          public_context=public_context_bytes(ctx).hex(),
                          holders={b: hashlib.sha256(e.encode()).hexdigest() for b, e in envelopes.items()}
                          | {self.branch_id: "dealer"}, envelopes=envelopes)
        write_secret(self._path(job.job_id, "ckks"), secret)
        self._keep_holders(job.job_id, deal)
        self._path(job.job_id, "x25519").unlink(missing_ok=True)
        return deal.model_copy(update={"signature": self.signer.sign(deal.signed_body())})

    def install(self, job: JobSpec, deal: JobKeyDeal) -> ts.Context:
        """Check a deal forwarded by the coordinator and keep this node's key from it."""
        if deal.job_id != job.job_id:
            raise JobKeyRefusal("the key deal is for another job")
        key = self.peer_key(deal.dealer)
        if key is None or deal.dealer == self.branch_id:
            raise JobKeyRefusal(f"{deal.dealer}: the dealer is not a branch in this node's peers/")
        if not deal.signature or not verify_signature(key, deal.signature, deal.signed_body()):
            raise JobKeyRefusal("the key deal is not signed by its dealer")
        if deal.dealer not in deal.holders or self.branch_id not in deal.holders:
            raise JobKeyRefusal("the key deal does not list the dealer and this node among its holders")
        if deal.scale_bits != job_scale_bits(job, len(deal.holders)):
            raise JobKeyRefusal(f"the key's scale 2^{deal.scale_bits} is not the one {len(deal.holders)} holders of "
                                "this job need")
        sealed = deal.envelopes.get(self.branch_id, "")
        if hashlib.sha256(sealed.encode()).hexdigest() != deal.holders[self.branch_id]:
            raise JobKeyRefusal("this node's envelope is missing or not the one the dealer signed")
        private = self._x25519(job.job_id)
        try:
            secret = envelope.open_sealed(private, bytes.fromhex(sealed), sealed_context(job.job_id, self.branch_id))
            ctx = ts.context_from(secret)
        except (envelope.EnvelopeError, ValueError) as exc:
            raise JobKeyRefusal(f"this node's envelope does not open to a key: {exc}") from None
        if not ctx.has_secret_key() or context_shape(ctx) != (KEY_DEGREE, deal.scale_bits):
            raise JobKeyRefusal("the dealt key is not a secret CKKS key at the job's parameters")
        write_secret(self._path(job.job_id, "ckks"), secret)
        self._keep_holders(job.job_id, deal)
        self._path(job.job_id, "x25519").unlink(missing_ok=True)
        return ctx

    # ----------------------------------------------------------------- use and end
    def holds(self, job: JobSpec) -> bool:
        return self._path(job.job_id, "ckks").exists()

    def context(self, job: JobSpec) -> ts.Context:
        path = self._path(job.job_id, "ckks")
        if not path.exists():
            self._loaded.pop(job.job_id, None)
            raise JobKeyRefusal(f"this node holds no key for job {job.job_id}")
        if job.job_id not in self._loaded:  # loading a key costs ~25 ms: once per job and process
            self._loaded[job.job_id] = ts.context_from(path.read_bytes())
        return self._loaded[job.job_id]

    def holders(self, job: JobSpec) -> list[str]:
        """Who holds the job's key, as its dealer signed it: the job's participants, whose
        number fixes the ring plan (`common.secagg.plan_ring`)."""
        path = self._path(job.job_id, "holders")
        if not path.exists():
            raise JobKeyRefusal(f"this node holds no key for job {job.job_id}")
        return json.loads(path.read_text())

    def _keep_holders(self, job_id: str, deal: JobKeyDeal) -> None:
        write_secret(self._path(job_id, "holders"), json.dumps(sorted(deal.holders)).encode())

    def destroy(self, job_id: str) -> bool:
        """Delete the job's keys; True if there were any."""
        found = False
        self._loaded.pop(job_id, None)
        self._path(job_id, "holders").unlink(missing_ok=True)
        for kind in ("ckks", "x25519"):
            path = self._path(job_id, kind)
            found |= path.exists()
            path.unlink(missing_ok=True)
        return found

    def expire(self, max_age_seconds: float) -> int:
        """Delete every job key older than `max_age_seconds` (a job that never said it ended)."""
        if not self.keys_dir.is_dir():
            return 0
        cutoff, gone = time.time() - max_age_seconds, 0
        for path in self.keys_dir.iterdir():
            if path.suffix in (".ckks", ".x25519", ".holders") and path.stat().st_mtime < cutoff:
                self._loaded.clear()
                path.unlink(missing_ok=True)
                gone += path.suffix == ".ckks"
        return gone

    # ----------------------------------------------------------------- inside
    def _checked(self, job: JobSpec, adverts: list[JobKeyAdvert]) -> dict[str, JobKeyAdvert]:
        holders: dict[str, JobKeyAdvert] = {}
        for a in adverts:
            if a.branch_id in holders or a.job_id != job.job_id:
                raise JobKeyRefusal(f"the advert of {a.branch_id} is repeated or for another job")
            key = self.peer_key(a.branch_id)
            if key is None or not a.signature or not verify_signature(key, a.signature, a.signed_body()):
                raise JobKeyRefusal(f"the advert of {a.branch_id} is not signed by a branch in this node's peers/")
            holders[a.branch_id] = a
        if holders.get(self.branch_id) != self._advert(job.job_id):
            raise JobKeyRefusal("the adverts do not hold this node's own as it made it")
        return holders

    def _advert(self, job_id: str) -> JobKeyAdvert:
        public = envelope.public_bytes(self._x25519(job_id)).hex()
        advert = JobKeyAdvert(branch_id=self.branch_id, job_id=job_id, public=public)
        return advert.model_copy(update={"signature": self.signer.sign(advert.signed_body())})

    def _x25519(self, job_id: str) -> X25519PrivateKey:
        path = self._path(job_id, "x25519")
        if not path.exists():
            raise JobKeyRefusal("this node made no key-ceremony key for this job (or the ceremony is over)")
        return X25519PrivateKey.from_private_bytes(path.read_bytes())

    def _path(self, job_id: str, kind: str) -> Path:
        return self.keys_dir / f"{hashlib.sha256(job_id.encode()).hexdigest()[:32]}.{kind}"
