"""Run every arm of a panel experiment and write `results.json`.

Arms, all scored on the same held-out values of every series (MASE against the series'
in-sample seasonal naive, sMAPE; an arm's figure is the mean over series, as the forecasting
competitions report it):
- `seasonal_naive`, `ets`, `theta`: each series alone, statistical (statsforecast);
- `best_local`: the strongest of those three on the held-out values (the yardstick);
- `local`: the joint model's family trained by each branch on its own series only;
- `central`: the same model trained on every series pooled (what no alliance may do);
- `federated`, `federated_dp`, `federated_dp_he`: FedAvg over branches on Flower's simulation
  runtime, without DP, with DP-SGD (Opacus), and with DP-SGD and CKKS-encrypted updates;
- `federated_dp_he_ets`: a node-side combination, the mean of the federated (DP + CKKS)
  forecast and the series' own ETS forecast (nothing more leaves a node than for the federated arm).
Statistical forecasts do not depend on how series are split into branches, so they are cached
per panel, horizon and history under `cache/`.
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import Callable

import numpy as np

from common.local_methods import method as local_method
from common.metrics import mase, smape
from common.model import set_flat_weights
from common.panel_model import PanelForecaster, panel_forecast
from node_agent.training import train_plain
from sovereign.experiment.federated import FederatedArm, final_weights, prepare, run_federated
from sovereign.experiment.panel import ExperimentConfig, PanelError, Series, branches_of, load_panel
from sovereign.experiment.panel_node import branch_windows

LOCAL_STATS = ("seasonal_naive", "ets", "theta")
FEDERATED_ARMS = (FederatedArm(name="federated", dp=False, he=False), FederatedArm(name="federated_dp", dp=True, he=False),
                  FederatedArm(name="federated_dp_he", dp=True, he=True))
BLEND = "federated_dp_he_ets"  # node-side: the mean of the federated (DP + CKKS) forecast and the series' own ETS
ARMS = (*LOCAL_STATS, "best_local", "local", *(a.name for a in FEDERATED_ARMS), BLEND, "central")
TRAINED = ("local", *(a.name for a in FEDERATED_ARMS), BLEND, "central")

Progress = Callable[[str], None]


def _cache_key(config: ExperimentConfig, name: str, series: list[Series]) -> str:
    digest = hashlib.sha256()
    for s in series:
        digest.update(s.id.encode() + s.train.tobytes() + b"|")
    return f"{name}-h{config.horizon}-m{config.season}-{digest.hexdigest()[:16]}"


def statistical_forecasts(config: ExperimentConfig, series: list[Series], name: str, cache: Path | None,
                          progress: Progress) -> tuple[dict[str, np.ndarray], float]:
    """One statistical method on every series; (forecasts by series id, seconds it took to fit)."""
    path = cache / f"{_cache_key(config, name, series)}.json" if cache else None
    if path and path.exists():
        stored = json.loads(path.read_text())
        return {k: np.asarray(v) for k, v in stored["forecasts"].items()}, float(stored["seconds"])
    forecast = local_method(name, config.season)
    started, out = time.perf_counter(), {}
    for i, s in enumerate(series):
        out[s.id] = forecast(s.train, config.horizon)
        if i % 50 == 0:
            progress(f"{name}: {i}/{len(series)} series")
    seconds = time.perf_counter() - started
    if path:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"seconds": seconds, "forecasts": {k: v.tolist() for k, v in out.items()}}))
    return out, seconds


def _train(config: ExperimentConfig, series: list[Series], seed: int) -> PanelForecaster:
    """The model trained without DP on `series` with the experiment's recipe (rounds × epochs passes)."""
    model = PanelForecaster(config.model)
    x, y = branch_windows([s.train for s in series], config.model, config.season)
    recipe = config.training
    train_plain(model, x, y, epochs=recipe.rounds * recipe.local_epochs, batch_size=recipe.batch_size,
                learning_rate=recipe.learning_rate, seed=seed, max_grad_norm=recipe.dp.max_grad_norm)
    return model


def _forecasts(model: PanelForecaster, series: list[Series], horizon: int) -> dict[str, np.ndarray]:
    return {s.id: panel_forecast(model, s.train, horizon) for s in series}


def score_arm(forecasts: dict[str, np.ndarray], series: list[Series], season: int) -> dict:
    """Mean MASE and sMAPE over series, and per branch."""
    per_series = {s.id: (mase(s.test, forecasts[s.id], s.train, season), smape(s.test, forecasts[s.id])) for s in series}
    per_branch = {}
    for branch, members in branches_of(series).items():
        per_branch[branch] = {"mase": float(np.mean([per_series[s.id][0] for s in members])),
                              "smape": float(np.mean([per_series[s.id][1] for s in members])), "series": len(members)}
    return {"mase": float(np.mean([v[0] for v in per_series.values()])),
            "smape": float(np.mean([v[1] for v in per_series.values()])), "per_branch": per_branch}


