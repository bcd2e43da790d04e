"""Where the coordinator keeps its files: the one place that spells the coordinator
directory's layout. Nothing node-side lives here (a node's layout is `NodeConfig`'s).

    <coordinator-dir>/
      he/public.ctx              the alliance's public CKKS context (no secret key)
      keys/                      the coordinator's lineage signing key
      node-lineage-keys/<b>.pub  each node's lineage public key
      lineage.db                 the round loop's lineage
      result.json                the latest job's result; results/<job>.json every job's
      checkpoints/<job>.json     rounds closed so far (a restarted coordinator resumes after them)
      runs/<job>/                the service's files for one job's run
"""

from __future__ import annotations

from pathlib import Path


class CoordinatorPaths:
    """Where the coordinator keeps its files; nothing node-side lives here."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    @property
    def public_context(self) -> Path:
        return self.root / "he" / "public.ctx"

    @property
    def lineage_url(self) -> str:
        return f"sqlite:///{(self.root / 'lineage.db').resolve()}"

    @property
    def result(self) -> Path:
        return self.root / "result.json"

    @property
    def lineage_key_dir(self) -> Path:
        """The coordinator's Ed25519 lineage signing key (its public half beside it)."""
        return self.root / "keys"

    @property
    def node_lineage_keys(self) -> Path:
        """Each node's lineage public key, `<branch>.pub`, registered when the node joined."""
        return self.root / "node-lineage-keys"

    def job_result(self, job_id: str) -> Path:
        """What one job released (`coordinator.rounds.JobResult`)."""
        return self.root / "results" / f"{job_id}.json"

    def checkpoint(self, job_id: str) -> Path:
        """The job's rounds closed so far and the model they left (`coordinator.checkpoints`)."""
        return self.root / "checkpoints" / f"{job_id}.json"

    def job_run_dir(self, job_id: str) -> Path:
        """The service's files for one job's run: its spec, log, Flower run id, simulated nodes' view."""
        return self.root / "runs" / job_id
