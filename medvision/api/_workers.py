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

from datetime import datetime
from typing import Any

from fastapi import APIRouter, Request
from pydantic import BaseModel, Field
from sqlalchemy import select

from medvision.api._studies import READERS
from medvision.db import Acceptor, Receiver, Worker, as_utc, heartbeat_state, stale_cutoff
from medvision.http_deps import DbDep, require_roles
from medvision.node import ACCEPTOR_RUNNING_STATES, receiver_state

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


@router.get("", response_model=list[WorkerOut])
def list_workers(request: Request, db: DbDep) -> list[WorkerOut]:
    """Celery workers, then acceptor processes, then receivers."""
    cutoff = stale_cutoff(request.app.state.settings.worker_stale_s)
    with db.read() as session:
        workers = list(session.scalars(select(Worker).order_by(Worker.id)))
        acceptors = list(session.scalars(select(Acceptor).order_by(Acceptor.name)))
        receivers = list(session.scalars(select(Receiver).order_by(Receiver.name)))
        return [
            *(_worker_out(w, cutoff) for w in workers),
            *(_acceptor_out(a, cutoff) for a in acceptors),
            *(_receiver_out(r, cutoff) for r in receivers),
        ]


def _process(row: Worker | Acceptor | Receiver, kind: str, alive: bool) -> dict[str, Any]:
    """What every kind of process reports of itself."""
    return {
        "kind": kind,
        "name": row.name,
        "host": row.host,
        "pid": row.pid,
        "state": row.state,
        "started_at": as_utc(row.started_at),
        "heartbeat_at": as_utc(row.heartbeat_at),
        "alive": alive,
    }


def _worker_out(w: Worker, cutoff: datetime) -> WorkerOut:
    alive = heartbeat_state(w.state, w.heartbeat_at, cutoff) not in ("stopped", "dead")
    return WorkerOut(
        **_process(w, "celery", alive),
        device=w.device,
        models=w.models,
        current_job_id=w.current_job_id,
        jobs_done=w.jobs_done,
    )


def _acceptor_out(a: Acceptor, cutoff: datetime) -> WorkerOut:
    state = heartbeat_state(a.state, a.heartbeat_at, cutoff, ACCEPTOR_RUNNING_STATES)
    alive = state in ACCEPTOR_RUNNING_STATES
    counts = {name: getattr(a, name) for name in AcceptorStats.model_fields}
    return WorkerOut(**_process(a, "acceptor", alive), acceptor=AcceptorStats(**counts))


def _receiver_out(r: Receiver, cutoff: datetime) -> WorkerOut:
    alive = receiver_state(r.state, r.heartbeat_at, cutoff) == "serving"
    busy = ReceiverStats(busy_studies=len(r.busy or []))
    return WorkerOut(**_process(r, "receiver", alive), receiver=busy)


__all__ = ["AcceptorStats", "ReceiverStats", "WorkerOut", "router"]
