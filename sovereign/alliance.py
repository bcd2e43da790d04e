"""The dealers' side of the embedded demo, run in its own process: `python -m sovereign.alliance`.

In a real alliance these steps happen on the dealerships' servers, never at head office. The
demo keeps that line on one machine by running them in a separate process, so the process
that hosts the coordinator never opens a dealer database or a node key:

- `setup`: simulate the dealer databases (or take existing ones), and, as each branch's IT
  would, write its node directory (node.json, policy, lineage key), hand the coordinator the
  lineage keys' public halves, and run the key ceremony (public context to the coordinator);
- `pooled`: the simulator-side experiment "all data pooled in one place", an upper bound no
  real alliance can run, scored on the same held-out months and written apart from the job's
  results (`<run>/simulator/pooled.json`).

Errors print one line on stderr and exit 1.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from common.evaluation import branch_groups
from common.metrics import score
from common.model import branch_context, build_model, forecast
from common.wire import JobSpec
from coordinator.rounds import CoordinatorPaths
from node_agent.baselines import RECIPE, windows
from node_agent.config import CustomerPrivacy, load_node_config
from node_agent.training import train_plain


def setup(run: Path, job: JobSpec, *, branches: int, seed: int, data: Path | None, accept_non_private: bool) -> dict:
    from sovereign.federation import (
        branch_policies,
        find_dealer_databases,
        register_lineage_keys,
        run_key_ceremony,
        setup_nodes,
    )
    from sovereign.simulation.dealers import simulate_alliance

    if data is None:
        data = run / "dealers"
        simulate_alliance(branches, seed, data)
    configs = setup_nodes(find_dealer_databases(data), run / "nodes", home=job.destination,
                          accept_non_private=accept_non_private, require_he=job.he.enabled,
                          # the simulated dealers' yearly budget: 1, or what the job asks if that is more (a benchmark's)
                          customer_privacy=CustomerPrivacy(epsilon_per_year=max(1.0, job.customer_dp.epsilon))
                          if job.customer_dp is not None else None,
                          data_since=_data_since(data))
    coordinator = CoordinatorPaths(run / "coordinator")
    register_lineage_keys(configs, coordinator)
    if job.he.enabled and job.he.scheme == "CKKS":  # CKKS-ring jobs make their own keys on the nodes, per job
        run_key_ceremony(configs, coordinator, job)
    return {"branches": [c.branch_id for c in configs], "require_he": job.he.enabled,
            # public: each node's customer-level bound, δ and yearly budget (what `sovereign privacy plan` reads too)
            "customer_privacy": {c.branch_id: c.customer_privacy.model_dump() for c in configs if c.customer_privacy},
            "regions": {c.branch_id: c.region for c in configs},  # public: head office knows where its dealers are
            "countries": {c.branch_id: c.country for c in configs},
            "node_policies": branch_policies(configs, job)}


def _data_since(data: Path) -> dict[str, str]:
    """Each simulated branch's first month in its DMS (the simulator's alliance.json), as its IT
    would declare it; nothing for databases that came without one."""
    profiles = data / "alliance.json"
    if not profiles.is_file():
        return {}
    return {p["branch_id"]: p["history_start"][:7] for p in json.loads(profiles.read_text())}


def pooled(run: Path, job: JobSpec, only: list[str] | None = None) -> dict:
    """Every branch's held-out split, read under its own policy (recorded in its lineage as a
    simulator-side experiment), one model trained on all of them, scored per branch and
    averaged over `only` (the branches the job evaluated, so both compare on the same
    branches): the pooled upper bound, alliance-level like the job's own figures."""
    from node_agent.agent import REFUSALS, NodeAgent

    index = json.loads((run / "nodes" / "index.json").read_text())["nodes"]
    experiment = job.model_copy(update={"job_id": f"{job.job_id}-pooled-experiment"})
    splits, contexts = {}, {}
    for branch in index:
        config = load_node_config(run / "nodes" / branch)
        try:
            splits[branch] = NodeAgent(config).holdout(experiment)
        except REFUSALS:
            continue
        contexts[branch] = branch_context(job, country=config.country, region=config.region, opened=config.opened)
    parts = [windows(s, job, contexts[b]) for b, s in splits.items()]
    model = build_model(job.seed, lags=job.lags, horizon=job.horizon)
    if parts:
        train_plain(model, np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]), **RECIPE,
                    seed=job.seed)
    scores = {b: score(s.actual, forecast(model, s.history, s.target, contexts[b])[: len(s.actual)], s.history)
              for b, s in splits.items() if only is None or b in only}

    def mean(branches: list[str]) -> dict | None:
        if not branches:
            return None
        return {"nodes": len(branches), **{m: round(float(np.mean([scores[b][m] for b in branches])), 4) for m in ("mase", "smape")}}

    groups = {b: branch_groups(len(splits[b].history), splits[b].target, len(splits[b].actual), contexts[b].launches)
              for b in scores}
    return {"label": "simulator-side experiment: all branches' data pooled in one place (an upper bound no alliance runs)",
            "all": mean(list(scores)), "young": mean([b for b in scores if groups[b]["young"]]),
            "new_stores": mean([b for b in scores if groups[b]["new_store"]]),
            "launch_window": mean([b for b in scores if groups[b]["launch_window"]])}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sovereign.alliance", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("step", choices=("setup", "pooled"))
    parser.add_argument("--run", type=Path, required=True, help="the run directory")
    parser.add_argument("--job", type=Path, required=True, help="the job spec (JSON)")
    parser.add_argument("--branches", type=int, default=20)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--data", type=Path, default=None)
    parser.add_argument("--accept-non-private", action="store_true")
    parser.add_argument("--only", default=None, help="pooled: score only these branches (comma-separated)")
    args = parser.parse_args(argv)
    try:
        job = JobSpec.model_validate_json(args.job.read_text())
        if args.step == "setup":
            out = setup(args.run, job, branches=args.branches, seed=args.seed, data=args.data,
                        accept_non_private=args.accept_non_private)
            target = args.run / "alliance" / "setup.json"
        else:
            out = pooled(args.run, job, args.only.split(",") if args.only else None)
            target = args.run / "simulator" / "pooled.json"
    except Exception as exc:  # noqa: BLE001 - the parent process shows this one line
        print(f"{type(exc).__name__}: {exc}".splitlines()[0], file=sys.stderr)
        return 1
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
