"""A web console's signed-in browsers, for the coordinator's console and a node's alike.

A session is a random id in an HttpOnly, SameSite=Strict cookie, standing for a credential
kept here (an account's token hash; for a node console, that branch IT signed in) until it
expires or is closed: the credential itself never stays in the browser. A request the cookie
authenticates may change something only with `CONSOLE_HEADER`, which another site's form
cannot send and its script cannot add without a CORS preflight that is never granted (CSRF).
"""

from __future__ import annotations

import secrets
import threading
import time

CONSOLE_HEADER = "X-Sovereign-Console"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
SESSION_SECONDS = 8 * 3600


def cross_site(method: str, console_header: str | None) -> bool:
    """A request that changes something without the console's header: refused whenever a
    cookie is what would authenticate it (sign-in included)."""
    return method not in SAFE_METHODS and console_header != "1"


class ConsoleSessions:
    """Session id (the cookie) -> what it stands for, for `seconds`. Kept in memory: signing
    out ends a session here, and a restart signs every browser out."""

    def __init__(self, seconds: int = SESSION_SECONDS) -> None:
        self.seconds, self._open, self._lock = seconds, {}, threading.Lock()

    def open(self, holder: str) -> str:
        """A new session standing for `holder`; returns its id."""
        session = secrets.token_urlsafe(32)
        with self._lock:
            now = time.monotonic()
            self._open = {k: v for k, v in self._open.items() if v[1] > now}  # forget the expired
            self._open[session] = (holder, now + self.seconds)
        return session

    def holder(self, session: str) -> str | None:
        """What a live session stands for; None for an unknown, expired or closed one."""
        with self._lock:
            found = self._open.get(session)
        return found[0] if found and found[1] > time.monotonic() else None

    def close(self, session: str) -> None:
        with self._lock:
            self._open.pop(session, None)
