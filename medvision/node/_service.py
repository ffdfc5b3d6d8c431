"""The node: SCP, study assembly, worker pool and sender around one database.

With ``broker_url`` set (scale-out, docs/scaling.md) the node is the receiver: no worker
pool; the assembler publishes each new job to RabbitMQ and a sweep thread re-publishes
lost messages and requeues the jobs of dead Celery workers.

``start`` first recovers from whatever the last process left behind: temporary files that
were never acknowledged are removed, spooled files the index does not know are indexed, and
jobs left running are queued again. So a restart resumes every unfinished study and job.
"""

from __future__ import annotations

import logging
import threading

from pydicom import dcmread
from sqlalchemy import select, update

import medvision
from medvision._hashing import sha256_file
from medvision.audit import Anchorer, DbAuditLog, load_or_create_key
from medvision.config import Settings
from medvision.db import Database, Instance, Study, StudyState, utcnow
from medvision.jobs import WorkerPool, recover_orphans
from medvision.jobs._queue import log_pass_failure
from medvision.node._assembler import complete_quiet_studies
from medvision.node._ingest import Received, index_instance
from medvision.node._scp import StorageSCP
from medvision.node._sender import Sender
from medvision.node._spool import StoredFile

LOG = logging.getLogger("medvision.node")


class Node:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        self.db = Database(settings.db_url)
        self.db.create_schema()
        self.audit = DbAuditLog(self.db)
        self.scp = StorageSCP(settings, self.db, self.audit)
        self.distributed = bool(settings.broker_url)
        self.workers = None if self.distributed else WorkerPool(settings, self.db, self.audit)
        self.sender = Sender(settings, self.db, self.audit)
        # The head of the chain is anchored outside the database (docs/audit.md).
        self.anchorer = Anchorer(
            self.db,
            settings.anchor_file,
            load_or_create_key(settings.anchor_key_file),
            settings.ae_title,
        )
        self._stop = threading.Event()
        self._anchor_thread: threading.Thread | None = None
        self._assembler: threading.Thread | None = None
        self._sweeper: threading.Thread | None = None
        self.publisher = None
        if self.distributed:
            from medvision.jobs._celery import Publisher

            self.publisher = Publisher(settings.broker_url)

    def start(self) -> None:
        recovered = self.recover()
        self.audit.record(
            "application.start",
            medvision_version=medvision.__version__,
            ae_title=self.settings.ae_title,
            dicom_port=None if self.settings.dicom_tls_only else self.settings.dicom_port,
            dicom_tls_port=self.settings.dicom_tls_port,
            **recovered,
        )
        self._checkpoint()
        self.scp.start()
        self._assembler = threading.Thread(
            target=self._assemble_loop, name="medvision-assembler", daemon=True
        )
        self._assembler.start()
        if self.workers is not None:
            self.workers.start()
        else:
            self._sweeper = threading.Thread(
                target=self._sweep_loop, name="medvision-sweeper", daemon=True
            )
            self._sweeper.start()
        self.sender.start()
        if self.settings.audit_anchor_interval_s > 0:
            self._anchor_thread = threading.Thread(
                target=self._anchor_loop, name="medvision-anchor", daemon=True
            )
            self._anchor_thread.start()

    def stop(self) -> list[int]:
        """Stop every part; returns the ids of jobs interrupted (queued again), whose
        threads still run: see :meth:`WorkerPool.stop` for why the caller must then
        leave with ``os._exit``."""
        self._stop.set()
        self.scp.stop()
        interrupted = self.workers.stop() if self.workers is not None else []
        self.sender.stop()
        for thread in (self._assembler, self._sweeper, self._anchor_thread):
            if thread is not None:
                thread.join(5)
        if self.publisher is not None:
            self.publisher.close()
        if interrupted:
            self.audit.record("application.stop", interrupted_jobs=interrupted)
        else:
            self.audit.record("application.stop")
        self._checkpoint()
        self.db.dispose()
        return interrupted

    def recover(self) -> dict[str, int]:
        partial = self.scp.spool.discard_partial()
        indexed = self._reindex_spool()
        # Scale-out: running jobs belong to Celery workers that may well be alive; the
        # sweep requeues those whose worker stopped reporting.
        requeued = 0 if self.distributed else recover_orphans(self.db)
        self._restart_quiet_periods()
        if partial or indexed or requeued:
            LOG.info(
                "recovered: %d partial files removed, %d files indexed, %d jobs requeued",
                partial,
                indexed,
                requeued,
            )
        return {
            "partial_files_removed": partial,
            "files_indexed": indexed,
            "jobs_requeued": requeued,
        }

    def _restart_quiet_periods(self) -> None:
        """Studies still receiving get a full quiet period from now.

        While the node was down its peers could not send; without this, a study interrupted
        mid-transfer would count as complete at once after a restart (its last instance is
        older than the quiet period) and run on half its images before the sender retries.
        """
        with self.db.session() as session:
            session.execute(
                update(Study)
                .where(Study.state == StudyState.RECEIVING)
                .values(last_received_at=utcnow())
            )

    def _reindex_spool(self) -> int:
        spool = self.scp.spool
        with self.db.session() as session:
            known = set(session.scalars(select(Instance.path)))
        n = 0
        for path in spool.files():
            rel = str(path.relative_to(spool.root))
            if rel in known:
                continue
            try:
                ds = dcmread(path, stop_before_pixels=True)
            except Exception as err:  # never ours: we only rename complete files in
                LOG.error("cannot index spooled file %s: %s", rel, err)
                continue
            item = Received(
                study_instance_uid=str(ds.StudyInstanceUID),
                series_instance_uid=str(ds.SeriesInstanceUID),
                sop_instance_uid=str(ds.SOPInstanceUID),
                sop_class_uid=str(ds.SOPClassUID),
                # Written by our SCP into the file meta; absent in files spooled by
                # older versions, which then keep the study's recorded sender.
                calling_aet=str(ds.file_meta.get("SourceApplicationEntityTitle", "")).strip(),
                calling_host="",
            )
            stored = StoredFile(rel, path.stat().st_size, sha256_file(path), created=False)
            if index_instance(self.db, item, stored):
                n += 1
        return n

    def _assemble_loop(self) -> None:
        while not self._stop.is_set():
            try:
                complete_quiet_studies(
                    self.settings,
                    self.db,
                    self.audit,
                    busy=self.scp.indexer.pending(),
                    publish=self.publisher.publish if self.publisher is not None else None,
                )
            except Exception as err:
                log_pass_failure(LOG, "study assembly", err)
            self._stop.wait(self.settings.poll_interval_s)

    def _checkpoint(self) -> None:
        """Anchor the chain's head; a failure is logged, never stops the node."""
        try:
            line = self.anchorer.checkpoint()
        except Exception as err:
            log_pass_failure(LOG, "audit checkpoint", err)
            return
        if line is not None:
            LOG.debug("audit checkpoint %d: event %d", line["n"], line["seq"])

    def _anchor_loop(self) -> None:
        while not self._stop.wait(self.settings.audit_anchor_interval_s):
            self._checkpoint()

    def _sweep_loop(self) -> None:
        from medvision.jobs._celery import Sweeper

        assert self.publisher is not None
        sweeper = Sweeper(self.settings, self.db, self.publisher)
        interval = min(5.0, self.settings.republish_after_s / 2, self.settings.worker_stale_s / 2)
        while not self._stop.is_set():
            try:
                sweeper.sweep()
            except Exception as err:
                log_pass_failure(LOG, "job sweep", err)
            self._stop.wait(interval)


__all__ = ["Node"]
