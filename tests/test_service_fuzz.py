"""schemathesis against the running coordinator service (`sovereign coordinator serve`, its
own process): every endpoint, bounded examples generated from its own OpenAPI schema, sent
as an admin, an analyst and a branch's IT, and as nobody; no request may get a 5xx, and the
service keeps serving. Its store is in a temporary directory.

The service starts when this module is collected (schemathesis reads the schema then) and is
stopped at exit; `schemathesis.pytest.from_fixture` does not run under this pytest. Nor under
pytest-xdist: measured, one of its 17 tests runs there, silently."""

from __future__ import annotations

import atexit
import subprocess
import sys
import tempfile
from pathlib import Path

import httpx
import schemathesis
from hypothesis import HealthCheck, settings

from lineage.signing import Signer, public_pem
from sovereign.deployment import free_port
from tests.service_helpers import cli, wait_until_up


def _start_service() -> tuple[str, dict[str, str]]:
    tmp = Path(tempfile.mkdtemp(prefix="sovereign-fuzz-"))
    config = tmp / "coordinator.yaml"
    config.write_text(f"var: {tmp / 'var'}\n")
    key = tmp / "N1.pub"
    key.write_text(public_pem(Signer.generate("N1").public_key))
    cli("coordinator", "node", "add", "N1", "--public-key", str(key), "--region", "Kanto", "--config", str(config))
    tokens = {name: cli("coordinator", "account", "add", name, "--role", role, *(["--scope", scope] if scope else []),
                        "--config", str(config)).strip().splitlines()[-1]
              for name, role, scope in (("root", "admin", None), ("hq", "analyst", None), ("it", "branch_it", "N1"))}
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "sovereign.cli", "coordinator", "serve", "--config", str(config),
                               "--port", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    atexit.register(server.terminate)
    url = f"http://127.0.0.1:{port}"
    wait_until_up(url)
    return url, tokens


URL, TOKENS = _start_service()
schema = schemathesis.openapi.from_url(f"{URL}/openapi.json")
# One client for the health check after every case (over a thousand of them): `httpx.get` builds
# a new client, and with it a TLS context from the CA bundle (25 ms), on every call.
HEALTH = httpx.Client(base_url=URL)
atexit.register(HEALTH.close)


@schema.parametrize()
@settings(max_examples=12, deadline=None, suppress_health_check=list(HealthCheck))
def test_no_request_gets_a_server_error(case):
    for token in (*TOKENS.values(), None):
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        response = case.call(headers=headers)
        assert response.status_code < 500, (case.method, case.path, response.status_code, response.text[:300])
    assert HEALTH.get("/health").status_code == 200  # still serving
