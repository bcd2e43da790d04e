"""The web console end to end, in a real headless Chromium, against a running coordinator
service with three simulated nodes on Flower's simulation runtime.

An analyst launches a joint forecast (validated as they type) and watches it finish with a
regional forecast; branch IT approves it in its node's own console (signed with the node's
key); compliance finds the job's lineage, sees every store verified, and exports it as
OpenLineage. A screenshot of each page goes to test-artifacts/console/.
"""

from __future__ import annotations

import json

import pytest
import yaml

from tests.console_helpers import ARTIFACTS, browser, free_port, sovereign, stop
from tests.service_helpers import cli, longest_histories, register_with_service, wait_until_up

JOB = "console-e2e"


@pytest.fixture(scope="module")
def service(tmp_path_factory, small_alliance):
    tmp = tmp_path_factory.mktemp("console")
    # One region for all three: a node releases a region's total only when it spans at least its
    # minimum of contributors (2) and the alliance minus it is empty or as large, so of three
    # branches only a region holding all of them can be released.
    configs, coordinator = longest_histories(tmp, small_alliance, 3, region="Kanto")
    settings = tmp / "coordinator.yaml"
    settings.write_text(yaml.safe_dump({"var": str(tmp / "var"), "runner": {
        "kind": "simulation", "coordinator_dir": str(coordinator.root), "nodes_root": str(tmp / "nodes"),
        "round_timeout": 300, "node_wait": 30}}))
    tokens = register_with_service(settings, configs, coordinator)
    port, node_port = free_port(), free_port()
    url, node_url = f"http://127.0.0.1:{port}", f"http://127.0.0.1:{node_port}"
    server = sovereign("coordinator", "serve", "--config", str(settings), "--port", str(port), log=tmp / "serve.log")
    branch = configs[0]
    node = sovereign("node", "console", "--node-dir", str(branch.node_dir), "--coordinator", url, "--token",
                     tokens[branch.branch_id], "--port", str(node_port), "--access-token", "node-console-secret",
                     log=tmp / "node-console.log")
    try:
        wait_until_up(url)
        wait_until_up(node_url)
        yield {"url": url, "node_url": node_url, "tokens": tokens, "configs": configs, "tmp": tmp}
    finally:
        stop(node)
        stop(server)


@pytest.fixture(scope="module")
def chromium():
    manager, engine = browser()
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    yield engine
    engine.close()
    manager.stop()


BLOCKED: list[str] = []  # what the pages' Content-Security-Policy refused, and scripts' uncaught errors (must stay empty)


def sign_in(engine, base: str, token: str, start: str = "/", shot_as: str | None = None):
    page = engine.new_context(viewport={"width": 1366, "height": 900}, accept_downloads=True).new_page()
    page.on("console", lambda m: BLOCKED.append(m.text) if "Content Security Policy" in m.text else None)
    page.on("pageerror", lambda error: BLOCKED.append(f"{page.url}: {error}"))
    page.goto(f"{base}{start}")
    page.wait_for_url("**/ui/signin**")
    if shot_as:
        shot(page, shot_as)
    page.fill("#token", token)
    page.click("#signin button[type=submit]")
    page.wait_for_url(lambda url: "/ui/signin" not in url)
    return page


def run_second_job(service, job_id: str) -> None:
    """A one-round job through the API and the CLI, as a script would run it."""
    import time

    import httpx

    hq = {"Authorization": f"Bearer {service['tokens']['hq']}"}
    nodes = [c.branch_id for c in service["configs"]]
    made = httpx.post(f"{service['url']}/jobs", headers=hq, json={
        "spec": {"job_id": job_id, "rounds": 1, "local_epochs": 1, "regions": ["Kanto"]}, "nodes": nodes, "min_contributors": 2})
    assert made.status_code == 201, made.text
    for c in service["configs"]:
        cli("node", "approve", job_id, "--node-dir", str(c.node_dir), "--reason", "fine", "--coordinator", service["url"],
            "--token", service["tokens"][c.branch_id])
    assert httpx.post(f"{service['url']}/jobs/{job_id}/start", headers=hq, json={}).status_code == 200
    deadline = time.monotonic() + 300
    while (state := httpx.get(f"{service['url']}/jobs/{job_id}", headers=hq).json()["state"]) == "running":
        assert time.monotonic() < deadline, f"{job_id} still running"
        time.sleep(1)
    assert state == "completed", state


