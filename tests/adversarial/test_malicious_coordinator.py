"""Each attack a coordinator can make on a node, and the node's defence. Every test plays the
attacker against real node agents; each is refused or yields nothing, the refusal is in the
node's lineage, and no canary customer or held-out series reaches the coordinator."""

from __future__ import annotations

import json

import numpy as np
import pytest

from common import evaluation
from common.he import create_secret_context, encrypt_vector
from common.refusals import REASONS
from common.wire import DPSettings, HESettings, UpdatePayload
from coordinator.strategy import SecureFedAvg
from lineage import EventKind
from node_agent.report import report_path
from tests.adversarial.conftest import canaries, small_job


def _ckks(values, ctx) -> UpdatePayload:
    enc = encrypt_vector(ctx, np.asarray(values, dtype=float))
    return UpdatePayload(scheme="CKKS", length=enc.length, chunks=enc.chunks)


def _round(alliance, job, rnd=1, model=None, contributors=None):
    """One honest-looking round: every branch trains, the coordinator sums what came back."""
    replies = [alliance.train(b, job, rnd, model, contributors) for b in alliance.configs]
    assert all(r.status == "ok" for r in replies), [r.code for r in replies]
    return SecureFedAvg(job=job, public_context=alliance.public).aggregate_train(replies), replies


def test_an_encrypted_job_never_takes_or_sends_plaintext(alliance):
    """HE downgrade: a job that turns encryption off, or a plaintext model in an encrypted job."""
    branch = next(iter(alliance.configs))
    reply = alliance.train(branch, small_job(job_id="downgrade", he=HESettings(enabled=False)), 1)
    assert reply.status == "refused" and reply.code == "encryption-required" and reply.update is None
    assert alliance.refusals(branch, "encryption-required")
    # mid-job: admitted encrypted, then the coordinator switches encryption off
    job = small_job()
    aggregate, _ = _round(alliance, job)
    plain = alliance.train(branch, job.model_copy(update={"he": HESettings(enabled=False)}), 2)
    assert plain.code == "encryption-required" and plain.update is None
    # a plaintext model in the encrypted job: a hand-made model is never decrypted into training
    model = UpdatePayload.plain(np.ones(aggregate.payload.length))
    crafted = alliance.train(branch, job, 2, model, aggregate.contributors)
    assert crafted.code == "encryption-required" and crafted.update is None
    alliance.assert_nothing_leaked(canaries())


def test_evaluation_sends_no_series_and_a_changed_spec_extracts_nothing(alliance):
    """Evaluate extraction: replies carry only an encrypted metric vector; a coordinator that
    re-sends the job with lags 36 and holdout 24 (to read the whole history) is refused."""
    job = small_job()
    aggregate, _ = _round(alliance, job)
    evals = {b: alliance.evaluate(b, job, aggregate.payload, aggregate.contributors) for b in alliance.configs}
    assert all(r.status == "ok" and r.metrics.scheme == "CKKS" and r.metrics.length == evaluation.LENGTH for r in evals.values())
    body = json.loads(evals[next(iter(evals))].model_dump_json(exclude={"metrics"}))
    assert not {"actual", "forecast", "months", "mase", "smape"} & set(body)
    branch = next(iter(alliance.configs))
    actual = json.loads(report_path(alliance.configs[branch], job.job_id).read_text())["actual"]  # on the node only
    greedy = job.model_copy(update={"lags": 36, "holdout": 24})
    again = alliance.evaluate(branch, greedy, aggregate.payload, aggregate.contributors)
    assert again.code == "job-changed" and again.metrics is None
    assert "lags" in alliance.refusals(branch, "job-changed")[0].details["reason"]
    # evaluations are capped per job (node.json limits.max_evaluations = 2 here)
    assert alliance.evaluate(branch, job, aggregate.payload, aggregate.contributors).status == "ok"
    capped = alliance.evaluate(branch, job, aggregate.payload, aggregate.contributors)
    assert capped.code == "evaluation-limit"
    series = ", ".join(f"{v:g}" for v in actual).encode()
    alliance.assert_nothing_leaked(canaries() + [series, json.dumps(actual).encode()])


