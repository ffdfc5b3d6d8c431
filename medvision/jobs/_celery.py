"""Scale-out: jobs published to RabbitMQ and run by Celery workers (``medvision worker``).

The database stays the single source of truth. A message carries only a job id; the task
claims that job with an atomic queued → running update and does nothing when the job is
not queued (already run, claimed by another worker, superseded). So duplicates, late
messages and re-publishing are harmless, and a result is delivered once: the outbox rows
are written in the transaction that marks the job done, and only by the worker that still
holds the claim (see ``_finish``).

Delivery guarantees come from Celery's late acknowledgement: ``task_acks_late`` (the
message is acknowledged after the task returns), ``worker_prefetch_multiplier=1`` (a busy
worker does not sit on queued messages) and ``task_reject_on_worker_lost`` (a pool child
that dies puts its message back). A worker killed outright drops its AMQP connection, and
RabbitMQ redelivers its unacknowledged message; the job's row still says running, so the
receiver's sweep (:class:`Sweeper`) queues it again once the dead worker's heartbeat is
stale, and publishes it, and another worker runs it.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sqlalchemy import select, update

from medvision import pipelines
from medvision._extras import require
from medvision.audit import DbAuditLog
from medvision.config import Settings, load_settings
from medvision.db import Database, Job, JobState, Worker, retry_db, utcnow
from medvision.jobs import _metrics as metrics
from medvision.jobs._queue import claim_job, requeue_stale, take_due_for_publish
from medvision.jobs._worker import execute_job, worker_id
from medvision.pipelines import Pipeline

Celery = require("celery", "scale").Celery
signals = require("celery.signals", "scale")

LOG = logging.getLogger("medvision.celery")

TASK = "medvision.run_job"
QUEUE = "medvision.jobs"


def make_app(broker_url: str) -> Celery:
    """The Celery app for ``broker_url`` with the settings the guarantees above rely on."""
    app = Celery("medvision", broker=broker_url, set_as_current=False)
    app.conf.update(
        task_acks_late=True,
        worker_prefetch_multiplier=1,
        task_reject_on_worker_lost=True,
        task_ignore_result=True,
        task_default_queue=QUEUE,
        task_serializer="json",
        accept_content=["json"],
        broker_connection_retry_on_startup=True,
        # A worker waits for the broker however long it is away (Celery's default gives
        # up after 100 attempts, ~45 min, and the worker exits).
        broker_connection_max_retries=None,
        # A solo-pool worker cannot answer AMQP heartbeats while a pipeline runs for
        # minutes; RabbitMQ would close the connection and redeliver a running job.
        broker_heartbeat=0,
        worker_hijack_root_logger=False,
        worker_send_task_events=False,
    )

    @app.task(name=TASK, bind=True)
    def run_job(self: Any, job_id: int) -> str:  # noqa: ANN401 - Celery's bound task
        return _runtime().run(int(job_id))

    return app


class Publisher:
    """The receiver's side: one task message per job id."""

    def __init__(self, broker_url: str) -> None:
        self.app = make_app(broker_url)

    def publish(self, job_ids: list[int]) -> None:
        for job_id in job_ids:
            self.app.send_task(TASK, args=[job_id], queue=QUEUE)
        if job_ids:
            LOG.info("published jobs %s", job_ids)

    def messages_waiting(self) -> int | None:
        """Ready messages in the jobs queue (None if the broker cannot say right now)."""
        try:
            with self.app.connection_for_write() as conn:
                # One attempt, no retries: a sweep must not wait for a broker that is away.
                conn.ensure_connection(max_retries=0)
                ok = conn.default_channel.queue_declare(QUEUE, passive=True)
                return int(ok.message_count)
        except Exception as err:  # queue not declared yet, or broker away
            LOG.debug("cannot read the queue depth: %s", err)
            return None

    def close(self) -> None:
        self.app.close()


