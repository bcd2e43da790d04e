"""A job through the coordinator service from request to released results, on real nodes.

Three dealerships' nodes approve by hand (node.json `approvals: by_hand`): two approve, one
denies, each in its own book and signed; the service runs the job on Flower's simulation
runtime over the two that approved, and stores what they released. The denying node read
nothing, and its denial is in both lineages.
"""

from __future__ import annotations

import time

import pytest
from fastapi.testclient import TestClient

from common.wire import JobSpec
from coordinator.api.app import create_account, create_app
from coordinator.resources import NodeRecord, Role
from coordinator.settings import CoordinatorSettings
from lineage import EventKind, LineageStore, Signer
from lineage.signing import public_pem
from node_agent.approvals import OwnerDecisions
from sovereign.service_runner import SimulationRunner
from tests.service_helpers import longest_histories


@pytest.fixture()
def alliance(tmp_path, small_alliance):
    return longest_histories(tmp_path, small_alliance, 3)  # all three could train; each approves by hand


def test_two_approve_one_denies_and_the_service_runs_the_job_on_the_two(tmp_path, alliance):
    configs, coordinator = alliance
    app = create_app(CoordinatorSettings(var=tmp_path / "var"),
                     runner=SimulationRunner(tmp_path / "nodes", coordinator.root, timeout=600))
    for c in configs:
        key = Signer.load_or_create(c.branch_id, c.lineage_key_dir).public_key
        app.state.store.add_node(NodeRecord(node_id=c.branch_id, public_key=public_pem(key), region=c.region))
    hq = {"Authorization": f"Bearer {create_account(app.state.store, 'hq', Role.ANALYST, None).token}"}
    it = {c.branch_id: {"Authorization": f"Bearer {create_account(app.state.store, f'it-{c.branch_id}', Role.BRANCH_IT, c.branch_id).token}"}
          for c in configs}
    with TestClient(app) as client:
        made = client.post("/jobs", headers=hq, json={"spec": {"job_id": "svc", "rounds": 1, "local_epochs": 1},
                                                      "nodes": [c.branch_id for c in configs], "min_contributors": 2})
        assert made.status_code == 201, made.text
        spec = JobSpec.model_validate(made.json()["spec"])
        for c, decision in zip(configs, ("approved", "approved", "denied")):
            c.privacy_dir.mkdir(parents=True, exist_ok=True)
            signature = OwnerDecisions(c.ledger_url).decide(spec, decision, f"{decision} by branch IT",
                                                            Signer.load_or_create(c.branch_id, c.lineage_key_dir))
            answered = client.post("/jobs/svc/decisions", headers=it[c.branch_id], json={
                "node_id": c.branch_id, "decision": decision, "reason": f"{decision} by branch IT", "signature": signature})
            assert answered.status_code == 200, answered.text
        assert client.post("/jobs/svc/start", headers=hq).json()["state"] == "running"
        deadline = time.monotonic() + 600
        while (job := client.get("/jobs/svc", headers=hq).json())["state"] == "running" and time.monotonic() < deadline:
            time.sleep(1)
    assert job["state"] == "completed", job["steps"][-1]
    approving = sorted(c.branch_id for c in configs[:2])
    assert job["results"]["rounds"][0]["contributors"] == approving
    assert f"contributors: {', '.join(approving)}" in job["steps"][-1]["reason"]
    assert job["results"]["accuracy"]["nodes"] == 2 and job["results"]["final_model_digest"]
    denier = configs[2]
    node_side = LineageStore(denier.lineage_url)
    assert not node_side.events(kind=EventKind.DATA_READ, job_id="svc")  # it was never asked, and read nothing
    assert [e.details["decision"] for e in app.state.lineage.events(kind=EventKind.JOB_DECISION)].count("denied") == 1


def test_stopping_a_running_job_stops_its_round_loop(tmp_path):
    """`stop` once only changed the record while the run went on; now the runner's process
    group is terminated, and the job stays stopped (its late failure does not overwrite it)."""
    import sys
    import threading

    nodes = tmp_path / "nodes"
    (nodes / "B1").mkdir(parents=True)
    slow = [sys.executable, "-c", "import time; time.sleep(120)"]
    runner = SimulationRunner(nodes, tmp_path / "coordinator", command=slow)
    app = create_app(CoordinatorSettings(var=tmp_path / "var"), runner=runner)
    app.state.store.add_node(NodeRecord(node_id="B1", public_key=public_pem(Signer.generate("B1").public_key)))
    hq = {"Authorization": f"Bearer {create_account(app.state.store, 'hq', Role.ANALYST, None).token}"}
    from coordinator.lifecycle import Decision

    with TestClient(app) as client:
        client.post("/jobs", headers=hq, json={"spec": {"job_id": "long"}, "nodes": ["B1"], "min_contributors": 1})
        app.state.store.decide("long", "B1", Decision.APPROVED, reason="ok", signature="00" * 64)
        client.post("/jobs/long/start", headers=hq)
        for _ in range(100):
            if runner._running.get("long"):
                break
            time.sleep(0.05)
        proc = runner._running["long"]
        stopped = client.post("/jobs/long/stop", headers=hq, json={"reason": "wrong regions"})
        assert stopped.json()["state"] == "stopped"
        assert proc.wait(timeout=20) != 0  # the round loop is gone
        worker: threading.Thread = app.state.running["long"]
        worker.join(timeout=20)
        job = client.get("/jobs/long", headers=hq).json()
    assert not worker.is_alive() and job["state"] == "stopped" and job["steps"][-1]["reason"] == "wrong regions"


def test_a_round_loop_that_dies_before_its_first_round_is_started_once_more(tmp_path):
    """Ray's raylet gives its agents a fixed 15 s to boot, which a loaded machine can miss: the
    round loop then dies before any round. The runner starts it once more; a loop that keeps
    failing is reported with its last line, and one that was stopped is not restarted."""
    import sys
    from types import SimpleNamespace

    from coordinator.paths import CoordinatorPaths

    nodes, coordinator = tmp_path / "nodes", tmp_path / "coordinator"
    (nodes / "B1").mkdir(parents=True)
    result = CoordinatorPaths(coordinator).job_result("flaky")
    marker = tmp_path / "tries"
    flaky = [sys.executable, "-c", (
        "import json, pathlib, sys\n"
        f"m = pathlib.Path({str(marker)!r}); tries = int(m.read_text()) + 1 if m.exists() else 1; m.write_text(str(tries))\n"
        "if tries == 1: print('raylet: Timed out waiting for file metrics_agent_port'); sys.exit(1)\n"
        f"r = pathlib.Path({str(result)!r}); r.parent.mkdir(parents=True, exist_ok=True)\n"
        "r.write_text(json.dumps({'rounds': [], 'final_model_digest': 'ab' * 32}))\n")]
    job = SimpleNamespace(job_id="flaky", spec=JobSpec(job_id="flaky"), min_contributors=1)  # what the runner reads
    released = SimulationRunner(nodes, coordinator, command=flaky, poll=0.05)(job, ["B1"])
    assert marker.read_text() == "2" and released["final_model_digest"] == "ab" * 32
    assert "starting it once more" in (CoordinatorPaths(coordinator).job_run_dir("flaky") / "run.log").read_text()

    always = [sys.executable, "-c", "import sys; print('error: still broken'); sys.exit(1)"]
    with pytest.raises(RuntimeError, match="exit code 1 \\(error: still broken\\)"):
        SimulationRunner(nodes, coordinator, command=always, poll=0.05)(SimpleNamespace(**{**vars(job), "job_id": "broken"}), ["B1"])