@pytest.mark.parametrize("change", [
    {"dp": DPSettings(delta=5e-5)}, {"batch_size": 4}, {"local_epochs": 5}, {"rounds": 3}, {"horizon": 3},
])
def test_a_job_cannot_be_changed_mid_run(alliance, change):
    """δ, batch size, epochs, rounds or horizon changed after admission: refused, nothing spent."""
    branch = next(iter(alliance.configs))
    job = small_job()
    first = alliance.train(branch, job, 1)
    assert first.status == "ok"
    changed = alliance.train(branch, job.model_copy(update=change), 2)
    assert changed.code == "job-changed" and changed.update is None
    spend = alliance.agent(branch).ledger.get("sales", job.job_id)
    assert 0 < spend.epsilon <= spend.planned_epsilon and spend.delta == job.dp.delta
    assert len(spend.history) == 1  # the changed instruction trained nothing


def test_a_replayed_round_gets_the_same_bytes_and_other_replays_are_refused(alliance):
    branch = next(iter(alliance.configs))
    job = small_job()
    first = alliance.train(branch, job, 1)
    assert first.status == "ok"
    replay = alliance.train(branch, job, 1)  # the very same instruction: what a coordinator that crashed sends
    assert replay.update == first.update and replay.signature == first.signature  # nothing new in it
    other = alliance.train(branch, job, 1, model=first.update, contributors={branch: first.update.digest()})
    extra = alliance.train(branch, job, 3)
    assert other.code == "replay" and extra.code == "replay"  # round 1 from another model; a round past the job
    assert other.update is None and extra.update is None
    assert len(alliance.refusals(branch, "replay")) == 2
    assert len(alliance.agent(branch).ledger.get("sales", job.job_id).history) == 1  # one round, spent once
    sent = alliance.agent(branch).lineage.events(job_id=job.job_id, kind=EventKind.EMISSION)
    assert [e.details.get("sent_again", False) for e in sent if e.details["status"] == "ok"] == [False, True]


def test_a_one_node_aggregate_is_not_decrypted(alliance):
    """One node's update presented as the global model: alone, or padded with made-up names."""
    job = small_job()
    aggregate, replies = _round(alliance, job)
    victim, target = replies[0], replies[1].branch_id
    alone = alliance.train(target, job, 2, victim.update, {victim.branch_id: victim.update.digest()})
    assert alone.code == "aggregate-rejected" and "min_contributors" in alliance.refusals(target, "aggregate-rejected")[0].details["reason"]
    other = replies[2]  # a refused instruction uses up the round at that node, so the next lie goes elsewhere
    padded = {victim.branch_id: victim.update.digest(), other.branch_id: other.update.digest(), "GHOST1": "0" * 64}
    lie = alliance.train(other.branch_id, job, 2, victim.update, padded)
    assert lie.code == "aggregate-rejected" and lie.update is None
    assert "counts" in alliance.refusals(other.branch_id, "aggregate-rejected")[-1].details["reason"]


def test_an_aggregate_without_this_node_is_not_decrypted(alliance):
    job = small_job()
    aggregate, replies = _round(alliance, job)
    target = replies[0].branch_id
    others = [r for r in replies[1:]]
    summed = SecureFedAvg(job=job, public_context=alliance.public).aggregate_train(others)
    forged = {**summed.contributors, target: "f" * 64}
    reply = alliance.train(target, job, 2, summed.payload, forged)
    assert reply.code == "aggregate-rejected"
    assert "does not list an update this node sent" in alliance.refusals(target, "aggregate-rejected")[-1].details["reason"]


