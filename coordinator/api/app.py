"""The coordinator service: `create_app(settings)` builds the FastAPI app (OpenAPI at /docs).

Routes are thin: they authenticate, check the role, and call the job service or the store.
Every refusal is a 4xx whose `detail` is one line naming the field or the rule, and the
refusals that concern a job (an invalid request, a decision without the node's signature, a
step the lifecycle forbids) are recorded in the coordinator's lineage. Bodies over
`max_body_bytes` are refused with 413 before they are read.
"""

from __future__ import annotations

import threading
from contextlib import asynccontextmanager

from fastapi import Depends, FastAPI, HTTPException, Query, Request, status
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from common.console_session import ConsoleSessions
from common.wire import JobSpec
from coordinator.api import audit
from coordinator.api.auth import (
    current_account,
    job_view,
    launch_refusal,
    may_see_job,
    may_see_node,
    new_token,
    require,
    rounds_view,
    token_hash,
)
from coordinator.costs import PrivacyCost, privacy_cost
from coordinator.jobs import BadSignature, InvalidJob, JobService, NotFound, Runner
from coordinator.lifecycle import Decision, JobState, LifecycleError
from coordinator.resources import Account, JobRecord, NodeRecord, Role, RoundRecord
from coordinator.settings import CoordinatorSettings
from coordinator.store import Conflict, CoordinatorStore
from lineage import EventKind, LineageEvent, LineageStore, Signer

STAFF = (Role.ADMIN, Role.ANALYST, Role.REGIONAL_ANALYST, Role.COMPLIANCE, Role.BRANCH_IT)
LAUNCHERS = (Role.ADMIN, Role.ANALYST, Role.REGIONAL_ANALYST)  # a regional analyst: in its region only


class JobRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    spec: JobSpec
    nodes: list[str] = Field(min_length=1, max_length=1000, description="the node ids the job is requested of")
    min_contributors: int = Field(default=3, ge=1, le=1000, description="the fewest approving nodes the job runs with")
    request: bool = Field(default=True, description="request it of the nodes now (false: keep it a draft)")


class StepRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: str = Field(default="", max_length=1000)


class DecisionRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    node_id: str = Field(max_length=64)
    decision: Decision
    reason: str = Field(default="", max_length=1000)
    signature: str = Field(pattern=r"^[0-9a-f]{128}$", description="the node's Ed25519 signature (hex) over "
                                                                   "common.wire.decision_message")


class AccountRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
    role: Role
    scope: str | None = Field(default=None, max_length=64)


class NewAccount(BaseModel):
    account: Account
    token: str = Field(description="shown once; the coordinator keeps only its hash")


class JobCheck(BaseModel):
    """A request `POST /jobs` would take, and what it would cost in privacy."""

    ok: bool = True
    nodes: int
    privacy: PrivacyCost


class JobView(BaseModel):
    """A job as an account may see it (results filtered by role)."""

    job: JobRecord


class _TooLarge(Exception):
    pass


class BodyLimit:
    """Refuses a request body over `limit` bytes with 413, whether it declares its length or
    streams in chunks without one (counted as it arrives, never read whole first)."""

    def __init__(self, app, limit: int) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > self.limit):
            return await self._refuse(scope, receive, send)
        seen, too_large, replaced = 0, False, False

        async def counted():
            nonlocal seen, too_large
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    too_large = True
                    raise _TooLarge
            return message

        async def guarded_send(message):
            # Whatever the app makes of a body cut short (FastAPI answers 400), the answer is 413.
            nonlocal replaced
            if too_large:
                if not replaced:
                    replaced = True
                    await self._refuse(scope, receive, send)
                return
            await send(message)

        try:
            await self.app(scope, counted, guarded_send)
        except _TooLarge:
            if not replaced:
                await self._refuse(scope, receive, send)

    async def _refuse(self, scope, receive, send):
        response = JSONResponse({"detail": f"request body over {self.limit} bytes"},
                                status_code=status.HTTP_413_REQUEST_ENTITY_TOO_LARGE)
        await response(scope, receive, send)


def create_account(store: CoordinatorStore, name: str, role: Role, scope: str | None) -> NewAccount:
    """An account and its token (the CLI's bootstrap path and the admin route share it)."""
    if role in (Role.BRANCH_IT, Role.REGIONAL_ANALYST) and not scope:
        raise InvalidJob(f"scope: a {role.value} account needs its {'node' if role is Role.BRANCH_IT else 'region'}")
    token = new_token()
    account = store.add_account(Account(name=name, role=role, scope=scope), token_hash(token))
    return NewAccount(account=account, token=token)


