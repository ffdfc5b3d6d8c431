"""The job queue lives in the database: claiming is an atomic state change on the row.

Whatever executes a job (the embedded worker pool, or Celery workers with the `scale`
extra), it only runs what the database says is due, and a claim succeeds for exactly one
worker.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import TypeVar

from sqlalchemy import select, update
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.orm import Session

from medvision.db import (
    Database,
    Job,
    JobState,
    Outbox,
    OutboxState,
    Study,
    StudyState,
    Worker,
    utcnow,
)

#: A job that failed this many times stays failed.
MAX_ATTEMPTS = 3

#: How long :func:`retry_db` keeps trying while the database is unreachable. A worker
#: holding a finished job must not give up early: its claim would stay "running" while its
#: heartbeat says it is alive, so no sweep would ever queue the job again.
DB_RETRY_S = 900.0

LOG = logging.getLogger("medvision.jobs")
T = TypeVar("T")


def is_db_unavailable(err: BaseException) -> bool:
    """True for the errors of a database that went away (restart, fail-over, network):
    the connection was cut or cannot be made. Retrying the whole transaction is then safe."""
    if isinstance(err, OperationalError | InterfaceError):
        return True
    return isinstance(err, DBAPIError) and err.connection_invalidated


def log_pass_failure(log: logging.Logger, what: str, err: Exception) -> None:
    """For the node's loops (assembly, sweep, sender), which retry at every pass: one line
    while the database is away (restart, fail-over), since a traceback per pass would bury
    everything else in the log; the full traceback for anything else."""
    if is_db_unavailable(err):
        first = next(iter(str(err).splitlines()), type(err).__name__)
        log.error("%s pass failed, database unavailable; retrying: %s", what, first)
    else:
        log.error("%s pass failed; retrying", what, exc_info=err)


def retry_db(fn: Callable[[], T], what: str, retry_for_s: float = DB_RETRY_S) -> T:
    """Run the transaction ``fn`` again (backing off up to 5 s) while the database is
    unavailable, for at most ``retry_for_s``; any other error is raised at once.

    ``fn`` must be one whole transaction that may run twice: if the connection broke after
    the commit reached the server, the second run finds the work done (every caller checks
    the row's state first). The engine's ``pool_pre_ping`` replaces the dead pooled
    connections, so the retry gets a fresh one once the server is back.
    """
    deadline = time.monotonic() + retry_for_s
    delay = 0.2
    while True:
        try:
            return fn()
        except Exception as err:
            if not is_db_unavailable(err) or time.monotonic() + delay > deadline:
                raise
            LOG.warning("database unavailable while %s (retrying in %.1f s): %s", what, delay, err)
            time.sleep(delay)
            delay = min(delay * 2, 5.0)


def as_utc(dt: datetime) -> datetime:
    """SQLite returns naive datetimes; every time we store is UTC."""
    return dt if dt.tzinfo is not None else dt.replace(tzinfo=UTC)


def claim_next(db: Database, worker: str) -> Job | None:
    """Atomically move the oldest queued job to running and return it."""
    while True:
        with db.session() as session:
            job_id = session.scalar(
                select(Job.id).where(Job.state == JobState.QUEUED).order_by(Job.id).limit(1)
            )
            if job_id is None:
                return None
            job = _claim(session, job_id, worker)
            if job is not None:
                return job
        # Another worker took it between the select and the update: try the next one.


def claim_job(db: Database, job_id: int, worker: str) -> Job | None:
    """Atomically move job ``job_id`` from queued to running for ``worker``.

    What a Celery task does with the id it was given: None (do nothing) unless the job is
    queued right now, so a duplicate or late message never runs a job twice.
    """
    with db.session() as session:
        return _claim(session, job_id, worker)


def _claim(session: Session, job_id: int, worker: str) -> Job | None:
    """The one conditional update both ways of claiming rely on: queued → running, or
    nothing when the job is not queued any more."""
    claimed = session.execute(
        update(Job)
        .where(Job.id == job_id, Job.state == JobState.QUEUED)
        .values(
            state=JobState.RUNNING,
            attempts=Job.attempts + 1,
            started_at=utcnow(),
            worker=worker,
        )
    ).rowcount
    if claimed != 1:
        return None
    job = session.get(Job, job_id)
    assert job is not None
    session.refresh(job)
    _refresh_study_state(session, job.study_instance_uid)
    return job


def take_due_for_publish(
    db: Database, older_than_s: float, messages_waiting: int | None = None
) -> list[int]:
    """Queued jobs never published, or published more than ``older_than_s`` ago and still
    not claimed (the message may be lost): marked published now, ids returned to publish.

    ``messages_waiting`` is the broker queue's ready-message count when known: if it is at
    least the number of queued jobs, no message can be missing (each queued job was
    published), and only never-published jobs are due. That keeps a long backlog of jobs
    waiting for busy workers from being re-published every ``older_than_s``.
    """
    cutoff = utcnow() - timedelta(seconds=older_than_s)
    with db.session() as session:
        queued = list(session.scalars(select(Job).where(Job.state == JobState.QUEUED)))
        maybe_lost = messages_waiting is None or messages_waiting < len(queued)
        jobs = [
            j
            for j in queued
            if j.published_at is None or (maybe_lost and as_utc(j.published_at) <= cutoff)
        ]
        now = utcnow()
        for job in jobs:
            job.published_at = now
        return [j.id for j in jobs]


def requeue_stale(db: Database, stale_s: float) -> list[int]:
    """Queue again the running jobs of workers silent for ``stale_s`` (taken for dead).

    A worker killed with SIGKILL leaves its job running; its message goes back to the
    broker, but the task that gets it finds the job not queued and does nothing. This is
    what brings the job back. A job without a worker row is judged by its start time.
    Every receiver of a database may sweep at once: see :func:`take_back`.
    """
    cutoff = utcnow() - timedelta(seconds=stale_s)
    with db.session() as session:
        beats = {w.name: as_utc(w.heartbeat_at) for w in session.scalars(select(Worker))}
        stale = [
            j
            for j in session.scalars(select(Job).where(Job.state == JobState.RUNNING))
            if beats.get(j.worker, as_utc(j.started_at or utcnow())) <= cutoff
        ]
    return take_back(db, stale, "worker {worker} stopped reporting", "worker {worker} lost")


def take_back(db: Database, jobs: list[Job], why: str, lost: str) -> list[int]:
    """Queue ``jobs`` (read as running) again, or fail those at :data:`MAX_ATTEMPTS`;
    returns the ids queued. ``why``/``lost`` format the reason ({worker}).

    Each is taken back only if it is still the same claim (running, same worker, same
    start) at the moment of the update: two receivers sweeping at once, or a sweep and a
    worker that claimed the job again meanwhile, must never make it run twice.
    """
    requeued: list[int] = []
    for job in jobs:
        give_up = job.attempts >= MAX_ATTEMPTS
        values: dict[str, object] = (
            {
                "state": JobState.FAILED,
                "reason": f"{lost.format(worker=job.worker)} {job.attempts} times; giving up",
                "finished_at": utcnow(),
            }
            if give_up
            else {
                "state": JobState.QUEUED,
                "reason": f"requeued: {why.format(worker=job.worker)}",
                "published_at": None,
            }
        )
        with db.session() as session:
            taken = session.execute(
                update(Job)
                .where(
                    Job.id == job.id,
                    Job.state == JobState.RUNNING,
                    Job.worker == job.worker,
                    Job.started_at == job.started_at,
                )
                .values(**values)
            ).rowcount
            if taken == 1:
                _refresh_study_state(session, job.study_instance_uid)
        if taken == 1 and not give_up:
            requeued.append(job.id)
    return requeued


def recover_orphans(db: Database, worker_prefix: str | None = None) -> int:
    """Requeue jobs left running by a crashed process (all of them when prefix is None)."""
    with db.session() as session:
        query = select(Job).where(Job.state == JobState.RUNNING)
        if worker_prefix is not None:
            query = query.where(Job.worker.startswith(worker_prefix))
        jobs = list(session.scalars(query))
        for job in jobs:
            if job.attempts >= MAX_ATTEMPTS:
                job.state = JobState.FAILED
                job.reason = f"interrupted {job.attempts} times; giving up"
                job.finished_at = utcnow()
            else:
                job.state = JobState.QUEUED
                job.reason = "requeued after the node stopped while it was running"
            _refresh_study_state(session, job.study_instance_uid)
        return len(jobs)


def refresh_study_state(db: Database, study_uid: str) -> str:
    with db.session() as session:
        return _refresh_study_state(session, study_uid)


def _refresh_study_state(session, study_uid: str) -> str:  # noqa: ANN001 - Session
    """Derive the study's state from its current version's jobs and deliveries."""
    study = session.scalar(select(Study).where(Study.study_instance_uid == study_uid))
    if study is None or study.state in (StudyState.RECEIVING, StudyState.COMPLETE):
        return study.state if study else ""
    jobs = list(
        session.scalars(
            select(Job).where(
                Job.study_instance_uid == study_uid, Job.study_version == study.version
            )
        )
    )
    states = {j.state for j in jobs}
    if not jobs:
        new = StudyState.FAILED
    elif JobState.RUNNING in states:
        new = StudyState.RUNNING
    elif JobState.QUEUED in states:
        new = StudyState.QUEUED
    elif JobState.DONE not in states:
        new = StudyState.FAILED
        study.reason = "; ".join(f"{j.pipeline}: {j.reason}" for j in jobs if j.reason)
    else:
        job_ids = [j.id for j in jobs if j.state == JobState.DONE]
        out = list(session.scalars(select(Outbox).where(Outbox.job_id.in_(job_ids))))
        pending = [o for o in out if o.state == OutboxState.PENDING]
        failed = [o for o in out if o.state == OutboxState.FAILED]
        if not out:
            new = StudyState.DONE
        elif failed or any(o.attempts > 0 for o in pending):
            new = StudyState.SEND_FAILED
            study.reason = next((o.last_error for o in failed + pending if o.last_error), "")
        elif pending:
            new = StudyState.DONE
        else:
            new = StudyState.SENT
            study.reason = ""
    study.state = new
    return new


__all__ = [
    "DB_RETRY_S",
    "MAX_ATTEMPTS",
    "as_utc",
    "claim_job",
    "claim_next",
    "is_db_unavailable",
    "recover_orphans",
    "refresh_study_state",
    "requeue_stale",
    "retry_db",
    "take_back",
    "take_due_for_publish",
]