def test_crafted_and_foreign_ciphertexts_are_not_decrypted_into_use(alliance):
    """A ciphertext under another key, an inflated weight, and a crafted model norm."""
    job = small_job()
    aggregate, replies = _round(alliance, job)
    target = replies[0].branch_id
    length = aggregate.payload.length
    foreign = _ckks(np.ones(length), create_secret_context())  # same parameters, another key
    reply = alliance.train(target, job, 2, foreign, aggregate.contributors)
    assert reply.code == "aggregate-rejected" and reply.update is None
    # the coordinator holds the public context, so it can encrypt anything: an inflated weight...
    n = len(aggregate.contributors)
    heavy = np.concatenate([np.zeros(length - 2), [n * job.bounds.max_weight * 10.0, n]])
    agent2 = alliance.train(replies[1].branch_id, job, 2, _ckks(heavy, alliance.public), aggregate.contributors)
    assert agent2.code == "aggregate-rejected"
    # ...or a model far outside the job's norm bound, dressed with the right count and weight
    huge = np.concatenate([np.full(length - 2, 1e3), [1.0, n]])
    agent3 = alliance.train(replies[2].branch_id, job, 2, _ckks(huge, alliance.public), aggregate.contributors)
    assert agent3.code == "aggregate-rejected"
    details = [alliance.refusals(r.branch_id, "aggregate-rejected")[-1].details["reason"] for r in replies[:3]]
    assert "ciphertext" in details[0] or "counts" in details[0] or "weight" in details[0] or "norm" in details[0]
    assert "weight" in details[1] and "norm" in details[2]


def test_release_decrypts_only_a_sum_the_node_can_vouch_for(alliance):
    """Crafted ciphertexts for decryption: the decrypting node takes only contributions signed
    by distinct branches it knows, for this job, its own among them as sent, and adds them up
    itself. A training update relabelled as metrics, one branch's vector padded with encrypted
    counts (the coordinator holds the public key), a vector listed twice, too few contributions,
    and a contribution from another job are refused; the honest sum is released."""
    job = small_job()
    aggregate, replies = _round(alliance, job)
    evals = [alliance.evaluate(b, job, aggregate.payload, aggregate.contributors) for b in alliance.configs]
    branches = list(alliance.configs)
    decrypter = branches[1]

    def refused(contributions, fragment):
        got = alliance.release(decrypter, job, contributions)
        assert got.code == "aggregate-rejected" and not got.values, got
        assert fragment in alliance.refusals(decrypter, "aggregate-rejected")[-1].details["reason"]

    relabelled = evals[0].model_copy(update={"metrics": UpdatePayload(
        scheme="CKKS", length=evaluation.LENGTH, chunks=replies[0].update.chunks)})
    refused([relabelled, *evals[1:]], "not signed")
    padding = np.zeros(evaluation.LENGTH)
    padding[evaluation.BLOCK - 1] = padding[2 * evaluation.BLOCK - 1] = 2.0  # "two more contributors", all young
    enc = encrypt_vector(alliance.public, padding)
    padded_chunks = [(a + b).serialize() for a, b in zip(
        [__import__("tenseal").ckks_vector_from(alliance.public, c) for c in evals[0].metrics.chunks],
        [__import__("tenseal").ckks_vector_from(alliance.public, c) for c in enc.chunks])]
    padded = evals[0].model_copy(update={"metrics": evals[0].metrics.model_copy(update={"chunks": padded_chunks})})
    refused([padded, evals[1], evals[2]], "not signed")
    refused([evals[1], evals[1], evals[0]], "listed twice")
    refused([evals[0], evals[1]], "min_contributors")
    refused([evals[0], evals[2], evals[3]], "do not hold the metric vector this node sent")
    other_job = evals[2].model_copy(update={"job_id": "another-job"})
    refused([evals[0], evals[1], other_job], "not sent for this job")
    refused(evals, "did not agree to this contributor set")  # the right set, but nobody has signed it yet
    commitments = alliance.commit_all(job, evals)
    assert set(commitments) == set(branches)
    honest = alliance.release(branches[2], job, evals, commitments=commitments)
    assert honest.status == "ok" and len(honest.values) == evaluation.LENGTH
    figures = evaluation.alliance_figures(honest.values)
    assert figures["all"]["nodes"] == 4 and figures["all"]["federated"]["mase"] > 0
    alliance.assert_nothing_leaked(canaries())


