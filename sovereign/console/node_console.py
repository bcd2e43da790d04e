"""Branch IT's console, served on the node (`sovereign node console`): the node's health, the
jobs requested of it with what each would read here after masking, approve or deny with a
reason (signed with the node's key, recorded in its book and lineage, then sent), its
standing rules, its privacy budget per dataset with each job's spend, and its own forecast.

It answers only to whoever holds the access token it printed when it started: the
coordinator cannot sign anyone in here, so it cannot approve a job on the node's behalf. It
binds to 127.0.0.1 by default; the coordinator token it talks to the coordinator with stays
in this process and never reaches the browser.
"""

from __future__ import annotations

import secrets
from importlib.metadata import PackageNotFoundError, version
from types import SimpleNamespace

from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, Field

from common.console_session import CONSOLE_HEADER, ConsoleSessions, cross_site
from node_agent.config import NodeConfig
from sovereign.console.web import HERE, PAGE_HEADERS, SignIn, session_ended, session_started, templates

NODE_COOKIE = "sovereign_node_session"
PAGES = [SimpleNamespace(path="/", title="This node"), SimpleNamespace(path="/jobs", title="Job requests")]


class DecisionRequest(BaseModel):
    decision: str = Field(pattern=r"^(approved|denied)$")
    reason: str = Field(min_length=1, max_length=1000)
    spec_hash: str = Field(pattern=r"^[0-9a-f]{64}$", description="the hash of the spec branch IT read (hashed here)")


def _version(package: str) -> str:
    try:
        return version(package)
    except PackageNotFoundError:
        return "unknown"


