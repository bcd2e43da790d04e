"""Whatever a job asks, the node answers with a refusal code, never an error text: a settings
combination that makes training diverge, or an error nobody foresaw, leaves as a coded
refusal (the detail kept in the node's lineage), through the real ClientApp."""

from __future__ import annotations

import json

from flwr.app import Context, Message, RecordDict
from flwr.supercore.task_identity import TaskIdentity

from common.refusals import REASONS
from common.wire import EvaluateReply, TrainInstruction, from_record, to_record
from node_agent import client_app
from tests.adversarial.conftest import small_job


def _simulated_context(alliance, branch, monkeypatch) -> Context:
    root = alliance.configs[branch].node_dir.parent
    (root / "index.json").write_text(json.dumps({"nodes": [branch]}))
    monkeypatch.setenv("SOVEREIGN_NODES_ROOT", str(root))
    for attr in ("_run_id", "_task_id", "_node_id"):  # what a Flower runtime sets per process
        monkeypatch.setattr(TaskIdentity, attr, 1)
    return Context(run_id=1, node_id=1, node_config={"partition-id": 0, "num-partitions": 1}, state=RecordDict(), run_config={})


def test_an_unforeseen_error_leaves_as_a_code_and_its_detail_stays_on_the_node(alliance, monkeypatch):
    branch = next(iter(alliance.configs))
    context = _simulated_context(alliance, branch, monkeypatch)

    def boom(self, instruction):
        raise ValueError("no noise multiplier reaches epsilon 0.0001 in 64 steps")  # a size, in an error text

    monkeypatch.setitem(client_app.ACTIONS, "evaluate", (TrainInstruction, EvaluateReply, boom))
    client_app._AGENTS.clear()
    out = client_app.evaluate(Message(content=to_record(TrainInstruction(job=small_job(), round=2)), dst_node_id=1,
                                      message_type="evaluate"), context)
    assert not out.has_error()
    reply = from_record(out.content, EvaluateReply)
    assert (reply.status, reply.code, reply.reason) == ("refused", "node-config", REASONS["node-config"])
    assert b"64 steps" not in json.dumps(out.content["body"]["json"]).encode()
    assert "64 steps" in alliance.refusals(branch, "node-config")[-1].details["reason"]


def test_values_that_cannot_be_encrypted_faithfully_are_refused_not_sent(alliance):
    """Weights blown up by a job's settings (or not finite) would wrap around in CKKS and
    corrupt every sum they join: the node refuses to send them."""
    import numpy as np
    import pytest

    from node_agent.admission import Refusal

    agent = alliance.agent(next(iter(alliance.configs)))
    for bad in (np.array([1.0, np.nan]), np.array([1.0, 2.0**30])):
        with pytest.raises(Refusal, match="not finite or exceed"):
            agent._payload(small_job(), bad, mask_round=1, shares=[])
    assert agent._payload(small_job(), np.array([1.0, 2.0]), mask_round=1, shares=[]).scheme == "CKKS"
