"""The node's REST API: what a PACS administrator, a reviewer or a script asks the node.

``router`` gathers the API's routers; ``medvision.server.create_app`` mounts it beside the
web pages. Each router is guarded as a whole by ``require_roles`` (``medvision.http_deps``),
and only the server's ``PUBLIC_PATHS`` answer without credentials. The database is the
single source of truth: the API reads it, records reviewers' feedback, and never changes
job state behind the node's back. See docs/api.md.

No ``from __future__ import annotations``: FastAPI resolves these annotations at runtime.
"""

from fastapi import APIRouter
from sqlalchemy import select

import medvision
from medvision.api import (
    _admin,
    _audit_api,
    _feedback,
    _metrics,
    _results,
    _sessions,
    _studies,
    _workers,
)
from medvision.http_deps import DbDep

router = APIRouter()


@router.get("/health", tags=["health"])
def health(db: DbDep) -> dict[str, str]:
    """Liveness and database reachability; public, says nothing about patients."""
    with db.read() as session:
        session.execute(select(1))
    return {"status": "ok", "version": medvision.__version__}


for _part in (
    _sessions.router,
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
    router.include_router(_part)


__all__ = ["router"]
