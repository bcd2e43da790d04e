"""`--no-dp --no-he`: the same job in plaintext, and summary.json says what was off."""

import io
import json
import shutil

from rich.console import Console

from lineage import EventKind, LineageStore
from sovereign.demo import DemoOptions, run_demo


def test_demo_without_privacy_says_so(tmp_path, small_alliance):
    dealers = tmp_path / "dealers"
    shutil.copytree(small_alliance, dealers)
    out = tmp_path / "run"
    run_demo(DemoOptions(rounds=1, seed=2, out=out, data=dealers, dp=False, he=False), Console(file=io.StringIO()))
    summary = json.loads((out / "summary.json").read_text())
    assert summary["dp"] is False and summary["epsilon"]["max"] is None
    assert summary["he"]["enabled"] is False and summary["he"]["scheme"] is None
    assert "require_he false" in summary["he"]["nodes_opted_out"]
    assert not (out / "coordinator" / "he").exists()  # no key ceremony without encryption
    # Every node opted out of encryption in its own node.json: a plaintext job is otherwise refused.
    configs = [json.loads(p.read_text()) for p in sorted((out / "nodes").glob("*/node.json"))]
    assert len(configs) == summary["branches"] and all(c["require_he"] is False for c in configs)
    assert all(c["accept_non_private_jobs"] is True for c in configs)
    assert summary["mase"]["federated"] > 0 and summary["mase"]["local"] > 0
    assert summary["evaluated_by"] and not summary["released_by"]  # plain sums: no node had to decrypt
    html = (out / "report.html").read_text()
    assert "Homomorphic encryption was <b>off</b>" in html and "Differential privacy was <b>off</b>" in html


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
    assert last == "error: no branch could take part: data-contract (2 branches)"  # the code, not the detail
    assert "Traceback" not in result.output
    for branch in ("B001", "B002"):  # the detail is in each node's own lineage
        refusals = LineageStore(f"sqlite:///{tmp_path / 'run' / 'nodes' / branch / 'lineage.db'}").events(kind=EventKind.REFUSAL)
        assert refusals and refusals[0].details["code"] == "data-contract"
        assert "cannot read table 'sales'" in refusals[0].details["reason"]
    result_json = json.loads((tmp_path / "run" / "coordinator" / "result.json").read_text())
    assert set(result_json["rounds"][0]["refused"].values()) == {"data-contract"}


def test_node_level_dp_is_accounted_per_round_by_the_coordinator(tmp_path, small_alliance):
    """Node-level DP alone (no record-level DP), under CKKS: each node clips and noises its
    update before encryption; the coordinator accounts the noise the sum really carried."""
    from common.privacy import epsilon_spent

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
    # σ = 2 over 6 nodes is very noisy, and the noise is secret (OS-seeded): runs vary (MASE about 3 to 10);
    # what must hold is that the alliance-level figures were still released over the noised model
    assert summary["branches_evaluated"] >= 3 and 0 < summary["mase"]["federated"] < 1_000
    trained = result["rounds"][0]["contributors"]
    assert trained
    for branch in trained:
        events = LineageStore(summary["lineage"]["nodes"][branch]).events(kind=EventKind.TRAINING)
        assert events[0].details["node_level_dp"]["clip"] == 0.5 and events[0].details["dp"] is False


def test_a_new_demo_run_keeps_the_earlier_runs_lineage_and_ledgers(tmp_path):
    """A second `sovereign demo` once deleted the first run's node lineage stores and privacy
    ledgers: now they move aside, whole, and nothing is deleted."""
    from sovereign.demo import archive_earlier_run

    out = tmp_path / "demo"
    assert archive_earlier_run(out, keep_dealers=False) is None
    for name in ("nodes/B001/lineage.db", "nodes/B001/privacy/ledger.db", "coordinator/lineage.db", "dealers/B001.db",
                 "summary.json"):
        (out / name).parent.mkdir(parents=True, exist_ok=True)
        (out / name).write_text(name)
    kept = archive_earlier_run(out, keep_dealers=True)
    assert kept is not None and kept.parent == tmp_path and kept.name.startswith("demo-")
    assert (kept / "nodes/B001/lineage.db").read_text() == "nodes/B001/lineage.db"
    assert (kept / "nodes/B001/privacy/ledger.db").exists() and (kept / "coordinator/lineage.db").exists()
    assert (out / "dealers/B001.db").exists() and not (kept / "dealers").exists()  # --data reads them: they stay
    assert not (out / "nodes").exists() and not (out / "summary.json").exists()
    (out / "summary.json").write_text("second")
    again = archive_earlier_run(out, keep_dealers=False)
    assert again != kept and (again / "summary.json").read_text() == "second" and (again / "dealers/B001.db").exists()
