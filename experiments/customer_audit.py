"""The empirical audit of customer-level privacy, on simulated branches through the node's own read.

For each branch and each planted customer (one purchase; six purchases in one year; a fleet
account buying 30 cars in one year), the branch's database is copied twice, once with the
customer's sales added; the node agent reads both under its policy, data contract and
contribution bound (`NodeAgent.holdout`'s read: nothing is released or charged); then the
release is made `--trials` times from each and the best attack bounds ε from below
(`sovereign.experiment.customer_audit`). The same attack is run with the contribution bound
lifted (noise still calibrated to the bound), to show the audit can see a breach. Writes
<out>/customer_audit.json.

    .venv/bin/python experiments/customer_audit.py --branches 4 --trials 2000
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

from sqlalchemy import create_engine, text

from common.customer_privacy import ContributionBound
from common.wire import CustomerDPRequest, JobSpec
from node_agent.agent import NodeAgent
from node_agent.config import load_node_config, write_node_config
from sovereign.experiment.customer_audit import audit_release

HERE = Path(__file__).resolve().parent
PLANTS = {  # (month, day) of each planted sale in 2025
    "one purchase": [(6, 12)],
    "six purchases in a year": [(1, 5), (2, 9), (3, 14), (5, 20), (8, 3), (11, 27)],
    "fleet account, 30 cars in a year": [(1 + i % 10, 1 + i // 10 * 9) for i in range(30)],
}
LIFTED = ContributionBound(max_sales_per_year=24, max_sales_per_month=24)


def _plant(db: Path, sales: list[tuple[int, int]]) -> None:
    engine = create_engine(f"sqlite:///{db}")
    with engine.begin() as conn:
        top = conn.execute(text("SELECT max(sale_id) FROM sales")).scalar()
        for i, (month, day) in enumerate(sales):
            conn.execute(text("INSERT INTO sales (sale_id, sale_date, vin, list_price, sale_price, customer_id) VALUES "
                              "(:id, :day, :vin, 31000, 29500, 'AUDIT-PLANTED')"),
                         {"id": top + 1 + i, "day": f"2025-{month:02d}-{day:02d}", "vin": f"AUDITVIN{i:09d}"})
    engine.dispose()


def bounded_counts(node_dir: Path, job: JobSpec, bound: ContributionBound | None = None):
    """The branch's bounded monthly counts as its own agent reads them (no release, no charge)."""
    config = load_node_config(node_dir)
    if bound is not None:
        config = config.model_copy(update={"customer_privacy": config.customer_privacy.model_copy(update={"bound": bound})})
    return NodeAgent(config)._read(job, None, release=False).bounded


def audit_branch(node_dir: Path, trials: int, epsilon: float, work: Path) -> dict:
    config = load_node_config(node_dir)
    settings = config.customer_privacy
    job = JobSpec(job_id="customer-audit", customer_dp=CustomerDPRequest(epsilon=epsilon, last_month="2026-10"))
    out = {}
    for name, sales in PLANTS.items():
        planted_dir = work / f"{config.branch_id}-{len(sales)}"
        shutil.copytree(node_dir, planted_dir, dirs_exist_ok=True)
        db = planted_dir / "sales.db"
        shutil.copy(config.db_url.removeprefix("sqlite:///"), db)
        _plant(db, sales)
        write_node_config(config.model_copy(update={"node_dir": planted_dir, "db_url": f"sqlite:///{db}"}))
        row = {}
        for label, bound in (("bounded", None), ("bound lifted", LIFTED)):
            without, with_ = bounded_counts(node_dir, job, bound), bounded_counts(planted_dir, job, bound)
            result = audit_release(without, with_, epsilon=epsilon, delta=settings.delta, bound=settings.bound, trials=trials)
            row[label] = result.as_dict()
        out[name] = row
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--branches", type=int, default=4, help="simulated branches to audit (the first N of a 20-branch alliance)")
    parser.add_argument("--trials", type=int, default=2000, help="releases with and without the planted customer, each")
    parser.add_argument("--epsilon", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--out", type=Path, default=HERE / "results")
    args = parser.parse_args()
    from sovereign.federation import find_dealer_databases, setup_nodes
    from sovereign.alliance import _data_since
    from node_agent.config import CustomerPrivacy
    from sovereign.simulation.dealers import simulate_alliance

    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        simulate_alliance(20, args.seed, root / "dealers")
        configs = setup_nodes(find_dealer_databases(root / "dealers"), root / "nodes", customer_privacy=CustomerPrivacy(),
                              data_since=_data_since(root / "dealers"))
        branches = {c.branch_id: audit_branch(c.node_dir, args.trials, args.epsilon, root / "planted")
                    for c in configs[: args.branches]}
    worst = max(r["bounded"]["empirical_epsilon"] for b in branches.values() for r in b.values())
    lifted = min(b["fleet account, 30 cars in a year"]["bound lifted"]["empirical_epsilon"] for b in branches.values())
    report = {"benchmark": "customer_audit", "epsilon": args.epsilon, "trials": args.trials, "seed": args.seed,
              "attack": "likelihood-ratio threshold test on the released counts (the strongest post-processing of them), "
                        "Clopper-Pearson 95 %",
              "worst_empirical_epsilon_bounded": round(worst, 4),
              "least_empirical_epsilon_fleet_with_bound_lifted": round(lifted, 4),
              "branches": branches, "seconds": round(time.perf_counter() - started, 1)}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "customer_audit.json").write_text(json.dumps(report, indent=2))
    print(json.dumps({k: v for k, v in report.items() if k != "branches"}, indent=1))


if __name__ == "__main__":
    main()
