"""The job queue lives in the database: claiming is an atomic state change on the row.

Whatever executes a job (the embedded worker pool, or Celery workers with the `scale`
extra), it only runs what the database says is due, and a claim succeeds for exactly one
worker.
"""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from medvision.db import Database, Job, JobState, Worker, as_utc, utcnow
from medvision.lifecycle import transition_job

#: A job that failed this many times stays failed.
MAX_ATTEMPTS = 3


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
    """The one transition both ways of claiming rely on: queued → running (the study's
    state follows), or nothing when the job is not queued any more."""
    claimed = transition_job(
        session,
        job_id,
        JobState.RUNNING,
        attempts=Job.attempts + 1,
        started_at=utcnow(),
        worker=worker,
    )
    if not claimed:
        return None
    job = session.get(Job, job_id)
    assert job is not None
    session.refresh(job)
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
        to, values = (
            (
                JobState.FAILED,
                {
                    "reason": f"{lost.format(worker=job.worker)} {job.attempts} times; giving up",
                    "finished_at": utcnow(),
                },
            )
            if give_up
            else (
                JobState.QUEUED,
                {"reason": f"requeued: {why.format(worker=job.worker)}", "published_at": None},
            )
        )
        with db.session() as session:
            # Still the same claim: running (the table's only way to either), same worker,
            # same start.
            taken = transition_job(
                session,
                job,
                to,
                where=[Job.worker == job.worker, Job.started_at == job.started_at],
                **values,
            )
        if taken and not give_up:
            requeued.append(job.id)
    return requeued


def recover_orphans(db: Database, worker_prefix: str | None = None) -> int:
    """Requeue jobs left running by a crashed process (all of them when prefix is None);
    how many were taken back."""
    with db.session() as session:
        query = select(Job).where(Job.state == JobState.RUNNING)
        if worker_prefix is not None:
            query = query.where(Job.worker.startswith(worker_prefix))
        taken = 0
        # By study, in UID order: each transition locks its study and holds it to the end
        # of this transaction (the lifecycle's lock order).
        query = query.order_by(Job.study_instance_uid, Job.id)
        for job in list(session.scalars(query)):
            if job.attempts >= MAX_ATTEMPTS:
                taken += transition_job(
                    session,
                    job,
                    JobState.FAILED,
                    reason=f"interrupted {job.attempts} times; giving up",
                    finished_at=utcnow(),
                )
            else:
                taken += transition_job(
                    session,
                    job,
                    JobState.QUEUED,
                    reason="requeued after the node stopped while it was running",
                )
        return taken


__all__ = [
    "MAX_ATTEMPTS",
    "claim_job",
    "claim_next",
    "recover_orphans",
    "requeue_stale",
    "take_back",
    "take_due_for_publish",
]
