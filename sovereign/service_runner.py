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
import time
from pathlib import Path
from typing import Callable

from coordinator.paths import CoordinatorPaths
from coordinator.resources import JobRecord
from coordinator.settings import FlowerConnection, RunnerSettings

RoundCallback = Callable[[dict], None]  # called with each round report as the round closes


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
                 command: list[str] | None = None, poll: float = 1.0) -> None:
        self.nodes_root, self.coordinator_dir, self.timeout = nodes_root.resolve(), coordinator_dir.resolve(), timeout
        self.command = command or [sys.executable, "-m", "sovereign.service_runner"]
        self.poll = poll
        self._running: dict[str, subprocess.Popen] = {}
        self._cancelled: set[str] = set()

    def _closed(self, job_id: str) -> int:
        from coordinator.checkpoints import closed_rounds

        return len(closed_rounds(self.coordinator_dir, job_id))

    def __call__(self, job: JobRecord, approved: list[str], on_round: RoundCallback | None = None) -> dict:
        if not approved:
            raise RuntimeError("no node approved the job")
        view = CoordinatorPaths(self.coordinator_dir).job_run_dir(job.job_id) / "nodes"
        view.mkdir(parents=True, exist_ok=True)
        for branch in approved:
            link = view / branch
            if not link.exists():
                link.symlink_to(self.nodes_root / branch, target_is_directory=True)
        (view / "index.json").write_text(json.dumps({"nodes": approved}, indent=2))
        spec_file = view.parent / "job.json"
        spec_file.write_text(job.spec.model_dump_json(indent=2))
        log = view.parent / "run.log"
        watch = RoundWatch(self.coordinator_dir, job.job_id, on_round)
        closed = self._closed(job.job_id)
        returncode = self._run(job, spec_file, view, log, watch)
        if returncode != 0 and self._closed(job.job_id) == closed and job.job_id not in self._cancelled:
            # Nothing was done: most likely the runtime failed to boot (Ray gives its agents a fixed
            # 15 s, which a loaded machine can miss). Once more; a job that had begun resumes from its
            # checkpoint, and the nodes answer a repeated instruction with the bytes they sent.
            with log.open("a") as out:
                out.write("the round loop ended before its first round: starting it once more\n")
            returncode = self._run(job, spec_file, view, log, watch)
        watch.check()
        if returncode != 0:
            tail = [line for line in log.read_text().splitlines() if line.strip()][-1:] or ["no output"]
            raise RuntimeError(f"the round loop ended with exit code {returncode} ({tail[0][:300]}); log: {log}")
        return _released_file(self.coordinator_dir, job.job_id)

    def _run(self, job: JobRecord, spec_file: Path, view: Path, log: Path, watch: "RoundWatch") -> int:
        """One run of the round loop's process, watched until it ends; its exit code."""
        with log.open("a") as out:
            proc = subprocess.Popen([*self.command, "--spec", str(spec_file), "--nodes-root", str(view),
                                     "--coordinator-dir", str(self.coordinator_dir), "--min-contributors",
                                     str(job.min_contributors)],
                                    stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
            self._running[job.job_id] = proc
            deadline = time.monotonic() + self.timeout
            try:
                while proc.poll() is None:
                    if time.monotonic() > deadline:
                        self.cancel(job.job_id)
                        raise RuntimeError(f"the round loop took over {self.timeout:.0f}s and was stopped; log: {log}")
                    watch.check()
                    time.sleep(self.poll)
            finally:
                self._running.pop(job.job_id, None)
        return proc.returncode

    def cancel(self, job_id: str) -> bool:
        """Stop a job's round loop (its whole process group, Ray included); False if none runs.
        Rounds already taken stay spent in each node's ledger: the nodes count them, not this."""
        proc = self._running.get(job_id)
        if proc is None or proc.poll() is not None:
            return False
        self._cancelled.add(job_id)
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
        return True


class RoundWatch:
    """Reports each round the round loop closes (read off its checkpoint), once. The
    checkpoint holds the model and the updates it sums, so it is parsed again only when it
    was rewritten, not at every look."""

    def __init__(self, coordinator_dir: Path, job_id: str, on_round: RoundCallback | None) -> None:
        self.coordinator_dir, self.job_id, self.on_round, self.seen = coordinator_dir, job_id, on_round, 0
        self.path = CoordinatorPaths(coordinator_dir).checkpoint(job_id)
        self.written: int | None = None

    def check(self) -> None:
        from coordinator.checkpoints import closed_rounds

        if self.on_round is None:
            return
        try:
            written = self.path.stat().st_mtime_ns
        except OSError:
            return
        if written == self.written:
            return
        self.written = written
        rounds = closed_rounds(self.coordinator_dir, self.job_id)
        for report in rounds[self.seen:]:
            self.on_round(report)
        self.seen = max(self.seen, len(rounds))


class FlowerRunError(RuntimeError):
    """A `flwr` command failed; the message names the command and its last line."""


class DeploymentRunner:
    """Runs each started job on Flower's deployment engine: `flwr run` of the signed app on
    the SuperLink (`connection`: the FLWR_HOME holding the SuperLink's address and CA, the
    federation's name there, and the app as '@publisher/name==version'), the job's exact spec
    in the run config, then follows the Flower run to its end. Every connected SuperNode gets
    the job; a node whose owner did not approve it refuses it itself (`owner-denied`,
    `not-approved`), so the coordinator's list is never the nodes' only protection.

    The Flower run id is kept beside the job's files: a service started again follows the
    run if it still runs, and otherwise starts a new run of the same spec, which resumes after
    the last round the coordinator closed (`coordinator.checkpoints`)."""

    def __init__(self, connection: FlowerConnection, coordinator_dir: Path, *, timeout: float = 3600,
                 round_timeout: float = 600, node_wait: float = 30, poll: float = 2.0) -> None:
        self.connection, self.coordinator_dir = connection, coordinator_dir.resolve()
        self.timeout, self.round_timeout, self.node_wait, self.poll = timeout, round_timeout, node_wait, poll

    def __call__(self, job: JobRecord, approved: list[str], on_round: RoundCallback | None = None) -> dict:
        import base64

        if not approved:
            raise RuntimeError("no node approved the job")
        spec = base64.urlsafe_b64encode(job.spec.model_dump_json().encode()).decode()
        run_config = {"job-spec": spec, "coordinator-dir": str(self.coordinator_dir), "min-nodes": job.min_contributors,
                      "expected-nodes": len(approved), "node-wait": self.node_wait,
                      "min-contributors": job.min_contributors, "round-timeout": self.round_timeout}
        watch = RoundWatch(self.coordinator_dir, job.job_id, on_round)
        run_id = self._current_run(job.job_id)
        if run_id is not None:  # a run from before this service started: follow it
            status = self._follow(run_id, job.job_id, watch)
            if status == "finished:completed":
                return _released_file(self.coordinator_dir, job.job_id)
            # it died with the coordinator's host (its ServerApp went with it): a new run of
            # the same spec resumes after the last round the coordinator closed
        run_id = self._submit(job.job_id, run_config)
        status = self._follow(run_id, job.job_id, watch)
        if status != "finished:completed":
            raise RuntimeError(f"Flower run {run_id} ended {status}; `flwr log {run_id} {self.connection.federation}` "
                               f"has its log")
        return _released_file(self.coordinator_dir, job.job_id)

    def _follow(self, run_id: int, job_id: str, watch: RoundWatch) -> str:
        """Wait for the Flower run to finish, reporting rounds as they close; its final status."""
        deadline = time.monotonic() + self.timeout
        while not (status := self.status(run_id)).startswith("finished"):
            if time.monotonic() > deadline:
                self.cancel(job_id)
                raise RuntimeError(f"Flower run {run_id} took over {self.timeout:.0f}s and was stopped")
            watch.check()
            time.sleep(self.poll)
        watch.check()
        return status

    def cancel(self, job_id: str) -> bool:
        """`flwr stop` the job's Flower run; False if it has none that still runs."""
        run_id = self._current_run(job_id)
        if run_id is None:
            return False
        self._flwr(["stop", str(run_id), self.connection.federation])
        return True

    def status(self, run_id: int) -> str:
        """Flower's status of a run: pending, starting, running, finished:completed|failed|stopped."""
        answer = self._flwr(["ls", self.connection.federation, "--run-id", str(run_id), "--format", "json"])
        runs = answer.get("runs") or []
        return str(runs[0]["status"]) if runs else "finished:unknown"

    # ---------------------------------------------------------------- helpers
    def _run_file(self, job_id: str) -> Path:
        return CoordinatorPaths(self.coordinator_dir).job_run_dir(job_id) / "flower-run-id"

    def _current_run(self, job_id: str) -> int | None:
        """The job's Flower run if one is still pending or running (a service started again follows it)."""
        path = self._run_file(job_id)
        if not path.is_file():
            return None
        run_id = int(path.read_text().strip())
        try:
            return None if self.status(run_id).startswith("finished") else run_id
        except FlowerRunError:
            return None

    def _submit(self, job_id: str, run_config: dict[str, object]) -> int:
        from sovereign.deployment import run_config_text

        answer = self._flwr(["run", self.connection.app, self.connection.federation, "--run-config",
                             run_config_text(run_config), "--format", "json"], timeout=300)
        if not answer.get("success") or not answer.get("run-id"):
            raise FlowerRunError(f"flwr run {self.connection.app}: {answer.get('error-message') or answer}")
        run_id = int(answer["run-id"])
        path = self._run_file(job_id)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"{run_id}\n")
        return run_id

    def _flwr(self, args: list[str], timeout: float = 60) -> dict:
        from sovereign.deployment import flower_env

        env = flower_env(self.connection.flwr_home)
        done = subprocess.run([str(Path(sys.executable).with_name("flwr")), *args], capture_output=True, text=True,
                              env=env, timeout=timeout)
        try:
            answer = json.loads(done.stdout) if "--format" in args else {}
        except json.JSONDecodeError:
            answer = {}
        if done.returncode != 0:
            last = ([line for line in (done.stdout + done.stderr).splitlines() if line.strip()] or ["no output"])[-1]
            raise FlowerRunError(f"flwr {args[0]} failed (exit {done.returncode}): {answer.get('error-message') or last}")
        return answer


