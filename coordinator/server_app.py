"""The Flower ServerApp.

`app` is what `flwr run .` loads (settings from the run config); `build_server_app` is what
`sovereign demo` uses to run a given job in-process, with an observer for progress.
"""

from __future__ import annotations

import base64
from pathlib import Path

from flwr.app import Context
from flwr.serverapp import Grid, ServerApp

from common.wire import DPSettings, HESettings, JobSpec
from coordinator.rounds import CoordinatorPaths, JobObserver, run_job


def job_from_run_config(run_config: dict, run_id: int) -> JobSpec:
    """The job of one `flwr run`: the whole spec when the run config carries one (`job-spec`,
    base64 of its JSON: what the coordinator service submits, exactly as the nodes approved
    it); else built from a few keys, with the run config's `job-id` when it names one, else a
    new job per run, `flwr-run-<Flower run id>`, so running again is a new job, not a replay
    of the finished one that every node refuses."""
    if run_config.get("job-spec"):
        return JobSpec.model_validate_json(base64.urlsafe_b64decode(str(run_config["job-spec"])))
    return JobSpec(
        job_id=str(run_config.get("job-id") or f"flwr-run-{run_id}"),
        rounds=int(run_config.get("rounds", 8)),
        seed=int(run_config.get("seed", 7)),
        dp=DPSettings(enabled=bool(run_config.get("dp", True))),
        he=HESettings(enabled=bool(run_config.get("he", True))),
    )


app = ServerApp()


@app.main()
def main(grid: Grid, context: Context) -> None:
    job = job_from_run_config(dict(context.run_config), context.run_id)
    paths = CoordinatorPaths(Path(str(context.run_config.get("coordinator-dir", "runs/demo/coordinator"))))
    config = context.run_config
    result = run_job(grid, job, paths, min_nodes=int(config.get("min-nodes", 1)),
                     expected_nodes=int(config.get("expected-nodes", 0)) or None,
                     node_wait_seconds=float(config.get("node-wait", 120)),
                     min_contributors=int(config.get("min-contributors", 1)),
                     reply_timeout=float(config.get("round-timeout", 600)))
    if result.final_model_digest is None:  # the run fails, rather than ending "successfully" with nothing
        refused = sorted({code for r in result.rounds for code in r.refused.values()})
        raise RuntimeError(f"job {job.job_id} trained nothing: every node refused every round ({', '.join(refused) or 'no replies'})")


def build_server_app(job: JobSpec, paths: CoordinatorPaths, observer: JobObserver | None = None, *,
                     min_contributors: int = 1) -> ServerApp:
    server = ServerApp()

    @server.main()
    def _main(grid: Grid, context: Context) -> None:
        run_job(grid, job, paths, observer=observer, min_contributors=min_contributors)

    return server
