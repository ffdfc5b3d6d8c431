"""The running app's database, settings, audit log and login throttle, as dependencies.

``medvision.server.create_app`` puts them on ``app.state``; the API's routes and the web
pages reach them through these functions, so tests can swap any of them with
``app.dependency_overrides``.

No ``from __future__ import annotations``: FastAPI reads these annotations at runtime.
"""

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.orm import Session

from medvision.audit import DbAuditLog
from medvision.auth import LoginThrottle
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


__all__ = [
    "AuditDep",
    "DbDep",
    "SessionDep",
    "SettingsDep",
    "ThrottleDep",
    "client_host",
    "get_audit",
    "get_db",
    "get_session",
    "get_settings",
    "get_throttle",
]