def relative_mae(forecasts: dict[str, np.ndarray], yardstick: dict[str, np.ndarray], series: list[Series]) -> dict:
    """Geometric-mean relative MAE against the yardstick, per branch (the geometric mean over its
    series), with a 95 % bootstrap interval over branches, and the share of branches better off."""
    from scipy.stats import bootstrap

    logs: dict[str, list[float]] = {}
    for s in series:
        a, b = np.mean(np.abs(s.test - forecasts[s.id])), np.mean(np.abs(s.test - yardstick[s.id]))
        if a > 0 and b > 0:
            logs.setdefault(s.branch, []).append(float(np.log(a / b)))
    per_branch = np.array([np.mean(v) for v in logs.values()])
    out = {"geomean": float(np.exp(per_branch.mean())), "better_off": float((per_branch < 0).mean()), "branches": int(per_branch.size)}
    if per_branch.size >= 3 and np.ptp(per_branch) > 0:
        ci = bootstrap((per_branch,), np.mean, confidence_level=0.95, n_resamples=2000, random_state=0).confidence_interval
        out["interval95"] = [float(np.exp(ci.low)), float(np.exp(ci.high))]
    return out


def run_experiment(config: ExperimentConfig, out: Path, *, cache: Path | None = None, progress: Progress = lambda _: None) -> dict:
    """Every arm the config asks for; writes `out/results.json` and returns it."""
    arms = config.arms or list(ARMS)
    unknown = sorted(set(arms) - set(ARMS))
    if unknown:
        raise PanelError(f"arms: unknown arm {unknown[0]!r} (known: {', '.join(ARMS)})")
    series = load_panel(config)
    by_branch = branches_of(series)
    trained = [a for a in arms if a in TRAINED]
    if trained and not any(s.train.size >= config.model.width for s in series):
        raise PanelError(f"model: no training history is longer than lags + block = {config.model.width}; "
                         f"lower model.lags or model.block")
    out.mkdir(parents=True, exist_ok=True)
    forecasts: dict[str, dict[str, np.ndarray]] = {}
    results: dict[str, dict] = {}

    for name in [a for a in LOCAL_STATS if a in arms or "best_local" in arms]:
        forecasts[name], seconds = statistical_forecasts(config, series, name, cache, progress)
        results[name] = {**score_arm(forecasts[name], series, config.season), "seconds": seconds, "epsilon": None}
    if "best_local" in arms:
        best = min(LOCAL_STATS, key=lambda n: results[n]["mase"])
        forecasts["best_local"] = forecasts[best]
        results["best_local"] = {**results[best], "method": best}

    if "local" in arms:
        progress(f"local: the model trained by each of {len(by_branch)} branches alone")
        started, local = time.perf_counter(), {}
        for i, members in enumerate(by_branch.values()):
            local.update(_forecasts(_train(config, members, config.seed + i), members, config.horizon))
        forecasts["local"] = local
        results["local"] = {**score_arm(local, series, config.season), "seconds": time.perf_counter() - started, "epsilon": None}

    if "central" in arms:
        progress("central: the model trained on every series pooled")
        started = time.perf_counter()
        forecasts["central"] = _forecasts(_train(config, series, config.seed), series, config.horizon)
        results["central"] = {**score_arm(forecasts["central"], series, config.season),
                              "seconds": time.perf_counter() - started, "epsilon": None}

    federated = [a for a in FEDERATED_ARMS if a.name in arms and (config.training.he or not a.he)]
    if federated:
        workdir = out / "work"
        plan = prepare(workdir, by_branch, config.model, config.training, config.season, federated)
        progress(f"federated: {', '.join(a.name for a in federated)} on Flower's simulation runtime, "
                 f"{len(by_branch)} SuperNodes × {config.training.rounds} rounds")
        run_federated(workdir, plan)
        for arm in federated:
            weights, log = final_weights(workdir, arm.name)
            model = PanelForecaster(config.model)
            set_flat_weights(model, weights)
            forecasts[arm.name] = _forecasts(model, series, config.horizon)
            results[arm.name] = {**score_arm(forecasts[arm.name], series, config.season), "seconds": log["seconds"],
                                 "epsilon": log["epsilon"], "rounds": log["rounds"]}

    if BLEND in arms and "federated_dp_he" in forecasts and "ets" in forecasts:
        forecasts[BLEND] = {k: 0.5 * (v + forecasts["ets"][k]) for k, v in forecasts["federated_dp_he"].items()}
        results[BLEND] = {**score_arm(forecasts[BLEND], series, config.season),
                          "seconds": results["federated_dp_he"]["seconds"] + results["ets"]["seconds"],
                          "epsilon": results["federated_dp_he"]["epsilon"]}

    document = {
        "dataset": config.dataset, "branches": len(by_branch), "series": len(series), "horizon": config.horizon,
        "season": config.season, "history": config.history,
        "arms": {name: results[name] for name in ARMS if name in results},
        "versus_best_local": {name: relative_mae(forecasts[name], forecasts["best_local"], series)
                              for name in TRAINED if name in forecasts and "best_local" in forecasts},
        "published": config.published, "published_source": config.published_source,
        "config": config.model_dump(mode="json"),
    }
    (out / "results.json").write_text(json.dumps(document, indent=2))
    return document
