"""Masked integer aggregation (SecAgg+), the part that makes collusion useless.

Invariant: what one node sends is uniform in the ring Z_2^K whatever its update is, to anyone
who lacks the pairwise mask of at least one other honest node; the masks cancel exactly in
the sum of the round's survivors once the coordinator has removed the self masks and the
dropped nodes' pairwise masks from t revealed Shamir shares.

Why integers: CKKS adds approximately over the reals, and no mask over the reals is uniform,
so a real-valued mask hides nothing for sure. Here each value is quantised into Z_2^K, masked
there (a one-time pad: y = x + m with m uniform is uniform), written as K/k signed digits of
k bits that CKKS adds far inside its exact range (so rounding the decrypted sum gives the
integer sum), and reduced mod 2^K after decryption, which cancels the masks. See `plan_ring`
for the bit budget.

The cryptographic parts are standard: X25519 agreement, HKDF-SHA256 and an AES-256-CTR
keystream (`cryptography`) for masks; Shamir over a 129-bit prime field for the shares;
fresh secrets every round, so a node whose keys were reconstructed joins the next round anew.
"""

from __future__ import annotations

import hashlib
import math
import os
import random
from secrets import randbelow
from dataclasses import dataclass
from typing import Iterable, Mapping, Sequence

import numpy as np
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from pydantic import BaseModel, ConfigDict, Field

from common.envelope import derive_key, load_public, public_bytes

SEED_BYTES = 16  # what Shamir shares: a 128-bit seed each
CKKS_DATA_BITS = 60  # the ciphertext's one data prime (CkksParams' first modulus)
NOISE_PER_CIPHERTEXT = 230.0  # std of one fresh encryption's error per slot, times the scale (measured ~208)
MIN_FRAC_BITS = 12  # the coarsest quantum accepted: 2^-13 error per value in the averaged model
DIGIT_CHOICES = (1, 2)  # digits per ring element a plan may use (a masked vector is its length times that)


