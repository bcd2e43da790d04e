"""The masked ring arithmetic of SecAgg+ and its CKKS transport, against plain integer sums."""

from __future__ import annotations

import numpy as np
import pytest
import tenseal as ts
from hypothesis import given, settings, strategies as st
from tenseal import sealapi

from common import ring_ckks, secagg
from common.he import load_context, public_context_bytes


def _round(n: int, length: int, *, clip: float = 8192.0, degree: int | None = None, seed: int = 0):
    """n nodes' secrets, mask keys, graph and plain updates for one round."""
    plan = secagg.plan_ring(n, clip)
    ids = [f"b{i:03d}" for i in range(n)]
    secrets = {i: secagg.RoundSecrets.generate() for i in ids}
    publics = {i: s.mask_public() for i, s in secrets.items()}
    graph = secagg.mask_graph(ids, degree, b"round seed")
    rng = np.random.default_rng(seed)
    updates = {i: rng.normal(0, 0.3, length) * rng.integers(1, 60) for i in ids}
    return plan, ids, secrets, publics, graph, updates


def _masked(i, plan, secrets, publics, graph, updates, context):
    return secagg.masked_update(secagg.quantise(updates[i], plan), i, secrets[i], {j: publics[j] for j in graph[i]},
                                context, plan)


def test_quantise_round_trip_and_refusal_beyond_the_clip():
    plan = secagg.plan_ring(20, 100.0)
    values = np.array([-100.0, -3.14159, 0.0, 2.5e-3, 99.999])
    back = secagg.dequantise(secagg.quantise(values, plan), plan)
    assert np.abs(back - values).max() <= 2.0 ** -(plan.frac_bits + 1)
    with pytest.raises(ValueError, match="clip"):
        secagg.quantise(np.array([100.5]), plan)
    with pytest.raises(ValueError, match="clip"):
        secagg.quantise(np.array([np.nan]), plan)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(0, 2**64 - 1), min_size=1, max_size=40), st.sampled_from([(20, 8192.0), (1000, 8192.0), (20, 1e6)]))
def test_signed_digits_represent_every_ring_element(raw, shape):
    plan = secagg.plan_ring(*shape)
    ring = np.array(raw, dtype=np.uint64) & plan.mask
    digits = secagg.to_digits(ring, plan)
    half = 1 << (plan.digit_bits - 1)
    assert digits.size == ring.size * plan.digits and digits.min() >= -half and digits.max() < half
    assert np.array_equal(secagg.from_digits(digits, plan), ring)


def test_plans_use_one_digit_for_an_alliance_and_two_past_the_range():
    assert secagg.plan_ring(127, 8192.0).digits == 1
    assert secagg.plan_ring(1000, 8192.0).digits == 2
    with pytest.raises(ValueError, match="precision"):
        secagg.plan_ring(100_000, 1e12)


def test_masks_cancel_and_dropped_nodes_are_unmasked_exactly():
    """Every survivor's self mask and the pairwise masks shared with two dropped nodes are
    removed from t revealed shares; the ring sum is then exactly the survivors' quantised sum."""
    plan, ids, secrets, publics, graph, updates = _round(9, 500)
    context, threshold = secagg.mask_context("job-a", 3), 5
    dropped = {"b002", "b007"}
    survivors = [i for i in ids if i not in dropped]
    total = np.zeros(500, dtype=np.uint64)
    for i in survivors:
        total = (total + _masked(i, plan, secrets, publics, graph, updates, context)) & plan.mask
    bundles = {i: secagg.split_seeds(secrets[i], threshold, sorted(graph[i])) for i in ids}
    self_seeds = {i: secagg.combine([secagg.reveal(bundles[i][h], "self") for h in graph[i] if h in survivors], threshold)
                  for i in survivors}
    dropped_seeds = {d: secagg.combine([secagg.reveal(bundles[d][h], "mask") for h in graph[d] if h in survivors], threshold)
                     for d in dropped}
    fix = secagg.correction(500, plan, context, self_seeds=self_seeds, dropped_seeds=dropped_seeds,
                            mask_publics=publics, graph=graph)
    expected = np.zeros(500, dtype=np.uint64)
    for i in survivors:
        expected = (expected + secagg.quantise(updates[i], plan)) & plan.mask
    assert np.array_equal((total + fix) & plan.mask, expected)
    exact = sum(updates[i] for i in survivors)
    assert np.abs(secagg.dequantise(expected, plan) - exact).max() <= len(survivors) * 2.0 ** -(plan.frac_bits + 1)


def test_fewer_than_t_shares_rebuild_nothing():
    secrets = secagg.RoundSecrets.generate()
    bundles = secagg.split_seeds(secrets, 4, [f"b{i}" for i in range(7)])
    shares = [secagg.reveal(b, "mask") for b in bundles.values()]
    assert secagg.combine(shares[:4], 4) == secrets.mask_seed
    with pytest.raises(ValueError, match="3 shares"):
        secagg.combine(shares[:3], 4)
    with pytest.raises(ValueError, match="3 shares"):  # a repeated share is one share
        secagg.combine(shares[:3] + [shares[0]], 4)


@settings(max_examples=25, deadline=None)
@given(st.integers(2, 40).flatmap(lambda n: st.tuples(st.just(n), st.integers(2, n), st.randoms(use_true_random=False))))
def test_any_t_shares_rebuild_the_seed_and_an_altered_one_does_not(case):
    n, t, rnd = case
    secrets = secagg.RoundSecrets.generate()
    bundles = list(secagg.split_seeds(secrets, t, [f"h{i}" for i in range(n)]).values())
    chosen = rnd.sample(bundles, t)
    assert secagg.combine([secagg.reveal(b, "self") for b in chosen], t) == secrets.self_seed
    assert secagg.combine([secagg.reveal(b, "mask") for b in chosen], t) == secrets.mask_seed
    altered = [secagg.reveal(b, "self") for b in chosen]
    altered[0] = altered[0][:-1] + bytes([altered[0][-1] ^ 1])
    try:
        assert secagg.combine(altered, t) != secrets.self_seed
    except ValueError:
        pass  # not even a 16-byte seed