def create_app(settings: CoordinatorSettings | None = None, *, store: CoordinatorStore | None = None,
               lineage: LineageStore | None = None, signer: Signer | None = None,
               runner: Runner | None = None) -> FastAPI:
    """The service; with a `runner`, starting a job also runs it (in the background) to its
    end, completed with what it released or failed with why."""
    settings = settings or CoordinatorSettings()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        if app.state.runner is not None:  # jobs that ran when the service stopped go on where they were
            app.state.jobs.resume_running(run_in_background)
        yield
        app.state.store.close()
        app.state.lineage.close()

    app = FastAPI(title="Sovereign coordinator", version="0.1.0", lifespan=lifespan,
                  description="Joint forecasts a dealer alliance's nodes approve, run and release; "
                              "every guarantee is enforced on the nodes, not here.")
    app.state.settings = settings
    app.state.store = store or CoordinatorStore(settings.jobs_url())
    app.state.sessions = ConsoleSessions()
    app.state.lineage = lineage or LineageStore(settings.lineage_store_url())
    app.state.signer = signer or Signer.load_or_create("coordinator", settings.key_dir)
    app.state.jobs = JobService(app.state.store, lineage=app.state.lineage, signer=app.state.signer)
    app.state.runner = runner
    app.state.running: dict[str, threading.Thread] = {}

    def run_in_background(job_id: str) -> None:
        worker = threading.Thread(target=app.state.jobs.run, args=(job_id, app.state.runner), name=f"job-{job_id}",
                                  daemon=True)
        app.state.running[job_id] = worker
        worker.start()

    def refuse(request: Request, code: int, message: str, job_id: str | None = None) -> JSONResponse:
        if job_id:
            app.state.lineage.append(LineageEvent(
                kind=EventKind.REFUSAL, actor="coordinator", job_id=job_id, purpose="-",
                details={"code": code, "reason": message, "path": request.url.path}), app.state.signer)
        return JSONResponse({"detail": message}, status_code=code)

    app.add_middleware(BodyLimit, limit=settings.max_body_bytes)

    @app.exception_handler(RequestValidationError)
    async def _malformed(request: Request, exc: RequestValidationError):
        """FastAPI's 422 shape, without echoing the input back: a value JSON cannot carry (an
        infinity, a lone surrogate) would turn the refusal itself into a 500."""
        detail = [{"loc": list(e.get("loc", ())), "msg": str(e.get("msg", "")), "type": str(e.get("type", ""))}
                  for e in exc.errors()]
        return JSONResponse({"detail": detail}, status_code=422)

    @app.exception_handler(InvalidJob)
    async def _invalid(request: Request, exc: InvalidJob):
        return refuse(request, 422, str(exc), request.path_params.get("job_id") or getattr(exc, "job_id", None))

    @app.exception_handler(BadSignature)
    async def _unsigned(request: Request, exc: BadSignature):
        return refuse(request, 403, str(exc), request.path_params.get("job_id"))

    @app.exception_handler(LifecycleError)
    async def _lifecycle(request: Request, exc: LifecycleError):
        return refuse(request, 409, str(exc), request.path_params.get("job_id"))

    @app.exception_handler(Conflict)
    async def _conflict(request: Request, exc: Conflict):
        return refuse(request, 409, str(exc), request.path_params.get("job_id"))

    @app.exception_handler(NotFound)
    async def _missing(request: Request, exc: NotFound):
        return JSONResponse({"detail": str(exc)}, status_code=404)

    def regions() -> dict[str, str | None]:
        return {n.node_id: n.region for n in app.state.store.nodes()}

    def visible_job(job_id: str, account: Account) -> JobRecord:
        job = app.state.jobs.get(job_id)
        where = regions()
        if not may_see_job(account, job, where):
            raise HTTPException(status.HTTP_403_FORBIDDEN, f"job {job_id} is not one this account may see")
        return job_view(account, job, where)

    @app.get("/health", tags=["service"])
    def health() -> dict:
        return {"status": "ok"}

    @app.get("/me", tags=["accounts"])
    def me(account: Account = Depends(current_account)) -> Account:
        return account

    @app.post("/accounts", status_code=201, tags=["accounts"])
    def add_account(body: AccountRequest, _: Account = Depends(require(Role.ADMIN))) -> NewAccount:
        return create_account(app.state.store, body.name, body.role, body.scope)

    @app.get("/accounts", tags=["accounts"])
    def list_accounts(_: Account = Depends(require(Role.ADMIN))) -> list[Account]:
        return app.state.store.accounts()

    @app.post("/nodes", status_code=201, tags=["nodes"])
    def add_node(node: NodeRecord, _: Account = Depends(require(Role.ADMIN))) -> NodeRecord:
        return app.state.store.add_node(node)

    @app.get("/nodes", tags=["nodes"])
    def list_nodes(account: Account = Depends(require(*STAFF))) -> list[NodeRecord]:
        return [n for n in app.state.store.nodes() if may_see_node(account, n)]

    @app.get("/nodes/{node_id}", tags=["nodes"])
    def get_node(node_id: str, account: Account = Depends(require(*STAFF))) -> NodeRecord:
        node = app.state.store.node(node_id)
        if node is None:
            raise NotFound(f"no node {node_id}")
        if not may_see_node(account, node):
            raise HTTPException(status.HTTP_403_FORBIDDEN, f"node {node_id} is not one this account may see")
        return node

    def may_launch(account: Account, nodes: list[str]) -> None:
        """A request's nodes (named in the refusal: the caller chose them itself)."""
        refusal = launch_refusal(account, nodes, regions(), named=True)
        if refusal:
            raise HTTPException(status.HTTP_403_FORBIDDEN, refusal)

    @app.post("/jobs", status_code=201, tags=["jobs"])
    def submit_job(body: JobRequest, account: Account = Depends(require(*LAUNCHERS))) -> JobRecord:
        may_launch(account, body.nodes)
        try:
            return app.state.jobs.submit(body.spec, nodes=body.nodes, min_contributors=body.min_contributors,
                                         actor=account.name, request=body.request)
        except InvalidJob as exc:
            exc.job_id = body.spec.job_id
            raise

    @app.post("/jobs/check", tags=["jobs"])
    def check_job(body: JobRequest, account: Account = Depends(require(*LAUNCHERS))) -> JobCheck:
        """Validate a request without storing it (422 names the field), and what it would cost:
        the ε a launch form shows as the analyst chooses."""
        may_launch(account, body.nodes)
        app.state.jobs.check(body.spec, nodes=body.nodes, min_contributors=body.min_contributors)
        return JobCheck(nodes=len(body.nodes), privacy=privacy_cost(body.spec))

    @app.get("/jobs", tags=["jobs"])
    def list_jobs(state: JobState | None = Query(default=None), account: Account = Depends(require(*STAFF))) -> list[JobRecord]:
        where = regions()
        return [job_view(account, job, where) for job in app.state.store.jobs(state=state) if may_see_job(account, job, where)]

    @app.get("/jobs/{job_id}", tags=["jobs"])
    def get_job(job_id: str, account: Account = Depends(require(*STAFF))) -> JobRecord:
        return visible_job(job_id, account)

    @app.get("/jobs/{job_id}/results", tags=["jobs"])
    def job_results(job_id: str, account: Account = Depends(require(Role.ADMIN, Role.ANALYST, Role.REGIONAL_ANALYST,
                                                                       Role.COMPLIANCE))) -> dict:
        job = visible_job(job_id, account)
        if job.results is None:
            raise HTTPException(status.HTTP_409_CONFLICT, f"job {job_id} has released no results ({job.state.value})")
        return job.results

    @app.get("/jobs/{job_id}/rounds", tags=["jobs"])
    def job_rounds(job_id: str, account: Account = Depends(require(*STAFF))) -> list[RoundRecord]:
        """The rounds closed so far: who contributed and who was left out (branch IT sees only
        its own node, a regional analyst its region's nodes)."""
        job = visible_job(job_id, account)
        shown = {a.node_id for a in job.nodes}
        return [rounds_view(account, r, shown) for r in app.state.store.rounds(job_id)]

    for action in ("request", "start", "stop"):
        def step(job_id: str, body: StepRequest | None = None, account: Account = Depends(require(*LAUNCHERS)),
                 _action: str = action) -> JobRecord:
            job, where = app.state.jobs.get(job_id), regions()
            if not may_see_job(account, job, where):  # a job it may not see stays unseen: 403 before anything about its nodes
                raise HTTPException(status.HTTP_403_FORBIDDEN, f"job {job_id} is not one this account may see")
            refusal = launch_refusal(account, [a.node_id for a in job.nodes], where, named=False)
            if refusal:
                raise HTTPException(status.HTTP_403_FORBIDDEN, refusal)
            reason = (body.reason if body else "") or f"{_action} by {account.name}"
            job = app.state.jobs.transition(job_id, _action, reason=reason, actor=account.name)
            cancel = getattr(app.state.runner, "cancel", None)
            if _action == "stop" and cancel is not None:
                cancel(job_id)  # the round loop stops too, not only the record
            if _action == "start" and app.state.runner is not None:
                run_in_background(job_id)
            return job

        app.post(f"/jobs/{{job_id}}/{action}", tags=["jobs"], name=f"{action}_job",
                 summary=f"{action.capitalize()} a job")(step)

    @app.post("/jobs/{job_id}/decisions", tags=["jobs"])
    def decide(job_id: str, body: DecisionRequest, account: Account = Depends(require(Role.BRANCH_IT))) -> JobRecord:
        if body.node_id != account.scope:
            raise HTTPException(status.HTTP_403_FORBIDDEN, f"this account answers for node {account.scope}, "
                                                           f"not {body.node_id}")
        job = app.state.jobs.decide(job_id, body.node_id, body.decision, reason=body.reason, signature=body.signature)
        return job_view(account, job, regions())

    @app.get("/lineage/events", tags=["lineage"])
    def lineage_events(job_id: str | None = Query(default=None, max_length=128),
                       _: Account = Depends(require(Role.ADMIN, Role.COMPLIANCE))) -> list[dict]:
        return [e.model_dump(mode="json") for e in app.state.lineage.events(job_id=job_id)]

    app.include_router(audit.router())
    return app
