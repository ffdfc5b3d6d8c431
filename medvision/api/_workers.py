"""The node's processes as they last reported themselves: Celery workers (scale-out, the
``workers`` table, ``kind="celery"``), DICOM acceptor processes (the ``acceptors`` table,
``kind="acceptor"``, with their receive counters in ``acceptor``) and the receivers of a
database shared by several (the ``receivers`` table, ``kind="receiver"``, with the number
of studies each has on their way into the index in ``receiver``; docs/scaling.md).

Operational data only (hosts, devices, model versions, job ids, counts; no UIDs), guarded
like ``/jobs``. ``alive`` is computed here from the heartbeat and ``worker_stale_s``, the
same rule the receiver's sweep uses to requeue a dead worker's job; an acceptor is alive
while it is starting or serving and reports in time; a receiver by
:func:`medvision.node.receiver_state`, the rule every receiver's assembler applies to the
others' busy studies.

No ``from __future__ import annotations``: FastAPI resolves these annotations at runtime.
"""

from datetime import datetime, timedelta
from typing import Any

from fastapi import APIRouter, Request
from pydantic import BaseModel, Field
from sqlalchemy import select

from medvision.api._studies import READERS
from medvision.db import Acceptor, Receiver, Worker, as_utc, utcnow
from medvision.http_deps import DbDep, require_roles
from medvision.node import receiver_state

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


class ReceiverStats(BaseModel):
    """A receiver's own report (``medvision serve`` with a ``node_name``, docs/scaling.md).

    ``busy_studies``: studies with instances it has acknowledged and not yet indexed. While
    it is alive no receiver's assembler completes them; a dead receiver's are in its
    journal, indexed when a receiver of its ``node_name`` starts again; a stopped one has
    none.
    """

    busy_studies: int


class WorkerOut(BaseModel):
    """One of the node's processes, as it last reported itself.

    ``kind``: ``celery`` (a worker that runs jobs: ``device``, ``models``,
    ``current_job_id``, ``jobs_done``), ``acceptor`` (a DICOM acceptor process, its counters
    in ``acceptor``) or ``receiver`` (a ``medvision serve`` with a ``node_name``, one of
    several on this database, its report in ``receiver``); the fields of another kind are
    empty or 0. ``state`` is what the process last wrote; ``alive`` says whether it is in a
    running state and was heard from within ``worker_stale_s`` (a receiver killed while
    serving stays ``serving`` with ``alive`` false: dead).
    """

    #: ``celery`` (runs jobs), ``acceptor`` (receives DICOM, docs/node.md) or ``receiver``
    #: (one of several ``medvision serve`` on one database, docs/scaling.md).
    kind: str = "celery"
    name: str
    host: str
    pid: int
    state: str
    started_at: datetime
    heartbeat_at: datetime
    alive: bool
    device: str = ""
    models: dict[str, Any] = Field(default_factory=dict)
    current_job_id: int | None = None
    jobs_done: int = 0
    acceptor: AcceptorStats | None = None
    receiver: ReceiverStats | None = None


#: Acceptor states that mean "running" (else restarting or stopped).
ACCEPTOR_LIVE_STATES = ("starting", "serving")


@router.get("", response_model=list[WorkerOut])
def list_workers(request: Request, db: DbDep) -> list[WorkerOut]:
    """Celery workers, then acceptor processes, then receivers."""
    stale_s = request.app.state.settings.worker_stale_s
    cutoff = utcnow() - timedelta(seconds=stale_s)
    with db.read() as session:
        workers = list(session.scalars(select(Worker).order_by(Worker.id)))
        acceptors = list(session.scalars(select(Acceptor).order_by(Acceptor.name)))
        receivers = list(session.scalars(select(Receiver).order_by(Receiver.name)))
        return [
            *(_worker_out(w, cutoff) for w in workers),
            *(_acceptor_out(a, cutoff) for a in acceptors),
            *(_receiver_out(r, cutoff) for r in receivers),
        ]


def _worker_out(w: Worker, cutoff: datetime) -> WorkerOut:
    return WorkerOut(
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


def _acceptor_out(a: Acceptor, cutoff: datetime) -> WorkerOut:
    return WorkerOut(
        kind="acceptor",
        name=a.name,
        host=a.host,
        pid=a.pid,
        state=a.state,
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


def _receiver_out(r: Receiver, cutoff: datetime) -> WorkerOut:
    return WorkerOut(
        kind="receiver",
        name=r.name,
        host=r.host,
        pid=r.pid,
        state=r.state,
        started_at=as_utc(r.started_at),
        heartbeat_at=as_utc(r.heartbeat_at),
        alive=receiver_state(r.state, r.heartbeat_at, cutoff) == "serving",
        receiver=ReceiverStats(busy_studies=len(r.busy or [])),
    )


__all__ = ["ACCEPTOR_LIVE_STATES", "AcceptorStats", "ReceiverStats", "WorkerOut", "router"]