class RingPlan(BaseModel):
    """How a round's updates become ring elements and CKKS plaintexts. Public: it follows
    from the number of nodes and the job's clip."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    ring_bits: int = Field(ge=16, le=62, description="K: masks and sums live in Z_2^K")
    digits: int = Field(ge=1, le=2, description="K/k signed digits of k bits, one CKKS value each")
    frac_bits: int = Field(ge=MIN_FRAC_BITS, description="quantum 2^-f of each value")
    clip: float = Field(gt=0, description="the largest |value| a node may send")
    scale_bits: int = Field(ge=10, le=40, description="CKKS scale for the digits")

    @property
    def digit_bits(self) -> int:
        return self.ring_bits // self.digits

    @property
    def mask(self) -> np.uint64:
        return np.uint64((1 << self.ring_bits) - 1)


def plan_ring(nodes: int, clip: float, *, data_bits: int = CKKS_DATA_BITS) -> RingPlan:
    """The bit budget of one round of `nodes` updates bounded by `clip`.

    - CKKS noise: each fresh symmetric encryption adds a Gaussian of about 208 / 2^scale per
      slot (measured: tests/test_secagg.py), so a sum of n + 1 of them is off by
      230 * sqrt(n + 1) / 2^scale; the scale keeps 12 standard deviations under 1/4, well
      inside the 1/2 that rounding forgives.
    - CKKS range: n + 1 centred digits of k bits (n updates, one correction), scaled, stay
      below 2^58.5: under half the data prime, with half a bit for complex packing.
    - Ring: the sum of n quantised values must not wrap: n * clip * 2^f < 2^(K - 1).
    One digit per value when that leaves at least MIN_FRAC_BITS of precision, else two.
    """
    if nodes < 1 or not clip > 0:
        raise ValueError("a ring plan needs at least one node and a positive clip")
    scale_bits = math.ceil(math.log2(12 * 4 * NOISE_PER_CIPHERTEXT * math.sqrt(nodes + 1)))
    digit_bits = data_bits - 2 - scale_bits - math.ceil(math.log2(nodes + 1))
    needed = math.ceil(math.log2(nodes * clip))
    for digits in DIGIT_CHOICES:
        ring_bits = min(digits * digit_bits, 62)
        ring_bits -= ring_bits % digits
        frac_bits = ring_bits - 1 - needed
        if frac_bits >= MIN_FRAC_BITS:
            return RingPlan(ring_bits=ring_bits, digits=digits, frac_bits=min(frac_bits, 40), clip=clip,
                            scale_bits=scale_bits)
    raise ValueError(f"{nodes} nodes with clip {clip:g} leave under {MIN_FRAC_BITS} bits of precision; lower the clip")


# ----------------------------------------------------------------- values <-> ring
def quantise(values: np.ndarray, plan: RingPlan) -> np.ndarray:
    """Values to Z_2^K (two's complement), rounded to the plan's quantum. A value beyond the
    clip is refused, never clipped silently: it means training diverged."""
    flat = np.asarray(values, dtype=np.float64).ravel()
    if not np.isfinite(flat).all() or np.abs(flat).max(initial=0.0) > plan.clip:
        raise ValueError(f"values to send are not finite or exceed the clip {plan.clip:g}")
    return np.rint(flat * 2.0**plan.frac_bits).astype(np.int64).astype(np.uint64) & plan.mask


def dequantise(ring_sum: np.ndarray, plan: RingPlan) -> np.ndarray:
    """A sum in Z_2^K back to reals: the centred lift, over the quantum."""
    x = np.asarray(ring_sum, dtype=np.uint64) & plan.mask
    signed = x.astype(np.int64) - (x >= np.uint64(1 << (plan.ring_bits - 1))).astype(np.int64) * (1 << plan.ring_bits)
    return signed.astype(np.float64) / 2.0**plan.frac_bits


def to_digits(ring: np.ndarray, plan: RingPlan) -> np.ndarray:
    """Ring elements as `digits` signed base-2^k digits each (row-major, low digit first),
    every digit in [-2^(k-1), 2^(k-1)): Σ d_l 2^(k l) ≡ y (mod 2^K)."""
    k, rest = plan.digit_bits, np.asarray(ring, dtype=np.uint64) & plan.mask
    half, full = np.uint64(1 << (k - 1)), np.uint64(1 << k)
    out = np.empty((rest.size, plan.digits), dtype=np.int64)
    for level in range(plan.digits):
        low = rest & (full - np.uint64(1))
        borrow = low >= half
        out[:, level] = low.astype(np.int64) - borrow.astype(np.int64) * (1 << k)
        rest = (rest >> np.uint64(k)) + borrow.astype(np.uint64)
    return out.ravel()


def from_digits(digit_sums: np.ndarray, plan: RingPlan) -> np.ndarray:
    """Summed digits (exact integers) back to a ring element per value."""
    sums = np.asarray(digit_sums, dtype=np.int64).reshape(-1, plan.digits)
    total = np.zeros(sums.shape[0], dtype=np.uint64)
    for level in range(plan.digits):  # uint64 arithmetic wraps mod 2^64, a multiple of 2^K
        total += sums[:, level].astype(np.uint64) << np.uint64(level * plan.digit_bits)
    return total & plan.mask


# ----------------------------------------------------------------- masks
def expand(key: bytes, length: int, plan: RingPlan) -> np.ndarray:
    """`length` uniform elements of Z_2^K from a 32-byte key (AES-256-CTR keystream)."""
    encryptor = Cipher(algorithms.AES(key), modes.CTR(bytes(16))).encryptor()
    stream = encryptor.update(bytes(8 * length)) + encryptor.finalize()
    return np.frombuffer(stream, dtype="<u8").astype(np.uint64) & plan.mask


def mask_context(job_id: str, rnd: int) -> bytes:
    """What every mask and share of one round is bound to."""
    return f"sovereign secagg|{job_id}|{rnd}".encode()


def self_mask_key(self_seed: bytes, context: bytes) -> bytes:
    return derive_key(self_seed, salt=b"", info=b"self mask|" + context)


def mask_private_key(mask_seed: bytes) -> X25519PrivateKey:
    """The X25519 key behind a node's pairwise masks, from a 16-byte seed Shamir can share."""
    return X25519PrivateKey.from_private_bytes(derive_key(mask_seed, salt=b"", info=b"mask key"))


def pair_mask_key(private: X25519PrivateKey, peer_public: bytes, me: str, peer: str, context: bytes) -> bytes:
    low, high = sorted((me, peer))
    return derive_key(private.exchange(load_public(peer_public)), salt=b"",
                      info=b"pair mask|" + context + f"|{low}|{high}".encode())


def share_context(job_id: str, rnd: int, sender: str, recipient: str) -> bytes:
    """What the sealed share bundle from `sender` to `recipient` is bound to."""
    return mask_context(job_id, rnd) + f"|share|{sender}|{recipient}".encode()


def graph_seed(advert_bodies: Iterable[bytes]) -> bytes:
    """The public seed of a round's neighbour graph: every signed advert, so no party picks it alone."""
    return hashlib.sha256(b"\n".join(sorted(advert_bodies))).digest()


def advert_graph(advert_bodies: Mapping[str, bytes], degree: int | None) -> dict[str, frozenset[str]]:
    """A round's neighbour graph from its adverts (branch -> signed advert body): what every
    node and the coordinator compute alike."""
    return mask_graph(list(advert_bodies), degree, graph_seed(advert_bodies.values()))


def pair_sign(me: str, peer: str) -> int:
    """The lower id adds the pairwise mask, the higher subtracts it: they cancel in the sum."""
    return 1 if me < peer else -1


@dataclass(frozen=True)
class RoundSecrets:
    """One node's secrets for one round: never stored past the round, never sent whole."""

    mask_seed: bytes  # -> X25519 key of the pairwise masks; shared so a dropout can be unmasked
    self_seed: bytes  # -> the self mask; shared so a survivor's self mask can be removed
    share_key: X25519PrivateKey  # opens the shares peers send this node

    @classmethod
    def generate(cls) -> RoundSecrets:
        return cls(mask_seed=os.urandom(SEED_BYTES), self_seed=os.urandom(SEED_BYTES), share_key=X25519PrivateKey.generate())

    def mask_public(self) -> bytes:
        return public_bytes(mask_private_key(self.mask_seed))

    def share_public(self) -> bytes:
        return public_bytes(self.share_key)


def masked_update(ring: np.ndarray, me: str, secrets: RoundSecrets, neighbours: Mapping[str, bytes], context: bytes,
                  plan: RingPlan) -> np.ndarray:
    """y = x + self mask + Σ ± pairwise masks (mod 2^K), for the neighbours' mask public keys."""
    total = (np.asarray(ring, dtype=np.uint64) + expand(self_mask_key(secrets.self_seed, context), ring.size, plan)) & plan.mask
    private = mask_private_key(secrets.mask_seed)
    for peer, public in neighbours.items():
        if peer == me:
            raise ValueError("a node is not its own mask neighbour")
        m = expand(pair_mask_key(private, public, me, peer, context), ring.size, plan)
        total = (total + m if pair_sign(me, peer) > 0 else total - m) & plan.mask
    return total


def correction(length: int, plan: RingPlan, context: bytes, *, self_seeds: Mapping[str, bytes],
               dropped_seeds: Mapping[str, bytes], mask_publics: Mapping[str, bytes],
               graph: Mapping[str, Iterable[str]]) -> np.ndarray:
    """What the coordinator adds to the survivors' sum: minus every survivor's self mask, and
    minus every pairwise mask a survivor shares with a dropped node (reconstructed seeds)."""
    total = np.zeros(length, dtype=np.uint64)
    for seed in self_seeds.values():
        total = (total - expand(self_mask_key(seed, context), length, plan)) & plan.mask
    for gone, seed in dropped_seeds.items():
        private = mask_private_key(seed)
        for survivor in graph[gone]:
            if survivor not in self_seeds:
                continue  # dropped too: its masks with `gone` were never added
            m = expand(pair_mask_key(private, mask_publics[survivor], gone, survivor, context), length, plan)
            total = (total - m if pair_sign(survivor, gone) > 0 else total + m) & plan.mask  # undo the survivor's ±m
    return total


# ----------------------------------------------------------------- the neighbour graph
def mask_graph(ids: Sequence[str], degree: int | None, public_seed: bytes) -> dict[str, frozenset[str]]:
    """Who masks with whom: everyone with everyone, or (SecAgg+) a ring lattice of `degree`
    over an order shuffled by a public seed. Every node recomputes it from the round's public
    key list, so the coordinator cannot hand a node a graph of its choosing."""
    order = sorted(set(ids))
    if len(order) != len(ids):
        raise ValueError("a branch is listed twice in the round")
    n = len(order)
    if degree is None or degree >= n - 1:
        return {i: frozenset(order) - {i} for i in order}
    if degree < 2 or degree % 2:
        raise ValueError(f"mask degree {degree} must be an even number of at least 2")
    random.Random(hashlib.sha256(public_seed).digest()).shuffle(order)
    graph = {}
    for at, node in enumerate(order):
        graph[node] = frozenset(order[(at + step) % n] for step in range(-degree // 2, degree // 2 + 1) if step)
    return graph


# ----------------------------------------------------------------- Shamir shares of the seeds
# Shamir's scheme over the prime field GF(2^128 + 51), the smallest prime above 2^128 (every
# 16-byte seed is an element). Written here, not taken from pycryptodome or `shamirs`: both
# rebuild a seed with pure-Python field inversions per share, 284 ms and 139 ms at t = 64
# (measured), and the coordinator rebuilds one seed per node per round; Lagrange at zero with
# Python integers costs about 2 ms there. Coefficients come from `secrets` (the OS's CSPRNG).
FIELD = 2**128 + 51
SHARE_VALUE_BYTES = 17


def _split(secret: bytes, threshold: int, count: int) -> list[int]:
    coefficients = [int.from_bytes(secret, "big")] + [randbelow(FIELD) for _ in range(threshold - 1)]
    shares = []
    for x in range(1, count + 1):
        y = 0
        for c in reversed(coefficients):  # Horner
            y = (y * x + c) % FIELD
        shares.append(y)
    return shares


def _interpolate_at_zero(points: list[tuple[int, int]]) -> int:
    total = 0
    for j, (xj, yj) in enumerate(points):
        num, den = 1, 1
        for m, (xm, _) in enumerate(points):
            if m != j:
                num, den = num * xm % FIELD, den * (xm - xj) % FIELD
        total = (total + yj * num * pow(den, -1, FIELD)) % FIELD
    return total


def split_seeds(round_secrets: RoundSecrets, threshold: int, holders: Sequence[str]) -> dict[str, bytes]:
    """Each holder's share bundle: index (2 bytes), share of the mask seed, share of the self seed."""
    holders = sorted(holders)
    if not 2 <= threshold <= len(holders):
        raise ValueError(f"threshold {threshold} needs between 2 and {len(holders)} share holders")
    masks = _split(round_secrets.mask_seed, threshold, len(holders))
    selves = _split(round_secrets.self_seed, threshold, len(holders))
    return {h: (i + 1).to_bytes(2, "big") + m.to_bytes(SHARE_VALUE_BYTES, "big") + v.to_bytes(SHARE_VALUE_BYTES, "big")
            for i, (h, m, v) in enumerate(zip(holders, masks, selves, strict=True))}


SHARE_KINDS = ("mask", "self")
BUNDLE_BYTES = 2 + 2 * SHARE_VALUE_BYTES


def reveal(bundle: bytes, kind: str) -> bytes:
    """One half of a share bundle: the index and either the mask-seed or the self-seed share."""
    if len(bundle) != BUNDLE_BYTES or kind not in SHARE_KINDS:
        raise ValueError("not a share bundle")
    part = bundle[2:2 + SHARE_VALUE_BYTES] if kind == "mask" else bundle[2 + SHARE_VALUE_BYTES:]
    return bundle[:2] + part


def combine(shares: Iterable[bytes], threshold: int) -> bytes:
    """The seed behind `threshold` revealed shares (ValueError with fewer, or with shares that
    do not rebuild a 16-byte seed)."""
    parts = {int.from_bytes(s[:2], "big"): int.from_bytes(s[2:], "big")
             for s in shares if len(s) == 2 + SHARE_VALUE_BYTES}
    if len(parts) < threshold:
        raise ValueError(f"{len(parts)} shares cannot rebuild a seed shared {threshold} of n")
    seed = _interpolate_at_zero(sorted(parts.items())[:threshold])
    if seed >= 1 << (8 * SEED_BYTES):
        raise ValueError("the shares do not rebuild a seed (altered or from different splits)")
    return seed.to_bytes(SEED_BYTES, "big")
