"""Branch IT's console on the node, against the coordinator it does not trust: a coordinator's
tokens (even the branch's own branch_it account) sign nobody in; a crafted request is judged
by the node's own rules and hashed on the node; a malformed or garbled answer is shown as
such or refused with 502, never a 500; and what is signed is the spec branch IT read, or
nothing, when the coordinator switches specs between the read and the click. Each test
fails without its defence (the rules check, the spec-hash check, the node's own sessions).
"""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from common.wire import JobSpec
from coordinator.api.app import create_account, create_app
from coordinator.resources import Role
from coordinator.settings import CoordinatorSettings

HEADER = {"X-Sovereign-Console": "1"}


class CraftedCoordinator:
    """A coordinator that answers whatever the attacker chose, and keeps what is posted to it."""

    url = "http://head-office.invalid"

    def __init__(self, spec: dict, *, later: dict | None = None):
        self.spec, self.later, self.posted = spec, later or spec, []  # later: the spec it sends once branch IT has read

    def get(self, path: str, **params):
        if path == "/jobs":  # what it claims of a spec's hash, and a spec no node could read, beside the one asked
            return [{"job_id": self.spec["job_id"], "spec": self.spec, "spec_hash": "0" * 64},
                    {"job_id": "J-bad", "spec": {"job_id": "J-bad", "rounds": 0}}]
        return {"job_id": path.rsplit("/", 1)[-1], "spec": self.later}

    def post(self, path: str, body: dict):
        self.posted.append((path, body))
        return {}


@pytest.fixture()
def node_config(tmp_path, small_alliance):
    from sovereign.federation import setup_nodes

    [config] = setup_nodes([sorted(small_alliance.glob("*.db"))[0]], tmp_path / "nodes", min_contributors=2)
    return config


def _node_console(config, coordinator):
    from sovereign.console.node_console import create_node_console

    return TestClient(create_node_console(config, coordinator, access_token="branch-secret"))


def test_the_node_console_signs_in_only_its_own_access_token_never_a_coordinators(node_config, tmp_path):
    service = create_app(CoordinatorSettings(var=tmp_path / "var"))
    tokens = {name: create_account(service.state.store, name, role, scope).token
              for name, role, scope in (("root", Role.ADMIN, None), ("it1", Role.BRANCH_IT, node_config.branch_id))}
    node = _node_console(node_config, CraftedCoordinator({"job_id": "J1"}))
    assert node.get("/", follow_redirects=False).status_code == 303
    assert node.get("/api/budget").status_code == 401
    assert node.post("/ui/session", json={"token": tokens["it1"]}, headers=HEADER).status_code == 401
    assert node.post("/ui/session", json={"token": tokens["root"]}, headers=HEADER).status_code == 401
    assert node.post("/ui/session", json={"token": "branch-secret"}).status_code == 403  # no console header
    assert node.post("/ui/session", json={"token": "branch-secret"}, headers=HEADER).status_code == 204
    assert node.get("/").status_code == 200 and node.get("/api/budget").status_code == 200
    status = node.get("/api/status").json()
    assert status["node"] == node_config.branch_id and status["versions"]["flwr"] != "unknown"


class GarbledCoordinator(CraftedCoordinator):
    """Answers with JSON of the wrong shape."""

    def get(self, path: str, **params):
        return ["not", "a", "job"] if path != "/jobs" else {"jobs": "no"}


def test_the_node_console_keeps_its_own_sessions_and_survives_a_garbled_coordinator(node_config):
    node = _node_console(node_config, GarbledCoordinator({"job_id": "J1"}))
    assert node.post("/ui/session", json={"token": "ünïcode"}, headers=HEADER).status_code == 401
    node.cookies.set("sovereign_node_session", "branch-secret")  # the token itself is not a session
    assert node.get("/", follow_redirects=False).status_code == 303
    node.cookies.clear()
    node.post("/ui/session", json={"token": "branch-secret"}, headers=HEADER)
    session = node.cookies.get("sovereign_node_session")
    assert session and "branch-secret" not in session  # a cookie sent elsewhere gives away a session, not the token
    assert node.get("/api/jobs").status_code == 502
    decision = {"decision": "denied", "reason": "no", "spec_hash": "0" * 64}
    assert node.post("/api/jobs/J1/decision", json=decision, headers=HEADER).status_code == 422
    node.delete("/ui/session")
    node.cookies.set("sovereign_node_session", session)  # replayed after signing out
    assert node.get("/api/budget").status_code == 401


