"""The coordinator service: a job's lifecycle, nodes' signed decisions, roles, and bad input.

The REST API runs in-process (FastAPI's test client) on a fresh SQLite store; the store is
also run against the real PostgreSQL server. Attacks are played as the API would see them:
a branch answering for another, a decision signed by the wrong key or over another spec, a
replayed approval, tokens of the wrong role.
"""

from __future__ import annotations

import uuid

import pytest
from fastapi.testclient import TestClient

from common.wire import JobSpec, decision_message
from coordinator.api.app import create_account, create_app
from coordinator.lifecycle import Decision, JobState, LifecycleError, check_start, next_state
from coordinator.resources import NodeRecord, Role, RoundRecord
from coordinator.settings import CoordinatorSettings
from coordinator.store import Conflict, CoordinatorStore
from lineage import EventKind
from lineage.signing import Signer, public_pem
from tests.conftest import service_url

NODES = {"N1": "Kanto", "N2": "Kanto", "N3": "Kansai"}


# --- lifecycle rules --------------------------------------------------------------------
def test_a_final_job_cannot_be_moved_again():
    for final in (JobState.COMPLETED, JobState.FAILED, JobState.STOPPED):
        for action in ("request", "start", "complete", "fail", "stop"):
            with pytest.raises(LifecycleError, match=f"cannot {action} a {final.value} job"):
                next_state(final, action)
    assert next_state(JobState.REQUESTED, "start") is JobState.RUNNING
    with pytest.raises(LifecycleError, match="cannot complete a requested job"):
        next_state(JobState.REQUESTED, "complete")


def test_a_job_starts_only_with_enough_approvals_and_only_on_them():
    decisions = {"N1": Decision.APPROVED, "N2": Decision.DENIED, "N3": Decision.PENDING}
    with pytest.raises(LifecycleError, match="1 of 3 nodes approved, the job needs 2 \\(1 have not decided\\)"):
        check_start(decisions, 2)
    assert check_start({**decisions, "N3": Decision.APPROVED}, 2) == ["N1", "N3"]


# --- the service through its API -------------------------------------------------------
@pytest.fixture()
def service(tmp_path):
    app = create_app(CoordinatorSettings(var=tmp_path / "var"))
    keys = {node: Signer.generate(node) for node in NODES}
    for node, region in NODES.items():
        app.state.store.add_node(NodeRecord(node_id=node, public_key=public_pem(keys[node].public_key), region=region,
                                            country="JP"))
    tokens = {}
    for name, role, scope in (("root", Role.ADMIN, None), ("hq", Role.ANALYST, None),
                              ("kanto", Role.REGIONAL_ANALYST, "Kanto"), ("kansai", Role.REGIONAL_ANALYST, "Kansai"),
                              ("it1", Role.BRANCH_IT, "N1"), ("it2", Role.BRANCH_IT, "N2"),
                              ("it3", Role.BRANCH_IT, "N3"), ("audit", Role.COMPLIANCE, None)):
        tokens[name] = create_account(app.state.store, name, role, scope).token
    with TestClient(app) as client:
        yield client, tokens, keys


def _as(tokens, name):
    return {"Authorization": f"Bearer {tokens[name]}"}


def _submit(client, tokens, job_id="J1", nodes=("N1", "N2", "N3"), **extra):
    body = {"spec": {"job_id": job_id, "rounds": 2}, "nodes": list(nodes), "min_contributors": 2, **extra}
    return client.post("/jobs", json=body, headers=_as(tokens, "hq"))


def _decide(client, tokens, keys, node, decision, *, job_id="J1", reason="ok", signer=None, as_account=None,
            spec_hash=None):
    spec_hash = spec_hash or client.get(f"/jobs/{job_id}", headers=_as(tokens, "hq")).json()["spec_hash"]
    signature = (signer or keys[node]).sign(decision_message(job_id, spec_hash, decision, reason))
    return client.post(f"/jobs/{job_id}/decisions", headers=_as(tokens, as_account or f"it{node[1]}"),
                       json={"node_id": node, "decision": decision, "reason": reason, "signature": signature})


