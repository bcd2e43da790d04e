"""The `sovereign` command: helpful --help, one-line errors, non-zero exits, no tracebacks."""

import subprocess
import sys

import pytest
from typer.testing import CliRunner

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
