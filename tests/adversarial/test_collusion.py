"""The coordinator and one node pool everything they hold and try to read another node's update.

They hold: the job's CKKS secret key (every participant does), the colluding node's round
secrets and the share bundles sent to it, every ciphertext and envelope the coordinator
relayed, the mask public keys, and the shares revealed to unmask the round. The target's
update must stay hidden (what they recover is uncorrelated with it) while the aggregate
decrypts within 1e-3. A control gives the same attackers a target whose only mask neighbour
is the colluder: then the same attack reads it, so the test fails if the defence goes.
"""

from __future__ import annotations

import numpy as np
import pytest

from common import envelope, ring_ckks, secagg
from common.he import load_context, public_context_bytes

LENGTH = 8192
THRESHOLD = 3


def _one_round(ids, graph, updates, plan, threshold=THRESHOLD):
    """One honest round, as the coordinator relays it: every node's advert, sealed share
    bundles, masked and encrypted update, and the shares revealed for unmasking."""
    context = secagg.mask_context("job-collusion", 2)
    job_ctx = ring_ckks.create_job_context(plan.scale_bits)
    secrets = {i: secagg.RoundSecrets.generate() for i in ids}
    mask_publics = {i: s.mask_public() for i, s in secrets.items()}
    share_publics = {i: s.share_public() for i, s in secrets.items()}
    envelopes = {}  # (sender, recipient) -> sealed bundle: all the coordinator sees of the shares
    for i in ids:
        for holder, bundle in secagg.split_seeds(secrets[i], threshold, sorted(graph[i])).items():
            envelopes[i, holder] = envelope.pair_seal(secrets[i].share_key, share_publics[holder], bundle,
                                                      context + f"|{i}|{holder}".encode())
    sent = {i: ring_ckks.encrypt_digits(job_ctx, secagg.to_digits(secagg.masked_update(
        secagg.quantise(updates[i], plan), i, secrets[i], {j: mask_publics[j] for j in graph[i]}, context, plan), plan))
        for i in ids}
    # unmasking: every holder opens the bundles sent to it and reveals the self-mask shares
    revealed = {i: [] for i in ids}
    for (owner, holder), sealed in envelopes.items():
        bundle = envelope.pair_open(secrets[holder].share_key, share_publics[owner], sealed,
                                    context + f"|{owner}|{holder}".encode())
        revealed[owner].append(secagg.reveal(bundle, "self"))
    self_seeds = {i: secagg.combine(shares, threshold) for i, shares in revealed.items()}
    fix = secagg.correction(LENGTH, plan, context, self_seeds=self_seeds, dropped_seeds={}, mask_publics=mask_publics,
                            graph=graph)
    public = load_context(public_context_bytes(job_ctx))
    aggregate = ring_ckks.sum_digits(public, list(sent.values()), addend=secagg.to_digits(fix, plan))
    return dict(context=context, job_ctx=job_ctx, secrets=secrets, mask_publics=mask_publics,
                share_publics=share_publics, envelopes=envelopes, sent=sent, self_seeds=self_seeds, aggregate=aggregate)


def _attack(round_, colluders, target, graph, plan):
    """What the coordinator and `colluders` compute for `target`: decrypt its ciphertext with
    the job key, remove its self mask (revealed to unmask the round) and every pairwise mask
    the colluder can derive, and dequantise what is left."""
    y = secagg.from_digits(ring_ckks.decrypt_digits(round_["job_ctx"], round_["sent"][target]), plan)
    y = (y - secagg.expand(secagg.self_mask_key(round_["self_seeds"][target], round_["context"]), LENGTH, plan)) & plan.mask
    for peer in graph[target]:
        if peer not in colluders:
            continue  # an honest peer's mask: neither the colluders nor the coordinator can derive it
        mine = secagg.mask_private_key(round_["secrets"][peer].mask_seed)
        m = secagg.expand(secagg.pair_mask_key(mine, round_["mask_publics"][target], peer, target, round_["context"]),
                          LENGTH, plan)
        y = (y - m if secagg.pair_sign(target, peer) > 0 else y + m) & plan.mask
    return secagg.dequantise(y, plan)


@pytest.fixture(scope="module")
def alliance():
    ids = [f"b{i:02d}" for i in range(6)]
    rng = np.random.default_rng(11)
    updates = {i: rng.normal(0, 0.3, LENGTH) * rng.integers(5, 60) for i in ids}
    return ids, updates, secagg.plan_ring(len(ids), 8192.0)


def test_coordinator_with_one_node_learns_nothing_of_another_update(alliance):
    ids, updates, plan = alliance
    graph = secagg.mask_graph(ids, None, b"seed")
    round_ = _one_round(ids, graph, updates, plan)
    colluder, target = "b00", "b03"
    recovered = _attack(round_, {colluder}, target, graph, plan)
    r = np.corrcoef(recovered, updates[target])[0, 1]
    assert abs(r) < 0.05, f"recovered values correlate with the target's update (r = {r:.3f})"
    # nothing the colluder was sent opens for it except its own envelopes
    with pytest.raises(envelope.EnvelopeError):
        envelope.pair_open(round_["secrets"][colluder].share_key, round_["share_publics"]["b01"],
                           round_["envelopes"]["b01", "b03"], round_["context"] + b"|b01|b03")
    total = secagg.dequantise(secagg.from_digits(ring_ckks.decrypt_digits(round_["job_ctx"], round_["aggregate"]), plan), plan)
    assert np.abs(total - sum(updates.values())).max() < 1e-3


def test_control_the_same_attack_reads_a_node_whose_mask_neighbours_all_collude(alliance):
    """On a degree-2 ring, with both of b03's neighbours colluding, the same attack recovers
    b03's update: the test above fails if the honest node's masks are taken away."""
    ids, updates, plan = alliance
    graph = secagg.mask_graph(ids, 2, b"seed")
    round_ = _one_round(ids, graph, updates, plan, threshold=2)
    recovered = _attack(round_, set(graph["b03"]), "b03", graph, plan)
    assert np.abs(recovered - updates["b03"]).max() <= 2.0 ** -plan.frac_bits