def test_a_job_goes_from_request_through_signed_approvals_to_running(service):
    client, tokens, keys = service
    made = _submit(client, tokens)
    assert made.status_code == 201 and made.json()["state"] == "requested"
    assert [s["state"] for s in made.json()["steps"]] == ["draft", "requested"]
    assert _decide(client, tokens, keys, "N1", "approved").status_code == 200
    early = client.post("/jobs/J1/start", headers=_as(tokens, "hq"))
    assert early.status_code == 409 and "1 of 3 nodes approved, the job needs 2" in early.json()["detail"]
    assert _decide(client, tokens, keys, "N2", "approved").status_code == 200
    assert _decide(client, tokens, keys, "N3", "denied", reason="no cross-border jobs").status_code == 200
    started = client.post("/jobs/J1/start", headers=_as(tokens, "hq")).json()
    assert started["state"] == "running" and "training on 2 approving nodes: N1, N2" in started["steps"][-1]["reason"]
    answers = {a["node_id"]: (a["decision"], a["reason"]) for a in started["nodes"]}
    assert answers["N3"] == ("denied", "no cross-border jobs")
    events = client.get("/lineage/events", params={"job_id": "J1"}, headers=_as(tokens, "audit")).json()
    kinds = [(e["kind"], e["details"].get("node"), e["details"].get("decision")) for e in events]
    assert ("job_decision", "N3", "denied") in kinds and ("job_state", None, None) in kinds
    assert [e["details"]["state"] for e in events if e["kind"] == "job_state"] == ["draft", "requested", "running"]


def test_a_decision_is_accepted_only_under_its_nodes_key_over_the_exact_spec(service):
    client, tokens, keys = service
    _submit(client, tokens)
    forged = _decide(client, tokens, keys, "N2", "approved", signer=keys["N1"])  # N2's IT, N1's key
    assert forged.status_code == 403 and "not signed by node N2's key" in forged.json()["detail"]
    other_spec = JobSpec(job_id="J1", rounds=200).spec_hash()  # an approval of another spec under the same id
    altered = _decide(client, tokens, keys, "N2", "approved", spec_hash=other_spec)
    assert altered.status_code == 403
    for_another = _decide(client, tokens, keys, "N2", "approved", as_account="it1")
    assert for_another.status_code == 403 and "answers for node N1, not N2" in for_another.json()["detail"]
    assert _decide(client, tokens, keys, "N2", "denied").status_code == 200
    replay = _decide(client, tokens, keys, "N2", "approved")
    assert replay.status_code == 409 and "already" in replay.json()["detail"]
    job = client.get("/jobs/J1", headers=_as(tokens, "hq")).json()
    assert {a["node_id"]: a["decision"] for a in job["nodes"]}["N2"] == "denied"
    refusals = [e for e in client.get("/lineage/events", params={"job_id": "J1"}, headers=_as(tokens, "audit")).json()
                if e["kind"] == EventKind.REFUSAL.value]
    assert len(refusals) >= 2 and all(e["details"]["code"] == 403 for e in refusals[:2])


def test_each_role_sees_and_does_only_its_own(service):
    client, tokens, keys = service
    assert client.get("/jobs").status_code == 401
    assert client.get("/jobs", headers={"Authorization": "Bearer not-a-token"}).status_code == 401
    for name in ("it1", "kansai", "audit"):  # kansai: N1 is in Kanto
        refused = client.post("/jobs", json={"spec": {"job_id": "Y"}, "nodes": ["N1"], "min_contributors": 1},
                              headers=_as(tokens, name))
        assert refused.status_code == 403
    assert client.get("/accounts", headers=_as(tokens, "hq")).status_code == 403
    assert client.get("/lineage/events", headers=_as(tokens, "hq")).status_code == 403
    assert client.get("/nodes/N2", headers=_as(tokens, "it1")).status_code == 403
    assert [n["node_id"] for n in client.get("/nodes", headers=_as(tokens, "it1")).json()] == ["N1"]
    assert [n["node_id"] for n in client.get("/nodes", headers=_as(tokens, "kansai")).json()] == ["N3"]
    _submit(client, tokens, job_id="K1", nodes=("N1", "N2"))
    _submit(client, tokens, job_id="J1")
    assert client.get("/jobs/K1", headers=_as(tokens, "it3")).status_code == 403
    assert client.get("/jobs/K1", headers=_as(tokens, "kansai")).status_code == 403
    assert [j["job_id"] for j in client.get("/jobs", headers=_as(tokens, "it3")).json()] == ["J1"]
    mine = client.get("/jobs/K1", headers=_as(tokens, "it1")).json()
    assert [a["node_id"] for a in mine["nodes"]] == ["N1"]  # not N2's answer or reason
    assert [a["node_id"] for a in client.get("/jobs/J1", headers=_as(tokens, "kansai")).json()["nodes"]] == ["N3"]


