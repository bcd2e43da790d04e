"""A thin client of the coordinator's REST API for the command line (`sovereign node`, `sovereign job`).

Every failure is one line: the service's own `detail` for a 4xx, or why it could not be reached.
"""

from __future__ import annotations

import httpx


class ClientError(RuntimeError):
    """The request failed; the message says why in one line."""


class CoordinatorClient:
    def __init__(self, url: str, token: str, *, timeout: float = 30.0) -> None:
        self.url = url.rstrip("/")
        self._http = httpx.Client(base_url=self.url, headers={"Authorization": f"Bearer {token}"}, timeout=timeout)

    def get(self, path: str, **params):
        return self._call("GET", path, params={k: v for k, v in params.items() if v is not None})

    def post(self, path: str, body: dict | None = None):
        return self._call("POST", path, json=body or {})

    def _call(self, method: str, path: str, **kw):
        try:
            response = self._http.request(method, path, **kw)
        except httpx.HTTPError as exc:
            raise ClientError(f"cannot reach the coordinator at {self.url} ({exc.__class__.__name__}: {exc})") from None
        try:  # whatever the service answers: the node does not trust it to answer well-formed JSON
            answer = response.json()
        except ValueError:
            answer = None
            if response.status_code < 400:
                raise ClientError(f"{method} {path}: {response.status_code} with a body that is not JSON") from None
        if response.status_code >= 400:
            detail = answer.get("detail") if isinstance(answer, dict) else None
            if isinstance(detail, list) and detail and isinstance(detail[0], dict):  # FastAPI's validation errors
                first = detail[0]
                detail = f"{'.'.join(str(p) for p in (first.get('loc') or [])[1:])}: {first.get('msg')}"
            raise ClientError(f"{method} {path}: {response.status_code} {str(detail or response.text)[:200]}")
        return answer
