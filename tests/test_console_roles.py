"""The console's doors, per role, without a browser: every page and API call a role may not
use answers 403 when signed in through the console; a signed-in browser cannot be made to
change anything by another site (CSRF). Also: the launch form's check stores nothing, the
compliance views, and `sovereign coordinator serve` with no config serving the console at `/`.
The node's own console against a coordinator that attacks it: tests/adversarial/test_node_console.py.
"""

from __future__ import annotations

import json
import re
import urllib.request
from datetime import datetime, timedelta, timezone

import pytest
from fastapi.testclient import TestClient

from coordinator.api.app import create_account, create_app
from coordinator.costs import privacy_cost
from coordinator.resources import NodeRecord, Role
from coordinator.settings import CoordinatorSettings
from common.wire import JobSpec
from lineage import EventKind, LineageEvent
from lineage.signing import Signer, public_pem
from lineage.views import lineage_graph, policy_versions
from sovereign.console.web import mount_console
from tests.console_helpers import free_port, sovereign, stop

NODES = {"N1": "Kanto", "N2": "Kanto", "N3": "Kansai"}
HEADER = {"X-Sovereign-Console": "1"}
ACCOUNTS = (("root", Role.ADMIN, None), ("hq", Role.ANALYST, None), ("kanto", Role.REGIONAL_ANALYST, "Kanto"),
            ("audit", Role.COMPLIANCE, None), ("it1", Role.BRANCH_IT, "N1"))
JOB = {"spec": {"job_id": "J1", "rounds": 2}, "nodes": ["N1", "N2", "N3"], "min_contributors": 2}


@pytest.fixture()
def service(tmp_path):
    app = mount_console(create_app(CoordinatorSettings(var=tmp_path / "var")))
    for node, region in NODES.items():
        app.state.store.add_node(NodeRecord(node_id=node, public_key=public_pem(Signer.generate(node).public_key),
                                            region=region, country="JP"))
    tokens = {name: create_account(app.state.store, name, role, scope).token for name, role, scope in ACCOUNTS}
    with TestClient(app) as client:
        made = client.post("/jobs", json=JOB, headers={"Authorization": f"Bearer {tokens['hq']}"})
        assert made.status_code == 201, made.text
        yield client, tokens


def sign_in(client: TestClient, token: str) -> None:
    client.cookies.clear()
    answer = client.post("/ui/session", json={"token": token}, headers=HEADER)
    assert answer.status_code == 204, answer.text
    assert "httponly" in answer.headers["set-cookie"].lower() and "samesite=strict" in answer.headers["set-cookie"].lower()


PAGES = ["/ui/jobs", "/ui/launch", "/ui/jobs/J1", "/ui/lineage", "/ui/policies"]
ALLOWED_PAGES = {
    "root": set(PAGES), "hq": {"/ui/jobs", "/ui/launch", "/ui/jobs/J1"}, "kanto": {"/ui/jobs", "/ui/launch", "/ui/jobs/J1"},
    "audit": {"/ui/jobs", "/ui/jobs/J1", "/ui/lineage", "/ui/policies"}, "it1": {"/ui/jobs", "/ui/jobs/J1"},
}
# (method, path, body): calls some roles may not make; each role's forbidden set below.
CALLS = {
    "add account": ("POST", "/accounts", {"name": "x", "role": "analyst"}),
    "list accounts": ("GET", "/accounts", None),
    "add node": ("POST", "/nodes", {"node_id": "N9", "public_key": "k", "region": "Kanto", "country": "JP"}),
    "submit job": ("POST", "/jobs", {**JOB, "spec": {"job_id": "J2", "rounds": 2}}),
    "check job": ("POST", "/jobs/check", {**JOB, "spec": {"job_id": "J2", "rounds": 2}}),
    "start job": ("POST", "/jobs/J1/start", None),
    "results": ("GET", "/jobs/J1/results", None),
    "audit stores": ("GET", "/audit/stores", None),
    "audit events": ("GET", "/audit/events", None),
    "audit graph": ("GET", "/audit/graph", None),
    "audit policies": ("GET", "/audit/policies", None),
    "audit export": ("GET", "/audit/export?format=csv", None),
    "identity card": ("GET", "/audit/card?job_id=J1", None),
    "decide": ("POST", "/jobs/J1/decisions", {"node_id": "N1", "decision": "approved", "reason": "ok",
                                                "signature": "0" * 128}),
}
ADMIN_ONLY = {"add account", "list accounts", "add node"}
AUDIT = {"audit stores", "audit events", "audit graph", "audit policies", "audit export"}
FORBIDDEN = {
    "root": {"decide"},
    "hq": ADMIN_ONLY | AUDIT | {"decide"},
    # J1 and J2 include N3, in Kansai: a regional analyst may not launch, start or stop them
    "kanto": ADMIN_ONLY | AUDIT | {"submit job", "check job", "start job", "identity card", "decide"},
    "audit": ADMIN_ONLY | {"submit job", "check job", "start job", "decide"},
    "it1": ADMIN_ONLY | AUDIT | {"submit job", "check job", "start job", "results", "identity card"},
}


