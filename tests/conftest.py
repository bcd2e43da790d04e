"""Shared fixtures. Database services: skipped with a reason on a laptop without them,
but under CI=true a missing service fails the run (a skipped database test proves nothing)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

SERVICES = {
    "postgresql": os.environ.get("SOVEREIGN_TEST_POSTGRES", "postgresql+psycopg2://postgres@127.0.0.1:5432/test"),
    "mariadb": os.environ.get("SOVEREIGN_TEST_MARIADB", "mysql+pymysql://root:@127.0.0.1:3306/test"),
}


def service_url(name: str) -> str:
    url = SERVICES[name]
    try:
        engine = create_engine(url)
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        engine.dispose()
    except Exception as exc:  # noqa: BLE001 - any failure means "not reachable"
        reason = f"{name} not reachable at {url}: {exc.__class__.__name__}"
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI=true but {reason}")
        pytest.skip(reason)
    return url


@pytest.fixture(scope="session")
def small_alliance(tmp_path_factory) -> Path:
    """Six simulated dealerships, written once per test session."""
    from sovereign.simulation.dealers import simulate_alliance

    out = tmp_path_factory.mktemp("dealers")
    simulate_alliance(6, 11, out)
    return out


@pytest.fixture(scope="session")
def ckks_keys():
    """(secret context, public context): what a node holds, and what the coordinator holds."""
    from common.he import create_secret_context, load_context, public_context_bytes

    secret = create_secret_context()
    return secret, load_context(public_context_bytes(secret))


EXAMPLES = Path(__file__).resolve().parents[1] / "policies" / "examples"


def example_policy(name: str = "domestic_dealer"):
    from policies import load_policy

    return load_policy(EXAMPLES / f"{name}.yaml")


def forecast_request(**kw):
    """What a monthly-units forecast asks of a branch's `sales` table."""
    from node_agent.data import fields_needed
    from policies import JobRequest

    return JobRequest(**{"job_id": "test-job", "purpose": "forecasting", "destination": "JP",
                         "fields": fields_needed("monthly_units"), **kw})
