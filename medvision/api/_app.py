"""The node's REST API: what a PACS administrator, a reviewer or a script asks the node.

``create_app`` assembles the routers; each router is guarded as a whole by
``require_roles`` (``_auth.py``), and only ``PUBLIC_PATHS`` answer without credentials.
The database is the single source of truth: the API reads it, records reviewers'
feedback, and never changes job state behind the node's back. See docs/api.md.
"""

from __future__ import annotations

from fastapi import FastAPI
from sqlalchemy import select

import medvision
from medvision.api import (
    _admin,
    _audit_api,
    _auth,
    _feedback,
    _metrics,
    _results,
    _studies,
    _workers,
)
from medvision.api._limits import BodyLimit
from medvision.api._throttle import LoginThrottle
from medvision.audit import DbAuditLog
from medvision.config import Settings, load_settings
from medvision.db import Database

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
    """The API on ``db``; ``settings`` default to the environment's."""
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

    @app.get("/health", tags=["health"])
    def health() -> dict[str, str]:
        """Liveness and database reachability; public, says nothing about patients."""
        with db.session() as session:
            session.execute(select(1))
        return {"status": "ok", "version": medvision.__version__}

    for router in (
        _auth.router,
        _studies.studies,
        _studies.jobs,
        _workers.router,
        _results.findings,
        _results.results,
        _feedback.router,
        _audit_api.router,
        _metrics.router,
        _admin.router,
    ):
        app.include_router(router)
    # The web pages (medvision/web: viewer, QA, reports). Imported here, not at the top:
    # medvision.web imports the API's auth, so a top-level import would be circular.
    from medvision.web import web_router

    app.include_router(web_router)
    # Outside routing, authentication and body parsing: an oversized body is refused before
    # any of them reads it (see _limits.py).
    app.add_middleware(BodyLimit, max_bytes=config.http_max_body_bytes)
    return app


__all__ = ["PUBLIC_PATHS", "create_app"]
