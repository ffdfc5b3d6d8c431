"""``POST /login`` and ``POST /logout``: browser sessions for the web pages (and scripts).

The session id is a ``medvision.auth`` session secret, carried in the ``medvision_session``
cookie (HttpOnly, SameSite=Lax, Secure over HTTPS); the password check goes through the
login throttle like HTTP Basic does (``medvision.http_deps``). Both routes refuse an
``Origin`` that names another site, so no login or logout can be forced from elsewhere.

No ``from __future__ import annotations``: FastAPI resolves these annotations at runtime.
"""

from datetime import timedelta
from typing import Annotated

from fastapi import APIRouter, Form, HTTPException, Request, Response
from fastapi.responses import JSONResponse, RedirectResponse

from medvision.auth import end_session, start_session
from medvision.http_deps import (
    SESSION_COOKIE,
    AuditDep,
    DbDep,
    SettingsDep,
    ThrottleDep,
    check_password_throttled,
    client_host,
    cross_site,
    same_origin,
)


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
    if not same_origin(request):
        raise cross_site()
    user = check_password_throttled(db, audit, throttle, request, username, password, method="form")
    host = client_host(request)
    if user is None:
        audit.record(
            "user.login_failed", "failure", user=username[:64], method="form", client_host=host
        )
        raise HTTPException(
            401, "Wrong user name or password.", headers={"WWW-Authenticate": "Form"}
        )
    ttl = timedelta(seconds=settings.session_ttl_s)
    secret = start_session(db, user.name, ttl)
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
    if not same_origin(request):
        raise cross_site()
    user = end_session(db, request.cookies.get(SESSION_COOKIE, ""))
    if user is not None:
        audit.record("user.logout", user=user.name, client_host=client_host(request))
    target = _local(next)
    response: Response = (
        RedirectResponse(target, status_code=303) if target else Response(status_code=204)
    )
    response.delete_cookie(SESSION_COOKIE, path="/")
    return response


__all__ = ["router"]