def test_a_claimed_domestic_destination_does_not_lift_cross_border_rules(alliance):
    """A node abroad (its policy's jurisdiction is not the coordinator's) is sent a job that
    claims the results stay in the node's own country: the node goes by its node.json."""
    abroad = [b for b, c in alliance.configs.items() if "jurisdiction: JP" not in c.policy_path.read_text()]
    if not abroad:
        pytest.skip("no foreign branch among the four longest histories of this alliance")
    branch = abroad[0]
    home = next(line.split(":")[1].strip() for line in alliance.configs[branch].policy_path.read_text().splitlines()
                if line.startswith("jurisdiction:"))
    reply = alliance.train(branch, small_job(job_id="claim-home", destination=home), 1)
    assert reply.code == "destination" and reply.update is None
    assert alliance.refusals(branch, "destination")


def test_purposes_roles_and_caps_are_the_nodes_not_the_jobs(alliance):
    branch = next(iter(alliance.configs))
    assert alliance.train(branch, small_job(job_id="p", purpose="marketing"), 1).code == "purpose"
    assert alliance.train(branch, small_job(job_id="r", recipient_role="sales"), 1).code == "recipient"
    assert alliance.train(branch, small_job(job_id="e", dp=DPSettings(target_epsilon=50)), 1).code == "job-limits"
    assert alliance.train(branch, small_job(job_id="n", rounds=400), 1).code == "job-limits"


def test_refusals_say_why_without_numbers_that_reveal_size(alliance):
    """A δ too large for the branch's size: the coordinator gets a code and a fixed phrase;
    the numbers ("1/58 training windows") stay in the node's lineage."""
    from node_agent.config import write_node_config

    branch = next(iter(alliance.configs))
    config = alliance.configs[branch]  # a node that lets δ up to 0.9 through admission, to reach the size check
    write_node_config(config.model_copy(update={"limits": config.limits.model_copy(update={"max_delta": 0.9})}))
    reply = alliance.train(branch, small_job(job_id="big-delta", dp=DPSettings(delta=0.5)), 1)
    assert reply.code == "privacy-plan" and reply.reason == REASONS["privacy-plan"]
    assert not any(ch.isdigit() for ch in reply.reason)
    detail = alliance.refusals(branch, "privacy-plan")[0].details["reason"]
    assert "training windows" in detail and any(ch.isdigit() for ch in detail)


def test_a_branch_names_its_own_accuracy_only_when_its_policy_says_so(alliance):
    job = small_job()
    aggregate, _ = _round(alliance, job)
    quiet, opted = list(alliance.configs)[:2]
    policy = alliance.configs[opted].policy_path
    policy.write_text(policy.read_text() + "\nrelease_branch_metrics: true\n")
    silent = alliance.evaluate(quiet, job, aggregate.payload, aggregate.contributors)
    named = alliance.evaluate(opted, job, aggregate.payload, aggregate.contributors)
    assert silent.status == "ok" and silent.branch_scores is None
    assert named.status == "ok" and set(named.branch_scores) == set(evaluation.ARMS)
    assert named.branch_scores["federated"]["mase"] > 0


