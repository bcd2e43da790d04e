"""The customer-level release: a node's bounded monthly counts plus discrete Gaussian noise,
made once per job and kept on the node, the only view of the sales anything that leaves the
node is computed from.

The noise is OpenDP's exact discrete Gaussian sampler over integers (its own CSPRNG; no
floating-point sampling written here), at scale σ = z × the bound's L2 sensitivity, where z
is planned by `common.customer_privacy` from the job's ε per year and the node's δ. A
release is stored with everything an auditor needs to recompute its ε: z, σ, δ, the bound
and the months; the released values are DP already, so keeping them costs no privacy.
"""

from __future__ import annotations

import functools
import hashlib
import json
from datetime import date

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from common.calendar import month_date, month_number
from common.customer_privacy import ContributionBound, every_year_epsilon, window_years


@functools.lru_cache(maxsize=64)  # one measurement per scale; sampling draws fresh noise every call
def _gaussian(scale: float):
    import opendp.prelude as dp

    dp.enable_features("contrib")
    return dp.m.make_gaussian(dp.vector_domain(dp.atom_domain(T=int)), dp.l2_distance(T=float), scale=scale)


def discrete_gaussian(counts: np.ndarray, scale: float) -> np.ndarray:
    """`counts` (integers) plus independent discrete Gaussian noise of scale `scale`, drawn by OpenDP."""
    return np.asarray(_gaussian(scale)([int(c) for c in counts]), dtype=np.int64)


def opendp_rho(scale: float, sensitivity: float) -> float:
    """OpenDP's own privacy map of that mechanism: its zCDP ρ at this L2 sensitivity (for cross-checks)."""
    return float(_gaussian(scale).map(float(sensitivity)))


class CustomerRelease(BaseModel):
    """One job's release at one node: noisy counts over public months, and how they were made."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    job_id: str
    first_month: str = Field(pattern=r"^[0-9]{4}-[0-9]{2}$")
    values: list[int]
    noise_multiplier: float = Field(gt=0)
    sigma: float = Field(gt=0)
    epsilon_per_year: float = Field(gt=0, description="this release's customer ε per year of sales, at `delta`")
    delta: float = Field(gt=0, lt=1)
    bound: ContributionBound

    @property
    def first(self) -> date:
        return date(int(self.first_month[:4]), int(self.first_month[5:]), 1)

    @property
    def last(self) -> date:
        return month_date(month_number(self.first) + len(self.values) - 1)

    @property
    def years(self) -> list[int]:
        return window_years(self.first, self.last)

    def units(self) -> np.ndarray:
        """The release as a sales series. Negative counts are kept: the noise is zero-mean, and
        reading it as zero would bias every small month upwards (measured: a worse model)."""
        return np.asarray(self.values, dtype=np.float64)

    def every_year_epsilon(self) -> float:
        """ε of this release for a customer who bought in every year it covers."""
        return every_year_epsilon(self.noise_multiplier, len(self.years), self.delta)

    def digest(self) -> str:
        return hashlib.sha256(json.dumps(self.values).encode()).hexdigest()


def make_release(job_id: str, first: date, bounded: np.ndarray, *, noise_multiplier: float, epsilon: float, delta: float,
                 bound: ContributionBound) -> CustomerRelease:
    sigma = noise_multiplier * bound.l2_sensitivity
    return CustomerRelease(job_id=job_id, first_month=f"{first:%Y-%m}", values=discrete_gaussian(bounded, sigma).tolist(),
                           noise_multiplier=noise_multiplier, sigma=sigma, epsilon_per_year=epsilon, delta=delta, bound=bound)
