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


def test_node_level_dp_is_accounted_per_round_by_the_coordinator(tmp_path, small_alliance):
    """Node-level DP alone (no record-level DP), under CKKS: each node clips and noises its
    update before encryption; the coordinator accounts the noise the sum really carried."""
    from common.privacy import epsilon_spent
    from lineage import EventKind, LineageStore

    dealers = tmp_path / "dealers"
    shutil.copytree(small_alliance, dealers)
    out = tmp_path / "run"
    run_demo(DemoOptions(rounds=2, seed=2, out=out, data=dealers, dp=False, he=True, node_dp=True, node_noise=2.0,
                         node_clip=0.5), Console(file=io.StringIO()))
    summary = json.loads((out / "summary.json").read_text())
    node_level = summary["epsilon"]["node_level"]
    result = json.loads((out / "coordinator" / "result.json").read_text())
    contributors = [len(r["contributors"]) for r in result["rounds"]]
    expected = epsilon_spent([(2.0 * (c / 6) ** 0.5, 1.0, 1) for c in contributors], 1e-3)
    assert node_level["nodes"] == 6 and node_level["epsilon"] == round(expected, 4) > 0
    assert summary["mase"]["federated"] < 5  # noisy, but still a forecast
    trained = [b for b in summary["per_branch"] if b in result["rounds"][0]["contributors"]]
    events = LineageStore(summary["lineage"]["nodes"][trained[0]]).events(kind=EventKind.TRAINING)
    assert events[0].details["node_level_dp"]["clip"] == 0.5 and events[0].details["dp"] is False
