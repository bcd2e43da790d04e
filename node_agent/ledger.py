"""The node's privacy ledger for a job: planned noise and the accountant's history.

Kept on the node, one JSON document per job, so epsilon composes across rounds even though
every round runs in a fresh ClientApp process. (A per-dataset budget across jobs builds on
this.)
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field


class JobPrivacyRecord(BaseModel):
    job_id: str
    noise_multiplier: float = Field(gt=0)
    sample_rate: float = Field(gt=0, le=1)
    planned_steps: int = Field(ge=0)
    accountant: str
    history: list[list[float]] = Field(default_factory=list)
    epsilon: float = 0.0
    delta: float

    def accountant_state(self) -> dict[str, Any] | None:
        if not self.history:
            return None
        return {"history": [tuple(h) for h in self.history], "mechanism": self.accountant}


class PrivacyLedger:
    """Reads and writes `JobPrivacyRecord`s under a node's privacy directory."""

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)

    def _path(self, job_id: str) -> Path:
        return self.directory / f"{job_id}.json"

    def get(self, job_id: str) -> JobPrivacyRecord | None:
        path = self._path(job_id)
        if not path.exists():
            return None
        return JobPrivacyRecord.model_validate_json(path.read_text())

    def put(self, record: JobPrivacyRecord) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        tmp = self._path(record.job_id).with_suffix(".tmp")
        tmp.write_text(json.dumps(record.model_dump(mode="json"), indent=2))
        tmp.replace(self._path(record.job_id))
