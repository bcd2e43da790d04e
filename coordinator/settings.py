"""The coordinator service's settings: where its store, lineage and keys live, where it listens.

Works with no file at all (SQLite under ./var, 127.0.0.1); a YAML file overrides any field,
and a field it does not know is an error naming it. There is no default secret to refuse:
accounts and their tokens are made with `sovereign coordinator account add`, shown once, and
stored only as hashes.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from common.validation import first_error
from common.yaml_files import YamlFileError, read_mapping


class SettingsError(ValueError):
    """A settings file that cannot be used; the message names the file and field."""


class CoordinatorSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    var: Path = Field(default=Path("var"), description="directory for the default SQLite files and keys")
    database_url: str | None = Field(default=None, description="SQLAlchemy URL of the jobs store (default: SQLite in var/)")
    lineage_url: str | None = Field(default=None, description="SQLAlchemy URL of the lineage store (default: SQLite in var/)")
    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=1, le=65535)
    max_body_bytes: int = Field(default=1_000_000, ge=1024, description="larger requests are refused with 413")

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
