"""How a field's values are changed before use or release: pure functions, no I/O.

After Apache Ranger's masking types and Presidio's operators. Hashing is keyed (HMAC-SHA256
with a key the node holds), because phone numbers and national IDs hashed without a key can
be enumerated.
"""

from __future__ import annotations

import hashlib
import hmac
from datetime import date
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

REDACTED = "[REDACTED]"

Kind = Literal["allow", "drop", "redact", "hash", "mask", "generalise", "null"]


class TreatmentSpec(BaseModel):
    """A treatment and its parameters, as written in a policy file."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Kind
    show_last: int | None = Field(default=None, ge=0, le=64)  # mask
    to: Literal["month", "quarter", "year", "bucket", "prefix"] | None = None  # generalise
    width: float | None = Field(default=None, gt=0)  # generalise to bucket
    keep: int | None = Field(default=None, ge=0, le=16)  # generalise to prefix

    @model_validator(mode="after")
    def _parameters_fit_kind(self) -> "TreatmentSpec":
        if self.kind == "mask" and self.show_last is None:
            raise ValueError("mask needs show_last")
        if self.kind == "generalise":
            if self.to is None:
                raise ValueError("generalise needs to: month, quarter, year, bucket or prefix")
            if self.to == "bucket" and self.width is None:
                raise ValueError("generalise to bucket needs width")
            if self.to == "prefix" and self.keep is None:
                raise ValueError("generalise to prefix needs keep")
        return self

    @property
    def withholds_value(self) -> bool:
        """Drop and null let nothing of the value through: the only treatments for restricted fields."""
        return self.kind in ("drop", "null")

    def describe(self) -> str:
        if self.kind == "mask":
            return f"mask, show last {self.show_last or 0}"
        if self.kind == "generalise":
            if self.to == "bucket":
                return f"generalise to buckets of {self.width:g}"
            if self.to == "prefix":
                return f"generalise to the first {self.keep} characters"
            return f"generalise to {self.to}"
        if self.kind == "hash":
            return "keyed hash (HMAC-SHA256, node key)"
        return self.kind


class TreatmentError(ValueError):
    """A value the treatment cannot be applied to (e.g. a date that is not one).

    The message never quotes the value: it may be the very thing the treatment protects.
    """


def keyed_hash(value: Any, key: bytes) -> str:
    return hmac.new(key, str(value).encode(), hashlib.sha256).hexdigest()


def partial_mask(value: Any, show_last: int, mask_char: str = "*") -> str:
    text = str(value)
    keep = text[-show_last:] if show_last else ""
    return mask_char * (len(text) - len(keep)) + keep


def generalise_date(value: Any, to: str) -> str:
    d = value if isinstance(value, date) else date.fromisoformat(str(value)[:10])
    if to == "month":
        return f"{d.year:04d}-{d.month:02d}"
    if to == "quarter":
        return f"{d.year:04d}-Q{(d.month - 1) // 3 + 1}"
    return f"{d.year:04d}"


def generalise_number(value: Any, width: float) -> str:
    low = (float(value) // width) * width
    return f"{low:g}-{low + width:g}"


def apply(spec: TreatmentSpec, value: Any, *, key: bytes) -> Any:
    """The released form of one value. `drop` has no released form: callers remove the field.

    Raises `TreatmentError` (without the value) when the value does not fit the treatment.
    """
    try:
        return _apply(spec, value, key=key)
    except (TypeError, ValueError, OverflowError):
        raise TreatmentError(f"value cannot be treated: {spec.describe()}") from None


def _apply(spec: TreatmentSpec, value: Any, *, key: bytes) -> Any:
    if value is None or spec.kind == "null":
        return None
    if spec.kind == "allow":
        return value
    if spec.kind == "drop":
        raise ValueError("a dropped field has no value to release")
    if spec.kind == "redact":
        return REDACTED
    if spec.kind == "hash":
        return keyed_hash(value, key)
    if spec.kind == "mask":
        return partial_mask(value, spec.show_last or 0)
    if spec.to in ("month", "quarter", "year"):
        return generalise_date(value, spec.to)
    if spec.to == "bucket":
        return generalise_number(value, spec.width or 1.0)
    return str(value)[: spec.keep or 0] + "*"