def create_node_console(config: NodeConfig, coordinator, *, access_token: str | None = None) -> FastAPI:
    """`coordinator`: a client of the coordinator's API holding this node's branch_it token
    (`sovereign.cli.api_client.CoordinatorClient`), or None (then no job requests are shown)."""
    from sovereign.cli.api_client import ClientError

    app = FastAPI(title=f"Sovereign node console: {config.branch_id}", docs_url=None, redoc_url=None)
    app.state.access_token = access_token or secrets.token_urlsafe(24)
    app.mount("/ui/static", StaticFiles(directory=str(HERE / "static")), name="console-static")
    who = SimpleNamespace(name="branch IT", role=SimpleNamespace(value="branch_it"), scope=config.branch_id)

    # Sessions are random ids, never the access token itself: a browser that sends the cookie
    # elsewhere (cookies ignore ports: another service on this host) gives away one session,
    # which signing out ends, and not the token.
    sessions = ConsoleSessions()

    def signed(request: Request) -> bool:
        return sessions.holder(request.cookies.get(NODE_COOKIE, "")) == "branch IT"

    def guard(request: Request) -> None:
        if not signed(request):
            raise HTTPException(401, "sign in with the access token `sovereign node console` printed")
        if cross_site(request.method, request.headers.get(CONSOLE_HEADER)):
            raise HTTPException(403, f"a request that changes something needs the {CONSOLE_HEADER} header")

    def page(request: Request, template: str, title: str) -> Response:
        if not signed(request):
            return RedirectResponse(f"/ui/signin?next={request.url.path}", status_code=303)
        return templates.TemplateResponse(request, template, {"title": title, "account": who, "nav": PAGES,
                                                              "node": config.branch_id}, headers=PAGE_HEADERS)

    @app.get("/health")
    def health() -> dict:
        return {"status": "ok"}

    @app.get("/ui/signin", include_in_schema=False)
    def signin_page(request: Request) -> HTMLResponse:
        return templates.TemplateResponse(request, "signin.html", {"title": f"Sign in to {config.branch_id}",
                                                                   "account": None, "nav": []}, headers=PAGE_HEADERS)

    @app.post("/ui/session", status_code=204)
    def sign_in(body: SignIn, request: Request) -> Response:
        if cross_site(request.method, request.headers.get(CONSOLE_HEADER)):
            raise HTTPException(403, "sign in from the console")
        if not secrets.compare_digest(body.token.strip().encode(), app.state.access_token.encode()):
            raise HTTPException(401, "not this node console's access token")
        return session_started(request, NODE_COOKIE, sessions.open("branch IT"), sessions.seconds)

    @app.delete("/ui/session", status_code=204)
    def sign_out(request: Request) -> Response:
        sessions.close(request.cookies.get(NODE_COOKIE, ""))
        return session_ended(NODE_COOKIE)

    @app.get("/", include_in_schema=False)
    def home(request: Request) -> Response:
        return page(request, "node_home.html", f"Node {config.branch_id}")

    @app.get("/jobs", include_in_schema=False)
    def jobs_page(request: Request) -> Response:
        return page(request, "node_jobs.html", f"Jobs requested of {config.branch_id}")

    @app.get("/api/status")
    def status(request: Request) -> dict:
        """Health and version, the policy in force, the standing rules, and the node's own lineage verified."""
        guard(request)
        from lineage import LineageStore, Signer
        from policies import PolicyFileError, load_policy
        from policies.rules import lint

        try:
            policy = load_policy(config.policy_path)
            errors = [f.message for f in lint(policy) if f.severity == "error"]
            policy_view = {"name": policy.policy, "version": policy.version, "hash": policy.content_hash(),
                           "jurisdiction": policy.jurisdiction, "problem": errors[0] if errors else None}
        except PolicyFileError as exc:
            policy_view = {"problem": str(exc)}
        reachable, coordinator_problem = coordinator is not None, None
        if coordinator is not None:
            try:
                coordinator.get("/me")
            except ClientError as exc:
                reachable, coordinator_problem = False, str(exc)
        chains = []
        if (config.node_dir / "lineage.db").exists():
            store = LineageStore(config.lineage_url, create=False)
            key = Signer.load_or_create(config.branch_id, config.lineage_key_dir).public_key
            chains = [{"chain": r.actor, "events": r.events, "verified": r.ok, "problem": r.fault.message if r.fault else None}
                      for r in store.verify({config.branch_id: key})]
            store.close()
        return {
            "node": config.branch_id, "dataset": config.dataset, "region": config.region,
            "versions": {"sovereign": _version("sovereign"), "flwr": _version("flwr"), "tenseal": _version("tenseal"),
                         "opacus": _version("opacus")},
            "coordinator": {"url": getattr(coordinator, "url", None), "reachable": reachable, "problem": coordinator_problem},
            "policy": policy_view, "lineage": chains,
            "rules": {"approvals": config.approvals, "accepted_purposes": config.accepted_purposes,
                      "accepted_recipient_roles": config.accepted_recipient_roles,
                      "trusted_apps": len(config.trusted_apps), "coordinator_jurisdiction": config.coordinator_jurisdiction},
        }

    @app.get("/api/budget")
    def budget(request: Request) -> dict:
        """Privacy budget per dataset with every job's plan and spend, and customer-level standing."""
        guard(request)
        from sovereign.node_view import budget_report, customer_standing

        return {"datasets": budget_report(config),
                "customer": customer_standing(config) if config.customer_privacy else None}

    @app.get("/api/forecast")
    def forecast(request: Request) -> dict:
        """The branch's own forecast and accuracy from the newest job it evaluated (never sent)."""
        guard(request)
        from node_agent.report import read_branch_reports

        reports = read_branch_reports(config)
        return {"report": reports[-1] if reports else None}

    @app.get("/api/jobs")
    def requests(request: Request) -> dict:
        """The jobs the coordinator requests of this node, judged by this node's own rules."""
        guard(request)
        from sovereign.node_view import requested_rows

        if coordinator is None:
            return {"jobs": [], "problem": "no coordinator configured (--coordinator)"}
        try:
            jobs = coordinator.get("/jobs", state="requested")
        except ClientError as exc:
            raise HTTPException(502, str(exc)) from None
        try:
            return {"jobs": requested_rows(config, jobs)}
        except ValueError as exc:
            raise HTTPException(502, str(exc)) from None

    @app.post("/api/jobs/{job_id}/decision")
    def decide(job_id: str, body: DecisionRequest, request: Request) -> dict:
        """Approve or deny the exact spec the coordinator requested: signed here, in this node's
        book and lineage first, then sent. The node's own rules are checked before an approval."""
        guard(request)
        from pydantic import ValidationError

        from common.validation import first_error
        from common.wire import JobSpec
        from node_agent.admission import admission_refusal
        from node_agent.approvals import APPROVED, AlreadyDecided, record_owner_decision

        if coordinator is None:
            raise HTTPException(409, "no coordinator configured (--coordinator): decide with `sovereign node approve --spec`")
        try:
            answer = coordinator.get(f"/jobs/{job_id}")
            spec = JobSpec.model_validate(answer.get("spec") if isinstance(answer, dict) else None)
        except ClientError as exc:
            raise HTTPException(502, str(exc)) from None
        except ValidationError as exc:
            raise HTTPException(422, f"the requested spec: {first_error(exc)}") from None
        if spec.job_id != job_id:
            raise HTTPException(422, f"the coordinator answered job {spec.job_id!r} for {job_id!r}")
        if spec.spec_hash() != body.spec_hash:  # what is signed is what branch IT read, or nothing
            raise HTTPException(409, f"the coordinator now sends job {job_id} with spec {spec.spec_hash()[:12]}, not the "
                                     f"{body.spec_hash[:12]} you read; reload the requests and read it again")
        if body.decision == APPROVED:
            refusal = admission_refusal(spec, config, None)
            if refusal is not None:
                raise HTTPException(409, f"this node's own rules refuse job {job_id} ({refusal.code}): {refusal}; "
                                         "approving it would not run it")
        try:
            signature = record_owner_decision(config, spec, body.decision, body.reason)
        except AlreadyDecided as exc:
            raise HTTPException(409, str(exc)) from None
        try:
            coordinator.post(f"/jobs/{job_id}/decisions", {"node_id": config.branch_id, "decision": body.decision,
                                                           "reason": body.reason, "signature": signature})
        except ClientError as exc:
            raise HTTPException(502, f"recorded here, but not delivered: {exc}") from None
        return {"job_id": job_id, "decision": body.decision, "spec_hash": spec.spec_hash(), "delivered": True}

    return app
