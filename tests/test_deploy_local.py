"""`sovereign deploy-local --once`: the service, a SuperLink with TLS and node authentication
and SuperNodes running the signed bundle come up on loopback, a joint forecast goes through
the REST API with every branch's signed approval, and everything stops afterwards."""

from __future__ import annotations

import json
import subprocess
import sys

from lineage import EventKind, LineageStore
from node_agent.config import load_node_config
from sovereign.deployment import free_port


def test_deploy_local_brings_up_the_service_and_the_supernodes_and_runs_a_job(tmp_path):
    out = tmp_path / "deploy"
    done = subprocess.run([sys.executable, "-m", "sovereign.cli", "deploy-local", "--branches", "4", "--rounds", "1",
                           "--out", str(out), "--port", str(free_port()), "--once"],
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "4 SuperNodes running only" in done.stdout and "completed" in done.stdout
    assert "round 1: 3 contributed" in done.stdout  # the fourth branch opened too recently to train
    tokens = json.loads((out / "tokens.json").read_text())
    assert (out / "tokens.json").stat().st_mode & 0o077 == 0 and {"admin", "hq", "audit"} <= set(tokens)
    trained = 0
    for branch in json.loads((out / "nodes" / "index.json").read_text())["nodes"]:
        events = LineageStore(load_node_config(out / "nodes" / branch).lineage_url).events()
        assert [e.details["decision"] for e in events if e.kind == EventKind.JOB_DECISION] == ["approved"]
        trained += any(e.kind == EventKind.TRAINING for e in events)
    assert trained == 3
    leftover = subprocess.run(["pgrep", "-f", str(out)], capture_output=True, text=True)
    assert leftover.stdout.strip() == "", leftover.stdout  # no SuperLink, SuperNode or service left running


def test_deploy_local_on_a_taken_port_says_so_and_starts_nothing(tmp_path):
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = subprocess.run([sys.executable, "-m", "sovereign.cli", "deploy-local", "--out", str(tmp_path / "d"),
                               "--port", str(port)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 1 and f"--port {port}: something already listens" in done.stdout + done.stderr
    assert "Traceback" not in done.stdout + done.stderr and not (tmp_path / "d").exists()