def test_the_node_console_will_not_approve_what_the_nodes_own_rules_refuse(node_config):
    crafted = CraftedCoordinator({"job_id": "J7", "purpose": "marketing", "rounds": 2})
    node = _node_console(node_config, crafted)
    node.post("/ui/session", json={"token": "branch-secret"}, headers=HEADER)
    row, malformed = node.get("/api/jobs").json()["jobs"]
    assert row["job_id"] == "J7" and "refuse (purpose)" in row["own_rules"]
    assert row["spec_hash"] == JobSpec.model_validate(crafted.spec).spec_hash()  # hashed here, not taken on its word
    assert malformed["job_id"] == "J-bad" and "malformed spec" in malformed["own_rules"] and "rounds" in malformed["own_rules"]
    read = row["spec_hash"]
    cross_site = node.post("/api/jobs/J7/decision", json={"decision": "approved", "reason": "ok", "spec_hash": read})
    assert cross_site.status_code == 403
    refused = node.post("/api/jobs/J7/decision", json={"decision": "approved", "reason": "ok", "spec_hash": read},
                        headers=HEADER)
    assert refused.status_code == 409 and "purpose 'marketing'" in refused.json()["detail"]
    assert crafted.posted == [] and not (node_config.privacy_dir / "ledger.db").exists()  # nothing signed, nothing sent
    swapped = CraftedCoordinator({"job_id": "J8", "rounds": 2})  # answers J8 when asked for J7
    node = _node_console(node_config, swapped)
    node.post("/ui/session", json={"token": "branch-secret"}, headers=HEADER)
    read = node.get("/api/jobs").json()["jobs"][0]["spec_hash"]
    no = {"decision": "denied", "reason": "no", "spec_hash": read}
    assert node.post("/api/jobs/J7/decision", json=no, headers=HEADER).status_code == 422
    assert swapped.posted == []
    denied = node.post("/api/jobs/J8/decision", json={**no, "reason": "not this quarter"}, headers=HEADER)
    assert denied.status_code == 200 and [p for p, _ in swapped.posted] == ["/jobs/J8/decisions"]
    assert swapped.posted[0][1]["reason"] == "not this quarter" and len(swapped.posted[0][1]["signature"]) == 128


def test_the_node_console_signs_only_the_spec_branch_it_read(node_config):
    shown, sent = {"job_id": "J9", "rounds": 2}, {"job_id": "J9", "rounds": 40}  # within the node's rules, but not what was read
    bait = CraftedCoordinator(shown, later=sent)
    node = _node_console(node_config, bait)
    node.post("/ui/session", json={"token": "branch-secret"}, headers=HEADER)
    [row] = [r for r in node.get("/api/jobs").json()["jobs"] if r["job_id"] == "J9"]
    assert row["rounds"] == 2
    approve = {"decision": "approved", "reason": "two rounds is fine", "spec_hash": row["spec_hash"]}
    switched = node.post("/api/jobs/J9/decision", json=approve, headers=HEADER)
    assert switched.status_code == 409 and "not the" in switched.json()["detail"]
    assert bait.posted == [] and not (node_config.privacy_dir / "ledger.db").exists()
    honest = CraftedCoordinator(shown)
    node = _node_console(node_config, honest)
    node.post("/ui/session", json={"token": "branch-secret"}, headers=HEADER)
    assert node.post("/api/jobs/J9/decision", json=approve, headers=HEADER).status_code == 200
    assert honest.posted[0][1]["decision"] == "approved"
