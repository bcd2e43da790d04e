"""`sovereign job ...`: the analyst's side of the coordinator service, a thin client of its REST API.

    sovereign job submit JOB.yaml     (spec, nodes, min_contributors; checked here first)
    sovereign job status ID [--follow]
    sovereign job results ID
    sovereign job stop ID --reason ...
    sovereign job list [--state S]

The URL and token come from --coordinator/--token or SOVEREIGN_COORDINATOR/SOVEREIGN_TOKEN.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import typer
from rich.table import Table

from sovereign.cli.console import console, fail

job_app = typer.Typer(help="Submit joint forecasts to the coordinator service and follow them.", no_args_is_help=True)

FINAL = ("completed", "failed", "stopped")
URL_OPTION = typer.Option("http://127.0.0.1:8080", "--coordinator", envvar="SOVEREIGN_COORDINATOR",
                          help="The coordinator service's URL.")
TOKEN_OPTION = typer.Option(None, "--token", envvar="SOVEREIGN_TOKEN", help="An analyst's token.")


def _client(url: str, token: str | None):
    from sovereign.cli.api_client import CoordinatorClient

    if not token:
        fail("--token: an analyst's token is needed (or set SOVEREIGN_TOKEN)")
    return CoordinatorClient(url, token)


def _call(fn):
    from sovereign.cli.api_client import ClientError

    try:
        return fn()
    except ClientError as exc:
        fail(str(exc), code=1)


def _show(job: dict) -> None:
    answers = {}
    for a in job["nodes"]:
        answers[a["decision"]] = answers.get(a["decision"], 0) + 1
    console.print(f"[bold]{job['job_id']}[/]: {job['state']} — {job['spec']['purpose']}, {job['spec']['rounds']} rounds, "
                  f"needs {job['min_contributors']} of {len(job['nodes'])} nodes; "
                  + ", ".join(f"{n} {d}" for d, n in sorted(answers.items())))
    table = Table(show_header=True)
    for column in ("at", "state", "by", "reason"):
        table.add_column(column, overflow="fold")
    for step in job["steps"]:
        table.add_row(step["at"][:19].replace("T", " "), step["state"], step["actor"], step["reason"])
    console.print(table)


@job_app.command("submit")
def submit_cmd(
    job_file: Path = typer.Argument(..., help="YAML or JSON: spec (a job spec), nodes (node ids), min_contributors."),
    draft: bool = typer.Option(False, help="Keep it a draft instead of requesting it of the nodes now."),
    coordinator: str = URL_OPTION,
    token: str | None = TOKEN_OPTION,
) -> None:
    """Submit a joint forecast; the nodes' owners then approve or deny it."""
    from pydantic import ValidationError

    from common.validation import first_error
    from common.yaml_files import YamlFileError, read_mapping
    from coordinator.api.app import JobRequest

    try:
        request = JobRequest.model_validate({**read_mapping(job_file, "a job file"), **({"request": False} if draft else {})})
    except YamlFileError as exc:
        fail(str(exc))
    except ValidationError as exc:
        fail(f"{job_file}: {first_error(exc)}")
    job = _call(lambda: _client(coordinator, token).post("/jobs", request.model_dump(mode="json")))
    _show(job)


@job_app.command("status")
def status_cmd(
    job_id: str = typer.Argument(...),
    follow: bool = typer.Option(False, "--follow", help="Keep watching until the job is completed, failed or stopped."),
    every: float = typer.Option(2.0, help="Seconds between looks with --follow.", min=0.2),
    coordinator: str = URL_OPTION,
    token: str | None = TOKEN_OPTION,
) -> None:
    """A job's state, every step with its reason, and the nodes' answers."""
    client = _client(coordinator, token)
    job = _call(lambda: client.get(f"/jobs/{job_id}"))
    if not follow:
        _show(job)
        for r in _call(lambda: client.get(f"/jobs/{job_id}/rounds")):
            console.print(round_line(r))
        return
    job = follow_job(client, job_id, every)
    if job["state"] != "completed":
        raise typer.Exit(1)


