"""What the console tests share: a coordinator service with three simulated nodes, started as
the `sovereign` command would be, and a headless Debian Chromium."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = Path(os.environ.get("SOVEREIGN_ARTIFACTS", Path(__file__).resolve().parents[1] / "test-artifacts")) / "console"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def sovereign(*args: str, log: Path) -> subprocess.Popen:
    """`sovereign ARGS...` as a process of its own (its output to `log`)."""
    out = log.open("w")
    return subprocess.Popen([sys.executable, "-c", "from sovereign.cli import app; app()", *args], stdout=out,
                            stderr=subprocess.STDOUT, start_new_session=True)


def stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()


def browser():
    """A headless Chromium from Debian's package (the Makefile installs it); under CI a missing
    browser fails the run instead of skipping it."""
    if not CHROMIUM.exists():
        if os.environ.get("CI") == "true":
            pytest.fail(f"{CHROMIUM} is missing: `make browser` (run by `make test`) installs Debian's chromium")
        pytest.skip(f"{CHROMIUM} is missing (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    manager = sync_playwright().start()
    engine = manager.chromium.launch(executable_path=str(CHROMIUM), headless=True,
                                     args=["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"])
    return manager, engine