def test_a_regional_analyst_reads_only_its_regions_released_totals(service):
    client, tokens, keys = service
    _submit(client, tokens)
    for node in ("N1", "N2", "N3"):
        _decide(client, tokens, keys, node, "approved")
    jobs = client.app.state.jobs
    jobs.transition("J1", "start", reason="go", actor="hq")
    released = {"forecast": {"alliance": {"nodes": 3, "point": [30.0]},
                             "regions": {"Kanto": {"nodes": 2, "point": [20.0]}, "Kansai": {"nodes": 0}}}}
    jobs.transition("J1", "complete", reason="8 rounds", actor="coordinator", results=released)
    assert client.get("/jobs/J1/results", headers=_as(tokens, "hq")).json() == released
    kanto = client.get("/jobs/J1/results", headers=_as(tokens, "kanto")).json()
    assert kanto == {"forecast": {"regions": {"Kanto": {"nodes": 2, "point": [20.0]}}}}
    assert "alliance" not in str(client.get("/jobs/J1", headers=_as(tokens, "kansai")).json()["results"])
    assert client.get("/jobs/J1/results", headers=_as(tokens, "it1")).status_code == 403
    finished = client.post("/jobs/J1/stop", headers=_as(tokens, "hq"))
    assert finished.status_code == 409 and "cannot stop a completed job" in finished.json()["detail"]


@pytest.mark.parametrize("body, field", [
    ({"spec": {"job_id": "B1"}, "nodes": ["N1", "ZZ"], "min_contributors": 1}, "nodes: unknown node 'ZZ'"),
    ({"spec": {"job_id": "B2"}, "nodes": ["N1", "N1"], "min_contributors": 1}, "nodes: a node is listed twice"),
    ({"spec": {"job_id": "B3"}, "nodes": ["N1"], "min_contributors": 2}, "min_contributors: 2 is more than the 1"),
])
def test_an_invalid_job_request_is_a_422_naming_its_field_and_is_in_lineage(service, body, field):
    client, tokens, _ = service
    refused = client.post("/jobs", json=body, headers=_as(tokens, "hq"))
    assert refused.status_code == 422 and refused.json()["detail"].startswith(field)
    assert client.get(f"/jobs/{body['spec']['job_id']}", headers=_as(tokens, "hq")).status_code == 404
    events = client.get("/lineage/events", params={"job_id": body["spec"]["job_id"]}, headers=_as(tokens, "audit")).json()
    assert [e["kind"] for e in events] == ["refusal"] and events[0]["details"]["reason"].startswith(field)


