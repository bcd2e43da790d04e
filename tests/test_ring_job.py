"""A CKKS-ring job through the round loop and real node agents, in one process
(`tests.loopback_grid`): the per-job key ceremony, SecAgg+ around every sum, a node gone
before it sent its update and one gone after, a coordinator that dies and resumes, and the
job's keys destroyed at its end. The deployment engine's version is
`tests/test_deployment_masked.py`."""

from __future__ import annotations

import json
from collections import Counter

import pytest
import tenseal as ts

from common.wire import HESettings, JobSpec
from coordinator.rounds import run_job
from coordinator.ring_job import setup_path
from lineage import EventKind, LineageStore
from tests.loopback_grid import LoopbackGrid
from tests.service_helpers import longest_histories

JOB = JobSpec(job_id="ring-job", rounds=2, local_epochs=1, he=HESettings(scheme="CKKS-ring"))


class DroppingGrid(LoopbackGrid):
    """Nodes that go away on cue: `before` as it is asked to train in round 1 (its shares are out,
    its update never comes), `after` as it is asked to consent in round 1 (its update is in)."""

    def __init__(self, nodes_root, *, before: int | None = None, after: int | None = None) -> None:
        super().__init__(nodes_root)
        self.before, self.after = before, after
        self.exchanges: Counter = Counter()  # group id (the round) -> pushes

    def push_messages(self, messages):
        self.exchanges[int(messages[0].metadata.group_id)] += 1
        for msg in messages:
            node, kind, rnd = msg.metadata.dst_node_id, msg.metadata.message_type, int(msg.metadata.group_id)
            stage = json.loads(msg.content["body"]["json"]).get("stage")
            if rnd == 1 and ((node == self.before and kind == "train") or
                             (node == self.after and kind == "query.mask" and stage == "consent")):
                self.gone.add(node)
        return super().push_messages(messages)


@pytest.fixture()
def alliance(tmp_path, small_alliance, monkeypatch):
    configs, paths = longest_histories(tmp_path, small_alliance, 6, approvals="standing")
    monkeypatch.setenv("SOVEREIGN_NODES_ROOT", str(tmp_path / "nodes"))
    return configs, paths, tmp_path / "nodes"


def _events(config, kind):
    return LineageStore(config.lineage_url).events(job_id=JOB.job_id, kind=kind)


def _weights(config, rnd: int) -> float:
    trained = [e for e in _events(config, EventKind.TRAINING) if e.round == rnd]
    return min(trained[0].details["windows"], JOB.bounds.max_weight)


def test_a_ring_job_with_a_node_gone_before_sending_and_one_after_sums_exactly(alliance):
    configs, paths, nodes_root = alliance
    index = json.loads((nodes_root / "index.json").read_text())["nodes"]
    order = [next(c for c in configs if c.node_dir.name == name) for name in index]
    before, after = order[4], order[5]  # 6 holders: 5 neighbours each, t = 3, so two can go
    grid = DroppingGrid(nodes_root, before=4, after=5)
    result = run_job(grid, JOB, paths, min_contributors=2)
    first, second = result.rounds
    trained = [c for c in order if any(e.round == 1 for e in _events(c, EventKind.TRAINING))]
    alive = [c for c in trained if c not in (before, after)]
    assert after in trained and len(alive) >= 3, [c.branch_id for c in trained]
    assert sorted(first.contributors) == sorted(c.branch_id for c in [*alive, after])  # sent, then gone: still counts
    assert before.branch_id not in first.contributors  # shared, then gone: cleanly removed
    assert sorted(second.contributors) == sorted(c.branch_id for c in alive)
    expected = sum(_weights(c, 1) for c in [*alive, after])
    for c in alive:  # each decrypted round 1's sum itself: its weight is exactly the contributors' windows
        opened = next(e for e in _events(c, EventKind.TRAINING) if e.round == 2).details["global_model"]
        assert opened["contributors"] == len(alive) + 1 and abs(opened["weight"] - expected) < 1e-3, (opened, expected)
    assert result.metrics and len(result.released_by) == 3
    # pipelined: round 1 opens with adverts and shares, then a masked sum is the update and the
    # consent (with the survivors' self-mask shares), plus an unmask step when a holder shared but
    # sent nothing (here each round: a branch too young to train); the next round's adverts and
    # shares ride on the first two
    assert grid.exchanges[1] == 5 and grid.exchanges[2] == 3 + 1 and grid.exchanges[3] == 3, grid.exchanges  # round 2: + the release

    # the ceremony: one dealer, every other holder installed; the coordinator keeps a keyless context
    public = ts.context_from(bytes.fromhex(json.loads(setup_path(paths, JOB.job_id).read_text())["public_context"]))
    assert not public.has_secret_key() and not public.has_public_key()
    stages = {c.branch_id: [e.details["stage"] for e in _events(c, EventKind.KEY_CEREMONY)] for c in configs}
    assert sorted(s[1] for s in stages.values()) == ["dealt"] + ["installed"] * 5
    for c in alive:
        assert stages[c.branch_id][-1] == "destroyed" and not list((c.privacy_dir / "job-keys").glob("*.ckks"))


def test_a_resumed_ring_job_keeps_its_keys_and_does_not_deal_again(alliance):
    configs, paths, nodes_root = alliance

    class Crash(Exception):
        pass

    class CrashAfterRound1:
        def round_started(self, *a): ...
        def reply_received(self, *a): ...

        def round_finished(self, report):
            if report.round == 1:
                raise Crash

    grid = LoopbackGrid(nodes_root)
    with pytest.raises(Crash):
        run_job(grid, JOB, paths, observer=CrashAfterRound1(), min_contributors=2)
    grid.sent.clear()
    result = run_job(grid, JOB, paths, min_contributors=2)
    assert [r.round for r in result.rounds] == [1, 2] and len(result.rounds[1].contributors) >= 3
    asked = {kind for _, kind, _ in grid.sent}
    assert "train" in asked and result.metrics
    for c in configs:
        stages = [e.details["stage"] for e in _events(c, EventKind.KEY_CEREMONY)]
        assert stages.count("advertised") == 1 and stages[-1] == "destroyed", (c.branch_id, stages)
