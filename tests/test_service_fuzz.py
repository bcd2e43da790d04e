"""schemathesis against the coordinator service: every endpoint, bounded examples generated
from its own OpenAPI schema, sent as an admin, an analyst and a branch's IT, and as nobody;
no request may get a 5xx. The app keeps its store in a temporary directory."""

from __future__ import annotations

import tempfile
from pathlib import Path

import schemathesis
from hypothesis import HealthCheck, settings

from coordinator.api.app import create_account, create_app
from coordinator.resources import NodeRecord, Role
from coordinator.settings import CoordinatorSettings
from lineage.signing import Signer, public_pem

_var = Path(tempfile.mkdtemp(prefix="sovereign-fuzz-"))
app = create_app(CoordinatorSettings(var=_var))
app.state.store.add_node(NodeRecord(node_id="N1", public_key=public_pem(Signer.generate("N1").public_key), region="Kanto"))
TOKENS = {name: create_account(app.state.store, name, role, scope).token
          for name, role, scope in (("root", Role.ADMIN, None), ("hq", Role.ANALYST, None), ("it", Role.BRANCH_IT, "N1"))}
schema = schemathesis.openapi.from_asgi("/openapi.json", app)


@schema.parametrize()
@settings(max_examples=12, deadline=None, suppress_health_check=list(HealthCheck))
def test_no_request_gets_a_server_error(case):
    for token in (*TOKENS.values(), None):
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        response = case.call(headers=headers)
        assert response.status_code < 500, (case.method, case.path, response.status_code, response.text[:300])
