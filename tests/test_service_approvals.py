"""Branch IT answers a job requested through the coordinator service, from the node.

The coordinator runs as its own process (`sovereign coordinator serve`); three real node
directories answer with `sovereign node jobs|approve|deny --coordinator URL`: two approve,
one denies, the job starts on the two, and the denial is in both lineages. The node's word
is its own: what it recorded is what it enforces, whatever the coordinator later sends.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from lineage import EventKind, LineageStore, Signer
from sovereign.cli import app
from sovereign.deployment import free_port
from sovereign.federation import setup_nodes

runner = CliRunner()


def _cli(*args: str) -> str:
    result = runner.invoke(app, list(args))
    assert result.exit_code == 0, result.output
    return result.output


@pytest.fixture(scope="module")
def service(tmp_path_factory, small_alliance):
    """One service and three nodes for the module (about 7 s to set up). Each test has its own
    jobs; the only one with recorded decisions is q3 (refused answers record none), so what a
    test counts does not depend on which tests ran before it."""
    tmp_path = tmp_path_factory.mktemp("service-approvals")
    configs = setup_nodes(sorted(small_alliance.glob("*.db"))[:3], tmp_path / "nodes")
    settings = tmp_path / "coordinator.yaml"
    settings.write_text(f"var: {tmp_path / 'var'}\n")
    tokens = {}
    for c in configs:
        Signer.load_or_create(c.branch_id, c.lineage_key_dir)
        _cli("coordinator", "node", "add", c.branch_id, "--public-key", str(c.lineage_key_dir / "lineage-ed25519.pub"),
             "--region", c.region or "none", "--config", str(settings))
        tokens[c.branch_id] = _cli("coordinator", "account", "add", f"it-{c.branch_id}", "--role", "branch_it",
                                   "--scope", c.branch_id, "--config", str(settings)).strip().splitlines()[-1]
    tokens["hq"] = _cli("coordinator", "account", "add", "hq", "--role", "analyst", "--config",
                        str(settings)).strip().splitlines()[-1]
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "sovereign.cli", "coordinator", "serve", "--config", str(settings),
                               "--port", str(port)], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(150):
            try:
                httpx.get(f"{url}/health")
                break
            except httpx.TransportError:
                time.sleep(0.1)
        yield url, tokens, configs
    finally:
        server.terminate()
        server.wait(timeout=10)


def test_two_nodes_approve_one_denies_and_the_job_runs_on_the_two(service):
    url, tokens, configs = service
    hq = {"Authorization": f"Bearer {tokens['hq']}"}
    nodes = [c.branch_id for c in configs]
    made = httpx.post(f"{url}/jobs", headers=hq, json={"spec": {"job_id": "q3", "rounds": 2}, "nodes": nodes,
                                                       "min_contributors": 2})
    assert made.status_code == 201, made.text
    first, second, third = configs
    listing = _cli("node", "jobs", "--node-dir", str(first.node_dir), "--coordinator", url, "--token", tokens[first.branch_id])
    assert "q3" in listing and "take it" in listing and "awaiting yours" in listing
    assert "q3 reads, after this node's policy: sales.sale_id allow; sales.sale_date generalise to month" in listing
    assert "sales.vin keyed hash" in listing and "sales.customer" not in listing
    assert "│ 8 (32)" in listing  # the ε it plans, against what this dataset has left
    assert "also asks: target monthly_units, 6 months ahead" in listing and "encryption CKKS" in listing
    read = json.loads(_cli("node", "jobs", "--node-dir", str(first.node_dir), "--coordinator", url, "--token",
                           tokens[first.branch_id], "--json"))["jobs"][0]["spec_hash"][:12]
    assert f"q3 (spec {read}) also asks" in listing  # the spec hash branch IT reads and then decides on
    stale = runner.invoke(app, ["node", "approve", "q3", "--node-dir", str(first.node_dir), "--reason", "agreed",
                                "--spec-hash", "0" * 12, "--coordinator", url, "--token", tokens[first.branch_id]])
    assert stale.exit_code == 2 and "not the 000000000000 you read" in stale.output
    pending = httpx.get(f"{url}/jobs/q3", headers=hq).json()["nodes"]
    assert {a["node_id"]: a["decision"] for a in pending}[first.branch_id] == "pending"  # nothing signed or sent
    for c, verb, why in ((first, "approve", "agreed"), (second, "approve", "agreed"), (third, "deny", "not this quarter")):
        out = _cli("node", verb, "q3", "--node-dir", str(c.node_dir), "--reason", why, "--coordinator", url,
                   "--token", tokens[c.branch_id], *(["--spec-hash", read] if c is first else []))
        assert "signed and in lineage" in out and "sent to" in out
    job = httpx.get(f"{url}/jobs/q3", headers=hq).json()
    assert {a["node_id"]: a["decision"] for a in job["nodes"]} == {
        first.branch_id: "approved", second.branch_id: "approved", third.branch_id: "denied"}
    started = httpx.post(f"{url}/jobs/q3/start", headers=hq).json()
    assert started["state"] == "running" and f"{first.branch_id}, {second.branch_id}" in started["steps"][-1]["reason"]
    node_side = LineageStore(third.lineage_url).events(kind=EventKind.JOB_DECISION, job_id="q3")
    assert [e.details["decision"] for e in node_side] == ["denied"] and node_side[0].details["reason"] == "not this quarter"
    coordinator_side = LineageStore(f"sqlite:///{Path(str(configs[0].node_dir)).parents[1] / 'var' / 'lineage.db'}")
    decisions = [(e.details["node"], e.details["decision"]) for e in coordinator_side.events(kind=EventKind.JOB_DECISION)]
    assert (third.branch_id, "denied") in decisions and len(decisions) == 3


def test_a_node_cannot_answer_for_another_and_its_own_rules_come_first(service, tmp_path):
    url, tokens, configs = service
    hq = {"Authorization": f"Bearer {tokens['hq']}"}
    nodes = [c.branch_id for c in configs]
    httpx.post(f"{url}/jobs", headers=hq, json={"spec": {"job_id": "mkt", "purpose": "marketing"}, "nodes": nodes,
                                                "min_contributors": 2})
    first, second, _ = configs
    refused = runner.invoke(app, ["node", "approve", "mkt", "--node-dir", str(first.node_dir), "--reason", "sure",
                                  "--coordinator", url, "--token", tokens[first.branch_id]])
    assert refused.exit_code == 2 and "own rules refuse job mkt (purpose)" in refused.output
    httpx.post(f"{url}/jobs", headers=hq, json={"spec": {"job_id": "fc"}, "nodes": nodes, "min_contributors": 2})
    wrong = runner.invoke(app, ["node", "approve", "fc", "--node-dir", str(first.node_dir), "--reason", "ok",
                                "--coordinator", url, "--token", tokens[second.branch_id]])
    assert wrong.exit_code == 1 and "answers for node" in wrong.output and "Traceback" not in wrong.output
    no_service = runner.invoke(app, ["node", "jobs", "--node-dir", str(first.node_dir), "--coordinator",
                                     f"http://127.0.0.1:{free_port()}", "--token", "x"])
    assert no_service.exit_code == 2 and "cannot reach the coordinator" in no_service.output


def test_the_analyst_submits_follows_and_stops_a_job_from_the_command_line(service, tmp_path):
    url, tokens, configs = service
    job_file = tmp_path / "q4.yaml"
    job_file.write_text("spec:\n  job_id: q4\n  rounds: 2\nnodes: [" + ", ".join(c.branch_id for c in configs)
                        + "]\nmin_contributors: 2\n")
    common = ["--coordinator", url, "--token", tokens["hq"]]
    submitted = _cli("job", "submit", str(job_file), *common)
    assert "q4: requested" in submitted and "3 pending" in submitted
    assert "q4" in _cli("job", "list", "--state", "requested", *common)
    stopped = runner.invoke(app, ["job", "stop", "q4", "--reason", "wrong horizon", *common])
    assert stopped.exit_code == 0 and "q4: stopped" in stopped.output and "wrong horizon" in stopped.output
    follow = runner.invoke(app, ["job", "status", "q4", "--follow", *common])
    assert follow.exit_code == 1 and "stopped" in follow.output  # it ends at a final state, non-zero when not completed
    again = runner.invoke(app, ["job", "stop", "q4", "--reason", "twice", *common])
    assert again.exit_code == 1 and "409 cannot stop a stopped job" in again.output
    bad = tmp_path / "bad.yaml"
    bad.write_text("spec:\n  job_id: q5\n  horizon: 40\nnodes: [x]\n")
    refused = runner.invoke(app, ["job", "submit", str(bad), *common])
    assert refused.exit_code == 2 and f"{bad}: spec.horizon:" in refused.output
    resubmitted = runner.invoke(app, ["job", "submit", str(job_file), *common])
    assert resubmitted.exit_code == 1 and "job q4 already exists" in resubmitted.output
    results = runner.invoke(app, ["job", "results", "q4", *common])
    assert results.exit_code == 1 and "409" in results.output and "released no results" in results.output
