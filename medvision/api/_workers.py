"""Celery workers (scale-out) as they last reported themselves in the ``workers`` table.

Operational data only (hosts, devices, model versions, job ids), guarded like ``/jobs``.
``alive`` is computed here from the heartbeat and ``worker_stale_s``, the same rule the
receiver's sweep uses to requeue a dead worker's job.

No ``from __future__ import annotations``: FastAPI resolves these annotations at runtime.
"""

from datetime import datetime, timedelta
from typing import Any

from fastapi import APIRouter, Request
from pydantic import BaseModel
from sqlalchemy import select

from medvision.api._studies import READERS
from medvision.db import Worker, utcnow
from medvision.http_deps import DbDep, require_roles
from medvision.jobs._queue import as_utc

router = APIRouter(prefix="/workers", tags=["workers"], dependencies=[require_roles(*READERS)])


class WorkerOut(BaseModel):
    name: str
    host: str
    pid: int
    device: str
    models: dict[str, Any]
    state: str
    current_job_id: int | None
    jobs_done: int
    started_at: datetime
    heartbeat_at: datetime
    alive: bool


@router.get("", response_model=list[WorkerOut])
def list_workers(request: Request, db: DbDep) -> list[WorkerOut]:
    stale_s = request.app.state.settings.worker_stale_s
    cutoff = utcnow() - timedelta(seconds=stale_s)
    with db.session() as session:
        rows = list(session.scalars(select(Worker).order_by(Worker.id)))
        return [
            WorkerOut(
                name=w.name,
                host=w.host,
                pid=w.pid,
                device=w.device,
                models=w.models,
                state=w.state,
                current_job_id=w.current_job_id,
                jobs_done=w.jobs_done,
                started_at=as_utc(w.started_at),
                heartbeat_at=as_utc(w.heartbeat_at),
                alive=w.state != "stopped" and as_utc(w.heartbeat_at) > cutoff,
            )
            for w in rows
        ]


__all__ = ["WorkerOut", "router"]