def test_one_contributor_set_per_job_so_releases_cannot_be_differenced(alliance):
    """Sums over ABC and ABD would give C - D: every contributor signs one set per job, and a
    node releases only a set that every contributor signed."""
    job = small_job()
    aggregate, _ = _round(alliance, job)
    evals = {b: alliance.evaluate(b, job, aggregate.payload, aggregate.contributors) for b in alliance.configs}
    a, b, c, d = list(evals)
    abc, abd = [evals[a], evals[b], evals[c]], [evals[a], evals[b], evals[d]]
    commitments = alliance.commit_all(job, abc)
    assert set(commitments) == {a, b, c}
    second = alliance.release(a, job, abd, stage="commit")
    assert second.code == "aggregate-rejected" and second.commitment is None
    assert "one set per job" in alliance.refusals(a, "aggregate-rejected")[-1].details["reason"]
    d_alone = alliance.release(d, job, abd, stage="commit")  # d has signed nothing yet: it signs abd...
    assert d_alone.status == "ok"
    other = alliance.release(d, job, abd, commitments={d: d_alone.commitment, a: commitments[a], b: commitments[b]})
    assert other.code == "aggregate-rejected" and not other.values  # ...but a and b signed abc, not abd
    first = alliance.release(c, job, abc, commitments=commitments)
    assert first.status == "ok" and evaluation.alliance_figures(first.values)["all"]["nodes"] == 3


def test_delta_is_judged_before_any_read_so_probing_it_reveals_no_size(alliance):
    """Binary search over δ (refused as δ ≥ 1/records or not) would find a branch's number of
    training windows; the node's own max_delta refuses every such δ before data is touched."""
    branch = next(iter(alliance.configs))
    codes = {alliance.train(branch, small_job(job_id=f"probe-{i}", dp=DPSettings(delta=d)), 1).code
             for i, d in enumerate((0.5, 0.05, 0.02, 0.01, 1e-3))}
    assert codes == {"job-limits"}
    assert not alliance.agent(branch).lineage.events(kind=__import__("lineage").EventKind.DATA_READ)


def test_throw_away_jobs_are_capped_per_day(alliance):
    branch = next(iter(alliance.configs))
    config = alliance.configs[branch]
    from node_agent.config import write_node_config

    write_node_config(config.model_copy(update={"limits": config.limits.model_copy(update={"max_new_jobs_per_day": 2})}))
    codes = [alliance.train(branch, small_job(job_id=f"throwaway-{i}"), 1).code for i in range(3)]
    assert codes[:2] == [None, None] and codes[2] == "job-limits"
    assert "max_new_jobs_per_day" in alliance.refusals(branch, "job-limits")[-1].details["reason"]


def test_a_node_that_did_not_train_evaluates_only_a_sum_of_signed_updates(alliance):
    """A branch with no update of its own in the job (too young to train, or a fresh job made
    up by the coordinator) cannot recognise a sum by its own digest: it decrypts a model only by
    adding up, itself, enough updates signed by distinct branches for this job."""
    job = small_job()
    branches = list(alliance.configs)
    trained, young = branches[:3], branches[3]
    replies = [alliance.train(b, job, 1) for b in trained]
    aggregate = SecureFedAvg(job=job, public_context=alliance.public).aggregate_train(replies)

    def evaluate(contributions, contributors=None):
        instruction_contributors = aggregate.contributors if contributors is None else contributors
        from common.wire import EvaluateReply, TrainInstruction
        from node_agent.agent import NodeAgent

        instruction = TrainInstruction(job=job, round=job.rounds, global_model=aggregate.payload,
                                       contributors=instruction_contributors, contributions=contributions)
        return alliance._send(young, instruction, TrainInstruction, NodeAgent.evaluate, EvaluateReply)

    assert evaluate([]).code == "aggregate-rejected"  # no updates to vouch with: nothing decrypted
    ts = __import__("tenseal")
    doubled = [(ts.ckks_vector_from(alliance.public, c) + ts.ckks_vector_from(alliance.public, c)).serialize()
               for c in replies[0].update.chunks]  # one branch's update counted twice
    padded_update = replies[0].update.model_copy(update={"chunks": doubled})
    forged = [replies[0].model_copy(update={"update": padded_update}), *replies[1:]]
    assert evaluate(forged).code == "aggregate-rejected"
    assert "not signed" in alliance.refusals(young, "aggregate-rejected")[-1].details["reason"]
    assert evaluate(replies[:2]).code == "aggregate-rejected"  # fewer than min_contributors
    other_job = [r.model_copy(update={"job_id": "elsewhere"}) for r in replies]
    assert evaluate(other_job).code == "aggregate-rejected"
    honest = evaluate(replies)
    assert honest.status == "ok" and honest.metrics is not None


