"""`--no-dp --no-he`: the same job in plaintext, and summary.json says what was off."""

import io
import json
import shutil

from rich.console import Console

from sovereign.demo import DemoOptions, run_demo


def test_demo_without_privacy_says_so(tmp_path, small_alliance):
    dealers = tmp_path / "dealers"
    shutil.copytree(small_alliance, dealers)
    out = tmp_path / "run"
    run_demo(DemoOptions(rounds=1, seed=2, out=out, data=dealers, dp=False, he=False), Console(file=io.StringIO()))
    summary = json.loads((out / "summary.json").read_text())
    assert summary["dp"] is False and summary["epsilon"]["max"] is None
    assert summary["he"]["enabled"] is False and summary["he"]["scheme"] is None
    assert not (out / "coordinator" / "he").exists()  # no key ceremony without encryption
    assert summary["mase"]["federated"] > 0
    assert "off" in (out / "report.html").read_text()


def test_demo_on_unreadable_databases_fails_with_the_refusal(tmp_path):
    from typer.testing import CliRunner

    from sovereign.cli import app

    dealers = tmp_path / "dealers"
    dealers.mkdir()
    for name in ("B001.db", "B002.db"):
        (dealers / name).write_bytes(b"not a database " * 64)
    result = CliRunner().invoke(app, ["demo", "--data", str(dealers), "--rounds", "1", "--out", str(tmp_path / "run")])
    assert result.exit_code == 1
    last = result.output.strip().splitlines()[-1]
    assert last.startswith("error: no branch could take part") and "cannot read table 'sales'" in last
    assert "Traceback" not in result.output