def test_malformed_and_oversized_requests_are_refused(service):
    client, tokens, _ = service
    bad = client.post("/jobs", json={"spec": {"job_id": "J", "horizon": 99}, "nodes": ["N1"]}, headers=_as(tokens, "hq"))
    assert bad.status_code == 422 and "horizon" in str(bad.json()["detail"])
    unknown = client.post("/jobs", json={"spec": {"job_id": "J", "gift": 1}, "nodes": ["N1"]}, headers=_as(tokens, "hq"))
    assert unknown.status_code == 422
    huge = client.post("/jobs", content=b"{" + b" " * 2_000_000 + b"}", headers={**_as(tokens, "hq"),
                                                                               "content-type": "application/json"})
    assert huge.status_code == 413

    def chunks():  # no Content-Length: the body streams in, and is counted as it comes
        yield b'{"spec": {"job_id": "J"}, "nodes": ["N1"], "pad": "'
        for _ in range(40):
            yield b"x" * 50_000
        yield b'"}'

    streamed = client.post("/jobs", content=chunks(), headers={**_as(tokens, "hq"), "content-type": "application/json"})
    assert streamed.status_code == 413
    assert client.get("/health").json() == {"status": "ok"}  # and it keeps serving


def test_openapi_lists_every_resource(service):
    client, _, _ = service
    paths = client.get("/openapi.json").json()["paths"]
    for path in ("/jobs", "/jobs/{job_id}", "/jobs/{job_id}/decisions", "/jobs/{job_id}/start", "/jobs/{job_id}/stop",
                 "/jobs/{job_id}/results", "/nodes", "/nodes/{node_id}", "/accounts", "/lineage/events"):
        assert path in paths


# --- the store on a real server --------------------------------------------------------
@pytest.mark.parametrize("server", ["postgresql", "mariadb"])
def test_the_store_on_a_real_server_moves_a_job_once_and_keeps_each_round_once(server):
    store = CoordinatorStore(service_url(server))
    try:
        node = f"P{uuid.uuid4().hex[:8]}"
        store.add_node(NodeRecord(node_id=node, public_key=public_pem(Signer.generate(node).public_key)))
        job_id = f"pg-{uuid.uuid4().hex[:12]}"
        store.create_job(JobSpec(job_id=job_id), nodes=[node], min_contributors=1, actor="hq", reason="test")
        store.move(job_id, JobState.DRAFT, JobState.REQUESTED, reason="asked", actor="hq")
        with pytest.raises(Conflict, match="no longer draft"):
            store.move(job_id, JobState.DRAFT, JobState.STOPPED, reason="late", actor="hq")  # lost the race
        store.decide(job_id, node, Decision.APPROVED, reason="ok", signature="00" * 64)
        with pytest.raises(Conflict, match="already answered"):
            store.decide(job_id, node, Decision.DENIED, reason="changed my mind", signature="00" * 64)
        job = store.job(job_id)
        assert job.state is JobState.REQUESTED and [s.state for s in job.steps] == [JobState.DRAFT, JobState.REQUESTED]
        assert job.decisions() == {node: Decision.APPROVED}
        with pytest.raises(Conflict, match="already registered"):
            store.add_node(NodeRecord(node_id=node, public_key="x"))
        assert store.record_round(job_id, RoundRecord(round=1, contributors=[node], refused={"X": "replay"}))
        assert not store.record_round(job_id, RoundRecord(round=1, contributors=[]))  # the first word stands
        assert [(r.round, r.contributors, r.refused) for r in store.rounds(job_id)] == [(1, [node], {"X": "replay"})]
    finally:
        store.close()


