"""One line out of a pydantic ValidationError: the first problem, as `field.path: message`."""

from __future__ import annotations

from pydantic import ValidationError


def first_error(exc: ValidationError, top: str = "(top level)") -> str:
    """`field.path: message` of the first error (`top` when it concerns the whole input)."""
    err = exc.errors()[0]
    field = ".".join(str(p) for p in err["loc"]) or top
    return f"{field}: {err['msg'].removeprefix('Value error, ')}"