def test_a_region_list_cannot_isolate_one_branch_by_difference(alliance):
    """The coordinator names the regions so that every branch but one shares a released region:
    the alliance's forecast total minus that region's would be the last branch's own forecast.
    The decrypting node withholds the region's block; the alliance total is still released."""
    from node_agent.config import write_node_config

    branches = list(alliance.configs)
    for i, branch in enumerate(branches):  # three dealerships in the north, one alone in the south
        write_node_config(alliance.configs[branch].model_copy(update={"region": "North" if i < 3 else "South"}))
    job = small_job(job_id="isolate", regions=["North", "South"])
    aggregate, _ = _round(alliance, job)
    evals = [alliance.evaluate(b, job, aggregate.payload, aggregate.contributors) for b in branches]
    assert all(e.status == "ok" for e in evals), [e.code for e in evals]
    released = alliance.release(branches[0], job, evals, commitments=alliance.commit_all(job, evals))
    assert released.status == "ok"
    totals = evaluation.alliance_figures(released.values, regions=job.regions, horizon=job.horizon)["totals"]
    assert totals["alliance"]["nodes"] == 4 and totals["North"] == {"nodes": 0} and totals["South"] == {"nodes": 0}
    alone = json.loads(report_path(alliance.configs[branches[3]], job.job_id).read_text())["outlook"]["point"]
    assert totals["alliance"]["point"] != pytest.approx(alone, abs=0.5)  # the total is four branches, not one


def test_a_launch_calendar_cannot_isolate_one_branch_by_difference(alliance):
    """The coordinator lists a launch in the held-out months of every region but one branch's:
    the alliance's figures minus the launch window's would be that branch's own. The decrypting
    node withholds the launch-window group; the alliance's figures are still released."""
    from common.calendar import parse_month
    from node_agent.config import write_node_config

    branches = list(alliance.configs)
    for i, branch in enumerate(branches):  # three dealerships in the north, one alone in the south
        write_node_config(alliance.configs[branch].model_copy(update={"region": "North" if i < 3 else "South"}))
    target = alliance.agent(branches[0]).holdout(small_job(job_id="calendar")).target  # the first held-out month
    year, month = divmod(target, 12)
    launch_month = f"{1970 + year:04d}-{month + 1:02d}"
    assert parse_month(launch_month) == target
    job = small_job(job_id="calendar", regions=["North", "South"],
                    launches=[{"line": "Solstice", "month": launch_month, "region": "North"}])
    aggregate, _ = _round(alliance, job)
    evals = [alliance.evaluate(b, job, aggregate.payload, aggregate.contributors) for b in branches]
    assert all(e.status == "ok" for e in evals), [e.code for e in evals]
    released = alliance.release(branches[0], job, evals, commitments=alliance.commit_all(job, evals))
    assert released.status == "ok"
    figures = evaluation.alliance_figures(released.values, regions=job.regions, horizon=job.horizon)
    assert figures["all"]["nodes"] == 4
    assert figures["launch_window"]["nodes"] == 0  # 3 ≥ min_contributors, but all minus it is one branch


def _by_hand(alliance, branch):
    from node_agent.config import write_node_config

    write_node_config(alliance.configs[branch].model_copy(update={"approvals": "by_hand"}))


