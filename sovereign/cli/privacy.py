"""`sovereign privacy ...`: planning tools for analysts: what a DP-SGD schedule spends, and
the noise a target epsilon needs."""

from __future__ import annotations

import json
from typing import Callable

import typer

from sovereign.cli.console import console, fail

privacy_app = typer.Typer(help="Plan differential privacy: epsilon of a schedule, noise for a target.", no_args_is_help=True)

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


@privacy_app.command("plan")
def plan_cmd(
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
