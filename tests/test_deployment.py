"""The deployment engine for real: a SuperLink with TLS and SuperNode authentication, two
authenticated SuperNodes running the node agent, a job started with `flwr run`, and a
SuperNode with an unregistered key that the SuperLink turns away."""

import json
import shutil
from pathlib import Path

from common.wire import JobSpec
from coordinator.rounds import CoordinatorPaths
from sovereign.deployment import EXIT_UNAUTHENTICATED, LocalDeployment, free_port, make_node_key
from sovereign.federation import run_key_ceremony, setup_nodes

ROOT = Path(__file__).resolve().parents[1]


def test_tls_authenticated_deployment_runs_a_job_and_refuses_an_unknown_node(tmp_path, small_alliance):
    profiles = sorted(json.loads((small_alliance / "alliance.json").read_text()), key=lambda p: p["history_start"])
    dealers = tmp_path / "dealers"
    dealers.mkdir()
    for p in profiles[:2]:  # the two longest histories: both will train
        shutil.copy(small_alliance / f"{p['branch_id']}.db", dealers)
    configs = setup_nodes(sorted(dealers.glob("*.db")), tmp_path / "nodes")
    coordinator = CoordinatorPaths(tmp_path / "coordinator")
    run_key_ceremony(configs, coordinator, JobSpec(job_id="keys"))

    with LocalDeployment(tmp_path / "deploy", port=free_port()) as dep:
        dep.start_superlink()
        for config in configs:
            key = dep.register(config.branch_id)
            dep.start_supernode(config.branch_id, key, config.node_dir, free_port())
        rogue_key = dep.directory / "keys" / "rogue"
        make_node_key(rogue_key)  # never registered
        rogue = dep.start_supernode("rogue", rogue_key, None, free_port())
        dep.run(ROOT, {"coordinator-dir": str(coordinator.root), "rounds": 1, "min-nodes": 2, "job-id": "deploy-test"})
        assert rogue.wait(timeout=120) != 0
        rogue_log = dep.log("supernode-rogue").read_text()
        superlink_log = dep.log("superlink").read_text()
    assert f"Exit Code: {EXIT_UNAUTHENTICATED}" in rogue_log and "Failed to activate SuperNode" in rogue_log

    result = json.loads(coordinator.result.read_text())
    assert result["job"]["job_id"] == "deploy-test"
    assert sorted(result["rounds"][0]["contributors"]) == sorted(c.branch_id for c in configs)
    assert result["rounds"][0]["bytes_received"] > 200_000  # two CKKS ciphertexts came over TLS
    assert all(e["status"] == "ok" for e in result["evaluations"])
    assert "https://127.0.0.1" in superlink_log
