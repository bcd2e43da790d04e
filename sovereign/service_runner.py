"""The coordinator service's round loop: a started job runs on Flower's simulation runtime
(`SimulationRunner`, embedded) or on its deployment engine (`DeploymentRunner`).

`SimulationRunner` is what `sovereign coordinator serve --nodes-root DIR --coordinator-dir DIR`
gives the service: for each job it lays out a view of the nodes root holding only the
approving nodes (the coordinator asks no one else), runs `python -m sovereign.service_runner`
(Ray in its own process, so the API keeps answering), and hands back what the job released:
rounds and their contributors, and the alliance-level figures and totals the nodes released.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

from coordinator.resources import JobRecord


def released(result: dict) -> dict:
    """What a job's result releases to the service: rounds with their contributors, the
    alliance-level accuracy and the forecast totals (region by region, as the nodes released them)."""
    metrics = result.get("metrics") or {}
    totals = metrics.get("totals") or {}
    return {
        "rounds": [{"round": r["round"], "contributors": sorted(r["contributors"]), "refused": r.get("refused", {})}
                   for r in result.get("rounds", [])],
        "evaluated_by": len(result.get("evaluated_by", [])),
        "accuracy": metrics.get("all"),
        "forecast": {"alliance": totals.get("alliance"), "regions": {k: v for k, v in totals.items() if k != "alliance"}},
        "branch_metrics": result.get("branch_metrics") or {},
        "final_model_digest": result.get("final_model_digest"),
    }


class SimulationRunner:
    def __init__(self, nodes_root: Path, coordinator_dir: Path, *, timeout: float = 3600,
                 command: list[str] | None = None) -> None:
        self.nodes_root, self.coordinator_dir, self.timeout = nodes_root.resolve(), coordinator_dir.resolve(), timeout
        self.command = command or [sys.executable, "-m", "sovereign.service_runner"]
        self._running: dict[str, subprocess.Popen] = {}

    def __call__(self, job: JobRecord, approved: list[str]) -> dict:
        if not approved:
            raise RuntimeError("no node approved the job")
        view = self.coordinator_dir / "runs" / job.job_id / "nodes"
        view.mkdir(parents=True, exist_ok=True)
        for branch in approved:
            link = view / branch
            if not link.exists():
                link.symlink_to(self.nodes_root / branch, target_is_directory=True)
        (view / "index.json").write_text(json.dumps({"nodes": approved}, indent=2))
        spec_file = view.parent / "job.json"
        spec_file.write_text(job.spec.model_dump_json(indent=2))
        log = view.parent / "run.log"
        with log.open("w") as out:
            proc = subprocess.Popen([*self.command, "--spec", str(spec_file), "--nodes-root", str(view),
                                     "--coordinator-dir", str(self.coordinator_dir)],
                                    stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
            self._running[job.job_id] = proc
            try:
                code = proc.wait(timeout=self.timeout)
            except subprocess.TimeoutExpired:
                self.cancel(job.job_id)
                raise RuntimeError(f"the round loop took over {self.timeout:.0f}s and was stopped; log: {log}") from None
            finally:
                self._running.pop(job.job_id, None)
        if code != 0:
            tail = [line for line in log.read_text().splitlines() if line.strip()][-1:] or ["no output"]
            raise RuntimeError(f"the round loop ended with exit code {code} ({tail[0][:300]}); log: {log}")
        return _released_file(self.coordinator_dir, job.job_id)

    def cancel(self, job_id: str) -> bool:
        """Stop a job's round loop (its whole process group, Ray included); False if none runs.
        Rounds already taken stay spent in each node's ledger: the nodes count them, not this."""
        proc = self._running.get(job_id)
        if proc is None or proc.poll() is not None:
            return False
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
        return True


class DeploymentRunner:
    """Runs each started job on Flower's deployment engine: `flwr run` of the signed app on
    the SuperLink, the job's exact spec in the run config. Every connected SuperNode gets the
    job; a node whose owner did not approve it refuses it itself (`owner-denied`,
    `not-approved`), so the coordinator's list is never the nodes' only protection."""

    def __init__(self, deployment, app, coordinator_dir: Path, *, timeout: float = 1800) -> None:
        self.deployment, self.app, self.coordinator_dir, self.timeout = deployment, app, coordinator_dir.resolve(), timeout

    def __call__(self, job: JobRecord, approved: list[str]) -> dict:
        import base64

        if not approved:
            raise RuntimeError("no node approved the job")
        spec = base64.urlsafe_b64encode(job.spec.model_dump_json().encode()).decode()
        self.deployment.run(self.app, {"job-spec": spec, "coordinator-dir": str(self.coordinator_dir),
                                       "min-nodes": len(approved)}, timeout=self.timeout)
        return _released_file(self.coordinator_dir, job.job_id)


def _released_file(coordinator_dir: Path, job_id: str) -> dict:
    result_file = coordinator_dir / "results" / f"{job_id}.json"
    if not result_file.exists():
        raise RuntimeError(f"the round loop wrote no result for job {job_id}")
    result = json.loads(result_file.read_text())
    if not result.get("final_model_digest"):
        from coordinator.rounds import JobResult
        from sovereign.demo import refusal_tally

        raise RuntimeError(f"no round produced a model: {refusal_tally(JobResult.model_validate(result).rounds)}")
    return released(result)


def main() -> None:
    parser = argparse.ArgumentParser(description="Run one job of the coordinator service on the simulation runtime.")
    parser.add_argument("--spec", type=Path, required=True)
    parser.add_argument("--nodes-root", type=Path, required=True)
    parser.add_argument("--coordinator-dir", type=Path, required=True)
    args = parser.parse_args()
    from common.wire import JobSpec
    from coordinator.rounds import CoordinatorPaths
    from sovereign.federation import run_simulation

    job = JobSpec.model_validate_json(args.spec.read_text())
    nodes = json.loads((args.nodes_root / "index.json").read_text())["nodes"]
    run_simulation(job, args.nodes_root, CoordinatorPaths(args.coordinator_dir), len(nodes), None)


if __name__ == "__main__":
    main()
