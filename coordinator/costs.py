"""What a job would cost in privacy, before it is requested: the figures a launch form shows
as the analyst chooses (pure math over the spec, no I/O).

These are the job's requests. Each node holds its own budget and settings and decides for
itself: a node whose own δ, bound or yearly budget differs spends by its own numbers, and
refuses a job that would overrun them.
"""

from __future__ import annotations

from pydantic import BaseModel

from common.customer_privacy import DEFAULT_DELTA, DEFAULT_EPSILON_PER_YEAR, ContributionBound, plan_release
from common.privacy import PrivacyPlanError, epsilon_spent
from common.wire import JobSpec



class PrivacyCost(BaseModel):
    record_epsilon: float | None  # DP-SGD, per training window, over the whole job (Opacus calibrates to it)
    record_delta: float | None
    customer_epsilon_per_year: float | None  # the customer-level release, per year of purchases
    customer_budget_share: float | None  # of a node's default yearly customer budget
    customer_jobs_per_year: int | None
    node_epsilon: float | None  # node-level DP: any one dealership's participation, if every expected node contributes
    node_delta: float | None
    rounds: int
    warnings: list[str] = []  # what a node at its default settings could not plan (it would refuse the job)


def privacy_cost(spec: JobSpec) -> PrivacyCost:
    warnings, customer = [], None
    if spec.customer_dp:
        try:
            customer = plan_release(spec.customer_dp, bound=ContributionBound(), delta=DEFAULT_DELTA,
                                    budget=DEFAULT_EPSILON_PER_YEAR)
        except PrivacyPlanError as exc:
            warnings.append(f"spec.customer_dp.epsilon: a branch at the default δ {DEFAULT_DELTA:g} cannot plan "
                            f"this release ({exc}); such branches would refuse the job")
    node = None
    if spec.node_dp.enabled:
        try:
            node = epsilon_spent([(spec.node_dp.noise_multiplier, 1.0, spec.rounds)], spec.node_dp.delta)
        except (PrivacyPlanError, ArithmeticError, ValueError) as exc:
            warnings.append(f"spec.node_dp: the node-level ε of these settings cannot be accounted ({exc})")
    return PrivacyCost(
        record_epsilon=spec.dp.target_epsilon if spec.dp.enabled else None,
        record_delta=spec.dp.delta if spec.dp.enabled else None,
        customer_epsilon_per_year=round(customer.epsilon, 4) if customer else None,
        customer_budget_share=round(customer.budget_share, 4) if customer else None,
        customer_jobs_per_year=customer.jobs_per_year if customer else None,
        node_epsilon=round(node, 4) if node is not None else None,
        node_delta=spec.node_dp.delta if spec.node_dp.enabled else None,
        rounds=spec.rounds,
        warnings=warnings,
    )