def round_line(r: dict) -> str:
    """One closed round in one line: who contributed, who was left out and why."""
    left = ", ".join(f"{who} {why}" for who, why in sorted(r.get("refused", {}).items()))
    others = f" (+{r['others_contributing']} others)" if r.get("others_contributing") else ""
    eps = f", node-level ε {r['node_level_epsilon']:.2f}" if r.get("node_level_epsilon") is not None else ""
    return (f"round {r['round']}: {len(r['contributors'])} contributed{others}{eps}"
            + (f" in {r['seconds']:.0f}s" if r.get("seconds") else "") + (f"; left out: {left}" if left else ""))


def follow_job(client, job_id: str, every: float = 2.0) -> dict:
    """Watch a job to a final state: each step as it happens, and a progress bar over its
    rounds that moves as each round closes (with who took part). Returns the final job."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from sovereign.cli.api_client import ClientError

    job = _call(lambda: client.get(f"/jobs/{job_id}"))
    seen_steps = seen_rounds = 0
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=console, transient=False) as progress:
        bar = progress.add_task(f"{job_id}: {job['state']}", total=job["spec"]["rounds"])
        while True:
            for step in job["steps"][seen_steps:]:
                progress.console.print(f"{step['at'][:19].replace('T', ' ')}  {step['state']:<10} {step['reason']}")
            seen_steps = len(job["steps"])
            try:
                rounds = client.get(f"/jobs/{job_id}/rounds")
            except ClientError:
                rounds = []  # a service restarting: the next look will tell
            for r in rounds[seen_rounds:]:
                progress.console.print("  " + round_line(r))
            seen_rounds = max(seen_rounds, len(rounds))
            decided = sum(a["decision"] != "pending" for a in job["nodes"])
            state = job["state"] if job["state"] != "requested" else f"requested, {decided} of {len(job['nodes'])} answered"
            progress.update(bar, completed=seen_rounds, description=f"{job_id}: {state}")
            if job["state"] in FINAL:
                break
            time.sleep(every)
            job = _call(lambda: client.get(f"/jobs/{job_id}"))
    return job


@job_app.command("results")
def results_cmd(job_id: str = typer.Argument(...), coordinator: str = URL_OPTION, token: str | None = TOKEN_OPTION) -> None:
    """The job's released results, as far as this account may read them (JSON)."""
    typer.echo(json.dumps(_call(lambda: _client(coordinator, token).get(f"/jobs/{job_id}/results")), indent=2))


@job_app.command("stop")
def stop_cmd(
    job_id: str = typer.Argument(...),
    reason: str = typer.Option(..., help="Why (kept in the job's history and lineage)."),
    coordinator: str = URL_OPTION,
    token: str | None = TOKEN_OPTION,
) -> None:
    """Stop a draft, requested or running job."""
    _show(_call(lambda: _client(coordinator, token).post(f"/jobs/{job_id}/stop", {"reason": reason})))


@job_app.command("list")
def list_cmd(
    state: str | None = typer.Option(None, help="Only jobs in this state."),
    coordinator: str = URL_OPTION,
    token: str | None = TOKEN_OPTION,
) -> None:
    """The jobs this account may see."""
    jobs = _call(lambda: _client(coordinator, token).get("/jobs", state=state))
    if not jobs:
        console.print("no jobs" + (f" in state {state}" if state else ""))
        return
    table = Table()
    for column in ("job", "state", "purpose", "nodes", "approved", "created"):
        table.add_column(column)
    for j in jobs:
        table.add_row(j["job_id"], j["state"], j["spec"]["purpose"], str(len(j["nodes"])),
                      str(sum(a["decision"] == "approved" for a in j["nodes"])), j["created_at"][:19].replace("T", " "))
    console.print(table)
