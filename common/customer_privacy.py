"""Customer-level privacy as pure functions: what one customer can move, the noise a yearly
budget needs, and what a node's releases spend, year by year.

The unit of privacy is a customer of one dealership; the promise is per calendar year of
their purchases. A node counts at most `max_sales_per_year` of one customer's sales in a year,
at most `max_sales_per_month` of them in any one month (`node_agent.bounding`), so adding or
removing one customer's purchases of one year moves that year's monthly counts by at most
`ContributionBound.l2_sensitivity` in L2 norm. Each job has the node release its monthly
counts once, with discrete Gaussian noise of scale σ = z × sensitivity: a Gaussian mechanism
of noise multiplier z, (α / 2z²)-RDP at every order α (ρ-zCDP with ρ = 1/2z², Canonne, Kamath
and Steinke 2020), and everything that leaves the node afterwards is computed from that
release (post-processing). Releases compose per year by RDP, with Opacus's accountant at
sampling rate 1; `tests/test_customer_privacy.py` cross-checks it with Google's
`dp_accounting` and with OpenDP's own privacy map.
"""

from __future__ import annotations

import math
from datetime import date

import numpy as np

from pydantic import BaseModel, ConfigDict, Field

from common.privacy import PrivacyPlanError, epsilon_spent, noise_multiplier

# A node's customer-level settings when its node.json says nothing else (node_agent.config.CustomerPrivacy);
# the coordinator prices a job's release at them (coordinator.costs).
DEFAULT_EPSILON_PER_YEAR, DEFAULT_DELTA = 1.0, 1e-6


class ContributionBound(BaseModel):
    """How much of one customer a node counts: the public bound every release is calibrated to."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_sales_per_year: int = Field(default=1, ge=1, le=24, description="sales of one customer counted in a calendar year")
    max_sales_per_month: int = Field(default=1, ge=1, le=24, description="of those, at most this many in any one month")

    @property
    def l2_sensitivity(self) -> float:
        """The most one customer's year can move the monthly counts, in L2 norm: their counted
        sales packed into as few months as the monthly cap allows."""
        k, m = self.max_sales_per_year, min(self.max_sales_per_month, self.max_sales_per_year)
        return math.sqrt((k // m) * m * m + (k % m) ** 2)


def release_noise_multiplier(epsilon: float, delta: float) -> float:
    """z such that one release is (epsilon, delta)-DP per customer-year (Opacus, to 1 %, never above)."""
    return noise_multiplier(epsilon, delta, 1.0, 1, "rdp")


def composed_epsilon(multipliers: list[float], delta: float) -> float:
    """Epsilon at `delta` of Gaussian releases of these noise multipliers, composed by RDP."""
    if any(z <= 0 for z in multipliers):
        raise PrivacyPlanError("a release's noise multiplier must be positive")
    return epsilon_spent([(z, 1.0, 1) for z in multipliers], delta, "rdp")


def every_year_epsilon(multiplier: float, years: int, delta: float) -> float:
    """Epsilon of one release for a customer who bought in each of its `years` years: their
    purchases move `years` disjoint years at once, √years times the one-year sensitivity."""
    return composed_epsilon([multiplier / math.sqrt(max(1, years))], delta)


def window_years(first: date, last: date) -> list[int]:
    """The calendar years a release over months first..last touches."""
    return list(range(first.year, last.year + 1))


def yearly_refusal(years: list[int], multiplier: float, spent: dict[int, list[float]], *, budget: float,
                   delta: float) -> str | None:
    """None if one more release of noise multiplier `multiplier` over `years` keeps every one of
    them within the yearly budget (composed with what each already released, `spent`); else why
    not, naming the first year it would cross."""
    for year in years:
        after = composed_epsilon([*spent.get(year, []), multiplier], delta)
        if after > budget * (1 + 1e-9):
            return (f"customer privacy budget: a release at noise multiplier {multiplier:.3g} would bring year {year} to "
                    f"customer ε = {after:.3g} (δ = {delta:g}) after {len(spent.get(year, []))} earlier releases; "
                    f"node.json customer_privacy.epsilon_per_year is {budget:g}")
    return None


class ReleasePlan(BaseModel):
    """What a job's customer-level release costs at one node, and the accuracy to expect."""

    first_month: str
    last_month: str | None
    years: int
    epsilon: float
    delta: float
    every_year_epsilon: float
    noise_multiplier: float
    sigma: float
    bound: ContributionBound
    budget: float
    budget_share: float
    jobs_per_year: int
    expected_cost: dict[str, dict] = Field(default_factory=dict)


def jobs_per_year(multiplier: float, budget: float, delta: float, most: int = 100) -> int:
    """How many releases of this noise multiplier one year's budget holds, composed."""
    n = 0
    while n < most and composed_epsilon([multiplier] * (n + 1), delta) <= budget * (1 + 1e-9):
        n += 1
    return n


def expected_cost(measured: dict, epsilon: float) -> dict[str, dict]:
    """The accuracy cost measured at `epsilon` per simulated alliance size (a report of
    experiments/customer_dp.py), interpolated in log ε between measured points; outside them,
    the nearest point, said so."""
    out = {}
    for alliance, block in (measured or {}).get("alliances", {}).items():
        points = sorted((float(k), v) for k, v in block["mean"].items() if k != "off")
        if not points:
            continue
        xs = np.log([e for e, _ in points])

        def at(values: list[float], xs: np.ndarray = xs) -> float:
            return round(float(np.interp(math.log(epsilon), xs, values)), 4)

        nearest = min(points, key=lambda p: abs(math.log(p[0] / epsilon)))[0]
        inside = xs[0] - 1e-9 <= math.log(epsilon) <= xs[-1] + 1e-9
        out[alliance] = {"cost": at([v["cost_vs_off"] for _, v in points]),
                         "range": [at([v["cost_range"][0] for _, v in points]), at([v["cost_range"][1] for _, v in points])],
                         "note": None if inside else f"measured from ε = {points[0][0]:g} to {points[-1][0]:g} only "
                                                     f"(nearest: {nearest:g})"}
    return out


def plan_release(request, *, bound: ContributionBound, delta: float, budget: float, measured: dict | None = None) -> ReleasePlan:
    """The plan of a job's customer-level request (`common.wire.CustomerDPRequest`) at a node with
    this public bound, δ and yearly budget."""
    z = release_noise_multiplier(request.epsilon, delta)
    last = request.last_month or f"{date.today():%Y-%m}"
    years = int(last[:4]) - int(request.first_month[:4]) + 1
    spent = composed_epsilon([z], delta)
    return ReleasePlan(
        first_month=request.first_month, last_month=request.last_month, years=years, epsilon=spent, delta=delta,
        every_year_epsilon=every_year_epsilon(z, years, delta), noise_multiplier=z, sigma=z * bound.l2_sensitivity,
        bound=bound, budget=budget, budget_share=min(spent / budget, 1.0), jobs_per_year=jobs_per_year(z, budget, delta),
        expected_cost=expected_cost(measured or {}, request.epsilon),
    )