@pytest.mark.parametrize("name", [a[0] for a in ACCOUNTS])
def test_each_role_signed_in_through_the_console_meets_403_at_every_door_not_its_own(service, name):
    client, tokens = service
    sign_in(client, tokens[name])
    for path in PAGES:
        page = client.get(path, follow_redirects=False)
        if path in ALLOWED_PAGES[name]:
            assert page.status_code == 200, (name, path)
        else:
            assert page.status_code == 403 and "Not for this role" in page.text, (name, path, page.status_code)
    for call, (method, path, body) in CALLS.items():
        answer = client.request(method, path, json=body, headers=HEADER)
        if call in FORBIDDEN[name]:
            assert answer.status_code == 403, (name, call, answer.status_code, answer.text)
        else:
            assert "may not do this" not in answer.text, (name, call, answer.text)  # past the role check
    nav = client.get("/ui/jobs").text
    assert ('href="/ui/lineage"' in nav) is ("/ui/lineage" in ALLOWED_PAGES[name])
    assert ('href="/ui/launch"' in nav) is ("/ui/launch" in ALLOWED_PAGES[name])


def test_a_regional_analyst_launches_within_its_region_and_nowhere_else(service):
    client, tokens = service
    sign_in(client, tokens["kanto"])
    inside = {**JOB, "spec": {"job_id": "K1", "rounds": 2}, "nodes": ["N1", "N2"]}
    assert client.post("/jobs/check", json=inside, headers=HEADER).status_code == 200
    assert client.post("/jobs", json=inside, headers=HEADER).status_code == 201
    assert client.post("/jobs/K1/stop", json={"reason": "wrong horizon"}, headers=HEADER).json()["state"] == "stopped"
    across = client.post("/jobs", json={**inside, "spec": {"job_id": "K2"}, "nodes": ["N1", "N3"]}, headers=HEADER)
    assert across.status_code == 403 and "N3 is not in Kanto" in across.json()["detail"]
    assert client.get("/jobs/K2").status_code == 404
    head_office = client.post("/jobs/J1/stop", json={"reason": "mine now"}, headers=HEADER)
    assert head_office.status_code == 403 and client.get("/jobs/J1").json()["state"] == "requested"
    assert "N3" not in head_office.json()["detail"]  # of a job's nodes outside its region it learns only how many
    client.app.state.store.add_node(NodeRecord(node_id="S1", public_key="k", region="Kansai", country="JP"))
    bearer = {"Authorization": f"Bearer {tokens['hq']}"}
    client.post("/jobs", json={**JOB, "spec": {"job_id": "KS"}, "nodes": ["N3", "S1"]}, headers=bearer)
    unseen = client.post("/jobs/KS/stop", json={"reason": "x"}, headers=HEADER)
    assert unseen.status_code == 403 and "S1" not in unseen.text and "N3" not in unseen.text


def test_a_signed_in_browser_cannot_be_made_to_change_anything_from_another_site(service):
    client, tokens = service
    forged = client.post("/ui/session", json={"token": tokens["hq"]})  # a cross-site form cannot add the header
    assert forged.status_code == 403 and "sovereign_session" not in forged.headers.get("set-cookie", "")
    sign_in(client, tokens["hq"])
    cross_site = client.post("/jobs/J1/start")  # the cookie alone, as another site's form would send it
    assert cross_site.status_code == 403 and "X-Sovereign-Console" in cross_site.json()["detail"]
    assert client.get("/jobs/J1").json()["state"] == "requested"
    assert client.get("/me").status_code == 200  # reading needs only the cookie
    session = client.cookies.get("sovereign_session")
    assert tokens["hq"] not in session  # the API token does not stay in the browser
    client.delete("/ui/session", headers=HEADER)
    client.cookies.clear()
    assert client.get("/me").status_code == 401
    client.cookies.set("sovereign_session", session)  # a copy of the cookie, after signing out
    assert client.get("/me").status_code == 401 and client.get("/ui/jobs", follow_redirects=False).status_code == 303
    client.cookies.set("sovereign_session", tokens["hq"])  # the token is not a session either
    assert client.get("/me").status_code == 401
    client.cookies.clear()
    assert client.post("/ui/session", json={"token": "not-a-token"}, headers=HEADER).status_code == 401


