"""`sovereign node check` and `sovereign node run`: what branch IT runs before and to take part.
`check` reads nothing it would not read for a job, writes nothing, and names the file and
field of each problem; `run` starts no SuperNode unless node.json gives TLS, a private key
only the owner can read, and trusted publishers."""

from __future__ import annotations

import shutil

import pytest
from sqlalchemy import create_engine, text
from typer.testing import CliRunner

from node_agent.config import SuperNodeSettings, load_node_config, write_node_config
from node_agent.supernode import SuperNodeConfigError, supernode_command
from sovereign.cli import app
from sovereign.federation import setup_nodes

runner = CliRunner()


@pytest.fixture()
def node(tmp_path, small_alliance):
    db = sorted(small_alliance.glob("*.db"))[0]
    shutil.copy(db, tmp_path / db.name)
    return setup_nodes([tmp_path / db.name], tmp_path / "nodes")[0]


def test_check_shows_what_a_job_would_read_and_changes_nothing(node):
    before = sorted(p.relative_to(node.node_dir) for p in node.node_dir.rglob("*"))
    result = runner.invoke(app, ["node", "check", "--node-dir", str(node.node_dir)], terminal_width=200)
    assert result.exit_code == 0, result.output
    assert "sales.sale_date" in result.output and "ready for job check" in result.output
    assert "customer_name" not in result.output  # a job never asks for it
    assert "no 'supernode' section" in result.output  # what `node run` still needs
    assert sorted(p.relative_to(node.node_dir) for p in node.node_dir.rglob("*")) == before


def test_check_names_schema_drift_and_a_job_the_node_would_refuse(node, tmp_path):
    engine = create_engine(node.db_url)
    with engine.begin() as conn:
        conn.execute(text("ALTER TABLE sales ADD COLUMN loyalty_tier TEXT"))
    engine.dispose()
    drift = runner.invoke(app, ["node", "check", "--node-dir", str(node.node_dir)], terminal_width=200)
    assert drift.exit_code == 1 and "sales.loyalty_tier" in drift.output and "schema drift" in drift.output
    job = tmp_path / "marketing.yaml"
    job.write_text("job_id: m1\npurpose: marketing\n")
    refused = runner.invoke(app, ["node", "check", "--node-dir", str(node.node_dir), "--job", str(job)], terminal_width=200)
    assert refused.exit_code == 1 and "refuse it (purpose)" in refused.output and "Traceback" not in refused.output


def test_run_starts_no_supernode_without_tls_a_private_key_and_trusted_publishers(node):
    missing = runner.invoke(app, ["node", "run", "--node-dir", str(node.node_dir)])
    assert missing.exit_code == 2 and "no 'supernode' section" in missing.output
    (node.node_dir / "tls").mkdir()
    (node.node_dir / "tls" / "ca.crt").write_text("CA")
    key = node.node_dir / "keys" / "supernode"
    key.parent.mkdir(exist_ok=True)
    key.write_text("KEY")
    key.chmod(0o644)
    (node.node_dir / "trusted.yaml").write_text('"publisher": "ssh-ed25519 AAAA publisher"\n')
    settings = SuperNodeSettings(superlink="127.0.0.1:9092", root_certificates="tls/ca.crt", auth_key="keys/supernode",
                                 trusted_entities="trusted.yaml")
    write_node_config(node.model_copy(update={"supernode": settings}))
    with pytest.raises(SuperNodeConfigError, match="supernode.auth_key: .* readable by others"):
        supernode_command(load_node_config(node.node_dir))
    key.chmod(0o600)
    with pytest.raises(SuperNodeConfigError, match="trusted_apps is empty"):
        supernode_command(load_node_config(node.node_dir))
    (node.node_dir / "trusted.yaml").write_text("")
    with pytest.raises(SuperNodeConfigError, match="empty, which would let the SuperNode run any app"):
        supernode_command(load_node_config(node.node_dir))
