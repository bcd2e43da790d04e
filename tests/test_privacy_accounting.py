"""The epsilon Sovereign reports is the one an independent implementation computes: Opacus's
RDP and PRV accountants against Google's `dp_accounting` (RDP and PLD), on schedules like
ours and unlike them; and the planning commands analysts use."""

from __future__ import annotations

import json
import logging

import pytest
from dp_accounting import dp_event
from dp_accounting.pld import pld_privacy_accountant
from dp_accounting.rdp import rdp_privacy_accountant
from typer.testing import CliRunner

from common.privacy import epsilon, epsilon_spent, group_privacy, noise_multiplier, windows_per_month
from sovereign.cli import app

SCHEDULES = [  # (sampling rate, noise multiplier, steps, delta)
    (0.02, 1.1, 1000, 1e-5),
    (0.25, 0.9, 64, 1e-5),   # a demo node: 4 batches per epoch, 2 epochs x 8 rounds
    (0.1, 2.0, 500, 1e-6),
    (1.0, 4.0, 8, 1e-5),     # full batches: node-level rounds
    (0.5, 1.3, 32, 1e-4),
]


def independent(q: float, sigma: float, steps: int, delta: float, kind: str) -> float:
    logging.getLogger().setLevel(logging.ERROR)  # dp_accounting logs orders it skips
    event = dp_event.SelfComposedDpEvent(dp_event.PoissonSampledDpEvent(q, dp_event.GaussianDpEvent(sigma)), steps)
    accountant = rdp_privacy_accountant.RdpAccountant() if kind == "rdp" else pld_privacy_accountant.PLDAccountant()
    accountant.compose(event)
    return accountant.get_epsilon(delta)


@pytest.mark.parametrize("q, sigma, steps, delta", SCHEDULES)
@pytest.mark.parametrize("ours, theirs", [("rdp", "rdp"), ("prv", "pld")])
def test_epsilon_matches_an_independent_accountant(q, sigma, steps, delta, ours, theirs):
    reported = epsilon(q, sigma, steps, delta, ours)
    reference = independent(q, sigma, steps, delta, theirs)
    assert reported == pytest.approx(reference, rel=0.03), (reported, reference)


def test_a_schedule_composed_over_rounds_is_one_epsilon():
    """Rounds with different sampling rates (a node whose data grew) compose into one epsilon."""
    rounds = [(1.2, 0.25, 8), (1.2, 0.2, 10), (1.2, 0.2, 10)]
    logging.getLogger().setLevel(logging.ERROR)
    accountant = rdp_privacy_accountant.RdpAccountant()
    for sigma, q, steps in rounds:
        accountant.compose(dp_event.SelfComposedDpEvent(dp_event.PoissonSampledDpEvent(q, dp_event.GaussianDpEvent(sigma)), steps))
    assert epsilon_spent(rounds, 1e-5, "rdp") == pytest.approx(accountant.get_epsilon(1e-5), rel=0.03)
    assert epsilon_spent(rounds, 1e-5) > epsilon_spent(rounds[:1], 1e-5)


def test_planned_noise_meets_the_target_and_no_less_noise_would():
    sigma = noise_multiplier(8.0, 1e-5, 0.25, 64)
    assert epsilon(0.25, sigma, 64, 1e-5) <= 8.0
    assert epsilon(0.25, sigma * 0.97, 64, 1e-5) > 8.0 * 0.99  # within the planner's 1 % tolerance


def test_group_privacy_for_one_customer():
    assert windows_per_month(12, 6, 100) == 18 and windows_per_month(12, 6, 5) == 5
    eps, delta = group_privacy(1.0, 1e-6, 3)
    assert eps == 3.0 and delta == pytest.approx(3 * 2.718281828 ** 2 * 1e-6)
    assert group_privacy(8.0, 1e-5, 18)[1] >= 1  # at window epsilon 8, one customer's bound says nothing


def test_privacy_commands():
    runner = CliRunner()
    out = runner.invoke(app, ["privacy", "epsilon", "--sampling-rate", "0.02", "--noise-multiplier", "1.1", "--steps", "1000", "--json"])
    assert out.exit_code == 0 and json.loads(out.output)["epsilon"] == pytest.approx(independent(0.02, 1.1, 1000, 1e-5, "rdp"), rel=0.03)
    planned = runner.invoke(app, ["privacy", "noise", "--epsilon", "8", "--sampling-rate", "0.25", "--steps", "64", "--json"])
    sigma = json.loads(planned.output)["noise_multiplier"]
    assert planned.exit_code == 0 and epsilon(0.25, sigma, 64, 1e-5) <= 8.0
    prv = runner.invoke(app, ["privacy", "epsilon", "--sampling-rate", "0.25", "--noise-multiplier", "0.9", "--steps", "64",
                              "--accountant", "prv"])
    assert prv.exit_code == 0 and "prv" in prv.output
    for args, message in [
        (["privacy", "epsilon", "--sampling-rate", "1.5", "--noise-multiplier", "1", "--steps", "10"], "sampling rate 1.5 must be in (0, 1]"),
        (["privacy", "epsilon", "--sampling-rate", "0.1", "--noise-multiplier", "-1", "--steps", "10"], "noise multiplier -1.0 must be positive"),
        (["privacy", "noise", "--epsilon", "8", "--sampling-rate", "0.1", "--steps", "10", "--delta", "2"], "delta 2.0 must be in (0, 1)"),
        (["privacy", "noise", "--epsilon", "8", "--sampling-rate", "0.1", "--steps", "10", "--accountant", "gdp"], "--accountant gdp"),
    ]:
        result = runner.invoke(app, args)
        assert result.exit_code == 2 and message in result.output, (args, result.output)