def test_a_node_that_approves_by_hand_trains_only_on_the_spec_its_owner_approved(alliance):
    """The coordinator says the job was approved (it may claim anything): the node goes by its
    own book. Unapproved: refused before any read. Approved, then the coordinator swaps in
    another spec under the same id (more rounds, a weaker δ): refused again."""
    from lineage import EventKind
    from node_agent.approvals import APPROVED

    branch = next(iter(alliance.configs))
    _by_hand(alliance, branch)
    job = small_job(job_id="by-hand")
    unapproved = alliance.train(branch, job, 1)
    assert unapproved.status == "refused" and unapproved.code == "not-approved" and unapproved.update is None
    agent = alliance.agent(branch)
    assert not agent.lineage.events(kind=EventKind.DATA_READ, job_id="by-hand")
    agent.owner.decide(job, APPROVED, "Q3 forecast, agreed with head office", agent.signer)
    assert alliance.train(branch, job, 1).status == "ok"
    swapped = alliance.train(branch, job.model_copy(update={"rounds": 3, "dp": DPSettings(delta=1e-4)}), 2)
    assert swapped.code == "not-approved" and swapped.update is None
    assert "approved with spec" in alliance.refusals(branch, "not-approved")[-1].details["reason"]


def test_a_denial_by_hand_stands_even_where_standing_rules_would_approve(alliance):
    from node_agent.approvals import DENIED, AlreadyDecided

    branch = next(iter(alliance.configs))
    job = small_job(job_id="denied-here")
    agent = alliance.agent(branch)
    agent.owner.decide(job, DENIED, "not during the dealer audit", agent.signer)
    with pytest.raises(AlreadyDecided):
        agent.owner.decide(job, "approved", "changed my mind", agent.signer)
    reply = alliance.train(branch, job, 1)  # the node's standing rules take this job; its owner said no
    assert reply.code == "owner-denied" and reply.update is None
    assert alliance.refusals(branch, "owner-denied")[0].details["reason"].endswith("not during the dealer audit")
    assert alliance.train(next(b for b in alliance.configs if b != branch), job, 1).status == "ok"


def test_an_update_is_sent_again_only_while_the_job_still_stands_here(alliance):
    """Sending a lost update again is no way around the node's later word: once its owner
    denies the job, or the coordinator alters its spec, the very same request is refused."""
    from lineage import Signer
    from node_agent.approvals import DENIED, OwnerDecisions

    branch = next(iter(alliance.configs))
    config = alliance.configs[branch]
    job = small_job(job_id="withdrawn")
    first = alliance.train(branch, job, 1)
    assert first.status == "ok"
    altered = alliance.train(branch, job.model_copy(update={"batch_size": 8}), 1)
    assert altered.code == "job-changed" and altered.update is None
    OwnerDecisions(config.ledger_url).decide(job, DENIED, "withdrawn after round 1",
                                             Signer.load_or_create(config.branch_id, config.lineage_key_dir))
    again = alliance.train(branch, job, 1)
    assert again.code == "owner-denied" and again.update is None


def test_a_study_split_into_small_jobs_cannot_pass_the_nodes_monthly_epsilon(alliance):
    """A coordinator that splits one study into many small jobs, each under the per-job cap,
    meets the node's standing ε-per-month rule: the job past it is refused before any read."""
    from node_agent.config import write_node_config

    branch = next(iter(alliance.configs))
    config = alliance.configs[branch]
    write_node_config(config.model_copy(update={"limits": config.limits.model_copy(update={"max_epsilon_per_month": 5.0})}))
    first = alliance.train(branch, small_job(job_id="slice-1", dp=DPSettings(target_epsilon=3.0)), 1)
    second = alliance.train(branch, small_job(job_id="slice-2", dp=DPSettings(target_epsilon=3.0)), 1)
    assert first.status == "ok" and second.code == "privacy-budget" and second.update is None
    assert "max_epsilon_per_month" in alliance.refusals(branch, "privacy-budget")[0].details["reason"]
    agent = alliance.agent(branch)
    assert not agent.lineage.events(job_id="slice-2", kind=EventKind.DATA_READ)
