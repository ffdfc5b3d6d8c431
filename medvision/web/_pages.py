"""What the web pages share: templates, the sign-in guard for pages, the per-app image cache.

Pages and images use the API's one authentication (``medvision.http_deps.get_current_user``:
the ``medvision_session`` cookie set by ``POST /login``). A page answers an unknown caller
with a redirect to the sign-in page instead of the API's bare 401, and a signed-in user
without the role with a readable 403 page; image and JSON routes keep the API's 401/403.
A page that shows a study's data audits it through the same ``Reader`` as the API's reads.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import quote

from fastapi import HTTPException, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from jinja2 import Environment, PackageLoader, select_autoescape

import medvision
from medvision.audit import DbAuditLog
from medvision.auth import Role
from medvision.db import Database
from medvision.findings import key_slice, key_slice_number, slice_number
from medvision.http_deps import Reader, get_current_user, get_reader
from medvision.reports import num, secs, when
from medvision.web._imaging import VolumeCache

#: Who may look at images and findings (the API's RESULT_READERS).
READ_ROLES = (Role.RADIOLOGIST, Role.QA)
QA_ROLES = (Role.QA,)

STATIC_DIR = Path(__file__).parent / "static"

_ENV = Environment(
    loader=PackageLoader("medvision.web", "templates"),
    autoescape=select_autoescape(["html"]),
    trim_blocks=True,
    lstrip_blocks=True,
)
_ENV.filters.update(when=when, secs=secs, num=num)
# One slice numbering on every page (medvision.findings._slices).
_ENV.globals.update(
    key_slice=key_slice, key_slice_number=key_slice_number, slice_number=slice_number
)


def render(request: Request, name: str, status: int = 200, **context: Any) -> HTMLResponse:
    """A template with the signed-in user and the version in its context. Pages are never
    cached: they show live state and patient-related data."""
    user = getattr(request.state, "user", None)
    html = _ENV.get_template(name).render(
        user=user, version=medvision.__version__, request_path=request.url.path, **context
    )
    return HTMLResponse(
        html, status_code=status, headers={"Cache-Control": "no-store", "X-Frame-Options": "DENY"}
    )


def page_reader(
    request: Request, db: Database, audit: DbAuditLog, roles: tuple[Role, ...]
) -> Reader | Response:
    """The signed-in user holding one of ``roles`` (as the ``Reader`` that audits what the
    page shows: ``reader.record(study_uid)``), or the response to send instead."""
    try:
        user = get_current_user(request, db, audit)
    except HTTPException as err:
        if err.status_code != 401:
            raise
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        return RedirectResponse(f"/signin?next={quote(target, safe='')}", status_code=303)
    if not user.has_any(set(roles)):
        names = ", ".join(r.value for r in roles)
        return render(request, "forbidden.html", status=403, needed=names, roles=sorted(user.roles))
    return get_reader(request, user, audit)


def image_cache(request: Request) -> VolumeCache:
    """One decoded-volume cache per app (tests run several apps in one process)."""
    cache = getattr(request.app.state, "web_volume_cache", None)
    if cache is None:
        cache = request.app.state.web_volume_cache = VolumeCache()
    return cache


__all__ = [
    "QA_ROLES",
    "READ_ROLES",
    "STATIC_DIR",
    "image_cache",
    "page_reader",
    "render",
]
