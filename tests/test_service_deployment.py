"""The coordinator service on Flower's deployment engine: a SuperLink with TLS and node
authentication, three authenticated SuperNodes running only the signed app bundle, and the
job submitted, approved (two nodes) and denied (one) through the REST API.

Every SuperNode is sent the job; the one whose owner denied it refuses it itself, before
reading anything, and the job completes with the two others as its contributors.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

from fastapi.testclient import TestClient

from common.wire import JobSpec
from coordinator.api.app import create_account, create_app
from coordinator.resources import NodeRecord, Role
from coordinator.rounds import CoordinatorPaths
from coordinator.settings import CoordinatorSettings
from lineage import EventKind, LineageStore, Signer
from lineage.signing import public_pem
from node_agent.approvals import OwnerDecisions
from node_agent.config import load_node_config, write_node_config
from sovereign.deployment import PUBLISHER_KEY_ID, LocalDeployment, allow_app, free_port, write_trusted_entities
from sovereign.federation import register_lineage_keys, run_key_ceremony, setup_nodes
from sovereign.service_runner import DeploymentRunner

ROOT = Path(__file__).resolve().parents[1]


def test_a_service_job_runs_on_supernodes_that_approved_and_the_denier_refuses_it_itself(tmp_path, small_alliance):
    profiles = sorted(json.loads((small_alliance / "alliance.json").read_text()), key=lambda p: p["history_start"])
    dealers = tmp_path / "dealers"
    dealers.mkdir()
    for p in profiles[:3]:
        shutil.copy(small_alliance / f"{p['branch_id']}.db", dealers)
    configs = []
    for c in setup_nodes(sorted(dealers.glob("*.db")), tmp_path / "nodes", min_contributors=2):
        write_node_config(c.model_copy(update={"approvals": "by_hand"}))
        configs.append(load_node_config(c.node_dir))
    coordinator = CoordinatorPaths(tmp_path / "coordinator")
    register_lineage_keys(configs, coordinator)
    run_key_ceremony(configs, coordinator, JobSpec(job_id="keys"))

    with LocalDeployment(tmp_path / "deploy", port=free_port()) as dep:
        dep.start_superlink()
        signed = dep.publish(ROOT)
        entities = write_trusted_entities(dep.directory / "trusted-entities.yaml", {PUBLISHER_KEY_ID: dep.publisher_public_key()})
        for c in configs:
            allow_app(c.node_dir, signed)
            dep.start_supernode(c.branch_id, dep.register(c.branch_id), c.node_dir, free_port(), entities)
        app = create_app(CoordinatorSettings(var=tmp_path / "var"),
                         runner=DeploymentRunner(dep, signed, coordinator.root, timeout=600))
        for c in configs:
            key = Signer.load_or_create(c.branch_id, c.lineage_key_dir).public_key
            app.state.store.add_node(NodeRecord(node_id=c.branch_id, public_key=public_pem(key), region=c.region))
        hq = {"Authorization": f"Bearer {create_account(app.state.store, 'hq', Role.ANALYST, None).token}"}
        with TestClient(app) as client:
            made = client.post("/jobs", headers=hq, json={"spec": {"job_id": "svc-deploy", "rounds": 1, "local_epochs": 1},
                                                          "nodes": [c.branch_id for c in configs], "min_contributors": 2})
            assert made.status_code == 201, made.text
            spec = JobSpec.model_validate(made.json()["spec"])
            for c, decision in zip(configs, ("approved", "approved", "denied")):
                token = create_account(app.state.store, f"it-{c.branch_id}", Role.BRANCH_IT, c.branch_id).token
                c.privacy_dir.mkdir(parents=True, exist_ok=True)
                signature = OwnerDecisions(c.ledger_url).decide(spec, decision, decision,
                                                                Signer.load_or_create(c.branch_id, c.lineage_key_dir))
                answered = client.post("/jobs/svc-deploy/decisions", headers={"Authorization": f"Bearer {token}"},
                                       json={"node_id": c.branch_id, "decision": decision, "reason": decision,
                                             "signature": signature})
                assert answered.status_code == 200, answered.text
            assert client.post("/jobs/svc-deploy/start", headers=hq).json()["state"] == "running"
            deadline = time.monotonic() + 600
            while (job := client.get("/jobs/svc-deploy", headers=hq).json())["state"] == "running" \
                    and time.monotonic() < deadline:
                time.sleep(2)
    assert job["state"] == "completed", job["steps"][-1]
    approving = sorted(c.branch_id for c in configs[:2])
    denier = configs[2]
    first = job["results"]["rounds"][0]
    assert first["contributors"] == approving and first["refused"].get(denier.branch_id) == "owner-denied"
    events = LineageStore(denier.lineage_url).events(job_id="svc-deploy")
    assert [e.details["code"] for e in events if e.kind == EventKind.REFUSAL][:1] == ["owner-denied"]
    assert not [e for e in events if e.kind == EventKind.DATA_READ]
