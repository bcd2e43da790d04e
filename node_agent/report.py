"""The branch's own forecast report: what branch IT sees, and what never leaves the node.

At a job's held-out evaluation the node writes `<node dir>/reports/<job id>.json`: the held-out
months, the actual units, every arm's forecast and score, the federated forecast's intervals
and their coverage, and the forecast of the months ahead (`outlook`) with its intervals.
`sovereign node report` and `sovereign node forecast` read it.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from common.wire import JobSpec
from node_agent.config import NodeConfig
from node_agent.data import HoldoutSplit
from node_agent.outlook import BranchForecast


def report_path(config: NodeConfig, job_id: str) -> Path:
    return config.node_dir / "reports" / f"{job_id}.json"


def write_branch_report(config: NodeConfig, job: JobSpec, split: HoldoutSplit, forecasts: dict[str, np.ndarray],
                        scores: dict[str, dict[str, float]], *, model_digest: str, local_choice: str | None = None,
                        intervals: BranchForecast | None = None, outlook: BranchForecast | None = None) -> Path:
    path = report_path(config, job.job_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({
        "branch_id": config.branch_id, "job_id": job.job_id, "model_digest": model_digest,
        "history_months": len(split.history), "months": split.months,
        "actual": [float(v) for v in split.actual],
        "history_tail": [float(v) for v in split.history[-24:]],
        "forecasts": {arm: [round(float(v), 3) for v in f] for arm, f in forecasts.items()},
        "scores": scores,
        "local_choice": local_choice,
        "intervals": intervals.as_json() if intervals else None,
        "coverage": {str(k): v for k, v in intervals.coverage(split.actual).items()} if intervals else None,
        "outlook": outlook.as_json() if outlook else None,
    }, indent=2))
    return path


def read_branch_reports(config: NodeConfig) -> list[dict]:
    """Every report on this node, oldest first."""
    folder = config.node_dir / "reports"
    paths = sorted(folder.glob("*.json"), key=lambda p: p.stat().st_mtime) if folder.is_dir() else []
    return [json.loads(p.read_text()) for p in paths]