def runner_from_settings(settings: RunnerSettings | None):
    """The runner a coordinator's settings ask for (None: jobs are only tracked)."""
    if settings is None:
        return None
    if settings.kind == "simulation":
        return SimulationRunner(settings.nodes_root, settings.coordinator_dir, timeout=settings.job_timeout)
    return DeploymentRunner(settings.flower, settings.coordinator_dir, timeout=settings.job_timeout,
                            round_timeout=settings.round_timeout, node_wait=settings.node_wait)


def _released_file(coordinator_dir: Path, job_id: str) -> dict:
    result_file = CoordinatorPaths(coordinator_dir).job_result(job_id)
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
    parser.add_argument("--min-contributors", type=int, default=1)
    args = parser.parse_args()
    from common.wire import JobSpec
    from coordinator.rounds import CoordinatorPaths
    from sovereign.federation import run_simulation

    job = JobSpec.model_validate_json(args.spec.read_text())
    nodes = json.loads((args.nodes_root / "index.json").read_text())["nodes"]
    code = 0
    try:
        run_simulation(job, args.nodes_root, CoordinatorPaths(args.coordinator_dir), len(nodes), None,
                       min_contributors=args.min_contributors)
    except Exception as exc:  # noqa: BLE001 - the service reads the last line of the log
        print(f"error: the round loop stopped: {exc}", flush=True)
        code = 1
    # Leave without Python's exit handlers: after Ray failed to boot, its shutdown hook can wait
    # forever on a raylet that is gone, and the service would wait on this process until its timeout.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    main()
