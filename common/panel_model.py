"""The joint model for real panels that carry no calendar: a global map from a series' own
recent values, scaled by their mean, to its next `block` values.

    x̃        = x / m − 1 over the last `lags` values, m = their mean (the series' own level)
    forecast = m · (1 + f(x̃)),  f linear (or one hidden layer), zero at start
    horizons beyond `block` are forecast recursively, block by block

Real panels (the Tourism competition's series) have unaligned phases and no dates, so the
dealer model's country-by-month seasonality (`common.model`) does not apply; what the branches
learn together here is how a series' recent shape carries forward. The level m is computed in
the forward pass from the series' own lags, so no weight holds any one series' size, and the
untrained model forecasts the lag mean (or, with `start: seasonal_naive`, exactly the seasonal
naive forecast, a stronger starting point for a linear model on seasonal series).

A training window carries one more column, w = m / s (s: the series' in-sample seasonal-naive
MAE), and the model's training output is w·f(x̃) against the target w·(y/m − 1): the loss is
then in MASE units, which is how the panel is judged, and the DP-SGD trainer (which knows only
inputs and targets) needs no change. Each window is DP-SGD's unit of privacy.
"""

from __future__ import annotations

import numpy as np
import torch
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator
from torch import nn

from common.metrics import mase_scale

MAX_WEIGHT = 50.0  # w = m / s is capped: a near-constant series must not dominate the loss


class PanelModelSpec(BaseModel):
    """The model's shape: how many lags it reads, how many values one pass gives, hidden units."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    lags: int = Field(ge=1, le=240, description="values of a series' own history the model reads")
    block: int = Field(ge=1, le=120, description="values one forward pass forecasts; longer horizons recurse")
    hidden: int = Field(default=0, ge=0, le=256, description="hidden units; 0 is a linear model")
    max_windows: int = Field(default=120, ge=1, le=10_000, description="most recent training windows kept per series")
    start: Literal["mean", "seasonal_naive"] = Field(
        default="mean", description="the untrained model: the lag mean, or (linear only) the same season a year before")
    season: int = Field(default=1, ge=1, le=366, description="season length, for the seasonal-naive start")

    @property
    def width(self) -> int:
        """Values one training window spans: a series needs at least this many to give one."""
        return self.lags + self.block

    @model_validator(mode="after")
    def _sane(self) -> PanelModelSpec:
        if self.lags + self.block > 360:
            raise ValueError(f"lags + block = {self.lags + self.block} exceeds 360 values per window")
        if self.start == "seasonal_naive" and (self.hidden or self.lags < self.season):
            raise ValueError(f"a seasonal-naive start needs a linear model (hidden 0) reading a full season ({self.season} lags)")
        return self


class PanelForecaster(nn.Module):
    """f(x̃) as ratios to the lag mean; `forward` takes windows with the weight column."""

    def __init__(self, spec: PanelModelSpec) -> None:
        super().__init__()
        self.spec = spec
        if spec.hidden:
            self.body = nn.Sequential(nn.Linear(spec.lags, spec.hidden), nn.ReLU(), nn.Linear(spec.hidden, spec.block))
        else:
            self.body = nn.Sequential(nn.Linear(spec.lags, spec.block))
        last = self.body[-1]
        nn.init.zeros_(last.weight)  # the untrained model is the lag mean, whatever the hidden layer holds
        nn.init.zeros_(last.bias)
        if spec.start == "seasonal_naive":  # output k reads the lag one season before it: x̃ there, so m·(1 + x̃) = that value
            with torch.no_grad():
                for k in range(spec.block):
                    last.weight[k, spec.lags - spec.season + k % spec.season] = 1.0
        if spec.hidden:  # a fixed, data-free start for the hidden layer: every branch begins from the same model
            generator = torch.Generator().manual_seed(0)
            with torch.no_grad():
                first = self.body[0]
                first.weight.copy_(torch.randn(first.weight.shape, generator=generator) / spec.lags**0.5)
                first.bias.zero_()

    def ratio(self, scaled_lags: torch.Tensor) -> torch.Tensor:
        return self.body(scaled_lags)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, -1:] * self.ratio(x[:, :-1])


def _level(recent: np.ndarray) -> float:
    m = float(np.mean(recent)) if recent.size else 0.0
    return m if m > 0 else 1.0


def scaled_lags(history: np.ndarray, lags: int) -> tuple[np.ndarray, float]:
    """The last `lags` values over their mean, minus one (the first value repeated in front when
    the history is shorter), and that mean."""
    h = np.asarray(history, dtype=np.float64)
    recent = h[-lags:]
    if recent.size < lags:
        recent = np.concatenate([np.full(lags - recent.size, recent[0] if recent.size else 0.0), recent])
    m = _level(recent)
    return recent / m - 1.0, m


def make_panel_windows(history: np.ndarray, spec: PanelModelSpec, season: int) -> tuple[np.ndarray, np.ndarray]:
    """Training windows of one series: inputs [x̃ (lags), w] and targets w·(y/m − 1), the most
    recent `spec.max_windows` of them. A series shorter than lags + block gives none."""
    h = np.asarray(history, dtype=np.float64)
    if h.size < spec.width:
        return np.zeros((0, spec.lags + 1), np.float32), np.zeros((0, spec.block), np.float32)
    scale = mase_scale(h, season)
    xs, ys = [], []
    for end in range(h.size - spec.block, spec.lags - 1, -1)[: spec.max_windows]:
        x, m = scaled_lags(h[:end], spec.lags)
        w = min(m / scale, MAX_WEIGHT)
        xs.append(np.append(x, w))
        ys.append(w * (h[end : end + spec.block] / m - 1.0))
    return np.asarray(xs, np.float32), np.asarray(ys, np.float32)


def panel_forecast(model: PanelForecaster, history: np.ndarray, horizon: int, *, non_negative: bool = True) -> np.ndarray:
    """`horizon` values after `history`, a block at a time, each block read from the lags that
    end where it starts (forecasts standing in for values not yet seen)."""
    spec = model.spec
    path = list(np.asarray(history, dtype=np.float64))
    model.eval()
    with torch.no_grad():
        while len(path) < len(history) + horizon:
            x, m = scaled_lags(np.asarray(path), spec.lags)
            ratio = model.ratio(torch.from_numpy(x.astype(np.float32))[None, :])[0].numpy().astype(np.float64)
            block = m * (1.0 + ratio)
            path.extend(np.clip(block, 0.0, None) if non_negative else block)
    return np.asarray(path[len(history) : len(history) + horizon])
