"""The coordinator's console, mounted on the service's app: sign-in, pages by role, assets.

A page is an HTML shell (Jinja2) whose script reads the REST API with the session cookie;
the page itself is refused with 403 to a role that may not use it, and so is every API call
behind it (the API checks roles itself, the page check is for the reader). Sign-in takes an
account's token once and opens a session: a random id in an HttpOnly, SameSite=Strict cookie,
so the token itself never stays in the browser, and signing out ends the session (`auth.py`).
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from pydantic import BaseModel, Field

from common.console_session import CONSOLE_HEADER, cross_site
from coordinator.api.app import LAUNCHERS, STAFF
from coordinator.api.audit import AUDITORS
from coordinator.api.auth import SESSION_COOKIE, account_for_hash, session_account, token_hash
from coordinator.resources import Account, Role

HERE = Path(__file__).resolve().parent
templates = Jinja2Templates(directory=str(HERE / "templates"))
# Every page: scripts, styles and fonts only from this service (no inline script, no CDN), never framed.
PAGE_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data: blob:; object-src 'none'; base-uri 'none'; "
                               "form-action 'self'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer", "Cache-Control": "no-store",
}


class Page(BaseModel):
    path: str
    template: str
    title: str
    roles: tuple[Role, ...]
    nav: bool = True  # listed in the header for the roles that may open it


PAGES = [
    # the roles the API routes behind each page take (a regional analyst launches in its region only)
    Page(path="/ui/jobs", template="jobs.html", title="Joint forecasts", roles=STAFF),
    Page(path="/ui/launch", template="launch.html", title="Launch a joint forecast", roles=LAUNCHERS),
    Page(path="/ui/jobs/{job_id}", template="job.html", title="Joint forecast", roles=STAFF, nav=False),
    Page(path="/ui/lineage", template="lineage.html", title="Lineage explorer", roles=AUDITORS),
    Page(path="/ui/policies", template="policies.html", title="Policy versions", roles=AUDITORS),
]
HOME = {Role.ANALYST: "/ui/jobs", Role.REGIONAL_ANALYST: "/ui/jobs", Role.ADMIN: "/ui/jobs",
        Role.COMPLIANCE: "/ui/lineage", Role.BRANCH_IT: "/ui/jobs"}


class SignIn(BaseModel):
    token: str = Field(min_length=1, max_length=200)


def session_started(request: Request, cookie: str, session: str, seconds: int) -> Response:
    """204 with the session's cookie: HttpOnly, SameSite=Strict, Secure over https."""
    response = Response(status_code=204)
    response.set_cookie(cookie, session, max_age=seconds, httponly=True, samesite="strict",
                        secure=request.url.scheme == "https", path="/")
    return response


def session_ended(cookie: str) -> Response:
    response = Response(status_code=204)
    response.delete_cookie(cookie, path="/")
    return response


def mount_console(app: FastAPI) -> FastAPI:
    """Add the console to the coordinator service's app: `/` and `/ui/...`."""
    app.mount("/ui/static", StaticFiles(directory=str(HERE / "static")), name="console-static")

    def render(request: Request, template: str, title: str, account: Account | None, status: int = 200, **extra):
        nav = [p for p in PAGES if p.nav and account is not None and account.role in p.roles]
        return templates.TemplateResponse(request, template, {"title": title, "account": account, "nav": nav, **extra},
                                          status_code=status, headers=PAGE_HEADERS)

    @app.get("/", include_in_schema=False)
    def home(request: Request) -> Response:
        account = session_account(request)
        return RedirectResponse(HOME[account.role] if account else "/ui/signin", status_code=303)

    @app.get("/ui/signin", include_in_schema=False)
    def signin_page(request: Request) -> HTMLResponse:
        return render(request, "signin.html", "Sign in", session_account(request))

    @app.post("/ui/session", tags=["console"], status_code=204)
    def sign_in(body: SignIn, request: Request) -> Response:
        """Sign the browser in with an account's token: a session for it, in an HttpOnly cookie."""
        if cross_site(request.method, request.headers.get(CONSOLE_HEADER)):
            return Response('{"detail": "sign in from the console"}', status_code=403, media_type="application/json")
        hashed = token_hash(body.token.strip())
        if account_for_hash(request, hashed) is None:
            return Response('{"detail": "unknown or revoked token"}', status_code=401, media_type="application/json")
        sessions = request.app.state.sessions
        return session_started(request, SESSION_COOKIE, sessions.open(hashed), sessions.seconds)

    @app.delete("/ui/session", tags=["console"], status_code=204)
    def sign_out(request: Request) -> Response:
        request.app.state.sessions.close(request.cookies.get(SESSION_COOKIE, ""))
        return session_ended(SESSION_COOKIE)

    for page in PAGES:
        def show(request: Request, _page: Page = page) -> Response:
            account = session_account(request)
            if account is None:
                return RedirectResponse(f"/ui/signin?next={request.url.path}", status_code=303)
            if account.role not in _page.roles:
                return render(request, "forbidden.html", "Not for this role", account, status=403,
                              needed=", ".join(r.value for r in _page.roles))
            return render(request, _page.template, _page.title, account, path_params=request.path_params)

        app.get(page.path, include_in_schema=False, name=f"page {page.path}")(show)
    return app