class Sweeper:
    """The receiver's periodic sweep: queue again the jobs of dead workers, and publish
    queued jobs never published or published long ago and still unclaimed (a lost
    message).

    Faults: when publishing fails (broker away) the jobs are marked unpublished again, so
    the first sweep after the broker returns publishes them (not ``republish_after_s``
    later). After the database was unreachable, no worker is taken for dead until it has
    been reachable for ``worker_stale_s``: the workers could not write their heartbeats
    either, and would otherwise all look dead at once and have their jobs run twice.
    """

    def __init__(self, settings: Settings, db: Database, publisher: Publisher) -> None:
        self.settings = settings
        self.db = db
        self.publisher = publisher
        #: Since when (monotonic) the database has answered every sweep; None after a
        #: failed one. Up "forever" at start: a receiver restart stops no heartbeat.
        self._db_up_since: float | None = float("-inf")

    def sweep(self) -> list[int]:
        try:
            if self._workers_can_be_judged():
                requeued = requeue_stale(self.db, self.settings.worker_stale_s)
                if requeued:
                    LOG.warning("requeued jobs %s of workers that stopped reporting", requeued)
            due = take_due_for_publish(
                self.db, self.settings.republish_after_s, self.publisher.messages_waiting()
            )
        except Exception:
            self._db_up_since = None
            raise
        if self._db_up_since is None:
            self._db_up_since = time.monotonic()
            LOG.info("database reachable again: no worker taken for dead for %.0f s",
                     self.settings.worker_stale_s)  # fmt: skip
        try:
            self.publisher.publish(due)
        except Exception as err:  # broker away: due again at the next sweep
            LOG.error("cannot publish jobs %s (next sweep retries): %s", due, err)
            retry_db(lambda: _mark_unpublished(self.db, due), "marking jobs unpublished", 30)
            return []
        return due

    def _workers_can_be_judged(self) -> bool:
        """Only once the database has answered every sweep for ``worker_stale_s``."""
        up_since = self._db_up_since
        return up_since is not None and time.monotonic() - up_since >= self.settings.worker_stale_s


def _mark_unpublished(db: Database, job_ids: list[int]) -> None:
    with db.session() as session:
        session.execute(
            update(Job)
            .where(Job.id.in_(job_ids), Job.state == JobState.QUEUED)
            .values(published_at=None)
        )


def device_name() -> str:
    """What a worker computes on, for the workers table: the CUDA device's name or cpu."""
    try:
        import torch

        if torch.cuda.is_available():
            return f"cuda:0 {torch.cuda.get_device_name(0)}"
    except Exception:  # no torch, or a broken driver: the pipelines will run on CPU
        pass
    return "cpu"


