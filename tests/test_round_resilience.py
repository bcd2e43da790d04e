"""The round loop in real life: a node that goes away mid-job does not stall its round, and a
coordinator that dies mid-job resumes after the last closed round, with no node spending any
round's privacy twice (the nodes' own ledgers are the witness, not the coordinator's word).

Real node agents, real CKKS and Opacus, through the ClientApp's handler (`tests.loopback_grid`).
"""

from __future__ import annotations


import pytest

from common.wire import JobSpec
from coordinator import checkpoints
from coordinator.rounds import run_job
from lineage import EventKind, LineageStore
from node_agent.admission import AdmissionBook
from node_agent.ledger import PrivacyLedger
from tests.loopback_grid import LoopbackGrid
from tests.service_helpers import longest_histories


@pytest.fixture()
def alliance(tmp_path, small_alliance, monkeypatch):
    configs, paths = longest_histories(tmp_path, small_alliance, 3, approvals="standing")
    monkeypatch.setenv("SOVEREIGN_NODES_ROOT", str(tmp_path / "nodes"))  # what a simulation run before may have left set
    return configs, paths, LoopbackGrid(tmp_path / "nodes")


JOB = JobSpec(job_id="resilient", rounds=4, local_epochs=1)


class Crash(Exception):
    """The coordinator's process dies here."""


class CrashAfter:
    """An observer that kills the round loop once round `rnd` has closed (or, with
    `mid_round`, once the first reply of round `rnd` came in)."""

    def __init__(self, rnd: int, *, mid_round: bool = False) -> None:
        self.rnd, self.mid_round = rnd, mid_round

    def round_started(self, rnd, total_rounds, nodes) -> None: ...

    def reply_received(self, rnd, message) -> None:
        if self.mid_round and rnd == self.rnd:
            raise Crash(rnd)

    def round_finished(self, report) -> None:
        if not self.mid_round and report.round == self.rnd:
            raise Crash(report.round)


def spent_rounds(config, job: JobSpec) -> tuple[int, int, list[int]]:
    """(accountant steps recorded, last round admitted, rounds trained per lineage) at one node."""
    spend = PrivacyLedger(config.ledger_url).get(config.dataset, job.job_id)
    admitted = AdmissionBook(config.ledger_url).get(job.job_id)
    trained = [e.round for e in LineageStore(config.lineage_url).events(job_id=job.job_id, kind=EventKind.TRAINING)]
    return len(spend.history), admitted.last_round, trained


def test_a_coordinator_killed_after_round_2_resumes_at_round_3_and_no_round_is_spent_twice(alliance):
    configs, paths, grid = alliance
    with pytest.raises(Crash):
        run_job(grid, JOB, paths, observer=CrashAfter(2), min_contributors=2)
    assert checkpoints.load(paths.root, JOB).closed_rounds == 2
    grid.sent.clear()
    result = run_job(grid, JOB, paths, min_contributors=2)  # started again on the same job
    assert [r.round for r in result.rounds] == [1, 2, 3, 4]
    assert {rnd for _, kind, rnd in grid.sent if kind == "train"} == {3, 4}  # rounds 1 and 2 were not asked again
    assert all(len(r.contributors) == 3 for r in result.rounds), [r.refused for r in result.rounds]
    assert result.final_model_digest and result.metrics
    for c in configs:
        assert spent_rounds(c, JOB) == (4, 4, [1, 2, 3, 4]), c.branch_id
    resumed = [e for e in LineageStore(paths.lineage_url).events(job_id=JOB.job_id, kind=EventKind.JOB_STATE)
               if e.details.get("state") == "resumed"]
    assert [e.round for e in resumed] == [2]


def test_a_coordinator_killed_mid_round_gets_the_updates_it_lost_again_and_no_node_trains_twice(alliance):
    configs, paths, grid = alliance
    with pytest.raises(Crash):  # every node trained round 3 and sent its update; the coordinator died holding them
        run_job(grid, JOB, paths, observer=CrashAfter(3, mid_round=True), min_contributors=2)
    lost = {c.branch_id: AdmissionBook(c.ledger_url).get(JOB.job_id).last_round for c in configs}
    assert set(lost.values()) == {3}
    result = run_job(grid, JOB, paths, min_contributors=2)
    assert [len(r.contributors) for r in result.rounds] == [3, 3, 3, 3]  # round 3's updates came again, untrained
    for c in configs:
        assert spent_rounds(c, JOB) == (4, 4, [1, 2, 3, 4]), c.branch_id
        again = [e for e in LineageStore(c.lineage_url).events(job_id=JOB.job_id, kind=EventKind.EMISSION)
                 if e.details.get("sent_again")]
        assert [e.round for e in again] == [3]


def test_a_checkpoint_of_another_spec_is_never_resumed(alliance):
    configs, paths, grid = alliance
    with pytest.raises(Crash):
        run_job(grid, JOB, paths, observer=CrashAfter(1), min_contributors=2)
    altered = JOB.model_copy(update={"rounds": 6})
    with pytest.raises(checkpoints.CheckpointError, match="another spec"):
        run_job(grid, altered, paths)


def test_a_node_gone_mid_job_does_not_stall_the_round_and_the_rest_renormalise(alliance):
    configs, paths, grid = alliance

    class Drop:
        def round_started(self, rnd, total_rounds, nodes):
            if rnd == 2:
                grid.gone.add(0)  # the first node's SuperNode dies before round 2's message reaches it

        def reply_received(self, rnd, message): ...
        def round_finished(self, report): ...

    result = run_job(grid, JOB, paths, observer=Drop(), min_contributors=2, reply_timeout=30)
    gone = configs[0].branch_id
    assert gone in result.rounds[0].contributors
    for report in result.rounds[1:]:
        assert sorted(report.contributors) == sorted(c.branch_id for c in configs[1:])
        assert any("node error" in why for why in report.refused.values())
    assert result.final_model_digest and result.metrics  # the two left evaluated and released
    aggregations = LineageStore(paths.lineage_url).events(job_id=JOB.job_id, kind=EventKind.AGGREGATION)
    assert [sorted(e.details["contributors"]) for e in aggregations][1:] == [sorted(c.branch_id for c in configs[1:])] * 3


def test_a_round_below_the_jobs_minimum_leaves_the_model_unchanged(alliance):
    configs, paths, grid = alliance
    grid.gone.update({0, 1})
    result = run_job(grid, JobSpec(job_id="thin", rounds=1, local_epochs=1), paths, min_contributors=2)
    assert result.rounds[0].contributors == [] and result.final_model_digest is None
    assert any("below the job's minimum of 2" in why for why in result.rounds[0].refused.values())
