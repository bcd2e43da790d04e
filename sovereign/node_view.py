"""What branch IT reads about its own node, as plain data: the privacy budget per dataset and
its spends, customer-level standing, and the jobs requested of it with what each would read
after the node's policy. Shared by `sovereign node ...` and the node's console; read-only:
nothing here writes to the node or sends anything off it."""

from __future__ import annotations

from node_agent.config import NodeConfig


def budget_report(config: NodeConfig) -> dict[str, dict]:
    """Per dataset with a budget: committed and remaining ε and δ, and every job's plan and spend."""
    from node_agent.ledger import PrivacyLedger, standing

    spends_by_dataset = {}
    if (config.privacy_dir / "ledger.db").exists():
        ledger = PrivacyLedger(config.ledger_url)
        spends_by_dataset = {d: ledger.spends(d) for d in set(config.budgets) | {config.dataset}}
        ledger.close()
    report = {}
    for dataset, budget in config.budgets.items():
        spends = spends_by_dataset.get(dataset, [])
        now = standing(dataset, budget, spends)
        report[dataset] = {
            "budget": budget.model_dump(), "committed_epsilon": now.committed_epsilon, "remaining_epsilon": now.remaining_epsilon,
            "committed_delta": now.committed_delta, "remaining_delta": now.remaining_delta,
            "jobs": [{"job_id": s.job_id, "status": s.status, "planned_epsilon": s.planned_epsilon, "epsilon": s.epsilon,
                      "delta": s.delta, "accountant": s.accountant, "reason": s.reason} for s in spends],
        }
    return report


def customer_standing(config: NodeConfig) -> dict:
    """Customer ε spent on each year of sales (composed), from the node's customer ledger."""
    from node_agent.customer_ledger import CustomerLedger

    settings = config.customer_privacy
    if not (config.privacy_dir / "ledger.db").exists():
        return {"epsilon_per_year": settings.epsilon_per_year, "delta": settings.delta, "years": {}}
    ledger = CustomerLedger(config.ledger_url)
    charges, spent = ledger.charges(config.dataset), ledger.standing(config.dataset, settings.delta)
    ledger.close()
    return {"epsilon_per_year": settings.epsilon_per_year, "delta": settings.delta,
            "years": {str(y): {"spent": round(e, 4), "left": round(max(settings.epsilon_per_year - e, 0.0), 4),
                               "releases": len(charges[y])} for y, e in spent.items()}}


def budget_left(config: NodeConfig) -> float | None:
    """ε the node's dataset has left, from its own ledger (None: no budget set)."""
    report = budget_report(config).get(config.dataset)
    return None if report is None else max(report["remaining_epsilon"], 0.0)


def would_read(config: NodeConfig, spec) -> dict[str, str]:
    """Each field the job asks for and what the node's policy would release of it (policy explain)."""
    from node_agent.data import job_request
    from policies import PolicyFileError, evaluate, load_policy

    try:
        policy = load_policy(config.policy_path)
    except PolicyFileError as exc:
        return {"policy": f"unreadable ({exc})"}
    request = job_request(spec, config.dataset, destination=config.coordinator_jurisdiction,
                          customer_column=config.customer_column_for(spec))
    schema = {t: list(fields) for t, fields in policy.tables.items()}
    return {d.name: d.treatment.describe() for d in evaluate(policy, schema, request) if d.name in request.fields}


def spec_terms(spec) -> dict[str, str]:
    """Everything else a job asks of the node, in words: what branch IT approves beside the purpose."""
    return {
        "target": f"{spec.target}, {spec.horizon} months ahead (holdout {spec.holdout}, lags {spec.lags})",
        "training": f"{spec.rounds} rounds x {spec.local_epochs} local epochs, batch {spec.batch_size}",
        "record-level DP": (f"ε {spec.dp.target_epsilon:g} at δ {spec.dp.delta:g} ({spec.dp.accountant}), clip "
                            f"{spec.dp.max_grad_norm:g}" if spec.dp.enabled else "off"),
        "customer-level DP": f"ε {spec.customer_dp.epsilon:g} per year of sales" if spec.customer_dp else "off",
        "node-level DP": (f"noise multiplier {spec.node_dp.noise_multiplier:g}, clip {spec.node_dp.clip:g}"
                          if spec.node_dp.enabled else "off"),
        "encryption": (f"{spec.he.scheme}, degree {spec.he.params.poly_modulus_degree}" if spec.he.enabled else "off"),
        "regional forecasts": ", ".join(spec.regions) or "none",
    }


def requested_rows(config: NodeConfig, jobs: list[dict]) -> list[dict]:
    """The coordinator's requested jobs as this node judges them: what each asks for, what it
    would read here, what the node's own rules say, and the owner's decision so far."""
    from pydantic import ValidationError

    from common.validation import first_error
    from common.wire import JobSpec
    from node_agent.admission import admission_refusal
    from node_agent.approvals import OwnerDecisions

    if not isinstance(jobs, list):
        raise ValueError("the coordinator's answer to GET /jobs is not a list of jobs")
    book = OwnerDecisions(config.ledger_url) if (config.privacy_dir / "ledger.db").exists() else None
    left = budget_left(config)
    rows = []
    for job in jobs:
        try:  # the coordinator may send anything: a spec this node cannot read is shown as such
            spec = JobSpec.model_validate(job.get("spec") if isinstance(job, dict) else None)
        except ValidationError as exc:
            job_id = job.get("job_id") if isinstance(job, dict) else None
            rows.append({"job_id": str(job_id)[:64], "purpose": "?", "recipient_role": "?", "destination": "?",
                         "rounds": "?", "epsilon": None, "epsilon_left": left, "asks": {}, "reads": {}, "spec_hash": None,
                         "own_rules": f"refuse (malformed spec): {first_error(exc)}", "decision": "cannot be decided"})
            continue
        refusal = admission_refusal(spec, config, None)
        mine = book.decision(spec.job_id) if book else None
        rows.append({"job_id": spec.job_id, "purpose": spec.purpose, "recipient_role": spec.recipient_role,
                     "destination": spec.destination, "rounds": spec.rounds,
                     "epsilon": spec.dp.target_epsilon if spec.dp.enabled else None, "epsilon_left": left,
                     "asks": spec_terms(spec),
                     "reads": would_read(config, spec), "spec_hash": spec.spec_hash(),  # of what was sent, not what it claims
                     "own_rules": f"refuse ({refusal.code}): {refusal}" if refusal else "take it",
                     "decision": mine[0] if mine else "awaiting yours"})
    return rows
