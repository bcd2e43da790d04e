"""The ServerApp that `flwr run .` loads: a new job per Flower run, and a run that trains
nothing fails instead of ending "successfully" with an empty result."""

from __future__ import annotations

import pytest
from flwr.app import Context, RecordDict

from coordinator import server_app
from coordinator.rounds import JobResult, RoundReport


def _context(run_id: int, **config) -> Context:
    return Context(run_id=run_id, node_id=0, node_config={}, state=RecordDict(), run_config={"job-id": "", **config})


def test_each_flwr_run_is_a_new_job(monkeypatch, tmp_path):
    jobs = []
    monkeypatch.setattr(server_app, "run_job", lambda grid, job, paths, **kw: jobs.append(job) or JobResult(
        job=job, final_model_digest="ab" * 32))
    for run_id in (101, 102):
        server_app.main(None, _context(run_id, **{"coordinator-dir": str(tmp_path)}))
    assert [j.job_id for j in jobs] == ["flwr-run-101", "flwr-run-102"]  # the second run is not a replay of the first
    server_app.main(None, _context(103, **{"coordinator-dir": str(tmp_path), "job-id": "q3-forecast"}))
    assert jobs[-1].job_id == "q3-forecast"  # a job the caller names keeps its name


def test_a_run_every_node_refused_fails_with_their_codes(monkeypatch, tmp_path):
    def nothing(grid, job, paths, **kw):
        return JobResult(job=job, rounds=[RoundReport(round=1, contributors=[], refused={"B1": "replay", "B2": "purpose"})])

    monkeypatch.setattr(server_app, "run_job", nothing)
    with pytest.raises(RuntimeError, match="job flwr-run-7 trained nothing: every node refused every round \\(purpose, replay\\)"):
        server_app.main(None, _context(7, **{"coordinator-dir": str(tmp_path)}))


def test_the_service_sends_the_exact_spec_the_nodes_approved():
    import base64

    from common.wire import JobSpec

    spec = JobSpec(job_id="q3", rounds=3, regions=["Kanto"], campaigns=["2026-06"])
    carried = base64.urlsafe_b64encode(spec.model_dump_json().encode()).decode()
    job = server_app.job_from_run_config({"job-spec": carried, "job-id": "", "rounds": 8}, 9)
    assert job.spec_hash() == spec.spec_hash()  # what a node approved by hand is what it is sent
