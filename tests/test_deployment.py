"""The deployment engine for real: a SuperLink with TLS and SuperNode authentication, two
authenticated SuperNodes that run only app bundles (FABs) signed by a key their owner lists
(`--trusted-entities`) and only the exact bundle on their node's allow-list, a SuperNode with
an unregistered key that the SuperLink turns away, and a rogue SuperExec the Runtime API
turns away. Plus the node's allow-list check on its own."""

import json
import shutil
from pathlib import Path

import pytest
from flwr.app import Context, RecordDict

from common.wire import JobSpec
from coordinator.rounds import CoordinatorPaths
from lineage import EventKind, LineageStore
from node_agent.app_identity import AppIdentity, app_refusal, deployed_app_refusal
from node_agent.config import NodeConfig, TrustedApp, load_node_config, write_node_config
from sovereign.deployment import (
    EXIT_UNAUTHENTICATED,
    PUBLISHER_KEY_ID,
    DeploymentError,
    LocalDeployment,
    allow_app,
    app_bundle,
    free_port,
    make_node_key,
    make_signing_key,
    make_superexec_secret,
    make_tls,
    sign_fab,
    write_trusted_entities,
)
from sovereign.federation import register_lineage_keys, run_key_ceremony, setup_nodes

ROOT = Path(__file__).resolve().parents[1]
NOT_SIGNED = "App verification is not supported by the connected SuperLink"  # Flower's SuperNode log lines
BAD_SIGNATURE = "FAB verification failed"


def _events(config: NodeConfig) -> list:
    if not (config.node_dir / "lineage.db").exists():
        return []
    store = LineageStore(config.lineage_url, create=False)
    try:
        return store.events()
    finally:
        store.close()


def _run(dep: LocalDeployment, app, run_config: dict) -> str | None:
    """Run a job; the error if `flwr run` failed (a refused job may end either way)."""
    try:
        dep.run(app, run_config, timeout=600)
    except DeploymentError as exc:
        return str(exc)
    return None


