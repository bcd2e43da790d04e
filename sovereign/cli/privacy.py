"""`sovereign privacy ...`: planning tools for analysts: what a job costs each customer and
what accuracy to expect (`plan`), what a DP-SGD schedule spends (`epsilon`), and the noise a
target epsilon needs (`noise`)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

import typer

from sovereign.cli.console import console, fail

privacy_app = typer.Typer(help="Plan differential privacy: a job's customer ε and expected accuracy, a schedule's ε, "
                                "the noise for a target.", no_args_is_help=True)
MEASURED = Path(__file__).resolve().parents[2] / "experiments" / "results" / "customer_dp.json"

ACCOUNTANT_HELP = "rdp (Renyi DP, the default) or prv (privacy random variables: tighter, numerical)."


def _accountant(value: str) -> str:
    if value not in ("rdp", "prv"):
        fail(f"--accountant {value}: choose rdp or prv")
    return value


def _answer(key: str, compute: Callable[[], float], inputs: dict, as_json: bool, line: Callable[[float], str]) -> None:
    """Compute, then print one line (or JSON of the answer and its inputs); a bad input is a one-line error."""
    from common.privacy import PrivacyPlanError

    try:
        value = compute()
    except PrivacyPlanError as exc:
        fail(str(exc))
    if as_json:
        typer.echo(json.dumps({key: value, **inputs}))
    else:
        console.print(line(value))


@privacy_app.command("epsilon")
def epsilon_cmd(
    sampling_rate: float = typer.Option(..., help="Poisson sampling rate q of each step (batch size / records)."),
    noise_multiplier: float = typer.Option(..., help="Noise standard deviation over the clipping norm (sigma)."),
    steps: int = typer.Option(..., help="DP-SGD steps in total (all rounds, all epochs)."),
    delta: float = typer.Option(1e-5, help="Delta of the (epsilon, delta) guarantee."),
    accountant: str = typer.Option("rdp", help=ACCOUNTANT_HELP),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """The epsilon that STEPS steps at SAMPLING_RATE with NOISE_MULTIPLIER spend, at DELTA."""
    from common.privacy import epsilon

    _answer(
        "epsilon", lambda: epsilon(sampling_rate, noise_multiplier, steps, delta, _accountant(accountant)),
        {"delta": delta, "sampling_rate": sampling_rate, "noise_multiplier": noise_multiplier, "steps": steps,
         "accountant": accountant},
        as_json, lambda eps: f"ε = {eps:.4f} at δ = {delta:g} ({accountant}: {steps} steps, q = {sampling_rate:g}, σ = {noise_multiplier:g})",
    )


@privacy_app.command("noise")
def noise_cmd(
    epsilon: float = typer.Option(..., help="Target epsilon for the whole schedule."),
    delta: float = typer.Option(1e-5, help="Delta of the (epsilon, delta) guarantee."),
    sampling_rate: float = typer.Option(..., help="Poisson sampling rate q of each step."),
    steps: int = typer.Option(..., help="DP-SGD steps in total."),
    accountant: str = typer.Option("rdp", help=ACCOUNTANT_HELP),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """The noise multiplier STEPS steps at SAMPLING_RATE need to stay within EPSILON at DELTA."""
    from common.privacy import noise_multiplier

    _answer(
        "noise_multiplier", lambda: noise_multiplier(epsilon, delta, sampling_rate, steps, _accountant(accountant)),
        {"epsilon": epsilon, "delta": delta, "sampling_rate": sampling_rate, "steps": steps, "accountant": accountant},
        as_json, lambda sigma: f"σ = {sigma:.4f} keeps {steps} steps at q = {sampling_rate:g} within ε = {epsilon:g}, "
                               f"δ = {delta:g} ({accountant})",
    )


@privacy_app.command("plan")
def plan_cmd(
    job_file: Path = typer.Argument(..., help="A job spec, or a job file with a spec: section (YAML or JSON)."),
    node: list[Path] = typer.Option([], "--node", help="A node directory to plan with its public customer_privacy "
                                    "settings (node.json); repeat for several. Without it: the defaults every node starts with."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """What JOB_FILE costs each customer of a node, and what accuracy to expect.

    Reads the job's customer_dp request (ε per year, window) and each node's public bound, δ
    and yearly budget; prints the customer ε per year of purchases, the noise on each released
    month, how many such jobs fit a node's year, the window-level DP-SGD ε beside it, and the
    accuracy cost measured for that ε on the simulator (experiments/results/customer_dp.json)."""
    from pydantic import ValidationError

    from common.customer_privacy import plan_release
    from common.validation import first_error
    from common.wire import JobSpec
    from common.yaml_files import YamlFileError, read_mapping
    from node_agent.config import CustomerPrivacy, NodeConfigError, load_node_config

    try:
        data = read_mapping(job_file, "a job spec")
        spec = JobSpec.model_validate(data.get("spec", data) if isinstance(data.get("spec"), dict) else data)
    except YamlFileError as exc:
        fail(str(exc))
    except ValidationError as exc:
        fail(f"{job_file}: {first_error(exc)}")
    if spec.customer_dp is None:
        fail(f"{job_file}: customer_dp: the job asks for no customer-level privacy; a node that requires it refuses the job")
    settings: dict[str, CustomerPrivacy] = {}
    for path in node:
        try:
            config = load_node_config(path)
        except NodeConfigError as exc:
            fail(str(exc))
        if config.customer_privacy is None:
            fail(f"{path / 'node.json'}: customer_privacy: this node gives no customer-level privacy; it refuses the job")
        settings[config.branch_id] = config.customer_privacy
    settings = settings or {"every node (defaults)": CustomerPrivacy()}
    measured = json.loads(MEASURED.read_text()) if MEASURED.is_file() else None
    plans = {name: plan_release(spec.customer_dp, bound=s.bound, delta=s.delta, budget=s.epsilon_per_year, measured=measured)
             for name, s in settings.items()}
    window = {"epsilon": spec.dp.target_epsilon, "delta": spec.dp.delta} if spec.dp.enabled else None
    if as_json:
        typer.echo(json.dumps({"job_id": spec.job_id, "nodes": {n: p.model_dump() for n, p in plans.items()},
                               "window_level": window}, indent=2))
        return
    for name, plan in plans.items():
        console.print(f"[bold]{spec.job_id}[/] at {name}: release of {plan.first_month}..{plan.last_month or 'last month'} "
                      f"({plan.years} years)")
        console.print(f"  every customer: ε = {plan.epsilon:.3f} per year of purchases at δ = {plan.delta:g}; "
                      f"one who bought in all {plan.years} years: ε = {plan.every_year_epsilon:.3f}")
        console.print(f"  each released month carries discrete Gaussian noise σ = {plan.sigma:.2f} sales (at most "
                      f"{plan.bound.max_sales_per_year} of a customer's sales counted a year, "
                      f"{plan.bound.max_sales_per_month} a month)")
        console.print(f"  yearly budget ε = {plan.budget:g}: this job takes {plan.budget_share:.0%} of a fresh year; "
                      f"{plan.jobs_per_year} such job{' fits' if plan.jobs_per_year == 1 else 's fit'} a year")
        for alliance, cost in plan.expected_cost.items():
            console.print(f"  expected accuracy ({alliance} simulated branches): federated MASE {cost['cost']:+.1%} "
                          f"(seeds {cost['range'][0]:+.1%} to {cost['range'][1]:+.1%}) against the same job without it"
                          + (f", {cost['note']}" if cost.get("note") else ""))
        if not plan.expected_cost:
            console.print("  expected accuracy: no measurement here (run experiments/customer_dp.py)")
    if window:
        console.print(f"  and window-level DP-SGD: ε = {window['epsilon']:g} at δ = {window['delta']:g} per training window, "
                      "side by side (the customer figure already covers every release)")
