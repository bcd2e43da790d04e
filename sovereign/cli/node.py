"""`sovereign node ...`: what branch IT runs on the node: `check` (config, policy, data
contract, what a job would read), `run` (the node's SuperNode, from node.json), its privacy
budget and spends, the branch's own forecast report (which never leaves the node), and its
answers to the jobs the coordinator requests of it (`jobs`, `approve`, `deny`: signed with
the node's key, recorded in its own book and lineage first, then sent)."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.table import Table

from sovereign.cli.console import console, fail
from sovereign.node_view import budget_report, customer_standing, requested_rows

node_app = typer.Typer(help="What branch IT runs on the node: check it, run its SuperNode, answer job requests, "
                            "watch its privacy budget, read its own forecast and report.",
                       no_args_is_help=True)


def _node_config(node_dir: Path):
    """The node's configuration, or a one-line error naming the file."""
    from node_agent.config import NodeConfigError, load_node_config

    try:
        return load_node_config(node_dir)
    except NodeConfigError as exc:
        fail(str(exc))


@node_app.command("budget")
def budget_cmd(
    node_dir: Path = typer.Option(..., help="The node's directory (holds node.json and privacy/ledger.db)."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Spent and remaining privacy per dataset, and each job's plan and spend."""
    config = _node_config(node_dir)
    report = budget_report(config)
    customers = customer_standing(config) if config.customer_privacy else None
    if as_json:
        typer.echo(json.dumps({"node": config.branch_id, "datasets": report, "customer": customers}, indent=2))
        return
    if customers:
        settings = config.customer_privacy
        console.print(f"[bold]{config.branch_id} / {config.dataset}, customer-level[/]: at most ε {settings.epsilon_per_year:g} "
                      f"per year of purchases (δ {settings.delta:g}), {settings.bound.max_sales_per_year} sale(s) of a customer "
                      "counted a year")
        for year, row in customers["years"].items():
            console.print(f"  {year}: ε {row['spent']:.3f} spent by {row['releases']} release(s), {row['left']:.3f} left")
        if not customers["years"]:
            console.print("  no release yet")
    if not report:
        console.print(f"{config.branch_id}: no privacy budget set in node.json; the node refuses DP jobs until one is")
        return
    for dataset, r in report.items():
        console.print(f"[bold]{config.branch_id} / {dataset}[/]: ε {r['committed_epsilon']:.3g} committed of "
                      f"{r['budget']['epsilon']:g}, {r['remaining_epsilon']:.3g} left; δ {r['committed_delta']:g} of "
                      f"{r['budget']['delta']:g}")
        table = Table()
        for column in ("job", "status", "planned ε", "spent ε", "δ", "accountant", "note"):
            table.add_column(column, overflow="fold")
        for j in r["jobs"]:
            table.add_row(j["job_id"], j["status"], f"{j['planned_epsilon']:.3f}", f"{j['epsilon']:.3f}", f"{j['delta']:g}",
                          j["accountant"], j["reason"] or "")
        console.print(table)


@node_app.command("report")
def report_cmd(
    node_dir: Path = typer.Option(..., help="The node's directory (holds node.json and reports/)."),
    job: str = typer.Option(None, help="A job id; default the newest job this node evaluated."),
    plot: Path = typer.Option(None, help="Also draw the branch's history, actuals and forecasts to this PNG."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """This branch's own forecast and accuracy for a job: they never leave the node."""
    from node_agent.report import read_branch_reports

    config = _node_config(node_dir)
    reports = [r for r in read_branch_reports(config) if job is None or r["job_id"] == job]
    if not reports:
        fail(f"--node-dir {node_dir}: no forecast report" + (f" for job {job}" if job else "") + " on this node yet")
    report = reports[-1]
    if as_json:
        typer.echo(json.dumps(report, indent=2))
        return
    console.print(f"[bold]{report['branch_id']}[/], job {report['job_id']}: held-out months {report['months'][0]} to "
                  f"{report['months'][-1]} ({report['history_months']} months of history before them)")
    table = Table()
    for column in ("month", "actual", *report["forecasts"]):
        table.add_column(column.replace("_", " "), justify="right")
    for i, month in enumerate(report["months"]):
        table.add_row(month, f"{report['actual'][i]:g}", *(f"{f[i]:.1f}" for f in report["forecasts"].values()))
    table.add_row("MASE", "", *(f"{report['scores'][arm]['mase']:.3f}" for arm in report["forecasts"]))
    console.print(table)
    if plot is not None:
        _plot_branch(report, plot)
        console.print(f"wrote {plot}")


@node_app.command("forecast")
def forecast_cmd(
    node_dir: Path = typer.Option(..., help="The node's directory (holds node.json and reports/)."),
    job: str = typer.Option(None, help="A job id; default the newest job this node evaluated."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """This branch's forecast of the months after its data, from the job's model, with 80 % and
    95 % intervals calibrated on the branch's own history. It never leaves the node; only its
    share of the regional totals does, inside an encrypted sum."""
    from node_agent.report import read_branch_reports

    config = _node_config(node_dir)
    reports = [r for r in read_branch_reports(config) if (job is None or r["job_id"] == job) and r.get("outlook")]
    if not reports:
        fail(f"--node-dir {node_dir}: no forecast" + (f" for job {job}" if job else "") + " on this node yet "
             "(a job delivers one at its held-out evaluation)")
    report = reports[-1]
    ahead, coverage = report["outlook"], report.get("coverage") or {}
    if as_json:
        typer.echo(json.dumps({"branch_id": report["branch_id"], "job_id": report["job_id"], **ahead,
                               "held_out_coverage": coverage}, indent=2))
        return
    table = Table(title=f"{report['branch_id']}: units sold in the months ahead (job {report['job_id']}, stays on this node)")
    for column in ("month", "forecast", "80 % interval", "95 % interval"):
        table.add_column(column, justify="right")
    for i, month in enumerate(ahead["months"]):
        table.add_row(month, f"{ahead['point'][i]:.1f}", f"{ahead['low80'][i]:.1f} – {ahead['high80'][i]:.1f}",
                      f"{ahead['low95'][i]:.1f} – {ahead['high95'][i]:.1f}")
    console.print(table)
    if coverage:
        console.print(f"on the held-out months these intervals held {coverage['80']:.0%} (80 %) and {coverage['95']:.0%} (95 %) "
                      "of the actual months")


def _plot_branch(report: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    history, actual = report["history_tail"], report["actual"]
    fig, ax = plt.subplots(figsize=(7, 3.2))
    ax.plot(range(-len(history), 0), history, color="black", lw=1.2, label="history")
    ax.plot(range(len(actual)), actual, color="black", lw=1.8, label="actual (held out)")
    for arm, values in report["forecasts"].items():
        ax.plot(range(len(values)), values, lw=1.2, ls="-" if arm == "federated" else "--", label=arm.replace("_", " "))
    ax.axvline(-0.5, color="#bbb", lw=0.8)
    ax.set_title(f"{report['branch_id']}: job {report['job_id']}", fontsize=9)
    ax.set_ylabel("units sold")
    ax.legend(fontsize=7)
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)


COORDINATOR_HELP = "The coordinator service's URL (e.g. http://127.0.0.1:8080)."
TOKEN_HELP = "This node's branch_it token (or set SOVEREIGN_TOKEN)."


def _client(url: str, token: str | None):
    from sovereign.cli.api_client import CoordinatorClient

    if not token:
        fail("--token: a branch_it token is needed to talk to the coordinator (or set SOVEREIGN_TOKEN)")
    return CoordinatorClient(url, token)


def _requested_spec(job_id: str, spec_file: Path | None, coordinator: str | None, token: str | None):
    """The spec the owner judges: from a file, or as the coordinator requested it."""
    from pydantic import ValidationError

    from common.validation import first_error
    from common.wire import JobSpec
    from common.yaml_files import YamlFileError, read_mapping
    from sovereign.cli.api_client import ClientError

    try:
        if spec_file is not None:
            spec = JobSpec.model_validate(read_mapping(spec_file, "a job spec"))
        elif coordinator:
            spec = JobSpec.model_validate(_client(coordinator, token).get(f"/jobs/{job_id}")["spec"])
        else:
            fail("give --spec FILE or --coordinator URL: the decision is on one exact spec")
    except (YamlFileError, ClientError) as exc:
        fail(str(exc))
    except ValidationError as exc:
        fail(f"{spec_file or 'the requested spec'}: {first_error(exc)}")
    if spec.job_id != job_id:
        fail(f"{spec_file}: job_id is {spec.job_id!r}, not {job_id!r}")
    return spec


SPEC_HASH_HELP = ("The spec hash `sovereign node jobs` showed (12 characters or more): the decision is refused, "
                  "nothing signed, if the coordinator now sends another spec under this id.")


def _decide(decision: str, job_id: str, node_dir: Path, reason: str, spec_file: Path | None, coordinator: str | None,
            token: str | None, read: str | None = None) -> None:
    from node_agent.admission import admission_refusal
    from node_agent.approvals import APPROVED, AlreadyDecided, record_owner_decision
    from sovereign.cli.api_client import ClientError

    config = _node_config(node_dir)
    spec = _requested_spec(job_id, spec_file, coordinator, token)
    if read is not None and (len(read) < 12 or not spec.spec_hash().startswith(read.lower())):
        fail(f"--spec-hash: job {job_id} now has spec {spec.spec_hash()[:12]}, not the {read[:12]} you read; "
             "read it again with `sovereign node jobs`")
    if decision == APPROVED:
        refusal = admission_refusal(spec, config, None)
        if refusal is not None:
            fail(f"this node's own rules refuse job {job_id} ({refusal.code}): {refusal}; approving it would not run it")
    try:
        signature = record_owner_decision(config, spec, decision, reason)
    except AlreadyDecided as exc:
        fail(str(exc))
    console.print(f"{config.branch_id}: job {job_id} {decision} (spec {spec.spec_hash()[:12]}), signed and in lineage")
    if coordinator:
        try:
            _client(coordinator, token).post(f"/jobs/{job_id}/decisions", {
                "node_id": config.branch_id, "decision": decision, "reason": reason, "signature": signature})
        except ClientError as exc:
            fail(f"recorded here, but not delivered: {exc}", code=1)
        console.print(f"  sent to {coordinator}")


@node_app.command("approve")
def approve_cmd(
    job_id: str = typer.Argument(..., help="The job to approve."),
    node_dir: Path = typer.Option(..., help="The node's directory."),
    reason: str = typer.Option(..., help="Why (kept in lineage and sent with the approval)."),
    spec: Path | None = typer.Option(None, help="The job spec (YAML/JSON) judged, instead of asking the coordinator."),
    coordinator: str | None = typer.Option(None, help=COORDINATOR_HELP),
    token: str | None = typer.Option(None, envvar="SOVEREIGN_TOKEN", help=TOKEN_HELP),
    spec_hash: str | None = typer.Option(None, help=SPEC_HASH_HELP),
) -> None:
    """Approve one exact spec of a job, signed with the node's key; with node.json `approvals: by_hand` the
    node trains on nothing else."""
    _decide("approved", job_id, node_dir, reason, spec, coordinator, token, spec_hash)


@node_app.command("deny")
def deny_cmd(
    job_id: str = typer.Argument(..., help="The job to deny."),
    node_dir: Path = typer.Option(..., help="The node's directory."),
    reason: str = typer.Option(..., help="Why (kept in lineage and sent with the denial)."),
    spec: Path | None = typer.Option(None, help="The job spec (YAML/JSON) judged, instead of asking the coordinator."),
    coordinator: str | None = typer.Option(None, help=COORDINATOR_HELP),
    token: str | None = typer.Option(None, envvar="SOVEREIGN_TOKEN", help=TOKEN_HELP),
    spec_hash: str | None = typer.Option(None, help=SPEC_HASH_HELP),
) -> None:
    """Deny a job, signed with the node's key: the node refuses it at every instruction from now on."""
    _decide("denied", job_id, node_dir, reason, spec, coordinator, token, spec_hash)


@node_app.command("jobs")
def jobs_cmd(
    node_dir: Path = typer.Option(..., help="The node's directory."),
    coordinator: str = typer.Option(..., help=COORDINATOR_HELP),
    token: str | None = typer.Option(None, envvar="SOVEREIGN_TOKEN", help=TOKEN_HELP),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """The jobs requested of this node, what each asks for, and what this node's own rules say of it."""
    from sovereign.cli.api_client import ClientError

    config = _node_config(node_dir)
    try:
        jobs = _client(coordinator, token).get("/jobs", state="requested")
    except ClientError as exc:
        fail(str(exc))
    try:
        rows = requested_rows(config, jobs)
    except ValueError as exc:
        fail(str(exc))
    if as_json:
        typer.echo(json.dumps({"node": config.branch_id, "jobs": rows}, indent=2))
        return
    if not rows:
        console.print(f"{config.branch_id}: no job awaits a decision")
        return
    table = Table(title=f"jobs requested of {config.branch_id}")
    for column in ("job", "purpose → recipient", "rounds", "ε (left)", "this node's rules", "decision"):
        table.add_column(column, overflow="fold")
    for r in rows:
        eps = "—" if r["epsilon"] is None else f"{r['epsilon']:g}" + (f" ({r['epsilon_left']:.3g})" if r["epsilon_left"]
                                                                       is not None else " (no budget set)")
        table.add_row(r["job_id"], f"{r['purpose']} → {r['recipient_role']} ({r['destination']})", str(r["rounds"]),
                      eps, r["own_rules"], r["decision"])
    console.print(table)
    for r in rows:
        console.print(f"{r['job_id']} reads, after this node's policy: "
                      + "; ".join(f"{field} {how}" for field, how in r["reads"].items()), soft_wrap=True)
    for r in rows:
        console.print(f"{r['job_id']} (spec {(r['spec_hash'] or '-')[:12]}) also asks: "
                      + "; ".join(f"{k} {v}" for k, v in r["asks"].items()), soft_wrap=True)
    console.print(f"decide with: sovereign node approve|deny JOB --spec-hash SPEC --node-dir {node_dir} --reason ... "
                  f"--coordinator {coordinator}")


@node_app.command("check")
def check_cmd(
    node_dir: Path = typer.Option(..., help="The node's directory (holds node.json)."),
    job: Path | None = typer.Option(None, help="A job spec (YAML/JSON) to judge; default: a default forecasting job."),
) -> None:
    """Validate the node before it takes jobs: node.json, the policy, the database against the
    data contract (read-only), and what a job would read after the policy's treatments.
    Nothing is written and nothing leaves the node."""
    import os

    from pydantic import ValidationError

    from common.db import DatabaseUrlError, read_only_url
    from common.validation import first_error
    from common.wire import CustomerDPRequest, JobSpec
    from common.yaml_files import YamlFileError, read_mapping
    from datetime import date

    from node_agent.admission import Refusal, admission_refusal
    from node_agent.agent import customer_window
    from node_agent.contract import ContractViolation
    from node_agent.data import job_request, read_branch_dataset
    from node_agent.supernode import supernode_problems
    from policies import PolicyFileError, load_policy
    from policies.rules import JobRefusal, lint

    config = _node_config(node_dir)
    console.print(f"node.json: branch {config.branch_id}, dataset {config.dataset}, approvals {config.approvals}, "
                  f"{len(config.trusted_apps)} trusted app build(s)")
    try:
        spec = JobSpec.model_validate(read_mapping(job, "a job spec")) if job else JobSpec(
            job_id="check", customer_dp=CustomerDPRequest() if config.customer_privacy else None)
        policy = load_policy(config.policy_path)
    except (YamlFileError, PolicyFileError) as exc:
        fail(str(exc))
    except ValidationError as exc:
        fail(f"{job}: {first_error(exc)}")
    errors = [f for f in lint(policy) if f.severity == "error"]
    if errors:
        fail(f"{config.policy_path}:{errors[0].line or ''}: {errors[0].message}")
    console.print(f"policy: {policy.policy} v{policy.version} ({policy.jurisdiction}), hash {policy.content_hash()[:16]}")
    refusal = admission_refusal(spec, config, None)
    if refusal is not None:
        fail(f"job {spec.job_id}: this node's own rules refuse it ({refusal.code}): {refusal}", 1)
    request = job_request(spec, config.dataset, destination=config.coordinator_jurisdiction,
                          customer_column=config.customer_column_for(spec))
    try:
        customers = customer_window(config, spec, date.today())
        data = read_branch_dataset(read_only_url(config.db_url), policy, request, key=os.urandom(32), target=spec.target,
                                   table=config.dataset, max_price=config.max_sale_price, customers=customers)
    except Refusal as exc:
        fail(f"job {spec.job_id}: this node's own rules refuse it ({exc.code}): {exc}", 1)
    except DatabaseUrlError as exc:
        fail(f"{config.node_dir / 'node.json'}: db_url: {exc}")
    except (ContractViolation, JobRefusal) as exc:
        fail(str(exc), 1)
    table = Table(title=f"what job {spec.job_id} ({spec.purpose}, to {spec.recipient_role}) would read here")
    for column in ("field", "class", "treatment", "rule"):
        table.add_column(column, overflow="fold")
    for d in data.decisions:
        if d.name in request.fields:
            table.add_row(d.name, d.field_class.value if d.field_class else "unclassified", d.treatment.describe(), d.rule)
    console.print(table)
    quarantined = ", ".join(f"{why} {n}" for why, n in data.quarantined.items()) or "none"
    console.print(f"data: {data.row_count} rows, {data.valid_count} valid, {len(data.series.units)} months from "
                  f"{data.series.start:%Y-%m}; quarantined: {quarantined}")
    if data.bounding is not None:
        b = data.bounding
        console.print(f"customer-level privacy: {b.customers} customers; {b.sales_dropped} sales of {b.customers_capped} "
                      f"customers past the bound would not be counted (most of one customer in a year: "
                      f"{b.most_sales_of_one_customer}); {b.outside_window} sales outside the months released")
    for problem in supernode_problems(config):
        console.print(f"[yellow]for `sovereign node run`:[/] {problem}")
    console.print(f"{config.branch_id}: ready for job {spec.job_id}")


@node_app.command("run")
def run_cmd(node_dir: Path = typer.Option(..., help="The node's directory (node.json with its `supernode` section).")) -> None:
    """Start this node's Flower SuperNode from node.json and keep it running: TLS to the
    SuperLink, the node's registered key, only app bundles its trusted publishers signed, and
    the node directory for the ClientApp (which enforces node.json's rules on every message)."""
    import os

    from node_agent.supernode import SuperNodeConfigError, supernode_command

    config = _node_config(node_dir)
    try:
        command = supernode_command(config)
    except SuperNodeConfigError as exc:
        fail(str(exc))
    console.print(f"{config.branch_id}: SuperNode to {config.supernode.superlink} (TLS, node key "
                  f"{config.supernode.auth_key}), trusted publishers {config.supernode.trusted_entities}")
    from sovereign.deployment import flower_env

    env = flower_env()
    env.setdefault("FLWR_HOME", str((config.node_dir / "flwr").resolve()))
    os.execve(command[0], command, env)  # the SuperNode takes this process over: signals reach it directly


@node_app.command("console")
def console_cmd(
    node_dir: Path = typer.Option(..., help="The node's directory."),
    coordinator: str | None = typer.Option(None, help=COORDINATOR_HELP + " Without it, no job requests are shown."),
    token: str | None = typer.Option(None, envvar="SOVEREIGN_TOKEN", help=TOKEN_HELP),
    host: str = typer.Option("127.0.0.1", help="Address to listen on (keep it local unless a proxy with TLS fronts it)."),
    port: int = typer.Option(8090, help="Port to listen on."),
    access_token: str | None = typer.Option(None, envvar="SOVEREIGN_NODE_CONSOLE_TOKEN",
                                            help="The token branch IT signs in with (default: a new one, printed)."),
) -> None:
    """Serve branch IT's web console on this node: health, job requests with what each would read
    here, approve or deny with a reason (signed with the node's key), the privacy budget and the
    branch's own forecast. Only the access token it prints signs in; the coordinator cannot."""
    import uvicorn

    from sovereign.console.node_console import create_node_console

    config = _node_config(node_dir)
    client = _client(coordinator, token) if coordinator else None
    app = create_node_console(config, client, access_token=access_token)
    console.print(f"{config.branch_id}: node console on http://{host}:{port}/ ; sign in with the access token:")
    typer.echo(app.state.access_token)
    uvicorn.run(app, host=host, port=port, log_level="warning")
