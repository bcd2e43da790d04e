"""The `sovereign` command: helpful --help, one-line errors, non-zero exits, no tracebacks."""

import subprocess
import sys

import pytest
from typer.testing import CliRunner

from common import evaluation, local_methods
from sovereign.cli import app

runner = CliRunner()


def test_help_lists_the_commands():
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    assert "simulate-dealers" in result.output and "demo" in result.output


@pytest.mark.parametrize(
    "args, cause",
    [
        (["demo", "--branches", "0"], "--branches"),
        (["demo", "--rounds", "0"], "--rounds"),
        (["demo", "--epsilon", "-1"], "--epsilon"),
        (["simulate-dealers", "--branches", "0"], "n_branches"),
    ],
)
def test_bad_options_give_one_line_and_exit_2(args, cause, tmp_path):
    result = runner.invoke(app, args + (["--out", str(tmp_path / "o")]))
    assert result.exit_code == 2
    assert cause in result.output and "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_demo_with_missing_data_dir_names_it(tmp_path):
    result = runner.invoke(app, ["demo", "--data", str(tmp_path / "nowhere"), "--out", str(tmp_path / "o")])
    assert result.exit_code == 1
    assert "nowhere" in result.output and "no such directory" in result.output
    assert "Traceback" not in result.output


def test_simulate_dealers_writes_one_database_per_branch(tmp_path):
    result = runner.invoke(app, ["simulate-dealers", "--branches", "3", "--seed", "1", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in tmp_path.glob("*.db")) == ["B001.db", "B002.db", "B003.db"]


def test_console_script_is_installed():
    done = subprocess.run([sys.executable, "-m", "sovereign.cli", "--help"], capture_output=True, text=True)
    assert done.returncode == 0 and "Sovereign" in done.stdout


def test_node_report_shows_the_branchs_own_forecast_and_never_needs_the_coordinator(tmp_path, small_alliance):
    """`sovereign node report`: branch IT reads its own held-out forecast and scores, which
    stay on the node (the coordinator only ever gets an encrypted metric vector)."""
    import json
    import shutil

    from common.wire import DPSettings, HESettings, JobSpec, TrainInstruction
    from node_agent.agent import NodeAgent
    from node_agent.config import NodeConfig, write_node_config
    from tests.conftest import EXAMPLES

    shutil.copy(small_alliance / "B002.db", tmp_path / "B002.db")
    config = NodeConfig(branch_id="B002", db_url=f"sqlite:///{tmp_path / 'B002.db'}", node_dir=tmp_path / "node",
                        accept_non_private_jobs=True, require_he=False)
    write_node_config(config)
    shutil.copy(EXAMPLES / "domestic_dealer.yaml", config.policy_path)
    none_yet = runner.invoke(app, ["node", "report", "--node-dir", str(config.node_dir)])
    assert none_yet.exit_code == 2 and "no forecast report on this node yet" in none_yet.output
    job = JobSpec(job_id="report-job", rounds=1, local_epochs=1, dp=DPSettings(enabled=False), he=HESettings(enabled=False))
    agent = NodeAgent(config)
    assert agent.train(TrainInstruction(job=job, round=1)).status == "ok"  # a node evaluates only a job it trained in
    assert agent.evaluate(TrainInstruction(job=job, round=1)).status == "ok"

    as_json = runner.invoke(app, ["node", "report", "--node-dir", str(config.node_dir), "--json"])
    assert as_json.exit_code == 0, as_json.output
    report = json.loads(as_json.output)
    assert report == json.loads((config.node_dir / "reports" / "report-job.json").read_text())
    assert report["branch_id"] == "B002" and len(report["actual"]) == len(report["months"]) == 6
    assert set(report["forecasts"]) == set(evaluation.ARMS)
    assert report["local_choice"] in local_methods.METHODS  # the validated pick, on this node only

    plot = tmp_path / "b002.png"
    shown = runner.invoke(app, ["node", "report", "--node-dir", str(config.node_dir), "--plot", str(plot)])
    assert shown.exit_code == 0, shown.output
    assert report["months"][0] in shown.output and "MASE" in shown.output
    assert plot.read_bytes().startswith(b"\x89PNG")
    other = runner.invoke(app, ["node", "report", "--node-dir", str(config.node_dir), "--job", "nope"])
    assert other.exit_code == 2 and "no forecast report for job nope" in other.output

    # the job's deliverable to the branch: the months after its data, with intervals, on the node only
    ahead = runner.invoke(app, ["node", "forecast", "--node-dir", str(config.node_dir), "--json"])
    assert ahead.exit_code == 0, ahead.output
    forecast = json.loads(ahead.output)
    assert forecast["months"] == report["outlook"]["months"] and forecast["months"][0] > report["months"][-1]
    assert set(forecast["held_out_coverage"]) == {"80", "95"}
    table = runner.invoke(app, ["node", "forecast", "--node-dir", str(config.node_dir)])
    assert table.exit_code == 0 and forecast["months"][0] in table.output and "95 % interval" in table.output
    missing = runner.invoke(app, ["node", "forecast", "--node-dir", str(config.node_dir), "--job", "nope"])
    assert missing.exit_code == 2 and "no forecast for job nope" in missing.output
