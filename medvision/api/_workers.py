"""The node's processes as they last reported themselves: Celery workers (scale-out, the
``workers`` table, ``kind="celery"``) and DICOM acceptor processes (the ``acceptors`` table,
``kind="acceptor"``, with their receive counters in ``acceptor``).

Operational data only (hosts, devices, model versions, job ids), guarded like ``/jobs``.
``alive`` is computed here from the heartbeat and ``worker_stale_s``, the same rule the
receiver's sweep uses to requeue a dead worker's job; an acceptor is alive while it is
starting or serving and reports in time.

No ``from __future__ import annotations``: FastAPI resolves these annotations at runtime.
"""

from datetime import datetime, timedelta
from typing import Any

from fastapi import APIRouter, Request
from pydantic import BaseModel
from sqlalchemy import select

from medvision.api._studies import READERS
from medvision.db import Acceptor, Worker, utcnow
from medvision.http_deps import DbDep, require_roles
from medvision.jobs._queue import as_utc

router = APIRouter(prefix="/workers", tags=["workers"], dependencies=[require_roles(*READERS)])


class AcceptorStats(BaseModel):
    """An acceptor process's counts, over every process that has served its slot."""

    slot: int
    restarts: int
    associations: int
    active_associations: int
    instances: int
    duplicates: int
    refused: int
    bytes_received: int


class WorkerOut(BaseModel):
    #: ``celery`` (runs jobs) or ``acceptor`` (receives DICOM, docs/node.md).
    kind: str = "celery"
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
    acceptor: AcceptorStats | None = None


#: Acceptor states that mean "running" (else restarting or stopped).
ACCEPTOR_LIVE_STATES = ("starting", "serving")


@router.get("", response_model=list[WorkerOut])
def list_workers(request: Request, db: DbDep) -> list[WorkerOut]:
    stale_s = request.app.state.settings.worker_stale_s
    cutoff = utcnow() - timedelta(seconds=stale_s)
    with db.read() as session:
        rows = list(session.scalars(select(Worker).order_by(Worker.id)))
        acceptors = list(session.scalars(select(Acceptor).order_by(Acceptor.name)))
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
        ] + [
            WorkerOut(
                kind="acceptor",
                name=a.name,
                host=a.host,
                pid=a.pid,
                device="",
                models={},
                state=a.state,
                current_job_id=None,
                jobs_done=0,
                started_at=as_utc(a.started_at),
                heartbeat_at=as_utc(a.heartbeat_at),
                alive=a.state in ACCEPTOR_LIVE_STATES and as_utc(a.heartbeat_at) > cutoff,
                acceptor=AcceptorStats(
                    slot=a.slot,
                    restarts=a.restarts,
                    associations=a.associations,
                    active_associations=a.active_associations,
                    instances=a.instances,
                    duplicates=a.duplicates,
                    refused=a.refused,
                    bytes_received=a.bytes_received,
                ),
            )
            for a in acceptors
        ]


__all__ = ["ACCEPTOR_LIVE_STATES", "AcceptorStats", "WorkerOut", "router"]