class WorkerRuntime:
    """One per worker process: database, audit log, pipelines built once, heartbeat."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.db = Database(settings.db_url)
        self.db.create_schema()
        self.audit = DbAuditLog(self.db)
        self.name = worker_id()
        #: Pipelines built once, each with the :func:`pipelines.identity` it was built from.
        self._pipelines: dict[str, tuple[tuple[object, ...], Pipeline]] = {}
        self._stop = threading.Event()
        self._register()
        self._beat = threading.Thread(target=self._heartbeat, name="medvision-heartbeat")
        self._beat.daemon = True
        self._beat.start()

    def _register(self) -> None:
        with self.db.session() as session:
            row = session.scalar(select(Worker).where(Worker.name == self.name))
            if row is None:
                row = Worker(name=self.name, host=socket.gethostname(), pid=os.getpid())
                session.add(row)
            row.device = device_name()
            row.state = "idle"
            row.current_job_id = None
            row.started_at = row.heartbeat_at = utcnow()

    def preload(self, names: list[str] | None = None) -> None:
        """Build the configured pipelines now, so the first job does not pay for it."""
        for name in names or self.settings.pipelines or pipelines.available():
            try:
                self.get_pipeline(name)
            except Exception as err:  # a broken bundle must not stop the others
                LOG.error("cannot load pipeline %s: %s", name, err)

    def get_pipeline(self, name: str) -> Pipeline:
        """The pipeline ``name``, built once and again only when its model was re-imported
        (the node builds its pipelines per study; a worker must not run last week's weights
        under this week's name until someone restarts it)."""
        identity = pipelines.identity(name)
        cached = self._pipelines.get(name)
        if cached is not None and cached[0] == identity:
            return cached[1]
        pipeline = pipelines.get(name)
        self._pipelines[name] = (identity, pipeline)
        if cached is not None:
            LOG.info("pipeline %s changed on disk: built again (version %s, was %s)",
                     name, pipeline.version, cached[1].version)  # fmt: skip
            metrics.model_unloaded(name, str(cached[1].version))
        metrics.model_loaded(name, str(pipeline.version))
        self._update(models={n: str(p.version) for n, (_, p) in self._pipelines.items()})
        return pipeline

    def _update(self, **values: Any) -> None:  # noqa: ANN401 - column values
        with self.db.session() as session:
            row = session.scalar(select(Worker).where(Worker.name == self.name))
            if row is not None:
                for key, value in values.items():
                    setattr(row, key, value)
                row.heartbeat_at = utcnow()

    def _heartbeat(self) -> None:
        while not self._stop.wait(self.settings.worker_heartbeat_s):
            try:
                self._update()
            except Exception as err:  # database briefly away: the next beat tries again
                LOG.error("heartbeat failed: %s", err)

    def run(self, job_id: int) -> str:
        # Each database step waits out a database restart (retry_db): a task that failed
        # here would leave its job claimed by a live worker, or unclaimed with its message
        # acknowledged.
        job = retry_db(lambda: claim_job(self.db, job_id, self.name), f"claiming job {job_id}")
        if job is None:
            LOG.info("job %s is not queued; nothing to do", job_id)
            metrics.task_skipped()
            return "skipped"
        retry_db(lambda: self._update(state="busy", current_job_id=job_id), "reporting busy")
        try:
            with metrics.observe_job(self.db, job, self.name) as observed:
                run = execute_job(job, self.settings, self.db, self.audit, self.get_pipeline)
                observed(run)
        finally:
            retry_db(self._job_ended, "reporting idle")
        return run.status

    def _job_ended(self) -> None:
        with self.db.session() as session:
            row = session.scalar(select(Worker).where(Worker.name == self.name))
            if row is not None:
                row.state, row.current_job_id = "idle", None
                row.jobs_done += 1
                row.heartbeat_at = utcnow()

    def close(self) -> None:
        self._stop.set()
        try:
            self._update(state="stopped", current_job_id=None)
        finally:
            self.db.dispose()


_RUNTIME: WorkerRuntime | None = None
_CONFIG: Path | None = None


def _runtime() -> WorkerRuntime:
    global _RUNTIME
    if _RUNTIME is None:
        _RUNTIME = WorkerRuntime(load_settings(_CONFIG))
        _RUNTIME.preload()
    return _RUNTIME


@signals.worker_process_init.connect
def _init_pool_child(**_kwargs: Any) -> None:  # noqa: ANN401 - Celery signal
    """A prefork child gets its own database connections and pipelines (never the
    parent's: connections and CUDA contexts do not survive fork). Built at its first task,
    not here: Celery gives a child only a few seconds to report that it is up."""
    global _RUNTIME
    _RUNTIME = None


@signals.worker_process_shutdown.connect
@signals.worker_shutdown.connect
def _close_runtime(**_kwargs: Any) -> None:  # noqa: ANN401 - Celery signal
    global _RUNTIME
    if _RUNTIME is not None:
        _RUNTIME.close()
        _RUNTIME = None


def run_worker(settings: Settings, config: Path | None, concurrency: int) -> None:
    """``medvision worker``: a Celery worker consuming the jobs queue.

    ``--concurrency 1`` runs tasks in the worker process itself (solo pool: the pipelines
    are built once, before consuming); more uses a prefork pool, one runtime per child.
    """
    global _CONFIG
    _CONFIG = config
    app = make_app(settings.broker_url)
    solo = concurrency == 1
    if solo:
        _runtime()  # register, load models, start the heartbeat before taking messages
    app.worker_main(
        [
            "worker",
            f"--concurrency={concurrency}",
            f"--pool={'solo' if solo else 'prefork'}",
            "--loglevel=INFO",
            f"--hostname=medvision-{socket.gethostname()}-{os.getpid()}@%h",
            f"--queues={QUEUE}",
            "--without-gossip",
            "--without-mingle",
        ]
    )


PublishFn = Callable[[list[int]], None]

__all__ = [
    "QUEUE",
    "TASK",
    "PublishFn",
    "Publisher",
    "Sweeper",
    "WorkerRuntime",
    "device_name",
    "make_app",
    "run_worker",
]
