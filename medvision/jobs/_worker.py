"""The embedded worker pool: threads that run queued jobs with the offline code path.

Each job runs :func:`medvision.runner.run_pipeline` on the study's spool folder (the very
code behind ``medvision run``), writes results under a per-version folder, and, in the same
transaction that marks the job done, queues one outbox row per result and destination, so a
result is delivered once even if the node dies right after.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from collections.abc import Callable
from pathlib import Path

from sqlalchemy import select

from medvision import pipelines
from medvision.audit import DbAuditLog
from medvision.config import Modality, Settings
from medvision.db import Database, Job, JobState, Outbox, OutboxState, Study, retry_db, utcnow
from medvision.dicom import scan
from medvision.errors import MedvisionError
from medvision.jobs._queue import claim_next
from medvision.lifecycle import lock_study, refresh_study, transition_job, transition_outbox
from medvision.pipelines import Pipeline
from medvision.runner import PipelineRun, run_pipeline

LOG = logging.getLogger("medvision.worker")

SEG_CLASS = "1.2.840.10008.5.1.4.1.1.66.4"
SR_CLASS = "1.2.840.10008.5.1.4.1.1.88.34"
SC_CLASS = "1.2.840.10008.5.1.4.1.1.7"
KOS_CLASS = "1.2.840.10008.5.1.4.1.1.88.59"


def worker_id(receiver: str = "") -> str:
    """``jobs.worker`` of this process: "host:pid", or "node_name:pid" for the embedded
    workers of one of several receivers on a database (``_receivers.claim_prefix``)."""
    return f"{receiver or socket.gethostname()}:{os.getpid()}"


def destinations_for(settings: Settings, calling_aet: str) -> list[tuple[str, Modality]]:
    """Configured destinations, or by default the modality that sent the study."""
    if settings.destinations:
        return [(name, settings.modalities[name]) for name in settings.destinations]
    for name, modality in settings.modalities.items():
        if modality.ae_title == calling_aet:
            return [(name, modality)]
    return []


def execute_job(
    job: Job,
    settings: Settings,
    db: Database,
    audit: DbAuditLog,
    get_pipeline: Callable[[str], Pipeline] = pipelines.get,
) -> PipelineRun:
    """Run one claimed job to its end state (done, failed, refused or superseded).

    ``get_pipeline`` lets a long-lived Celery worker hand in pipelines it built once (the
    model loaded once per process) instead of building one per job.
    """
    study_uid = job.study_instance_uid
    # Every database step is retried while the database is away (restart, fail-over):
    # an error here would leave the job claimed ("running") by a worker that is alive.
    retry_db(
        lambda: audit.record(
            "job.started",
            study_instance_uid=study_uid,
            job_id=job.id,
            pipeline=job.pipeline,
            study_version=job.study_version,
            attempt=job.attempts,
        ),
        f"recording the start of job {job.id}",
    )
    calling_aet = retry_db(lambda: _calling_aet(db, study_uid), f"reading job {job.id}'s study")
    out_dir = settings.results_dir / study_uid / f"v{job.study_version}" / job.pipeline
    try:
        study = next(
            s for s in scan(settings.spool_dir / study_uid) if s.study_instance_uid == study_uid
        )
        wanted = [m for _, m in destinations_for(settings, calling_aet)]
        run = run_pipeline(
            study,
            get_pipeline(job.pipeline),
            out_dir,
            overlays=any(m.overlays for m in wanted),
            planar_sr=any(m.planar_sr for m in wanted),
        )
    except (MedvisionError, StopIteration) as err:
        run = PipelineRun(job.pipeline, study_uid, "failed", reason=str(err) or "no such study")
    except Exception as err:
        # A bug or an exhausted resource, not bad input. Without this the job would stay
        # "running" (and its study with it) until the next restart requeued it.
        LOG.exception("job %s crashed", job.id)
        run = PipelineRun(
            job.pipeline, study_uid, "failed", reason=f"internal error: {type(err).__name__}: {err}"
        )
    retry_db(lambda: _finish(job, run, settings, db), f"recording the end of job {job.id}")
    retry_db(
        lambda: audit.record(
            "job.finished" if run.status == "done" else f"job.{run.status}",
            outcome="success" if run.status == "done" else "failure",
            study_instance_uid=study_uid,
            job_id=job.id,
            pipeline=job.pipeline,
            series_instance_uid=run.series_instance_uid,
            reason=run.reason,
            algorithm=run.findings.algorithm.to_json() if run.findings else None,
            results=[run.files.seg_sop_instance_uid, run.files.sr_sop_instance_uid]
            if run.files
            else [],
            timings_s={k: round(v, 3) for k, v in run.timings_s.items()},
        ),
        f"recording the end of job {job.id}",
    )
    return run


def _calling_aet(db: Database, study_uid: str) -> str:
    with db.session() as session:
        return (
            session.scalar(select(Study.calling_aet).where(Study.study_instance_uid == study_uid))
            or ""
        )


def _finish(job: Job, run: PipelineRun, settings: Settings, db: Database) -> None:
    """Record the run's end and queue its deliveries, in one transaction; may run twice
    (:func:`retry_db`) and then finds its own first commit and does nothing."""
    with db.session() as session:
        # The lock order (medvision.lifecycle): the study row, then the job, then its
        # deliveries. Read after the lock, the job is as the last writer committed it.
        study = lock_study(session, job.study_instance_uid)
        row = session.get(Job, job.id, populate_existing=True)
        assert row is not None and study is not None
        if (
            row.state != JobState.RUNNING
            and row.worker == job.worker
            and row.started_at == job.started_at
            and row.finished_at is not None
        ):
            # The connection broke after our commit reached the server: already recorded.
            LOG.info("job %s: end already recorded (%s)", job.id, row.state)
            return
        if row.state != JobState.RUNNING or row.worker != job.worker:
            # Our claim was taken away (the worker was taken for dead and the job queued
            # again, or already run by another worker): the row belongs to the other run,
            # and writing outbox rows here would deliver the results twice.
            LOG.warning(
                "job %s: claim lost (now %s by %r); results of this run are discarded",
                job.id,
                row.state,
                row.worker,
            )
            return
        values = {
            "finished_at": utcnow(),
            "timings": {k: round(v, 3) for k, v in run.timings_s.items()},
            "series_instance_uid": run.series_instance_uid,
            "reason": run.reason,
            "result_dir": str(run.out_dir) if run.out_dir else None,
        }
        if study.version != row.study_version:
            to = JobState.SUPERSEDED
            values["reason"] = f"study changed to version {study.version} while it ran"
        elif run.status == "done" and run.files is not None:
            to = JobState.DONE
        else:
            to = JobState.REFUSED if run.status == "refused" else JobState.FAILED
        # The study is derived once, at the end, with the deliveries in place.
        moved = transition_job(
            session,
            row,
            to,
            narrow=[JobState.RUNNING],
            where=[Job.worker == job.worker],
            refresh=False,
            **values,
        )
        if not moved:  # not reached: every writer of a job takes the study's lock first
            LOG.warning("job %s: claim lost; results of this run are discarded", job.id)
            return
        if to == JobState.DONE and run.files is not None:
            # An earlier version's undelivered results are superseded by these.
            transition_outbox(
                session,
                [Outbox.study_instance_uid == row.study_instance_uid, Outbox.job_id != row.id],
                OutboxState.SUPERSEDED,
                narrow=[OutboxState.PENDING],
                refresh=False,
            )
            # A study without findings has an SR but no SEG (seg_path is None).
            results = [
                (path, uid, cls)
                for path, uid, cls in (
                    (run.files.seg_path, run.files.seg_sop_instance_uid, SEG_CLASS),
                    (run.files.sr_path, run.files.sr_sop_instance_uid, SR_CLASS),
                )
                if path is not None and uid
            ]
            extras = [
                *(
                    (path, uid, SC_CLASS)
                    for path, uid in zip(
                        run.files.overlay_paths, run.files.overlay_sop_instance_uids, strict=True
                    )
                ),
                *(
                    [(run.files.kos_path, run.files.kos_sop_instance_uid, KOS_CLASS)]
                    if run.files.kos_path is not None and run.files.kos_sop_instance_uid
                    else []
                ),
            ]
            planar = (
                [(run.files.planar_sr_path, run.files.planar_sr_sop_instance_uid, SR_CLASS)]
                if run.files.planar_sr_path is not None and run.files.planar_sr_sop_instance_uid
                else []
            )
            for name, modality in destinations_for(settings, study.calling_aet):
                wanted = (
                    results
                    + (planar if modality.planar_sr else [])
                    + (extras if modality.overlays else [])
                )
                for path, uid, cls in wanted:
                    session.add(
                        Outbox(
                            job_id=row.id,
                            study_instance_uid=row.study_instance_uid,
                            destination=name,
                            ae_title=modality.ae_title,
                            host=modality.host,
                            port=modality.port,
                            path=str(Path(path).resolve()),
                            sop_instance_uid=uid,
                            sop_class_uid=cls,
                        )
                    )
        refresh_study(session, row.study_instance_uid)


class WorkerPool:
    """``concurrency`` threads, each claiming and running one job at a time."""

    def __init__(self, settings: Settings, db: Database, audit: DbAuditLog) -> None:
        self.settings = settings
        self.db = db
        self.audit = audit
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        #: Job id each busy thread is running, by thread name.
        self._running: dict[str, int] = {}
        self._lock = threading.Lock()

    def start(self) -> None:
        for n in range(self.settings.worker_concurrency):
            t = threading.Thread(target=self._loop, name=f"medvision-worker-{n}", daemon=True)
            t.start()
            self._threads.append(t)

    def stop(self, timeout: float = 5.0) -> list[int]:
        """Stop claiming jobs and wait up to ``timeout`` for the running ones to end.

        Returns the ids of the jobs still running after that: they are queued again at
        once (the next start runs them) and their threads are left behind. Such a thread
        is inside the pipeline's native code (torch); the process that owns it must end
        with ``os._exit`` rather than a normal interpreter exit, whose C++ clean-up under
        a running torch thread aborts with "terminate called without an active exception".
        A straggler that finishes anyway finds its claim gone and discards its results.
        """
        self._stop.set()
        for t in self._threads:
            t.join(timeout)
        with self._lock:
            busy = sorted(self._running.values())
        if busy:
            retry_db(
                lambda: _requeue_interrupted(self.db, busy, worker_id(self.settings.node_name)),
                "queueing the interrupted jobs again",
            )
        return busy

    def _loop(self) -> None:
        me = worker_id(self.settings.node_name)
        name = threading.current_thread().name
        while not self._stop.is_set():
            try:
                job = claim_next(self.db, me)
            except Exception as err:  # database briefly unavailable: try again later
                LOG.error("cannot claim a job: %s", err)
                job = None
            if job is None:
                self._stop.wait(self.settings.poll_interval_s)
                continue
            with self._lock:
                self._running[name] = job.id
            try:
                execute_job(job, self.settings, self.db, self.audit)
            except Exception:
                LOG.exception("job %s crashed; it will be requeued at the next start", job.id)
            finally:
                with self._lock:
                    self._running.pop(name, None)


def _requeue_interrupted(db: Database, job_ids: list[int], worker: str) -> None:
    """Queue again the jobs this process was running when it stopped (if still ours)."""
    with db.session() as session:
        transition_job(
            session,
            [Job.id.in_(job_ids), Job.worker == worker],
            JobState.QUEUED,
            reason="requeued: the node stopped while it was running",
        )


__all__ = ["WorkerPool", "destinations_for", "execute_job", "worker_id"]
