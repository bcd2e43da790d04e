"""The global forecasting model: seasonality and events the alliance shares, each branch's own level.

    forecast(month t) = scale x level x exp(effect(t))
    effect(t) = season[country, calendar month of t] + lny[country]·(t is a Lunar New Year month)
              + pre_lny[country]·(t is the month before) + launch[months since a model launch]
              + Σₖ ramp[k]·exp(−(months since the branch opened)/RAMP_TIMES[k]) + campaign·(t is a campaign month)
              + post_campaign·(t is the month after one) + shortage·(t is a shortage month)
              + trend[region]·(t − origin)/12
    level     = weighted mean over the branch's own recent months of (units / scale) x exp(−effect)

The level is the branch's own deseasonalised, detrended recent demand, computed in the forward
pass from its lags on its node: the model has no per-branch parameter, so nothing about one
branch's size lives in the weights. What the alliance learns together is what a branch alone
cannot estimate from a few noisy months: the shape of the year in its country, the Lunar New
Year and launch effects, how a new store ramps up, what a campaign or a shortage does, and its
region's trend. A store with two months of data gets its level from them de-ramped: the ramp
curve the stores that opened before it taught the model says how far it still has to grow.
Every parameter starts at zero, so the untrained model is exactly the mean of the recent
months. Inputs are only what a node knows of itself (its history, country, region and opening
month) and public calendars (Lunar New Year; the manufacturer's launch dates in the branch's
region, incentive campaigns and shortage months, all in the job), laid out in one flat float
vector per window, which is DP-SGD's unit of privacy.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from common.calendar import LNY_MONTHS, parse_month
from common.evaluation import REGION_SLOTS  # one region vocabulary for the model and the totals

LAGS = 12
HORIZON = 6
MONTHS = 12
COUNTRY_SLOTS = 8  # countries a job may list; one more slot for a branch whose country it does not list
LAUNCH_SLOTS = 4  # model launches a job may list
LAUNCH_MONTHS = 12  # months after a launch that carry their own effect
RAMP_TIMES = (2.0, 4.0, 8.0)  # months: the ramp-up is a learned mix of decays this fast (a smooth curve from few
# parameters, so a few ramping stores can teach it under DP noise; it fades to nothing as a store matures)
RARE_GAIN = 4.0  # the DP job's step-size gain on effects few windows carry (launch, ramp-up, campaign, shortage)
EFFECT_BOUND = 3.0  # |effect| is clipped here: a factor of e^3 ≈ 20 at most, so exp never overflows


@dataclass(frozen=True)
class BranchContext:
    """Where a branch sits in the model's vocabulary: its country and region slots (the last
    slot when the job does not list it), the month numbers of the model launches in its
    region, of its opening (None: open long before its data, no ramp-up) and of the job's
    campaign and shortage months."""

    country: int = COUNTRY_SLOTS
    region: int = REGION_SLOTS
    launches: tuple[int, ...] = ()
    opened: int | None = None
    campaigns: frozenset[int] = frozenset()
    shortages: frozenset[int] = frozenset()


def regional_launches(launches, region: str | None) -> tuple[int, ...]:
    """Month numbers of the launches a branch in `region` sees: per line, its region's date
    (or the line's everywhere date); the latest `LAUNCH_SLOTS` lines."""
    by_line: dict[str, int] = {}
    for launch in launches:
        if launch.region is None and launch.line not in by_line:
            by_line[launch.line] = parse_month(launch.month)
    for launch in launches:
        if launch.region is not None and launch.region == region:
            by_line[launch.line] = parse_month(launch.month)
    return tuple(sorted(by_line.values())[-LAUNCH_SLOTS:])


def branch_context(job, *, country: str | None, region: str | None, opened: str | None = None) -> BranchContext:
    """A branch's context in `job` (a `common.wire.JobSpec`: its countries, regions and the
    manufacturer's calendars), from the branch's own country, region and opening month."""
    return BranchContext(
        country=job.countries.index(country) if country in job.countries else COUNTRY_SLOTS,
        region=job.regions.index(region) if region in job.regions else REGION_SLOTS,
        launches=regional_launches(job.launches, region),
        opened=parse_month(opened) if opened else None,
        campaigns=frozenset(parse_month(m) for m in job.campaigns),
        shortages=frozenset(parse_month(m) for m in job.shortages),
    )


def _layout(lags: int, horizon: int) -> dict[str, slice]:
    """Where each input sits in the flat feature vector (`steps` = the lag months, then the
    forecast months)."""
    steps = lags + horizon
    sizes = {"lag": lags, "mask": lags, "month": steps, "lny": steps, "pre_lny": steps,
             "launch_age": steps * LAUNCH_SLOTS, "open_age": steps, "campaign": steps, "post_campaign": steps,
             "shortage": steps, "dt": steps, "country": 1, "region": 1}
    out, at = {}, 0
    for name, size in sizes.items():
        out[name] = slice(at, at + size)
        at += size
    return out


def feature_size(lags: int = LAGS, horizon: int = HORIZON) -> int:
    return _layout(lags, horizon)["region"].stop


class Forecaster(nn.Module):
    """Direct multi-horizon forecaster: one forward pass gives all `horizon` months, as ratios
    to the window's scale."""

    def __init__(self, *, lags: int = LAGS, horizon: int = HORIZON, rare_gain: float = 1.0) -> None:
        super().__init__()
        self.lags = lags
        self.horizon = horizon
        # The rare effects are `rare_gain` × their parameters. Under DP-SGD every window's gradient
        # is clipped and steps are fixed, so effects that only a few windows carry (a launch in one
        # region, a store's first months, a campaign) learn slowly; the gain makes their steps
        # rare_gain² larger (a reparametrisation: the same functions, the same privacy). Measured
        # at 20 branches, seeds 1-3, ε 8: federated 22 % better than best local instead of 14 %.
        # Plain SGD on small batches does not need it and is unstable with it, so local and
        # pooled training keep 1.
        self.rare_gain = float(rare_gain)
        self.season = nn.Parameter(torch.zeros(COUNTRY_SLOTS + 1, MONTHS))
        self.lny = nn.Parameter(torch.zeros(COUNTRY_SLOTS + 1))
        self.pre_lny = nn.Parameter(torch.zeros(COUNTRY_SLOTS + 1))
        self.launch = nn.Parameter(torch.zeros(LAUNCH_MONTHS))
        self.trend = nn.Parameter(torch.zeros(REGION_SLOTS + 1))
        self.lag_weight = nn.Parameter(torch.zeros(lags))  # log weights of the lags in the level
        self.ramp = nn.Parameter(torch.zeros(len(RAMP_TIMES)))
        self.calendar = nn.Parameter(torch.zeros(3))  # campaign month, the month after, shortage month

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        at = _layout(self.lags, self.horizon)
        country = x[:, at["country"]].long().clamp(0, COUNTRY_SLOTS).squeeze(1)
        region = x[:, at["region"]].long().clamp(0, REGION_SLOTS).squeeze(1)
        month = x[:, at["month"]].long().clamp(0, MONTHS - 1)
        age = x[:, at["launch_age"]].long().view(x.shape[0], self.lags + self.horizon, LAUNCH_SLOTS)
        in_window = (age >= 0) & (age < LAUNCH_MONTHS)
        zero = torch.zeros((), dtype=x.dtype)
        launch = torch.where(in_window, self.rare_gain * self.launch[age.clamp(0, LAUNCH_MONTHS - 1)], zero).sum(-1)
        open_age = x[:, at["open_age"]]
        decays = torch.exp(-open_age.clamp(min=0)[..., None] / torch.tensor(RAMP_TIMES, dtype=x.dtype))
        ramp = torch.where(open_age >= 0, self.rare_gain * (decays * self.ramp).sum(-1), zero)
        calendar = self.rare_gain * (self.calendar[0] * x[:, at["campaign"]] + self.calendar[1] * x[:, at["post_campaign"]]
                    + self.calendar[2] * x[:, at["shortage"]])
        season = self.season - self.season.mean(1, keepdim=True)  # the level carries the mean
        effect = (season[country[:, None], month] + self.lny[country][:, None] * x[:, at["lny"]]
                  + self.pre_lny[country][:, None] * x[:, at["pre_lny"]] + launch + ramp + calendar
                  + self.trend[region][:, None] * x[:, at["dt"]]).clamp(-EFFECT_BOUND, EFFECT_BOUND)
        weight = torch.exp(self.lag_weight.clamp(-EFFECT_BOUND, EFFECT_BOUND))[None, :] * x[:, at["mask"]]
        lag_effect, ahead_effect = effect[:, : self.lags], effect[:, self.lags :]
        level = (weight * x[:, at["lag"]] * torch.exp(-lag_effect)).sum(1) / weight.sum(1).clamp(min=1e-6)
        return level[:, None] * torch.exp(ahead_effect)


def build_model(seed: int, *, lags: int = LAGS, horizon: int = HORIZON, rare_gain: float = 1.0) -> Forecaster:
    """The initial model: all zeros (the mean of the recent months). `seed` is kept so a job
    names its starting point; it holds no data. A DP job's model takes `rare_gain=RARE_GAIN`."""
    del seed
    return Forecaster(lags=lags, horizon=horizon, rare_gain=rare_gain)


def job_model(job) -> Forecaster:
    """The initial model of a job (a `common.wire.JobSpec`): with the rare-effect gain when
    it trains under DP-SGD."""
    return build_model(job.seed, lags=job.lags, horizon=job.horizon, rare_gain=RARE_GAIN if job.dp.enabled else 1.0)


def get_flat_weights(model: nn.Module) -> np.ndarray:
    """All parameters as one float64 vector, in `state_dict` order."""
    return np.concatenate(
        [t.detach().cpu().numpy().astype(np.float64).ravel() for t in model.state_dict().values()]
    )


def set_flat_weights(model: nn.Module, flat: np.ndarray) -> None:
    """Inverse of `get_flat_weights`; refuses a vector of the wrong length."""
    state = model.state_dict()
    total = sum(t.numel() for t in state.values())
    if flat.shape != (total,):
        raise ValueError(f"weight vector has {flat.size} values, model needs {total}")
    offset = 0
    new_state = {}
    for name, tensor in state.items():
        n = tensor.numel()
        new_state[name] = torch.from_numpy(
            np.asarray(flat[offset : offset + n], dtype=np.float32).reshape(tensor.shape)
        )
        offset += n
    model.load_state_dict(new_state)


def make_windows(
    series: np.ndarray,
    start: int,
    context: BranchContext,
    *,
    lags: int = LAGS,
    horizon: int = HORIZON,
    min_lags: int = 2,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Training windows from one monthly series.

    `series[i]` is the units sold in month number `start + i`. Returns (features, targets,
    scales): targets are already divided by the window's scale. Every origin with at least
    `min_lags` observed lags and a full horizon of targets gives one window; that window is
    DP-SGD's unit of privacy.
    """
    xs, ys, scales = [], [], []
    for origin in range(min_lags, len(series) - horizon + 1):
        x, scale = window_features(series[:origin], start + origin, context, lags=lags, horizon=horizon)
        xs.append(x)
        ys.append(series[origin : origin + horizon] / scale)
        scales.append(scale)
    if not xs:
        empty = np.zeros((0, feature_size(lags, horizon)), dtype=np.float32)
        return empty, np.zeros((0, horizon), dtype=np.float32), np.zeros(0, dtype=np.float32)
    return (
        np.asarray(xs, dtype=np.float32),
        np.asarray(ys, dtype=np.float32),
        np.asarray(scales, dtype=np.float32),
    )


def window_features(history: np.ndarray, target: int, context: BranchContext, *, lags: int = LAGS,
                    horizon: int = HORIZON) -> tuple[np.ndarray, float]:
    """Features for a forecast whose first month is month number `target`, from the last
    `lags` values of `history` (fewer when history is short: the rest are masked). Returns the
    feature vector and the scale the forecast must be multiplied by."""
    at = _layout(lags, horizon)
    recent = np.asarray(history[-lags:], dtype=np.float64)
    scale = float(max(recent.mean(), 1.0)) if recent.size else 1.0
    x = np.zeros(feature_size(lags, horizon))
    if recent.size:
        x[at["lag"]][lags - recent.size :] = recent / scale
        x[at["mask"]][lags - recent.size :] = 1.0
    steps = np.arange(target - lags, target + horizon)
    x[at["month"]] = steps % MONTHS
    x[at["lny"]] = [s in LNY_MONTHS for s in steps]
    x[at["pre_lny"]] = [s + 1 in LNY_MONTHS for s in steps]
    ages = np.full((steps.size, LAUNCH_SLOTS), -1.0)
    for k, launch in enumerate(context.launches[:LAUNCH_SLOTS]):
        ages[:, k] = steps - launch
    x[at["launch_age"]] = ages.ravel()
    x[at["open_age"]] = steps - context.opened if context.opened is not None else -1.0
    x[at["campaign"]] = [s in context.campaigns for s in steps]
    x[at["post_campaign"]] = [s - 1 in context.campaigns for s in steps]
    x[at["shortage"]] = [s in context.shortages for s in steps]
    x[at["dt"]] = (steps - target) / MONTHS
    x[at["country"]], x[at["region"]] = context.country, context.region
    return x.astype(np.float32), scale


def forecast(model: Forecaster, history: np.ndarray, target: int, context: BranchContext) -> np.ndarray:
    """Units forecast for the `horizon` months from month number `target` on, after `history`."""
    x, scale = window_features(history, target, context, lags=model.lags, horizon=model.horizon)
    model.eval()
    with torch.no_grad():
        ratio = model(torch.from_numpy(x)[None, :])[0].numpy()
    return np.clip(ratio, 0.0, None) * scale