def test_supernodes_run_only_signed_and_allowed_apps_over_tls_and_node_auth(tmp_path, small_alliance):
    profiles = sorted(json.loads((small_alliance / "alliance.json").read_text()), key=lambda p: p["history_start"])
    dealers = tmp_path / "dealers"
    dealers.mkdir()
    for p in profiles[:2]:  # the two longest histories: both will train
        shutil.copy(small_alliance / f"{p['branch_id']}.db", dealers)
    configs = []
    for config in setup_nodes(sorted(dealers.glob("*.db")), tmp_path / "nodes"):
        config = config.model_copy(update={"min_contributors": 2})  # a two-node alliance, legitimately
        write_node_config(config)
        configs.append(config)
    assert all(load_node_config(c.node_dir).trusted_apps == [] for c in configs)  # a new node runs no deployed app
    coordinator = CoordinatorPaths(tmp_path / "coordinator")
    register_lineage_keys(configs, coordinator)
    run_key_ceremony(configs, coordinator, JobSpec(job_id="keys"))
    job = {"coordinator-dir": str(coordinator.root), "rounds": 1, "min-nodes": 2}

    with LocalDeployment(tmp_path / "deploy", port=free_port()) as dep:
        dep.start_superlink()
        signed = dep.publish(ROOT)
        entities = write_trusted_entities(dep.directory / "trusted-entities.yaml",
                                          {PUBLISHER_KEY_ID: dep.publisher_public_key()})
        for config in configs:
            key = dep.register(config.branch_id)
            dep.start_supernode(config.branch_id, key, config.node_dir, free_port(), entities)
        rogue_key = dep.directory / "keys" / "rogue"
        make_node_key(rogue_key)  # never registered
        rogue = dep.start_supernode("rogue", rogue_key, None, free_port())

        # Whoever reaches the SuperLink's port cannot take the ServerApp's task as a SuperExec.
        from flwr.proto.runtime_pb2 import AcquireTaskRequest
        from flwr.supercore.interceptors import RuntimeVersionHttpInterceptor
        from flwr.supercore.runtime import RuntimeHttpClient

        intruder = RuntimeHttpClient.from_server_address(
            f"127.0.0.1:{dep.port}", insecure=False, root_certificates=str(dep.ca),
            interceptors=[RuntimeVersionHttpInterceptor(component_name="SuperExec")])
        with pytest.raises(Exception) as refused_superexec:
            intruder.AcquireTask(AcquireTaskRequest(supported_task_types=["serverapp"]))
        intruder.close()

        # 1. An app uploaded with `flwr run ./dir` carries no signature: no SuperNode runs it.
        unsigned_error = _run(dep, ROOT, {**job, "job-id": "unsigned"})
        unsigned_result = json.loads(coordinator.result.read_text()) if coordinator.result.exists() else None
        # 2. The same bundle signed by a key the nodes do not list, also posing under the publisher's key id.
        forger = dep.directory / "keys" / "forger"
        make_signing_key(forger)
        dep.registry.publish(app_bundle(signed.fab, [sign_fab(signed.fab, forger, "forger"),
                                                     sign_fab(signed.fab, forger, PUBLISHER_KEY_ID)]))
        forged_error = _run(dep, signed, {**job, "job-id": "forged"})
        events_after_refused_bundles = [len(_events(c)) for c in configs]
        # 3. Correctly signed, but not yet on the nodes' own allow-list: the app starts and refuses itself.
        dep.registry.publish(signed)
        _run(dep, signed, {**job, "job-id": "not-allowed"})
        # 4. Signed and allowed: the job runs.
        for config in configs:
            allow_app(config.node_dir, signed)
        assert _run(dep, signed, {**job, "job-id": "deploy-test"}) is None

        assert rogue.wait(timeout=120) != 0
        rogue_log = dep.log("supernode-rogue").read_text()
        superlink_log = dep.log("superlink").read_text()
        node_logs = [dep.log(f"supernode-{c.branch_id}").read_text() for c in configs]
        fetched = list(dep.registry.requests)

    assert f"Exit Code: {EXIT_UNAUTHENTICATED}" in rogue_log and "Failed to activate SuperNode" in rogue_log
    assert "401" in str(refused_superexec.value)
    assert "https://127.0.0.1" in superlink_log
    assert fetched.count(f"fetch-fab @{signed.fab_id}=={signed.fab_version}") == 3  # runs 2-4 came from the registry

    # Runs 1 and 2: each SuperNode refused the bundle itself; no ClientApp ran, nothing was recorded.
    for log in node_logs:
        assert NOT_SIGNED in log, "the unsigned bundle was not refused by Flower's signature check"
        assert BAD_SIGNATURE in log, "the forged signature was not refused by Flower's signature check"
    assert events_after_refused_bundles == [0, 0], (unsigned_error, forged_error)
    if unsigned_result is not None and unsigned_result["job"]["job_id"] == "unsigned":
        assert unsigned_result["rounds"][0]["contributors"] == []

    # Run 3: the signed app found its own identity and refused it, before reading any branch data.
    for config in configs:
        events = _events(config)
        untrusted = [e for e in events if e.kind == EventKind.REFUSAL and e.details.get("code") == "untrusted-app"]
        assert untrusted, f"{config.branch_id}: no untrusted-app refusal"
        assert f"{signed.fab_id} {signed.fab_version} (FAB sha256 {signed.fab_hash[:12]}" in untrusted[0].details["reason"]
        first_read = next((i for i, e in enumerate(events) if e.kind == EventKind.DATA_READ), len(events))
        assert events.index(untrusted[0]) < first_read

    # Run 4: the job ran to completion on both nodes.
    result = json.loads(coordinator.result.read_text())
    assert result["job"]["job_id"] == "deploy-test"
    assert sorted(result["rounds"][0]["contributors"]) == sorted(c.branch_id for c in configs)
    assert result["rounds"][0]["bytes_received"] > 200_000  # two CKKS ciphertexts came over TLS
    evaluated = result.get("evaluated_by") or [e["branch_id"] for e in result.get("evaluations", []) if e["status"] == "ok"]
    assert sorted(evaluated) == sorted(c.branch_id for c in configs)