# --- the command line -------------------------------------------------------------------
def test_serve_runs_the_api_as_its_own_process_with_a_token_made_on_the_command_line(tmp_path):
    import subprocess
    import sys
    import time

    import httpx

    from sovereign.deployment import free_port

    config = tmp_path / "coordinator.yaml"
    config.write_text(f"var: {tmp_path / 'var'}\n")
    cli = [sys.executable, "-m", "sovereign.cli", "coordinator"]
    made = subprocess.run([*cli, "account", "add", "hq", "--role", "analyst", "--config", str(config)],
                          capture_output=True, text=True)
    assert made.returncode == 0, made.stderr
    token = made.stdout.strip().splitlines()[-1]
    assert token not in (tmp_path / "var" / "coordinator.db").read_bytes().decode(errors="ignore")  # only its hash
    port = free_port()
    server = subprocess.Popen([*cli, "serve", "--config", str(config), "--port", str(port)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        url = f"http://127.0.0.1:{port}"
        for _ in range(100):
            try:
                if httpx.get(f"{url}/health").status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.1)
        assert httpx.get(f"{url}/jobs", headers={"Authorization": f"Bearer {token}"}).json() == []
        assert httpx.get(f"{url}/jobs").status_code == 401
        assert "/jobs" in httpx.get(f"{url}/openapi.json").json()["paths"]
    finally:
        server.terminate()
        server.wait(timeout=10)


@pytest.mark.parametrize("args, message", [
    (["account", "add", "x", "--role", "boss"], "--role boss: choose one of admin"),
    (["account", "add", "x", "--role", "branch_it"], "scope: a branch_it account needs its node"),
])
def test_account_errors_are_one_line(tmp_path, args, message):
    from typer.testing import CliRunner

    from sovereign.cli import app

    config = tmp_path / "c.yaml"
    config.write_text(f"var: {tmp_path / 'var'}\n")
    result = CliRunner().invoke(app, ["coordinator", *args, "--config", str(config)])
    assert result.exit_code == 2 and message in result.output and "Traceback" not in result.output


def test_a_settings_file_with_an_unknown_field_is_a_one_line_error(tmp_path):
    from typer.testing import CliRunner

    from sovereign.cli import app

    config = tmp_path / "c.yaml"
    config.write_text("var: v\nprot: 80\n")
    result = CliRunner().invoke(app, ["coordinator", "account", "add", "x", "--role", "admin", "--config", str(config)])
    assert result.exit_code == 2 and f"{config}: prot: Extra inputs are not permitted" in result.output


def test_rounds_are_kept_once_and_each_role_sees_only_its_nodes(service):
    client, tokens, keys = service
    assert _submit(client, tokens).status_code == 201
    app = client.app
    for rnd, contributors in ((1, ["N1", "N2", "N3"]), (2, ["N1", "N3"])):
        app.state.jobs.close_round("J1", {"round": rnd, "contributors": contributors,
                                          "refused": {} if rnd == 1 else {"N2": "node error: node is offline"}})
    app.state.jobs.close_round("J1", {"round": 2, "contributors": ["N2"]})  # reported again: the first word stands
    full = client.get("/jobs/J1/rounds", headers=_as(tokens, "hq")).json()
    assert [(r["round"], r["contributors"]) for r in full] == [(1, ["N1", "N2", "N3"]), (2, ["N1", "N3"])]
    mine = client.get("/jobs/J1/rounds", headers=_as(tokens, "it2")).json()
    assert [(r["contributors"], r["refused"], r["others_contributing"]) for r in mine] == [
        (["N2"], {}, 2), ([], {"N2": "node error: node is offline"}, 2)]
    kansai = client.get("/jobs/J1/rounds", headers=_as(tokens, "kansai")).json()
    assert [r["contributors"] for r in kansai] == [["N3"], ["N3"]] and kansai[1]["refused"] == {}
    assert client.get("/jobs/J1/rounds").status_code in (401, 403)


def test_a_job_s_steps_do_not_name_other_nodes_to_branch_it(service):
    client, tokens, keys = service
    _submit(client, tokens)
    for node in ("N1", "N2", "N3"):
        assert _decide(client, tokens, keys, node, "approved").status_code == 200
    client.post("/jobs/J1/start", headers=_as(tokens, "hq"))
    hq = client.get("/jobs/J1", headers=_as(tokens, "hq")).json()["steps"][-1]["reason"]
    it1 = client.get("/jobs/J1", headers=_as(tokens, "it1")).json()["steps"][-1]["reason"]
    assert "N1, N2, N3" in hq
    assert "N1, another node, another node" in it1 and "N2" not in it1 and "N3" not in it1


def test_a_hidden_nodes_id_is_redacted_wherever_it_ends_a_word_or_sentence():
    from coordinator.api.auth import _redact

    reason = "training on 2 approving nodes: N1, N3. N3; (N3) N3-b N3.x N31"
    assert _redact(reason, ["N3"]) == ("training on 2 approving nodes: N1, another node. another node; (another node) "
                                       "N3-b N3.x N31")