def test_the_neighbour_graph_is_symmetric_regular_and_recomputable():
    ids = [f"b{i:04d}" for i in range(50)]
    graph = secagg.mask_graph(ids, 10, b"public seed")
    assert all(len(peers) == 10 and node not in peers for node, peers in graph.items())
    assert all(node in graph[peer] for node, peers in graph.items() for peer in peers)
    assert graph == secagg.mask_graph(list(reversed(ids)), 10, b"public seed")
    assert graph != secagg.mask_graph(ids, 10, b"another seed")
    assert secagg.mask_graph(ids[:5], 10, b"s")["b0000"] == frozenset(ids[1:5])
    with pytest.raises(ValueError, match="twice"):
        secagg.mask_graph(ids + ids[:1], None, b"s")


def test_the_noise_constant_behind_the_plan_is_not_an_underestimate():
    """NOISE_PER_CIPHERTEXT sets the scale: measure one encryption's error per slot."""
    ctx = ring_ckks.create_job_context(20)
    rng = np.random.default_rng(3)
    digits = rng.integers(-(2**30), 2**30, 8192)
    seal = ctx.seal_context().data
    plain = sealapi.Plaintext()
    sealapi.Decryptor(seal, ctx.secret_key().data).decrypt(
        ring_ckks._load(seal, ring_ckks.encrypt_digits(ctx, digits).chunks[0]), plain)
    z = np.asarray(sealapi.CKKSEncoder(seal).decode_complex(plain))
    error = (np.concatenate([z.real, z.imag]) - digits) * 2.0**20
    assert 0.3 * secagg.NOISE_PER_CIPHERTEXT < error.std() <= secagg.NOISE_PER_CIPHERTEXT


@pytest.mark.parametrize("nodes", [127, 1000])
def test_the_worst_case_digits_of_a_plan_still_decrypt_exactly(nodes):
    """n + 1 ciphertexts of the most negative digit in every slot (the largest plaintext
    coefficient there can be) sum without wrapping and round to the exact integer sum."""
    plan = secagg.plan_ring(nodes, 8192.0)
    ctx = ring_ckks.create_job_context(plan.scale_bits)
    public = load_context(public_context_bytes(ctx))
    extreme = np.full(8192, -(2 ** (plan.digit_bits - 1)), dtype=np.int64)
    one = ring_ckks.encrypt_digits(ctx, extreme)
    vectors = [one] + [ring_ckks.encrypt_digits(ctx, extreme) for _ in range(nodes - 1)]
    total = ring_ckks.sum_digits(public, vectors, addend=extreme)
    assert np.array_equal(ring_ckks.decrypt_digits(ctx, total), extreme * (nodes + 1))


def test_the_ckks_round_trip_is_exact_and_needs_the_secret_key():
    plan, ids, secrets, publics, graph, updates = _round(20, 20_000)
    context = secagg.mask_context("job-b", 1)
    ctx = ring_ckks.create_job_context(plan.scale_bits)
    public = load_context(public_context_bytes(ctx))
    sent = [ring_ckks.encrypt_digits(ctx, secagg.to_digits(_masked(i, plan, secrets, publics, graph, updates, context), plan))
            for i in ids]
    assert sum(map(len, sent[0].chunks)) / (len(sent[0].chunks) * 8192) < 8.05  # seeded, complex-packed: 8 bytes a value
    fix = secagg.correction(20_000, plan, context, self_seeds={i: s.self_seed for i, s in secrets.items()},
                            dropped_seeds={}, mask_publics=publics, graph=graph)
    total = ring_ckks.sum_digits(public, sent, addend=secagg.to_digits(fix, plan))
    with pytest.raises(PermissionError):
        ring_ckks.decrypt_digits(public, total)
    got = secagg.dequantise(secagg.from_digits(ring_ckks.decrypt_digits(ctx, total), plan), plan)
    assert np.abs(got - sum(updates.values())).max() < 1e-3


def test_the_coordinator_loads_only_fresh_ciphertexts_at_the_job_scale():
    ctx = ring_ckks.create_job_context(15)
    other = ring_ckks.create_job_context(16)
    good = ring_ckks.encrypt_digits(ctx, np.arange(10))
    with pytest.raises(ValueError, match="scale"):
        ring_ckks.sum_digits(ctx, [good, ring_ckks.encrypt_digits(other, np.arange(10))])
    with pytest.raises(ValueError, match="ciphertexts"):
        ring_ckks.sum_digits(ctx, [good, good.model_copy(update={"chunks": good.chunks * 2})])
    with pytest.raises(ValueError, match="values"):
        ring_ckks.sum_digits(ctx, [good, good.model_copy(update={"length": 11})])
    small = ts.context(ts.SCHEME_TYPE.CKKS, poly_modulus_degree=4096, coeff_mod_bit_sizes=[40, 40])
    small.global_scale = 2.0**15
    for foreign in (b"not a ciphertext", ts.ckks_vector(small, [1.0, 2.0]).serialize(), good.chunks[0][: len(good.chunks[0]) // 2]):
        with pytest.raises((ValueError, RuntimeError)):
            ring_ckks.sum_digits(ctx, [good, good.model_copy(update={"chunks": [foreign]})])
