"""The composition root: one FastAPI app with the REST API and the web pages on it.

``medvision.api`` and ``medvision.web`` each offer a router and import neither each other
nor this module; both reach the app's database, settings, audit log and login throttle
through ``medvision.http_deps``, which reads them off ``app.state`` where ``create_app``
puts them.
"""

from __future__ import annotations

from fastapi import FastAPI

import medvision
from medvision.api import BodyLimit, api_router
from medvision.audit import DbAuditLog
from medvision.auth import LoginThrottle
from medvision.config import Settings, load_settings
from medvision.db import Database
from medvision.web import web_router

#: Paths that need no credentials (the route-guard test holds every other route to 401).
#: ``/signin`` is the web pages' login form; ``/assets/...`` their static files.
PUBLIC_PATHS = frozenset(
    {
        "/health",
        "/login",
        "/logout",
        "/signin",
        "/docs",
        "/docs/oauth2-redirect",
        "/redoc",
        "/openapi.json",
    }
)


def create_app(db: Database, settings: Settings | None = None) -> FastAPI:
    """The API and the web pages on ``db``; ``settings`` default to the environment's."""
    app = FastAPI(
        title="medvision",
        version=medvision.__version__,
        description="DICOM AI node: studies, jobs, findings, results, reviewer feedback, "
        "audit trail. Authenticate with an API token (Bearer), HTTP Basic or POST /login.",
    )
    app.state.db = db
    app.state.settings = settings or load_settings()
    app.state.audit = DbAuditLog(db)
    config = app.state.settings
    app.state.login_throttle = LoginThrottle(
        max_per_account=config.login_max_failures_per_account,
        max_per_host=config.login_max_failures_per_host,
        window_s=config.login_failure_window_s,
        lockout_s=config.login_lockout_s,
    )
    app.include_router(api_router)
    app.include_router(web_router)
    # Outside routing, authentication and body parsing: an oversized body is refused before
    # any of them reads it (see medvision/api/_limits.py).
    app.add_middleware(BodyLimit, max_bytes=config.http_max_body_bytes)
    return app


__all__ = ["PUBLIC_PATHS", "create_app"]
