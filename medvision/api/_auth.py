"""Who is calling, and may they: the one authentication dependency of the API and web pages.

Three ways in, tried in this order:

1. ``Authorization: Bearer <api token>`` - scripts; tokens come from ``medvision users token``;
2. ``Authorization: Basic`` (user + password) - curl, quick checks;
3. the ``medvision_session`` cookie set by ``POST /login`` (form fields ``username``,
   ``password``) and cleared by ``POST /logout`` - the web pages.

Every credential failure gives the same prepared 401 (with ``WWW-Authenticate``), so a
caller cannot tell an unknown user from a wrong password or a disabled account, and a
password check always costs one argon2 verification (a dummy hash for unknown users). A
known user without any of a route's roles gets 403. Guard whole routers::

    router = APIRouter(prefix="/audit", dependencies=[require_roles(Role.QA)])

and read the caller in a route with ``user: CurrentUserDep``. ``get_current_user`` is cached
per request, so the router's guard and the route's parameter authenticate once.

Browser sessions are protected against cross-site requests by ``SameSite=Lax`` and, for
unsafe methods, by refusing an ``Origin`` that is not this host (403); ``/login`` and
``/logout`` check the ``Origin`` too (no login or logout forced from another site).

Password checks (form and Basic) go through the login throttle (``_throttle.py``): too many
wrong passwords for one account or from one address lock it out for a while (429 with
``Retry-After``, even for the right password), and each lock-out is audited.

No ``from __future__ import annotations``: FastAPI resolves these annotations at runtime.
"""

import base64
import binascii
import math
from datetime import timedelta
from typing import Annotated
from urllib.parse import urlsplit

from fastapi import APIRouter, Depends, Form, HTTPException, Request, Response
from fastapi.params import Depends as DependsParam
from fastapi.responses import JSONResponse, RedirectResponse

from medvision.api._deps import AuditDep, DbDep, SettingsDep, ThrottleDep, client_host
from medvision.api._throttle import LoginThrottle
from medvision.api._users import (
    CurrentUser,
    Role,
    TokenKind,
    check_password,
    check_token,
    drop_token,
    new_token,
    parse_roles,
)
from medvision.audit import DbAuditLog

SESSION_COOKIE = "medvision_session"
_CHALLENGE = 'Basic realm="medvision", Bearer realm="medvision"'
_UNAUTHORIZED_DETAIL = (
    "Not authenticated: send an API token (Authorization: Bearer), a user name and password "
    "(HTTP Basic) or log in (POST /login)."
)
_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def unauthorized() -> HTTPException:
    """The one 401 for every credential failure (a fresh instance: exceptions carry state)."""
    return HTTPException(401, _UNAUTHORIZED_DETAIL, headers={"WWW-Authenticate": _CHALLENGE})


def _basic(value: str) -> tuple[str, str] | None:
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None
    name, sep, password = decoded.partition(":")
    return (name, password) if sep else None


def _cross_site() -> HTTPException:
    return HTTPException(403, "Cross-site request refused: the Origin is not this host.")


def _check_password(
    db: DbDep,
    audit: DbAuditLog,
    throttle: LoginThrottle,
    request: Request,
    name: str,
    password: str,
    method: str,
) -> CurrentUser | None:
    """``check_password`` behind the login throttle: 429 while ``name`` or the caller's
    address is locked out (the password is not checked at all); a wrong password is
    counted, and a lock-out it starts is audited as ``user.locked_out``."""
    host = client_host(request)
    account = name[:64]
    lock = throttle.locked(account, host)
    if lock is not None:
        raise HTTPException(
            429,
            "Too many wrong passwords: password sign-in is locked for a while.",
            headers={"Retry-After": str(max(1, math.ceil(lock.retry_after_s)))},
        )
    user = check_password(db, name, password)
    if user is not None:
        throttle.succeeded(account)
        return user
    for started in throttle.failed(account, host):
        limit = throttle.limits[started.kind]
        audit.record(
            "user.locked_out",
            "failure",
            user=account if started.kind == "account" else "",
            client_host=host,
            method=method,
            locked=started.kind,
            lockout_s=throttle.lockout_s,
            reason=f"{limit} wrong passwords for this {started.kind} within "
            f"{throttle.window_s:g} s",
            security_alert=True,
        )
    return None


def _same_origin(request: Request) -> bool:
    origin = request.headers.get("origin")
    if not origin or origin == "null":
        # Browsers send Origin on cross-site POSTs; none means same-site or a non-browser.
        return origin is None
    return urlsplit(origin).netloc == request.headers.get("host", request.url.netloc)


