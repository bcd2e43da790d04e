"""The coordinator service on Flower's deployment engine, every part its own process: the
service (`sovereign coordinator serve --config`), a SuperLink with TLS and node
authentication, and three authenticated SuperNodes that run only the signed app bundle.

1. A joint forecast submitted through the REST API, approved by two nodes and denied by one
   with `sovereign node approve|deny`: it completes with the two as contributors, and the
   denier refused it itself, before reading anything.
2. Real life: one SuperNode killed mid-round (the round closes with the two others), then the
   coordinator's whole host killed after round 2 of 4 (service, SuperLink, ServerApp).
   Started again, the job resumes after round 2 and finishes 4 rounds (an update in flight
   when it died is sent again, untrained), and every node's own ledger shows each round it
   trained spent once.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import httpx
import pytest

from lineage import EventKind, LineageStore
from node_agent.admission import AdmissionBook
from node_agent.ledger import PrivacyLedger
from sovereign.deployment import PUBLISHER_KEY_ID, LocalDeployment, allow_app, free_port, write_trusted_entities
from tests.service_helpers import cli, longest_histories, register_with_service, wait_until_up

ROOT = Path(__file__).resolve().parents[1]


class Federation:
    def __init__(self, tmp: Path, small_alliance: Path) -> None:
        self.configs, self.coordinator = longest_histories(tmp, small_alliance, 3)
        self.dep = LocalDeployment(tmp / "deploy", port=free_port())
        self.dep.start_superlink()
        self.app = self.dep.publish(ROOT)
        entities = write_trusted_entities(self.dep.directory / "trusted-entities.yaml",
                                          {PUBLISHER_KEY_ID: self.dep.publisher_public_key()})
        for c in self.configs:
            allow_app(c.node_dir, self.app)
            self.dep.start_node(c.node_dir, entities)  # `sovereign node run --node-dir DIR`
        self.settings = tmp / "coordinator.yaml"
        connection = self.dep.connection(self.app)
        self.port = free_port()
        self.settings.write_text(
            f"var: {tmp / 'var'}\nport: {self.port}\nrunner:\n  kind: deployment\n  coordinator_dir: {self.coordinator.root}\n"
            f"  round_timeout: 240\n  node_wait: 5\n  flower:\n    flwr_home: {connection.flwr_home}\n    federation: {connection.federation}\n"
            f"    app: '{connection.app}'\n")
        self.tokens = register_with_service(self.settings, self.configs, self.coordinator)
        self.url = f"http://127.0.0.1:{self.port}"
        self.start_service()

    def start_service(self) -> None:
        self.dep.spawn("coordinator-service", [sys.executable, "-m", "sovereign.cli", "coordinator", "serve", "--config",
                                               str(self.settings)])
        wait_until_up(self.url)

    def as_(self, who: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[who]}"}

    def decide(self, job_id: str, verbs: list[str]) -> None:
        for c, verb in zip(self.configs, verbs, strict=True):
            cli("node", verb, job_id, "--node-dir", str(c.node_dir), "--reason", f"{verb} by branch IT",
                "--coordinator", self.url, "--token", self.tokens[c.branch_id])

    def rounds(self, job_id: str) -> list[dict]:
        return httpx.get(f"{self.url}/jobs/{job_id}/rounds", headers=self.as_("hq")).json()

    def wait(self, what, seconds: float = 600, every: float = 1.0):
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if (value := what()):
                return value
            time.sleep(every)
        raise AssertionError(f"waited {seconds:.0f}s; logs in {self.dep.directory / 'logs'}")

    def finished(self, job_id: str) -> dict:
        job = httpx.get(f"{self.url}/jobs/{job_id}", headers=self.as_("hq")).json()
        return job if job["state"] not in ("requested", "running") else None


@pytest.fixture(scope="module")
def federation(tmp_path_factory, small_alliance):
    fed = Federation(tmp_path_factory.mktemp("service-deployment"), small_alliance)
    try:
        yield fed
    finally:
        fed.dep.stop()


def test_a_job_submitted_through_the_api_runs_on_the_two_supernodes_that_approved(federation):
    fed = federation
    nodes = [c.branch_id for c in fed.configs]
    made = httpx.post(f"{fed.url}/jobs", headers=fed.as_("hq"),
                      json={"spec": {"job_id": "svc-deploy", "rounds": 1, "local_epochs": 1}, "nodes": nodes,
                            "min_contributors": 2})
    assert made.status_code == 201, made.text
    fed.decide("svc-deploy", ["approve", "approve", "deny"])
    assert httpx.post(f"{fed.url}/jobs/svc-deploy/start", headers=fed.as_("hq")).json()["state"] == "running"
    job = fed.wait(lambda: fed.finished("svc-deploy"))
    assert job["state"] == "completed", job["steps"][-1]
    approving, denier = sorted(nodes[:2]), fed.configs[2]
    first = job["results"]["rounds"][0]
    assert first["contributors"] == approving and first["refused"].get(denier.branch_id) == "owner-denied"
    assert [r["contributors"] for r in fed.rounds("svc-deploy")] == [approving]  # the rounds resource
    node_side = LineageStore(denier.lineage_url).events(job_id="svc-deploy")
    assert [e.details["code"] for e in node_side if e.kind == EventKind.REFUSAL][:1] == ["owner-denied"]
    assert [e.details["decision"] for e in node_side if e.kind == EventKind.JOB_DECISION] == ["denied"]
    assert not [e for e in node_side if e.kind == EventKind.DATA_READ]
    audit = httpx.get(f"{fed.url}/lineage/events", params={"job_id": "svc-deploy"}, headers=fed.as_("audit")).json()
    assert (denier.branch_id, "denied") in [(e["details"].get("node"), e["details"].get("decision")) for e in audit
                                            if e["kind"] == EventKind.JOB_DECISION.value]


def trained_rounds(config, job_id: str) -> tuple[list[int], int, int]:
    """At one node, from its own books: the rounds it trained (lineage), the accountant steps
    its ledger holds for the job, and the last round its admission book let it take."""
    trained = [e.round for e in LineageStore(config.lineage_url).events(job_id=job_id, kind=EventKind.TRAINING)]
    spend = PrivacyLedger(config.ledger_url).get(config.dataset, job_id)
    return trained, len(spend.history) if spend else 0, AdmissionBook(config.ledger_url).get(job_id).last_round


def test_a_supernode_killed_mid_round_and_the_coordinator_killed_after_round_2_of_4(federation):
    fed, job_id = federation, "svc-resume"
    nodes = [c.branch_id for c in fed.configs]
    made = httpx.post(f"{fed.url}/jobs", headers=fed.as_("hq"),
                      json={"spec": {"job_id": job_id, "rounds": 4, "local_epochs": 1}, "nodes": nodes, "min_contributors": 2})
    assert made.status_code == 201, made.text
    fed.decide(job_id, ["approve", "approve", "approve"])
    httpx.post(f"{fed.url}/jobs/{job_id}/start", headers=fed.as_("hq")).raise_for_status()
    fed.wait(lambda: len(fed.rounds(job_id)) >= 1, every=0.5)
    gone = fed.configs[2]
    fed.dep.kill(f"supernode-{gone.branch_id}")  # round 2 is under way: its message is out
    fed.wait(lambda: len(fed.rounds(job_id)) >= 2, every=0.5)
    for name in ("coordinator-service", "superexec-superlink", "superlink"):  # the coordinator's host goes down
        fed.dep.kill(name)
    fed.dep.start_superlink()
    fed.start_service()
    job = fed.wait(lambda: fed.finished(job_id), seconds=900)
    assert job["state"] == "completed", job["steps"][-1]
    rounds = fed.rounds(job_id)
    assert [r["round"] for r in rounds] == [1, 2, 3, 4]
    assert gone.branch_id in rounds[0]["contributors"]
    assert sorted(rounds[1]["contributors"]) == sorted(nodes[:2])  # round 2 closed without the killed node
    assert any("node error" in why for why in rounds[1]["refused"].values())
    for later in rounds[2:]:  # nothing lost in the crash: an update in flight is sent again, untrained
        assert sorted(later["contributors"]) == sorted(nodes[:2]), later
    resumed = [e for e in LineageStore(fed.coordinator.lineage_url).events(job_id=job_id, kind=EventKind.JOB_STATE)
               if e.details.get("state") == "resumed"]
    assert [e.round for e in resumed] == [2]  # the round loop went on after round 2, not from round 1
    for c in fed.configs:
        trained, steps, last = trained_rounds(c, job_id)
        assert len(trained) == len(set(trained)) == steps, (c.branch_id, trained, steps)  # each round spent once
        if c is not gone:
            assert last == 4 and trained[-1] == 4, (c.branch_id, trained)
    assert job["results"]["final_model_digest"]