def test_a_revoked_account_is_signed_out_of_the_console_at_its_next_page(service):
    client, tokens = service
    sign_in(client, tokens["kanto"])
    assert client.get("/ui/jobs").status_code == 200
    account = next(a for a in client.app.state.store.accounts() if a.name == "kanto")
    client.app.state.store.revoke_account(account.name)
    assert client.get("/ui/jobs", follow_redirects=False).status_code == 303
    assert client.get("/jobs").status_code == 401


def test_pages_send_a_visitor_who_is_not_signed_in_to_sign_in(service):
    client, _ = service
    for path in ["/", *PAGES]:
        page = client.get(path, follow_redirects=False)
        assert page.status_code == 303 and page.headers["location"].startswith("/ui/signin"), path
    signin = client.get("/ui/signin")
    assert signin.status_code == 200 and "script-src" not in signin.headers["content-security-policy"]
    assert "default-src 'self'" in signin.headers["content-security-policy"]  # no inline script, no CDN
    assert "frame-ancestors 'none'" in signin.headers["content-security-policy"]
    assert client.get("/audit/stores").status_code == 401


def test_the_launch_forms_check_names_the_field_prices_the_job_and_stores_nothing(service):
    client, tokens = service
    bearer = {"Authorization": f"Bearer {tokens['hq']}"}
    before = len(client.app.state.lineage.events())
    bad = client.post("/jobs/check", json={**JOB, "spec": {"job_id": "J2", "rounds": 0}}, headers=bearer)
    assert bad.status_code == 422 and bad.json()["detail"][0]["loc"] == ["body", "spec", "rounds"]
    too_few = client.post("/jobs/check", json={**JOB, "spec": {"job_id": "J2"}, "min_contributors": 5}, headers=bearer)
    assert too_few.status_code == 422 and "min_contributors" in too_few.json()["detail"]
    taken = client.post("/jobs/check", json=JOB, headers=bearer)
    assert taken.status_code == 422 and "job J1 exists already" in taken.json()["detail"]
    spec = {"job_id": "J2", "rounds": 12, "customer_dp": {"epsilon": 0.5}, "node_dp": {"enabled": True}}
    good = client.post("/jobs/check", json={**JOB, "spec": spec}, headers=bearer)
    assert good.status_code == 200, good.text
    cost = good.json()["privacy"]
    assert cost == privacy_cost(JobSpec.model_validate(spec)).model_dump()
    assert cost["rounds"] == 12 and cost["record_epsilon"] > 0 and cost["node_epsilon"] > 0
    fewer = client.post("/jobs/check", json={**JOB, "spec": {**spec, "rounds": 3}}, headers=bearer).json()["privacy"]
    assert fewer["node_epsilon"] < cost["node_epsilon"]  # node-level ε grows with the rounds
    unplannable = {**spec, "customer_dp": {"epsilon": 0.01}}
    warned = client.post("/jobs/check", json={**JOB, "spec": unplannable}, headers=bearer)
    assert warned.status_code == 200 and "spec.customer_dp.epsilon" in warned.json()["privacy"]["warnings"][0]
    assert client.get("/jobs/J2", headers=bearer).status_code == 404
    assert len(client.app.state.lineage.events()) == before  # a check is not a request


def test_bad_input_to_the_consoles_routes_gets_a_4xx_never_a_500(service):
    client, tokens = service
    bearer = {"Authorization": f"Bearer {tokens['root']}"}
    for spec in ({"node_dp": {"enabled": True, "clip": 1e999}}, {"node_dp": {"enabled": True, "noise_multiplier": 1e300}},
                 {"bounds": {"max_model_norm": float("nan")}}):
        for path in ("/jobs/check", "/jobs"):
            answer = client.post(path, content=json.dumps({**JOB, "spec": {"job_id": "X1", **spec}}),
                                 headers={**bearer, "Content-Type": "application/json"})
            assert answer.status_code == 422, (path, spec, answer.text)
    assert client.get("/jobs", headers=bearer).status_code == 200  # nothing unreadable was stored
    for since in ("0001-01-01T00:00+01:00", "9999-12-31T23:59-01:00", "yesterday"):
        assert client.get("/audit/events", params={"since": since}, headers=bearer).status_code == 422, since
    for job_id in ("日本", 'a"; filename="x.exe', "a\r\nSet-Cookie: x=1"):
        export = client.get("/audit/export", params={"format": "csv", "job_id": job_id}, headers=bearer)
        assert export.status_code == 200 and re.fullmatch(r'attachment; filename="[A-Za-z0-9_.-]+"',
                                                          export.headers["content-disposition"]), job_id
    assert client.post("/ui/session", json={"token": "é" * 10}, headers=HEADER).status_code == 401


