"""Secret key files are owner-only (0600) from the moment they exist: never written with the
default mode and chmod-ed afterwards, so there is no moment another local user can read them."""

from __future__ import annotations

import io
import os
import stat
from pathlib import Path

import pytest

from common.files import create_secret_once, write_secret
from common.he import CkksParams
from lineage.signing import PRIVATE_NAME, Signer
from node_agent.keys import key_ceremony


@pytest.fixture
def watched(monkeypatch, tmp_path):
    """With umask 0 (a file made with the default mode would be 0666): chmod and fchmod raise,
    opening a path (other than a public key) for writing through `open`/`Path.write_bytes` under
    `secrets/` raises, and
    every file created there through `os.open` is recorded with the mode it was created with."""
    secrets = tmp_path / "secrets"
    created: list[tuple[str, int]] = []
    real_open, real_io_open = os.open, io.open

    def no_chmod(*args, **kwargs):
        raise AssertionError(f"chmod called on {args[0]}: the file existed with another mode first")

    def spy_open(path, flags, mode=0o777, *args, **kwargs):
        if flags & os.O_CREAT and Path(path).is_relative_to(secrets):
            created.append((os.fspath(path), mode))
        return real_open(path, flags, mode, *args, **kwargs)

    def guarded_io_open(file, mode="r", *args, **kwargs):
        if (isinstance(file, (str, os.PathLike)) and Path(file).is_relative_to(secrets) and set(mode) & set("wax+")
                and not os.fspath(file).endswith(".pub")):  # a public key may be written plainly
            raise AssertionError(f"{file} opened for writing with the default mode")
        return real_io_open(file, mode, *args, **kwargs)

    for name in ("chmod", "fchmod", "lchmod"):
        if hasattr(os, name):
            monkeypatch.setattr(os, name, no_chmod)
    monkeypatch.setattr(os, "open", spy_open)
    monkeypatch.setattr(io, "open", guarded_io_open)
    old = os.umask(0)
    try:
        yield secrets, created
    finally:
        os.umask(old)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_the_ceremony_writes_each_node_secret_0600_from_its_first_byte(watched, tmp_path):
    secrets, created = watched
    paths = [secrets / "B001" / "he-secret.ctx", secrets / "B002" / "he-secret.ctx"]
    key_ceremony(paths, tmp_path / "public.ctx", CkksParams())
    for path in paths:
        assert _mode(path) == 0o600 and path.stat().st_size > 0
    assert paths[0].read_bytes() == paths[1].read_bytes()
    # Every file that ever existed under secrets/ was created owner-only, and none is left over.
    assert created and all(mode == 0o600 for _, mode in created), created
    assert sorted(p.name for p in secrets.rglob("*") if p.is_file()) == ["he-secret.ctx", "he-secret.ctx"]


def test_a_second_ceremony_replaces_a_world_readable_secret_without_writing_into_it(tmp_path, monkeypatch):
    path = tmp_path / "secrets" / "he-secret.ctx"
    path.parent.mkdir()
    path.write_bytes(b"old key")
    path.chmod(0o644)  # e.g. an old install, or a file copied in by hand
    old_inode = path.stat().st_ino
    monkeypatch.setattr(os, "chmod", lambda *a, **k: pytest.fail("chmod called"))
    key_ceremony([path], tmp_path / "public.ctx", CkksParams())
    assert _mode(path) == 0o600 and path.read_bytes() != b"old key"
    assert path.stat().st_ino != old_inode  # a new file took the name; the 0644 one never held the new key


def test_secret_helpers_create_0600_without_chmod(watched):
    secrets, created = watched
    write_secret(secrets / "a.key", b"one")
    write_secret(secrets / "a.key", b"two")
    assert create_secret_once(secrets / "b.key", b"three") is True
    assert create_secret_once(secrets / "b.key", b"four") is False
    assert (secrets / "a.key").read_bytes() == b"two" and (secrets / "b.key").read_bytes() == b"three"
    assert _mode(secrets / "a.key") == _mode(secrets / "b.key") == 0o600
    assert all(mode == 0o600 for _, mode in created)
    assert sorted(p.name for p in secrets.iterdir()) == ["a.key", "b.key"]  # no temporary file left


def test_the_lineage_private_key_is_created_0600(watched):
    secrets, created = watched
    Signer.load_or_create("B001", secrets)
    assert _mode(secrets / PRIVATE_NAME) == 0o600
    assert all(mode == 0o600 for _, mode in created)
