"""Database tables: the single source of truth about studies, jobs and deliveries.

Plain SQLAlchemy 2.0 declarative models that run unchanged on SQLite (the embedded
default) and PostgreSQL. State names are short strings rather than database enums so that
adding a state never needs a type migration.
"""

from __future__ import annotations

from collections.abc import Collection
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


def utcnow() -> datetime:
    return datetime.now(UTC)


def as_utc(dt: datetime) -> datetime:
    """SQLite returns naive datetimes; every time we store is UTC."""
    return dt if dt.tzinfo is not None else dt.replace(tzinfo=UTC)


def stale_cutoff(stale_s: float) -> datetime:
    """A heartbeat at or before this instant is ``stale_s`` old (``worker_stale_s``)."""
    return utcnow() - timedelta(seconds=stale_s)


def heartbeat_state(
    state: str,
    heartbeat_at: datetime,
    cutoff: datetime,
    running: Collection[str] | None = None,
) -> str:
    """What a process's row (a Celery worker, an acceptor, a receiver) says of it now: the
    state it last wrote, or ``dead`` when that state says it should be running
    (``running``: these states; None: any but ``stopped``) and it has not been heard from
    since ``cutoff`` (:func:`stale_cutoff`): killed, or its host or database gone. The one
    rule of ``GET /workers``, ``medvision status``, ``/metrics`` and the assemblers."""
    should_run = state != "stopped" if running is None else state in running
    return "dead" if should_run and as_utc(heartbeat_at) <= cutoff else state


class Base(DeclarativeBase):
    type_annotation_map = {dict[str, Any]: JSON, list[Any]: JSON}


class StudyState(StrEnum):
    RECEIVING = "receiving"
    COMPLETE = "complete"
    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    SENT = "sent"
    SEND_FAILED = "send-failed"