# ---------------------------------------------------------------------- the allow-list itself
def _node(tmp_path, trusted: list[TrustedApp]) -> NodeConfig:
    return NodeConfig(branch_id="B001", db_url="sqlite:///x.db", node_dir=tmp_path, trusted_apps=trusted)


LISTED = TrustedApp(fab_id="sovereign/sovereign", fab_version="0.1.0", fab_hash="a" * 64)


def test_the_node_runs_only_the_exact_app_bundle_it_lists(tmp_path):
    listed = AppIdentity(LISTED.fab_id, LISTED.fab_version, LISTED.fab_hash)
    assert app_refusal(listed, _node(tmp_path, [LISTED])) is None
    other_listed = TrustedApp(fab_id="other/app", fab_version="2.0.0", fab_hash="b" * 64)
    assert app_refusal(listed, _node(tmp_path, [other_listed, LISTED])) is None

    refusals = {
        "empty allow-list": app_refusal(listed, _node(tmp_path, [])),
        "wrong hash": app_refusal(AppIdentity(LISTED.fab_id, LISTED.fab_version, "c" * 64), _node(tmp_path, [LISTED])),
        "wrong version": app_refusal(AppIdentity(LISTED.fab_id, "0.2.0", LISTED.fab_hash), _node(tmp_path, [LISTED])),
        "other app": app_refusal(AppIdentity("mallory/sovereign", LISTED.fab_version, LISTED.fab_hash), _node(tmp_path, [LISTED])),
        "unknown identity": app_refusal(None, _node(tmp_path, [LISTED])),
    }
    for case, reason in refusals.items():
        assert reason and reason.startswith("app refused") and "\n" not in reason, case
    assert "empty" in refusals["empty allow-list"]
    assert "content hash" in refusals["wrong hash"]
    assert "version" in refusals["wrong version"] and "0.1.0" in refusals["wrong version"]


def test_the_check_applies_to_any_node_with_a_node_dir_and_not_to_simulated_ones(tmp_path):
    config = _node(tmp_path, [LISTED])

    def context(node_config):
        return Context(run_id=1, node_id=1, node_config=node_config, state=RecordDict(), run_config={})

    # Flower's simulation runtime: a virtual node, no FAB.
    assert deployed_app_refusal(context({"partition-id": 0, "num-partitions": 2}), config) is None
    # A node with a node-dir is a deployed node: outside Flower's ClientApp runner nobody can
    # say which bundle runs, so it is refused (as is a node-dir that also claims a partition).
    for node_config in ({"node-dir": str(tmp_path)}, {"node-dir": str(tmp_path), "partition-id": 0}, {}):
        assert deployed_app_refusal(context(node_config), config).startswith("app refused: cannot tell")


def test_deployment_keys_are_owner_only_from_the_start(tmp_path, monkeypatch):
    import os
    import stat

    for name in ("chmod", "fchmod", "lchmod"):  # a key written with the default mode, then chmod-ed, fails here
        if hasattr(os, name):
            monkeypatch.setattr(os, name, lambda *a, **k: pytest.fail("chmod called on a key file"))
    old = os.umask(0)  # a file made with the default mode would be world-readable
    try:
        ca, _, tls_key = make_tls(tmp_path / "tls")
        make_node_key(tmp_path / "keys" / "node")
        make_signing_key(tmp_path / "keys" / "publisher")
        make_superexec_secret(tmp_path / "keys" / "superexec.secret")
    finally:
        os.umask(old)
    for path in (tls_key, tmp_path / "keys" / "node", tmp_path / "keys" / "publisher", tmp_path / "keys" / "superexec.secret"):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    assert ca.exists() and (tmp_path / "keys" / "publisher.pub").read_text().startswith("ssh-ed25519 ")
    # The publisher key is made once: a second call keeps it (nodes already list its public half).
    assert make_signing_key(tmp_path / "keys" / "publisher") == (tmp_path / "keys" / "publisher.pub").read_text().strip()
