"""The Flower ServerApp.

`app` is what `flwr run .` loads (settings from the run config); `build_server_app` is what
`sovereign demo` uses to run a given job in-process, with an observer for progress.
"""

from __future__ import annotations

from pathlib import Path

from flwr.app import Context
from flwr.serverapp import Grid, ServerApp

from common.wire import DPSettings, HESettings, JobSpec
from coordinator.rounds import CoordinatorPaths, JobObserver, run_job


def job_from_run_config(run_config: dict) -> JobSpec:
    return JobSpec(
        job_id=str(run_config.get("job-id", "flwr-run")),
        rounds=int(run_config.get("rounds", 8)),
        seed=int(run_config.get("seed", 7)),
        dp=DPSettings(enabled=bool(run_config.get("dp", True))),
        he=HESettings(enabled=bool(run_config.get("he", True))),
    )


app = ServerApp()


@app.main()
def main(grid: Grid, context: Context) -> None:
    job = job_from_run_config(dict(context.run_config))
    paths = CoordinatorPaths(Path(str(context.run_config.get("coordinator-dir", "runs/demo/coordinator"))))
    run_job(grid, job, paths, min_nodes=int(context.run_config.get("min-nodes", 1)))


def build_server_app(job: JobSpec, paths: CoordinatorPaths, observer: JobObserver | None = None) -> ServerApp:
    server = ServerApp()

    @server.main()
    def _main(grid: Grid, context: Context) -> None:
        run_job(grid, job, paths, observer=observer)

    return server
