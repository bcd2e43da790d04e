"""Writing secret files (keys) safely: owner-only, atomic, and never over a key that exists."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def create_secret_once(path: Path, data: bytes) -> bool:
    """Write `data` to `path` (mode 0600) unless a file is already there; True if written.

    Atomic against a concurrent writer: the first one wins and every caller then reads the
    same key.
    """
    path = Path(path)
    if path.exists():
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")  # mode 0600, a name no other writer has
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    try:
        os.link(tmp, path)
        return True
    except FileExistsError:
        return False
    finally:
        os.unlink(tmp)
