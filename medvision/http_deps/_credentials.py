"""Who is calling, and may they: the one authentication dependency of the API and web pages.

The rules (passwords, tokens, sessions, throttle) are ``medvision.auth``'s; this module
reads the credentials off the HTTP request and answers 401, 403 or 429.

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

Password checks (form and Basic) go through the login throttle (``check_password_throttled``
over ``medvision.auth.LoginThrottle``): too many wrong passwords for one account or from one
address lock it out for a while (429 with ``Retry-After``, even for the right password), and
each lock-out is audited.

No ``from __future__ import annotations``: FastAPI resolves these annotations at runtime.
"""

import base64
import binascii
import math
from typing import Annotated
from urllib.parse import urlsplit

from fastapi import BackgroundTasks, Depends, HTTPException, Request
from fastapi.params import Depends as DependsParam

from medvision.audit import DbAuditLog
from medvision.auth import (
    CurrentUser,
    LoginThrottle,
    Role,
    TokenKind,
    check_password,
    check_token,
    parse_roles,
    session_user,
    touch_token,
)
from medvision.db import Database
from medvision.http_deps._state import AuditDep, DbDep, client_host

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


def cross_site() -> HTTPException:
    """The 403 for a cookie-carrying unsafe request (or a login/logout) from another site."""
    return HTTPException(403, "Cross-site request refused: the Origin is not this host.")


def check_password_throttled(
    db: Database,
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


def same_origin(request: Request) -> bool:
    """Whether the request's ``Origin`` (if any) is this host."""
    origin = request.headers.get("origin")
    if not origin or origin == "null":
        # Browsers send Origin on cross-site POSTs; none means same-site or a non-browser.
        return origin is None
    return urlsplit(origin).netloc == request.headers.get("host", request.url.netloc)


def get_current_user(
    request: Request,
    db: DbDep,
    audit: AuditDep,
    background: BackgroundTasks = None,  # type: ignore[assignment]  # FastAPI injects it
) -> CurrentUser:
    """The authenticated caller, or the prepared 401. Failed header credentials are audited
    as ``user.login_failed`` (the cookie is not: an expired session is no attempt).

    A token's or session's last use is written after the response has gone out, so that a
    read never waits for the database's write lock; called directly (a page's or the
    metrics' own check, without ``background``), at once."""
    header = request.headers.get("authorization")
    if header:
        scheme, _, value = header.partition(" ")
        scheme = scheme.lower()
        user: CurrentUser | None = None
        attempted = "unknown"
        if scheme == "bearer":
            secret = value.strip()
            user = check_token(db, secret, TokenKind.API, "bearer", touch=background is None)
            if user is not None and background is not None:
                background.add_task(touch_token, db, secret)
        elif scheme == "basic" and (pair := _basic(value)) is not None:
            attempted = pair[0][:64]
            throttle = request.app.state.login_throttle
            user = check_password_throttled(db, audit, throttle, request, *pair, method="basic")
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
        secret = request.cookies.get(SESSION_COOKIE, "")
        user = session_user(db, secret, touch=background is None)
        if user is None:
            raise unauthorized()
        if background is not None:
            background.add_task(touch_token, db, secret)
        if request.method not in _SAFE_METHODS and not same_origin(request):
            raise cross_site()
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


__all__ = [
    "SESSION_COOKIE",
    "CurrentUserDep",
    "check_password_throttled",
    "cross_site",
    "get_current_user",
    "require_roles",
    "same_origin",
    "unauthorized",
]
