"""`sovereign policy ...`: what a compliance officer runs to check and read a policy."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from sovereign.cli.console import err, fail

policy_app = typer.Typer(help="Check and explain a branch's data policy (YAML).", no_args_is_help=True)
# A compliance table is read whole: give it room when the output is a file or a pipe.
console = Console(width=160) if not Console().is_terminal else Console()


@policy_app.command("lint")
def lint_cmd(file: Path = typer.Argument(..., help="The policy file.")) -> None:
    """Check a policy: schema, unknown fields, contradictory rules, restricted fields released."""
    from policies.loader import PolicyFileError, load_policy
    from policies.rules import lint

    try:
        policy = load_policy(file)
    except PolicyFileError as exc:
        fail(str(exc))
    findings = lint(policy)
    for f in findings:
        where = f"{file}:{f.line}" if f.line else str(file)
        (err if f.severity == "error" else console).print(f"{where}: {f.severity}: {escape(f.message)}", soft_wrap=True, highlight=False)
    if any(f.severity == "error" for f in findings):
        raise typer.Exit(1)
    console.print(f"{file}: policy {policy.policy} v{policy.version} ({len(policy.rules)} rules) is valid; hash {policy.content_hash()[:16]}")


@policy_app.command("explain")
def explain_cmd(
    policy_file: Path = typer.Option(..., "--policy", help="The branch's policy file."),
    job_file: Path = typer.Option(..., "--job", help="The job request (purpose, destination, recipient role, fields)."),
    db: str = typer.Option(None, help="The branch database (a SQLite file or a SQLAlchemy URL), read-only, to explain "
                                      "its real columns."),
) -> None:
    """Per field: its class, the treatment this job gets, the rule that decided, and why."""
    from policies.loader import PolicyFileError, load_job_request, load_policy
    from policies.rules import JobRefusal, check_request, evaluate, unclassified_columns

    try:
        policy, job = load_policy(policy_file), load_job_request(job_file)
    except PolicyFileError as exc:
        fail(str(exc))
    schema = {t: list(fields) for t, fields in policy.tables.items()}
    if db:
        from sqlalchemy import create_engine, inspect
        from sqlalchemy.exc import ArgumentError, SQLAlchemyError

        from common.db import DatabaseUrlError, read_only_url

        try:
            engine = create_engine(read_only_url(db))
            schema = {t: [c["name"] for c in inspect(engine).get_columns(t)] for t in inspect(engine).get_table_names()}
        except DatabaseUrlError as exc:
            fail(f"--db {exc}")
        except ArgumentError:
            fail(f"--db {db}: neither a database file nor a SQLAlchemy URL")
        except SQLAlchemyError as exc:
            fail(f"--db {db}: cannot read the database schema ({exc.__class__.__name__})")
    decisions = evaluate(policy, schema, job)
    cross = "abroad" if job.destination != policy.jurisdiction else "at home"
    table = Table(title=f"{policy.policy} v{policy.version} for job {job.job_id}: {job.purpose}, "
                        f"results {cross} ({policy.jurisdiction} → {job.destination}), to {job.recipient_role}")
    for column in ("field", "class", "treatment", "rule"):
        table.add_column(column, overflow="fold")  # a compliance table never truncates a name
    table.add_column("why", ratio=1)
    requested = set(job.fields)
    for d in decisions:
        name = f"{d.table}.{d.field}"
        style = "bold" if name in requested else None
        table.add_row(name, d.field_class.value if d.field_class else "unclassified", d.treatment.describe(), d.rule, d.reason, style=style)
    console.print(table)
    drift = unclassified_columns(policy, {t: c for t, c in schema.items() if t in policy.tables}) if db else []
    for name in drift:
        err.print(f"{policy.where(name.split('.')[0])}: {name}: in the database but not classified (schema drift); "
                  "the node refuses every job until it is", soft_wrap=True, highlight=False)
    if drift:
        raise typer.Exit(1)
    try:
        check_request(decisions, job)
    except JobRefusal as exc:
        fail(f"refused: {exc}", 1)
    console.print(f"job {job.job_id} may run here: every requested field is available (policy hash {policy.content_hash()[:16]})")