# --- the compliance views -------------------------------------------------------------------
def _event(kind, actor="N1", job="J1", **kw) -> LineageEvent:
    return LineageEvent(kind=kind, actor=actor, job_id=job, purpose="forecasting", **kw)


def test_the_lineage_graph_runs_from_dataset_and_fields_to_job_to_model():
    graph = lineage_graph([
        _event(EventKind.DATA_READ, dataset="sales", fields=["sale_month", "units"]),
        _event(EventKind.DATA_READ, actor="N2", dataset="sales", fields=["units"]),
        _event(EventKind.AGGREGATION, actor="coordinator", model_version="m-1"),
        _event(EventKind.JOB_STATE, actor="coordinator", job="J9"),  # touches no data: no node in the graph
    ])
    edges = {(e.source, e.target, e.relation) for e in graph.edges}
    assert ("dataset:N1/sales", "field:N1/units", "has_field") in edges
    assert ("field:N2/units", "job:J1", "read_by") in edges and ("job:J1", "model:m-1", "produced") in edges
    assert {n.kind for n in graph.nodes} == {"dataset", "field", "job", "model"}
    assert "job:J9" not in {n.id for n in graph.nodes}


def test_policy_versions_show_what_changed_field_by_field():
    start = datetime(2026, 11, 1, tzinfo=timezone.utc)

    def decided(hash_, version, units, day, job):
        decisions = [{"field": "units", "class": "business", "treatment": units, "rule": "r1"},
                     {"field": "customer_id", "class": "pii", "treatment": "dropped", "rule": "r2"}]
        return _event(EventKind.POLICY_DECISION, job=job, policy_hash=hash_, recorded_at=start + timedelta(days=day),
                      details={"policy": "domestic_dealer", "version": version, "decisions": decisions})

    versions = policy_versions([decided("h2", "2", "clipped at 50", 5, "J2"), decided("h1", "1", "kept", 1, "J1"),
                                decided("h1", "1", "kept", 2, "J1b")])
    assert [(v.version, v.jobs) for v in versions] == [("1", ["J1", "J1b"]), ("2", ["J2"])]
    assert versions[0].changes == []
    [change] = versions[1].changes
    assert change.field == "units" and change.before.treatment == "kept" and change.after.treatment == "clipped at 50"


# --- the command ------------------------------------------------------------------------------
def test_coordinator_serve_with_no_config_serves_the_console_at_the_root(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    port = free_port()
    server = sovereign("coordinator", "serve", "--port", str(port), log=tmp_path / "serve.log")
    try:
        from sovereign.deploy_local import wait_until_up

        wait_until_up(f"http://127.0.0.1:{port}")

        class NoRedirect(urllib.request.HTTPRedirectHandler):
            def redirect_request(self, *args, **kwargs):
                return None

        opener = urllib.request.build_opener(NoRedirect)
        with pytest.raises(urllib.error.HTTPError) as moved:
            opener.open(f"http://127.0.0.1:{port}/")
        assert moved.value.code == 303 and moved.value.headers["location"] == "/ui/signin"
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/ui/signin") as page:
            html = page.read().decode()
        assert page.status == 200 and "Sign in" in html and "https://" not in html  # no CDN: assets are served here
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/ui/static/console.js") as asset:
            assert asset.status == 200
    finally:
        stop(server)


def test_the_job_pages_yardstick_is_the_evaluations_own_list_of_statistical_methods():
    from pathlib import Path

    from common.evaluation import STATISTICAL_ARMS

    script = (Path(__file__).resolve().parents[1] / "sovereign/console/static/job.js").read_text()
    listed = re.search(r"const STATISTICAL = \[([^\]]*)\]", script).group(1)
    assert sorted(re.findall(r'"([a-z_0-9]+)"', listed)) == sorted(STATISTICAL_ARMS)