class JobState(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    REFUSED = "refused"
    SUPERSEDED = "superseded"


class OutboxState(StrEnum):
    PENDING = "pending"
    SENT = "sent"
    FAILED = "failed"
    SUPERSEDED = "superseded"


class Study(Base):
    __tablename__ = "studies"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    study_instance_uid: Mapped[str] = mapped_column(String(64), unique=True, index=True)
    state: Mapped[str] = mapped_column(String(16), default=StudyState.RECEIVING, index=True)
    #: Bumped when instances arrive after the study was complete: a new, versioned run.
    version: Mapped[int] = mapped_column(Integer, default=1)
    calling_aet: Mapped[str] = mapped_column(String(16), default="")
    calling_host: Mapped[str] = mapped_column(String(64), default="")
    instance_count: Mapped[int] = mapped_column(Integer, default=0)
    first_received_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    last_received_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    completed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    reason: Mapped[str] = mapped_column(Text, default="")


class Instance(Base):
    __tablename__ = "instances"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    sop_instance_uid: Mapped[str] = mapped_column(String(64), unique=True, index=True)
    study_instance_uid: Mapped[str] = mapped_column(String(64), index=True)
    series_instance_uid: Mapped[str] = mapped_column(String(64))
    sop_class_uid: Mapped[str] = mapped_column(String(64))
    #: Path relative to the spool directory.
    path: Mapped[str] = mapped_column(Text)
    size: Mapped[int] = mapped_column(Integer)
    sha256: Mapped[str] = mapped_column(String(64))
    calling_aet: Mapped[str] = mapped_column(String(16), default="")
    received_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class Job(Base):
    __tablename__ = "jobs"
    __table_args__ = (UniqueConstraint("study_instance_uid", "study_version", "pipeline"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    study_instance_uid: Mapped[str] = mapped_column(String(64), index=True)
    study_version: Mapped[int] = mapped_column(Integer)
    pipeline: Mapped[str] = mapped_column(String(64))
    state: Mapped[str] = mapped_column(String(16), default=JobState.QUEUED, index=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    reason: Mapped[str] = mapped_column(Text, default="")
    series_instance_uid: Mapped[str | None] = mapped_column(String(64), nullable=True)
    result_dir: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    timings: Mapped[dict[str, Any]] = mapped_column(default=dict)
    #: Who is running it ("host:pid"), so a restart can tell its own orphans.
    worker: Mapped[str] = mapped_column(String(128), default="")
    #: When it was last published to the broker (scale-out only): a queued job not claimed
    #: long after this is published again, as its message may have been lost.
    published_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class Outbox(Base):
    """One result instance to deliver to one destination; retried until sent."""

    __tablename__ = "outbox"
    __table_args__ = (UniqueConstraint("job_id", "destination", "sop_instance_uid"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    job_id: Mapped[int] = mapped_column(Integer, index=True)
    study_instance_uid: Mapped[str] = mapped_column(String(64), index=True)
    destination: Mapped[str] = mapped_column(String(64))
    ae_title: Mapped[str] = mapped_column(String(16))
    host: Mapped[str] = mapped_column(String(255))
    port: Mapped[int] = mapped_column(Integer)
    path: Mapped[str] = mapped_column(Text)
    sop_instance_uid: Mapped[str] = mapped_column(String(64))
    sop_class_uid: Mapped[str] = mapped_column(String(64))
    state: Mapped[str] = mapped_column(String(16), default=OutboxState.PENDING, index=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    last_error: Mapped[str] = mapped_column(Text, default="")
    sent_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class AuditEvent(Base):
    """One hash-chained audit event (see medvision.audit for the chain rule)."""

    __tablename__ = "audit_events"

    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    time: Mapped[str] = mapped_column(String(32))
    type: Mapped[str] = mapped_column(String(64), index=True)
    outcome: Mapped[str] = mapped_column(String(16))
    study_instance_uid: Mapped[str | None] = mapped_column(String(64), nullable=True, index=True)
    data: Mapped[dict[str, Any]] = mapped_column(default=dict)
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64), unique=True)

    def as_event(self) -> dict[str, Any]:
        """The event exactly as it was hashed."""
        return {
            "seq": self.seq,
            "time": self.time,
            "type": self.type,
            "outcome": self.outcome,
            **self.data,
            "prev_hash": self.prev_hash,
            "hash": self.hash,
        }


class User(Base):
    """A local API/web user. Roles are names from ``medvision.auth.Role``, kept as a JSON
    list so that adding a role never needs a migration; ``disabled`` keeps the row (and the
    name in old audit events meaningful) while refusing every credential."""

    __tablename__ = "users"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True, index=True)
    #: argon2id hash (PHC string); empty means no password login (tokens only).
    password_hash: Mapped[str] = mapped_column(Text, default="")
    roles: Mapped[list[Any]] = mapped_column(default=list)
    disabled: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    last_login_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class ApiToken(Base):
    """A bearer secret of one user: an API token (``kind="api"``, no expiry) or a browser
    session (``kind="session"``, expires). Only the SHA-256 of the secret is stored: the
    secrets are 256-bit random, so a fast hash is enough and a stolen table opens nothing."""

    __tablename__ = "api_tokens"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(Integer, index=True)
    kind: Mapped[str] = mapped_column(String(16), default="api")
    token_hash: Mapped[str] = mapped_column(String(64), unique=True, index=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    last_used_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class Feedback(Base):
    """A reviewer's word on a result: a decision on one finding (``kind="decision"``:
    accept, reject or comment) or a lesion the model missed (``kind="missed_lesion"``,
    with its location). Rows are never updated; a later decision is a new row."""

    __tablename__ = "feedback"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    kind: Mapped[str] = mapped_column(String(16), index=True)
    study_instance_uid: Mapped[str] = mapped_column(String(64), index=True)
    job_id: Mapped[int | None] = mapped_column(Integer, nullable=True, index=True)
    finding_number: Mapped[int | None] = mapped_column(Integer, nullable=True)
    decision: Mapped[str] = mapped_column(String(16), default="")
    comment: Mapped[str] = mapped_column(Text, default="")
    #: Missed lesion: {"slice_index", "x", "y"} (pixels) and/or {"lps": [x, y, z]} (mm).
    location: Mapped[dict[str, Any]] = mapped_column(default=dict)
    user: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    #: The superseding SR queued because of this rejection, if any.
    sr_sop_instance_uid: Mapped[str | None] = mapped_column(String(64), nullable=True)


class Worker(Base):
    """A Celery worker process (scale-out), as it last reported itself.

    ``heartbeat_at`` is refreshed every few seconds by a thread in the worker; the receiver
    takes a worker silent for ``worker_stale_s`` for dead and queues its running job again.
    Rows are kept after a worker stops (``state="stopped"``) so that ``GET /workers``
    shows what ran where; ``name`` is the same "host:pid" written into ``jobs.worker``.
    """

    __tablename__ = "workers"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(128), unique=True, index=True)
    host: Mapped[str] = mapped_column(String(255))
    pid: Mapped[int] = mapped_column(Integer)
    #: "cpu" or the accelerator's name (e.g. "cuda:0 NVIDIA H100 80GB HBM3").
    device: Mapped[str] = mapped_column(String(255), default="")
    #: {pipeline name: version} of the pipelines this worker has loaded.
    models: Mapped[dict[str, Any]] = mapped_column(default=dict)
    state: Mapped[str] = mapped_column(String(16), default="idle")
    current_job_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    jobs_done: Mapped[int] = mapped_column(Integer, default=0)
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    heartbeat_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class Acceptor(Base):
    """A DICOM acceptor process of a receiver (docs/node.md, "Acceptor processes").

    One row per receiver host and slot (``name`` is "host/acceptor-N"), refreshed every
    few seconds by the process that serves the slot. The counters are cumulative over the
    processes that have served the slot: a process restarted after a crash carries on from
    the last values its predecessor reported, so ``/metrics`` sums never go down (counts of
    the last seconds before a kill -9 are lost, the instances themselves are not).
    """

    __tablename__ = "acceptors"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(128), unique=True, index=True)
    host: Mapped[str] = mapped_column(String(255))
    slot: Mapped[int] = mapped_column(Integer)
    pid: Mapped[int] = mapped_column(Integer)
    #: starting, serving, restarting (its process died; its journal is being replayed),
    #: stopped.
    state: Mapped[str] = mapped_column(String(16), default="starting")
    #: Times this slot's process died and was started again.
    restarts: Mapped[int] = mapped_column(Integer, default=0)
    associations: Mapped[int] = mapped_column(Integer, default=0)
    active_associations: Mapped[int] = mapped_column(Integer, default=0)
    instances: Mapped[int] = mapped_column(Integer, default=0)
    duplicates: Mapped[int] = mapped_column(Integer, default=0)
    refused: Mapped[int] = mapped_column(Integer, default=0)
    bytes_received: Mapped[int] = mapped_column(BigInteger, default=0)
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    heartbeat_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class Receiver(Base):
    """A receiver (``medvision serve``) of a database shared by several (docs/scaling.md,
    "Several receivers on one database"), as it last reported itself.

    ``name`` is the node's ``node_name``; the row is refreshed every ``poll_interval_s``.
    ``busy`` lists the studies with instances this receiver has acknowledged and not yet
    indexed, so that another receiver's assembler does not complete them; a receiver silent
    for ``worker_stale_s`` is taken for dead: its busy list no longer counts and its running
    jobs (``jobs.worker`` "name:pid") are queued again by the others.
    """

    __tablename__ = "receivers"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(128), unique=True, index=True)
    host: Mapped[str] = mapped_column(String(255))
    pid: Mapped[int] = mapped_column(Integer)
    #: serving or stopped.
    state: Mapped[str] = mapped_column(String(16), default="serving")
    busy: Mapped[list[Any]] = mapped_column(default=list)
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    heartbeat_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


__all__ = [
    "Acceptor",
    "ApiToken",
    "AuditEvent",
    "Feedback",
    "Base",
    "Instance",
    "Job",
    "JobState",
    "Outbox",
    "Receiver",
    "OutboxState",
    "Study",
    "StudyState",
    "User",
    "Worker",
    "as_utc",
    "heartbeat_state",
    "stale_cutoff",
    "utcnow",
]