def shot(page, name: str) -> None:
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def test_analyst_branch_it_and_compliance_take_a_job_from_launch_to_exported_lineage(service, chromium):
    configs, tokens = service["configs"], service["tokens"]

    # The analyst launches: a bad id is named as they type, then the job is requested of three branches.
    analyst = sign_in(chromium, service["url"], tokens["hq"], shot_as="sign-in")
    analyst.goto(f"{service['url']}/ui/launch")
    analyst.wait_for_selector("input[name=node]")
    analyst.fill("input[name=job_id]", "not a valid id!")
    analyst.wait_for_selector("#check:has-text('job_id')")  # selectors, not script: the CSP refuses eval
    assert analyst.is_disabled("#submit")
    analyst.fill("input[name=job_id]", JOB)
    analyst.fill("input[name=rounds]", "2")
    analyst.fill("input[name=local_epochs]", "1")
    analyst.fill("input[name=min_contributors]", "2")
    region = configs[0].region
    analyst.check(f"input[name=region][value='{region}']")
    analyst.wait_for_selector("#check:has-text('ready to request of 3')")
    assert "ε 8" in analyst.inner_text("#cost")  # the record-level cost of the default choice
    shot(analyst, "analyst-launch")
    analyst.click("#submit")
    analyst.wait_for_url(f"**/ui/jobs/{JOB}")
    analyst.wait_for_selector("#state")
    assert analyst.inner_text("#state") == "requested"

    # Branch IT approves in its node's own console, which shows what the job would read there.
    it = sign_in(chromium, service["node_url"], "node-console-secret")
    shot(it, "branch-it-node")
    it.goto(f"{service['node_url']}/jobs")
    request = it.wait_for_selector(f"section[data-job='{JOB}']")
    assert "sales." in request.inner_text()  # the fields it would read, as this node's policy treats them
    assert "record-level DP" in request.inner_text() and "ε 8 at δ 1e-05" in request.inner_text()  # and all else it asks
    it.fill(f"#reason-{JOB}", "forecasting for head office, within budget")
    it.click(f"section[data-job='{JOB}'] button.approve")
    it.wait_for_selector(f"#decision-{JOB}")
    assert it.inner_text(f"#decision-{JOB}") == "approved"
    shot(it, "branch-it-jobs")
    for other in configs[1:]:  # the other two branches answer from the command line
        cli("node", "approve", JOB, "--node-dir", str(other.node_dir), "--reason", "fine", "--coordinator",
            service["url"], "--token", tokens[other.branch_id])

    # The analyst starts it and watches it finish with the alliance's and the region's forecast.
    analyst.wait_for_selector("#start:not([disabled])", timeout=15_000)
    analyst.click("#start")
    analyst.wait_for_selector("#state:text-is('completed'), #state:text-is('failed')", timeout=420_000)
    assert analyst.inner_text("#state") == "completed", analyst.inner_text("#summary")
    analyst.wait_for_selector("#results-card:not([hidden]) svg")
    results = analyst.inner_text("#results")
    assert "Alliance (3 branches)" in results and f"Region {region} (3 branches)" in results and "95 % interval" in results
    assert "2 of 2 rounds closed" in analyst.inner_text("#progress")
    assert "Against the best a branch could do alone" in results and "Against what stores do today" in results
    shot(analyst, "analyst-results")
    analyst.emulate_media(media="print")  # printed: the figures without the header bar or the buttons
    assert not analyst.is_visible("header.bar") and not analyst.is_visible("#download-report")
    assert analyst.is_visible("#results table")
    shot(analyst, "analyst-results-print")
    analyst.pdf(path=str(ARTIFACTS / "analyst-results.pdf"), format="A4")
    analyst.emulate_media(media="screen")
    analyst.goto(f"{service['url']}/ui/jobs")
    analyst.wait_for_selector(f"a[href='/ui/jobs/{JOB}']")
    shot(analyst, "analyst-jobs")

    # Branch IT sees the job's spend in its budget, and its own forecast, which never left the node.
    it.goto(f"{service['node_url']}/")
    it.wait_for_selector(f"#forecast:has-text('Job {JOB}') table")
    assert "MASE" in it.inner_text("#forecast") and "95 % interval" in it.inner_text("#forecast")
    assert JOB in it.inner_text("#budget")
    shot(it, "branch-it-forecast")

    # Compliance finds the job's lineage, sees every chain verified, and exports it.
    audit = sign_in(chromium, service["url"], tokens["audit"], start="/ui/signin?next=/.//example.invalid/")
    assert audit.url.startswith(service["url"]) and "/ui/lineage" in audit.url  # sign-in never leads off the site
    audit.wait_for_selector("#stores table")
    stores = audit.inner_text("#stores")
    assert "verified" in stores and "FAILED" not in stores
    assert configs[0].branch_id in stores  # the nodes' own stores, not only the coordinator's
    audit.fill("#search input[name=job_id]", JOB)
    audit.click("#search button[type=submit]")
    audit.wait_for_selector("#events:has-text('data_read')")
    assert audit.query_selector("#lineage-graph") is not None
    shot(audit, "compliance-lineage")
    with audit.expect_download() as download:
        audit.click("#export-openlineage")
    exported = json.loads(open(download.value.path()).read())
    assert exported and {e["job"]["name"] for e in exported} >= {JOB}
    with audit.expect_download() as download:
        audit.click("#export-html")
    report = open(download.value.path()).read()
    assert "Integrity" in report and "verified" in report and "TAMPERED" not in report and JOB in report
    with audit.expect_download() as download:
        audit.click("#export-csv")
    assert JOB in open(download.value.path()).read().splitlines()[1]
    # B002's IT tightens its policy (v4: the VIN only as a keyed hash); one more job runs under it,
    # and compliance sees both versions with the field that changed.
    changed = configs[0].policy_path.read_text().replace("version: 3", "version: 4", 1).replace(
        "match: {field: sales.vin, cross_border: false}\n    treatment: allow",
        "match: {field: sales.vin, cross_border: false}\n    treatment: {hash: node-key}", 1)
    assert "version: 4" in changed and "cross_border: false}\n    treatment: {hash: node-key}" in changed
    configs[0].policy_path.write_text(changed)
    run_second_job(service, f"{JOB}-v4")
    audit.goto(f"{service['url']}/ui/policies")
    audit.wait_for_selector(f"#policies section:has-text('{configs[0].branch_id}') >> text=v4")
    policies = audit.inner_text("#policies")
    assert "v3" in policies and "v4" in policies and "Changed from the version before" in policies
    assert "allow [personal] (vin-on-node-at-home)" in policies and "keyed hash" in policies
    shot(audit, "compliance-policies")
    forbidden = audit.goto(f"{service['url']}/ui/launch")
    assert forbidden.status == 403 and "Not for this role" in audit.inner_text("main")
    shot(audit, "compliance-forbidden")
    assert BLOCKED == []  # every page ran without a script error, under its CSP (no inline script or style, nothing from elsewhere)
