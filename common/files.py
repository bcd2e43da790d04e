"""Writing secret files (keys) safely: owner-only from the moment they exist, atomic, and
(for `create_secret_once`) never over a key that exists.

A secret is always written to a fresh temporary file in the destination directory, which
`tempfile.mkstemp` creates with `os.open(..., 0o600)` (the umask can only take bits away), and
then published under its name by `os.link` or `os.replace`. So no file that holds a secret is
ever readable by anyone but its owner, not even between a write and a `chmod`: no `chmod` is
needed, and a reader of the name sees either the whole old file or the whole new one.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def _private_temp(path: Path, data: bytes) -> str:
    """A new owner-only (0600) file beside `path` holding `data`, flushed to disk; its name."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")  # mode 0600, a name no other writer has
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
    except BaseException:
        os.unlink(tmp)
        raise
    return tmp


def create_secret_once(path: Path, data: bytes) -> bool:
    """Write `data` to `path` (mode 0600) unless a file is already there; True if written.

    Atomic against a concurrent writer: the first one wins and every caller then reads the
    same key.
    """
    path = Path(path)
    if path.exists():
        return False
    tmp = _private_temp(path, data)
    try:
        os.link(tmp, path)
        return True
    except FileExistsError:
        return False
    finally:
        os.unlink(tmp)


def write_secret(path: Path, data: bytes) -> None:
    """Write `data` to `path` (mode 0600), replacing any file there (a new key replaces the old).

    The replaced file is never written to: a new owner-only file takes over the name, so an
    old file that was readable by others does not pass the new secret through its mode.
    """
    path = Path(path)
    tmp = _private_temp(path, data)
    try:
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise
