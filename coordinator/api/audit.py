"""The compliance routes: lineage across every store this service can read, verified.

The stores are the service's own (job states, decisions, refusals), and where a runner is
configured, the round loop's (aggregations, releases); on Flower's simulation runtime the
nodes' stores are on this machine too (`runner.nodes_root`), and are read and verified like
`sovereign lineage --run`. Each request opens the stores afresh and closes them: a round loop
may create its store after the service started. Verification uses the keys published
outside each store (the service's own signer, the round loop's published key, the node keys
the coordinator registered), never only the keys a store lists about itself.
"""

from __future__ import annotations

import json
import re
from contextlib import contextmanager
from datetime import datetime, timezone
from typing import Iterator, Literal

from fastapi import APIRouter, Depends, HTTPException, Query, Request, status
from fastapi.responses import HTMLResponse, Response
from pydantic import BaseModel

from coordinator.api.auth import require
from coordinator.resources import Account, Role
from lineage import EventKind, LineageStoreError, SigningKeyError
from lineage.audit import AuditScope, add_run
from lineage.export import to_csv, to_html, to_openlineage
from lineage.identity import CardError, ModelIdentityCard, build_card
from lineage.views import LineageGraph, PolicyVersion, lineage_graph, policy_versions

SERVICE = "coordinator service"
AUDITORS = (Role.ADMIN, Role.COMPLIANCE)


class StoreStatus(BaseModel):
    store: str
    chain: str
    events: int
    verified: bool
    problem: str | None = None
    key: str  # what the signatures were checked against


@contextmanager
def audit_scope(request: Request) -> Iterator[AuditScope]:
    app = request.app
    scope = AuditScope(stores={SERVICE: app.state.lineage},
                       store_keys={SERVICE: {app.state.signer.actor: app.state.signer.public_key}})
    runner = app.state.settings.runner
    try:
        if runner is not None:
            nodes = runner.nodes_root if runner.kind == "simulation" and runner.nodes_root else runner.coordinator_dir / "-"
            add_run(scope, runner.coordinator_dir, nodes)
    except (LineageStoreError, SigningKeyError) as exc:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, f"a lineage store cannot be read: {exc}") from None
    try:
        yield scope
    finally:
        for label, store in scope.stores.items():
            if label != SERVICE:
                store.close()


def _moment(value: str | None, name: str) -> datetime | None:
    if value is None or value == "":
        return None
    try:
        moment = datetime.fromisoformat(value)
        return (moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)).astimezone(timezone.utc)
    except (ValueError, OverflowError):  # not a time, or one that falls off the calendar in UTC
        raise HTTPException(422, f"{name}: {value!r} is not an ISO date or time (e.g. 2026-11-23 or 2026-11-23T10:00)") from None


def router() -> APIRouter:
    api = APIRouter(prefix="/audit", tags=["audit"])

    @api.get("/stores")
    def stores(request: Request, _: Account = Depends(require(*AUDITORS))) -> list[StoreStatus]:
        """Each chain of each store, verified (signatures, hash chain, heads, field index), and
        the cross-checks between the nodes' and the coordinator's records of each other."""
        with audit_scope(request) as scope:
            rows = [StoreStatus(store=label, chain=r.actor, events=r.events, verified=r.ok,
                                problem=r.fault.message if r.fault else None,
                                key="published key" if r.key_source == "given" else "the store's own list (unanchored)")
                    for label, reports in scope.verify().items() for r in reports]
            rows += [StoreStatus(store="cross-check", chain=chain, events=0, verified=False, problem=message, key="-")
                     for chain, message in scope.cross_check()]
        return rows

    @api.get("/events")
    def events(request: Request, node: str | None = Query(None, max_length=128, description="the actor: a node or 'coordinator'"),
               job_id: str | None = Query(None, max_length=128), kind: EventKind | None = None,
               field: str | None = Query(None, max_length=128, description="table.column, e.g. sales.units"),
               purpose: str | None = Query(None, max_length=64), since: str | None = Query(None, max_length=40),
               until: str | None = Query(None, max_length=40), limit: int = Query(500, ge=1, le=5000),
               _: Account = Depends(require(*AUDITORS))) -> dict:
        """Events matching every filter, oldest first, each with the store it came from."""
        filters = dict(actor=node or None, job_id=job_id or None, kind=kind, field=field or None, purpose=purpose or None,
                       since=_moment(since, "since"), until=_moment(until, "until"))
        with audit_scope(request) as scope:
            found = [(label, e) for label, s in scope.stores.items() for e in s.events(**filters)]
        found.sort(key=lambda pair: (pair[1].recorded_at, pair[1].actor, pair[1].seq or 0))
        return {"total": len(found), "events": [{"store": label, **e.model_dump(mode="json")} for label, e in found[:limit]]}

    @api.get("/graph")
    def graph(request: Request, job_id: str | None = Query(None, max_length=128),
              _: Account = Depends(require(*AUDITORS))) -> LineageGraph:
        """Datasets and fields -> jobs -> model versions."""
        with audit_scope(request) as scope:
            return lineage_graph(scope.events(job_id=job_id or None))

    @api.get("/policies")
    def policies(request: Request, node: str | None = Query(None, max_length=128),
                 _: Account = Depends(require(*AUDITORS))) -> list[PolicyVersion]:
        """Each node's policy versions as its decisions show them, with the fields that changed."""
        with audit_scope(request) as scope:
            return policy_versions(scope.events(kind=EventKind.POLICY_DECISION, actor=node or None))

    @api.get("/card")
    def card(request: Request, model: str | None = Query(None, max_length=160),
             _: Account = Depends(require(Role.ADMIN, Role.COMPLIANCE, Role.ANALYST))) -> ModelIdentityCard:
        """The model identity card (needs the round loop's and the nodes' stores: embedded runs)."""
        with audit_scope(request) as scope:
            if "coordinator" not in scope.stores:
                raise HTTPException(status.HTTP_409_CONFLICT, "no round loop lineage here: identity cards need the "
                                                              "stores of an embedded run")
            try:
                return build_card(scope.stores["coordinator"], {k: s for k, s in scope.stores.items()
                                                                if k not in ("coordinator", SERVICE)}, model)
            except CardError as exc:
                raise HTTPException(status.HTTP_404_NOT_FOUND, str(exc)) from None

    @api.get("/export")
    def export(request: Request, format: Literal["openlineage", "csv", "html"] = "openlineage",
               job_id: str | None = Query(None, max_length=128), node: str | None = Query(None, max_length=128),
               _: Account = Depends(require(*AUDITORS))) -> Response:
        """OpenLineage RunEvents (JSON), CSV, or an HTML compliance report starting with integrity."""
        with audit_scope(request) as scope:
            chosen = scope.events(job_id=job_id or None, actor=node or None)
            name = re.sub(r"[^A-Za-z0-9_.-]+", "_", "lineage" + (f"-{job_id}" if job_id else "") + (f"-{node}" if node else ""))
            if format == "openlineage":
                body, media, suffix = json.dumps(to_openlineage(chosen), indent=2), "application/json", "openlineage.json"
            elif format == "csv":
                body, media, suffix = to_csv(chosen), "text/csv", "csv"
            else:
                what = " ".join(p for p in (f"job {job_id}" if job_id else "", f"node {node}" if node else "") if p)
                body = to_html(chosen, title=f"Sovereign compliance report: {what or 'all lineage'}",
                               reports=scope.reports({e.actor for e in chosen}))
                return HTMLResponse(body, headers={"Content-Disposition": f'attachment; filename="{name}.html"'})
        return Response(body, media_type=media, headers={"Content-Disposition": f'attachment; filename="{name}.{suffix}"'})

    return api
