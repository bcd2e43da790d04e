"""Who is asking: bearer tokens, stored only as SHA-256, and the role rules every route uses.

A token is 32 random bytes (URL-safe text), shown once when its account is made; the store
keeps its hash, so a copy of the database authenticates nobody. Scoped roles carry their
scope: branch IT sees only its node, a regional analyst only its region.

The web console signs in with the same token once, and then holds a session
(`common.console_session`): a random id in an HttpOnly, SameSite=Strict cookie, which script
on the page cannot read and which is not the token. A request the cookie authenticates may
change something only with the console's header (CSRF).
"""

from __future__ import annotations

import hashlib
import re
import secrets

from fastapi import Depends, HTTPException, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from common.console_session import CONSOLE_HEADER, cross_site
from coordinator.resources import Account, JobRecord, NodeRecord, Role, RoundRecord

bearer = HTTPBearer(auto_error=False, description="a token from `sovereign coordinator account add`")
SESSION_COOKIE = "sovereign_session"


def new_token() -> str:
    return secrets.token_urlsafe(32)


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def account_for_hash(request: Request, hashed: str | None) -> Account | None:
    """The live account a token hash names, or None (unknown or revoked)."""
    account = request.app.state.store.account_by_token(hashed) if hashed else None
    return None if account is None or account.revoked else account


def account_for_token(request: Request, token: str) -> Account | None:
    return account_for_hash(request, token_hash(token))


def session_account(request: Request) -> Account | None:
    """The live account a console session cookie stands for, or None."""
    session = request.cookies.get(SESSION_COOKIE)
    return account_for_hash(request, request.app.state.sessions.holder(session)) if session else None


def current_account(request: Request, credentials: HTTPAuthorizationCredentials | None = Depends(bearer)) -> Account:
    """The caller: by its bearer token, or by the console's session cookie (then a request
    that changes something must carry the console's header)."""
    if credentials is not None and credentials.scheme.lower() == "bearer":
        account = account_for_token(request, credentials.credentials)
    elif request.cookies.get(SESSION_COOKIE):
        if cross_site(request.method, request.headers.get(CONSOLE_HEADER)):
            raise HTTPException(status.HTTP_403_FORBIDDEN, f"a signed-in console request that changes something needs the "
                                                           f"{CONSOLE_HEADER} header (cross-site requests are refused)")
        account = session_account(request)
    else:
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, "a bearer token is required",
                            headers={"WWW-Authenticate": "Bearer"})
    if account is None:
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, "unknown or revoked token", headers={"WWW-Authenticate": "Bearer"})
    return account


def require(*roles: Role):
    """A dependency: the caller's account, when its role is one of `roles`; else 403."""

    def check(account: Account = Depends(current_account)) -> Account:
        if account.role not in roles:
            raise HTTPException(status.HTTP_403_FORBIDDEN, f"role {account.role.value} may not do this "
                                                           f"(needs {' or '.join(r.value for r in roles)})")
        return account

    return check


def may_see_node(account: Account, node: NodeRecord) -> bool:
    if account.role is Role.BRANCH_IT:
        return node.node_id == account.scope
    if account.role is Role.REGIONAL_ANALYST:
        return node.region == account.scope
    return True


def may_see_job(account: Account, job: JobRecord, regions: dict[str, str | None]) -> bool:
    """`regions`: each invited node's region."""
    invited = [a.node_id for a in job.nodes]
    if account.role is Role.BRANCH_IT:
        return account.scope in invited
    if account.role is Role.REGIONAL_ANALYST:
        return any(regions.get(n) == account.scope for n in invited)
    return True


def launch_refusal(account: Account, nodes: list[str], regions: dict[str, str | None], *, named: bool) -> str | None:
    """Why `account` may not request (or start, or stop) a job of these nodes; None if it may.
    Head office and admins launch anywhere; a regional analyst only within its region.
    `named`: the caller chose these nodes itself (a request), so naming them tells it nothing;
    of an existing job's nodes only the count is said (the others are not its to see)."""
    if account.role is not Role.REGIONAL_ANALYST:
        return None
    outside = [n for n in nodes if regions.get(n) != account.scope]
    if not outside:
        return None
    which = (f"{', '.join(outside[:5])} {'is' if len(outside) == 1 else 'are'}" if named else
             f"{len(outside)} of its nodes {'is' if len(outside) == 1 else 'are'}")
    return f"a regional analyst of {account.scope} may launch only on its region's nodes; {which} not in {account.scope}"


def job_view(account: Account, job: JobRecord, regions: dict[str, str | None]) -> JobRecord:
    """The job as `account` may read it: branch IT sees only its own node's answer, a
    regional analyst only its region's nodes' answers, and each its share of the results."""
    answers = job.nodes
    if account.role is Role.BRANCH_IT:
        answers = [a for a in job.nodes if a.node_id == account.scope]
    elif account.role is Role.REGIONAL_ANALYST:
        answers = [a for a in job.nodes if regions.get(a.node_id) == account.scope]
    hidden = [a.node_id for a in job.nodes if a not in answers]
    steps = [st.model_copy(update={"reason": _redact(st.reason, hidden)}) for st in job.steps] if hidden else job.steps
    return job.model_copy(update={"nodes": answers, "steps": steps, "results": visible_results(account, job.results)})


def _redact(reason: str, node_ids: list[str]) -> str:
    """A step's reason without the ids of nodes the reader may not see (longest first, so
    no id is left half-replaced inside a longer one)."""
    for node_id in sorted(node_ids, key=len, reverse=True):
        # an id ends where no id character follows, or a '.' or '-' that ends the sentence or the word
        reason = re.sub(rf"(?<![A-Za-z0-9_.-]){re.escape(node_id)}(?![A-Za-z0-9_]|[.-][A-Za-z0-9_])", "another node", reason)
    return reason


def visible_results(account: Account, results: dict | None) -> dict | None:
    """What of a job's released results the account may read: head office and compliance all
    of it; a regional analyst only its region's totals; branch IT none (its own branch's
    forecast is on its node, never here)."""
    if results is None:
        return None
    if account.role in (Role.ADMIN, Role.ANALYST, Role.COMPLIANCE):
        return results
    if account.role is Role.REGIONAL_ANALYST:
        regions = (results.get("forecast") or {}).get("regions") or {}
        return {"forecast": {"regions": {account.scope: regions[account.scope]} if account.scope in regions else {}}}
    return None


def rounds_view(account: Account, report: RoundRecord, shown: set[str]) -> RoundRecord:
    """A closed round as `account` may read it: head office and compliance see every node;
    branch IT and a regional analyst only the nodes `job_view` shows them (`shown`), and how
    many others contributed, not who."""
    if account.role not in (Role.BRANCH_IT, Role.REGIONAL_ANALYST):
        return report
    return report.model_copy(update={
        "contributors": [c for c in report.contributors if c in shown],
        "refused": {k: v for k, v in report.refused.items() if k in shown},
        "others_contributing": len([c for c in report.contributors if c not in shown])})
