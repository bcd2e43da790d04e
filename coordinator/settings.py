"""The coordinator service's settings: where its store, lineage and keys live, where it listens.

Works with no file at all (SQLite under ./var, 127.0.0.1); a YAML file overrides any field,
and a field it does not know is an error naming it. There is no default secret to refuse:
accounts and their tokens are made with `sovereign coordinator account add`, shown once, and
stored only as hashes.
"""

from __future__ import annotations

from pathlib import Path

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from common.validation import first_error
from common.yaml_files import YamlFileError, read_mapping


class SettingsError(ValueError):
    """A settings file that cannot be used; the message names the file and field."""


class FlowerConnection(BaseModel):
    """How the service reaches Flower's deployment engine: the FLWR_HOME whose config.toml
    names the SuperLink (address, CA certificate), the connection's name there, and the
    signed app to run ('@publisher/name==version', fetched by the SuperLink with its signatures)."""

    model_config = ConfigDict(extra="forbid")

    flwr_home: Path
    federation: str = Field(default="sovereign", pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    app: str = Field(pattern=r"^@[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+(==[0-9A-Za-z.+-]+)?$")


class RunnerSettings(BaseModel):
    """Where started jobs run: Flower's simulation runtime over node directories on this
    machine (`simulation`), or the deployment engine (`deployment`); without it, jobs are
    only tracked."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["simulation", "deployment"]
    coordinator_dir: Path = Field(description="the round loop's files: public context, nodes' lineage keys, checkpoints")
    nodes_root: Path | None = Field(default=None, description="simulation: node directories with an index.json")
    flower: FlowerConnection | None = Field(default=None, description="deployment: the SuperLink and the app")
    round_timeout: float = Field(default=600, gt=0, le=86400, description="seconds a round waits for replies")
    node_wait: float = Field(default=30, gt=0, le=3600, description="seconds a job waits for every approving node to "
                                                                     "be connected before it starts with its minimum")
    job_timeout: float = Field(default=6 * 3600, gt=0, description="a job running longer is stopped")

    @model_validator(mode="after")
    def _complete(self) -> "RunnerSettings":
        if self.kind == "simulation" and self.nodes_root is None:
            raise ValueError("runner.nodes_root: a simulation runner needs the node directories")
        if self.kind == "deployment" and self.flower is None:
            raise ValueError("runner.flower: a deployment runner needs flwr_home, federation and app")
        return self


class CoordinatorSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    var: Path = Field(default=Path("var"), description="directory for the default SQLite files and keys")
    database_url: str | None = Field(default=None, description="SQLAlchemy URL of the jobs store (default: SQLite in var/)")
    lineage_url: str | None = Field(default=None, description="SQLAlchemy URL of the lineage store (default: SQLite in var/)")
    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=1, le=65535)
    max_body_bytes: int = Field(default=1_000_000, ge=1024, description="larger requests are refused with 413")
    runner: RunnerSettings | None = None

    def jobs_url(self) -> str:
        return self.database_url or f"sqlite:///{(self.var / 'coordinator.db').resolve()}"

    def lineage_store_url(self) -> str:
        return self.lineage_url or f"sqlite:///{(self.var / 'lineage.db').resolve()}"

    @property
    def key_dir(self) -> Path:
        return self.var / "keys"


def load_settings(path: Path | None) -> CoordinatorSettings:
    if path is None:
        return CoordinatorSettings()
    try:
        raw = read_mapping(path, "a coordinator settings file")
    except YamlFileError as exc:
        raise SettingsError(str(exc)) from None
    try:
        return CoordinatorSettings.model_validate(raw)
    except ValidationError as exc:
        raise SettingsError(f"{path}: {first_error(exc)}") from None