def get_current_user(request: Request, db: DbDep, audit: AuditDep) -> CurrentUser:
    """The authenticated caller, or the prepared 401. Failed header credentials are audited
    as ``user.login_failed`` (the cookie is not: an expired session is no attempt)."""
    header = request.headers.get("authorization")
    if header:
        scheme, _, value = header.partition(" ")
        scheme = scheme.lower()
        user: CurrentUser | None = None
        attempted = "unknown"
        if scheme == "bearer":
            user = check_token(db, value.strip(), TokenKind.API, "bearer")
        elif scheme == "basic" and (pair := _basic(value)) is not None:
            attempted = pair[0][:64]
            throttle = request.app.state.login_throttle
            user = _check_password(db, audit, throttle, request, *pair, method="basic")
        if user is None:
            audit.record(
                "user.login_failed",
                "failure",
                user=attempted,
                method=scheme[:16],
                route=request.url.path,
                client_host=client_host(request),
            )
            raise unauthorized()
    else:
        cookie = request.cookies.get(SESSION_COOKIE, "")
        user = check_token(db, cookie, TokenKind.SESSION, "session") if cookie else None
        if user is None:
            raise unauthorized()
        if request.method not in _SAFE_METHODS and not _same_origin(request):
            raise _cross_site()
    request.state.user = user
    return user


CurrentUserDep = Annotated[CurrentUser, Depends(get_current_user)]


def require_roles(*roles: Role | str) -> DependsParam:
    """A dependency (``Depends(...)``, use it as is) that lets through users holding at least
    one of ``roles`` and answers 403 to the others; 401 comes first for unknown callers.

    Use it in ``APIRouter(dependencies=[...])``, or as a parameter's default /
    ``Annotated`` metadata to also receive the :class:`CurrentUser`.
    """
    wanted = parse_roles(roles)
    if not wanted:
        raise ValueError("require_roles() needs at least one role.")
    names = ", ".join(sorted(r.value for r in wanted))

    def check(user: CurrentUserDep) -> CurrentUser:
        if not user.has_any(wanted):
            raise HTTPException(403, f"This needs one of the roles: {names}.")
        return user

    check.__name__ = "require_" + "_or_".join(sorted(r.value for r in wanted))
    check.roles = wanted  # type: ignore[attr-defined]  # read by docs and the route-guard test
    return Depends(check)


def _local(target: str | None) -> str | None:
    """``next`` only ever redirects within this site (no open redirect)."""
    if target and target.startswith("/") and not target.startswith("//") and "\\" not in target:
        return target
    return None


router = APIRouter(tags=["auth"])


@router.post("/login")
def login(
    request: Request,
    username: Annotated[str, Form()],
    password: Annotated[str, Form()],
    db: DbDep,
    audit: AuditDep,
    settings: SettingsDep,
    throttle: ThrottleDep,
    next: Annotated[str | None, Form()] = None,  # noqa: A002 - the conventional form field
) -> Response:
    """Start a browser session: sets the ``medvision_session`` cookie (HttpOnly,
    SameSite=Lax, Secure over HTTPS). With a local ``next`` path, answers 303 to it.
    403 when the ``Origin`` names another site, 429 while locked out."""
    if not _same_origin(request):
        raise _cross_site()
    user = _check_password(db, audit, throttle, request, username, password, method="form")
    host = client_host(request)
    if user is None:
        audit.record(
            "user.login_failed", "failure", user=username[:64], method="form", client_host=host
        )
        raise HTTPException(
            401, "Wrong user name or password.", headers={"WWW-Authenticate": "Form"}
        )
    ttl = timedelta(seconds=settings.session_ttl_s)
    secret = new_token(db, user.name, TokenKind.SESSION, ttl)
    audit.record("user.login", user=user.name, method="form", client_host=host)
    target = _local(next)
    response: Response = (
        RedirectResponse(target, status_code=303)
        if target
        else JSONResponse({"user": user.name, "roles": sorted(r.value for r in user.roles)})
    )
    response.set_cookie(
        SESSION_COOKIE,
        secret,
        max_age=int(ttl.total_seconds()),
        httponly=True,
        samesite="lax",
        secure=request.url.scheme == "https",
        path="/",
    )
    return response


@router.post("/logout")
def logout(
    request: Request,
    db: DbDep,
    audit: AuditDep,
    next: Annotated[str | None, Form()] = None,  # noqa: A002
) -> Response:
    """End the browser session (harmless without one); 403 when the ``Origin`` names
    another site."""
    if not _same_origin(request):
        raise _cross_site()
    cookie = request.cookies.get(SESSION_COOKIE, "")
    user = check_token(db, cookie, TokenKind.SESSION, "session") if cookie else None
    if user is not None:
        drop_token(db, cookie)
        audit.record("user.logout", user=user.name, client_host=client_host(request))
    target = _local(next)
    response: Response = (
        RedirectResponse(target, status_code=303) if target else Response(status_code=204)
    )
    response.delete_cookie(SESSION_COOKIE, path="/")
    return response


__all__ = [
    "SESSION_COOKIE",
    "CurrentUser",
    "CurrentUserDep",
    "Role",
    "get_current_user",
    "require_roles",
    "router",
    "unauthorized",
]
