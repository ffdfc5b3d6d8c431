"""Shared FastAPI dependencies: the database, settings and audit log of the running app.

``create_app`` puts them on ``app.state``; routes (and the web pages) reach them through
these functions, so tests can swap any of them with ``app.dependency_overrides``.

No ``from __future__ import annotations``: FastAPI reads these annotations at runtime.
"""

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.orm import Session

from medvision.api._throttle import LoginThrottle
from medvision.audit import DbAuditLog
from medvision.config import Settings
from medvision.db import Database


def get_db(request: Request) -> Database:
    return request.app.state.db


def get_settings(request: Request) -> Settings:
    return request.app.state.settings


def get_audit(request: Request) -> DbAuditLog:
    return request.app.state.audit


def get_throttle(request: Request) -> LoginThrottle:
    return request.app.state.login_throttle


def get_session(db: Annotated[Database, Depends(get_db)]) -> Iterator[Session]:
    """One transaction per request: committed when the route returns, rolled back on error.

    Only for routes that do nothing else with the database: on SQLite the per-process
    lock of ``Database.session`` is taken in the thread that runs this dependency, so an
    audit record or another ``db.session()`` inside the route (another thread) would wait
    for it forever. Routes that audit take ``DbDep`` and open short sessions themselves.
    """
    with db.session() as session:
        yield session


DbDep = Annotated[Database, Depends(get_db)]
SettingsDep = Annotated[Settings, Depends(get_settings)]
AuditDep = Annotated[DbAuditLog, Depends(get_audit)]
ThrottleDep = Annotated[LoginThrottle, Depends(get_throttle)]
SessionDep = Annotated[Session, Depends(get_session)]


def client_host(request: Request) -> str:
    """The peer address for audit events (no PHI)."""
    return request.client.host if request.client else ""


def record_read(
    audit: DbAuditLog, request: Request, study_uid: str | None, **fields: object
) -> None:
    """``api.read``: who read which study's data through which route (AUD-02, GDPR access
    control on patient data). The route template is recorded, not the URL, so no query
    string or free text reaches the audit trail."""
    user = getattr(request.state, "user", None)
    route = request.scope.get("route")
    audit.record(
        "api.read",
        study_instance_uid=study_uid,
        user=user.name if user is not None else "anonymous",
        route=f"{request.method} {getattr(route, 'path', request.url.path)}",
        client_host=client_host(request),
        **fields,
    )


__all__ = [
    "AuditDep",
    "DbDep",
    "SessionDep",
    "SettingsDep",
    "ThrottleDep",
    "client_host",
    "record_read",
    "get_audit",
    "get_db",
    "get_session",
    "get_settings",
    "get_throttle",
]
