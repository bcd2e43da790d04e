"""Masked aggregation on the deployment engine (TLS SuperLink, authenticated SuperNodes, a
signed app bundle): in round 1 one SuperNode is killed after its masked update reached the
coordinator, and another after it shared its seeds but before it sent anything. The round's
sum is still exact: the first still counts (its self mask rebuilt from its neighbours'
shares), the second is cleanly removed (its pairwise masks rebuilt); the survivors evaluate
the model it makes and release the held-out figures.

Exactness is checked where it can be: on each surviving node, which decrypted the round's
sum with the job's key and recorded what it held (contributors and total weight), against
what each contributor recorded training on (its weight is its training windows)."""

from __future__ import annotations

import base64
import json
import threading
import time
from pathlib import Path

from common.wire import HESettings, JobSpec
from lineage import EventKind, LineageStore
from sovereign.deployment import PUBLISHER_KEY_ID, DeploymentError, LocalDeployment, allow_app, free_port, write_trusted_entities
from tests.service_helpers import longest_histories

ROOT = Path(__file__).resolve().parents[1]


def _events(config, job_id: str, kind: EventKind) -> list:
    if not (config.node_dir / "lineage.db").exists():
        return []
    store = LineageStore(config.lineage_url, create=False)
    try:
        return store.events(job_id=job_id, kind=kind)
    finally:
        store.close()


def _kill_when(dep: LocalDeployment, config, seen, stop: threading.Event, killed: dict) -> None:
    while not stop.is_set():
        try:
            hit = seen(dep, config)
        except Exception:  # noqa: BLE001 - a store being written or a log not there yet: look again
            hit = False
        if hit:
            dep.kill(f"supernode-{config.branch_id}")
            killed[config.branch_id] = time.monotonic()
            return
        time.sleep(0.02)


def test_one_supernode_killed_after_sending_and_one_before_leave_the_round_exact(tmp_path, small_alliance):
    configs, coordinator = longest_histories(tmp_path, small_alliance, 6, approvals="standing")
    job = JobSpec(job_id="masked-deploy", rounds=1, local_epochs=1, he=HESettings(scheme="CKKS-ring"))
    after, before = configs[4], configs[5]  # 6 holders: 5 mask neighbours each, t = 3, so two can go
    killed: dict[str, float] = {}
    stop = threading.Event()

    def consented(dep, c) -> bool:  # its update is in the coordinator's sum: only survivors are asked to consent
        return any(e.round == 1 and e.details.get("mask_stage") == "consent"
                   for e in _events(c, job.job_id, EventKind.AGGREGATION))

    def asked_to_train(dep, c) -> bool:  # its shares are out (only those who shared are asked), its update is not:
        # the SuperNode logs the message as it takes it, before it starts the ClientApp that would train
        return "Receiving: train message" in dep.log(f"supernode-{c.branch_id}").read_text()

    with LocalDeployment(tmp_path / "deploy", port=free_port()) as dep:
        dep.start_superlink()
        app = dep.publish(ROOT)
        entities = write_trusted_entities(dep.directory / "trusted-entities.yaml", {PUBLISHER_KEY_ID: dep.publisher_public_key()})
        for c in configs:
            allow_app(c.node_dir, app)
            dep.start_node(c.node_dir, entities)
        watchers = [threading.Thread(target=_kill_when, args=(dep, c, seen, stop, killed), daemon=True)
                    for c, seen in ((after, consented), (before, asked_to_train))]
        for w in watchers:
            w.start()
        spec = base64.urlsafe_b64encode(job.model_dump_json().encode()).decode()
        try:
            dep.run(app, {"coordinator-dir": str(coordinator.root), "job-spec": spec, "min-nodes": 6,
                          "round-timeout": 60, "node-wait": 60}, timeout=900)
        except DeploymentError as exc:
            raise AssertionError(f"the run failed: {exc}; logs in {dep.directory / 'logs'}") from None
        finally:
            stop.set()

    assert set(killed) == {after.branch_id, before.branch_id}, killed
    result = json.loads(coordinator.result.read_text())
    first, = result["rounds"]
    trained = [c for c in configs if any(e.round == 1 for e in _events(c, job.job_id, EventKind.TRAINING))]
    alive = [c for c in trained if c not in (after, before)]
    assert after in trained and len(alive) >= 3, [c.branch_id for c in trained]
    assert sorted(first["contributors"]) == sorted(c.branch_id for c in [*alive, after])  # the one that sent still counts
    assert before.branch_id not in first["contributors"]

    windows = {}
    for c in [*alive, after]:
        trained = [e for e in _events(c, job.job_id, EventKind.TRAINING) if e.round == 1]
        windows[c.branch_id] = min(trained[0].details["windows"], job.bounds.max_weight)
    for c in alive:  # each decrypted round 1's sum itself to evaluate it, and recorded what it held
        opened = _events(c, job.job_id, EventKind.EVALUATION)[0].details["global_model"]
        assert opened["contributors"] == len(windows) and opened["survivors"] == sorted(windows)
        assert abs(opened["weight"] - sum(windows.values())) < 1e-3, (opened, windows)
        assert not list((c.privacy_dir / "job-keys").glob("*.ckks"))  # the job's key is gone with the job
    assert result["evaluated_by"] and result["metrics"]
