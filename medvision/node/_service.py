"""The node: SCP, study assembly, worker pool and sender around one database.

With ``broker_url`` set (scale-out, docs/scaling.md) the node is the receiver: no worker
pool; the assembler publishes each new job to RabbitMQ and a sweep thread re-publishes
lost messages and requeues the jobs of dead Celery workers.

``start`` first recovers from whatever the last process left behind: temporary files that
were never acknowledged are removed, spooled files the index does not know are indexed, and
jobs left running are queued again. So a restart resumes every unfinished study and job.

With ``scp_processes`` other than 1 (the default: one per core) the SCP runs in acceptor
processes behind the node's listener (:mod:`medvision.node._acceptors`); ``scp`` is then
None and ``acceptors`` the pool. Everything else stays in this process.

With ``node_name`` set the node is one of several receivers on one PostgreSQL database and
data folder (:mod:`medvision.node._receivers`, docs/scaling.md): it recovers only its own
journals and job claims, publishes its heartbeat and busy studies, and leaves alone the
studies other live receivers still have on their way into the index.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time

from sqlalchemy import update

import medvision
from medvision.audit import Anchorer, DbAuditLog, load_or_create_key
from medvision.config import Settings
from medvision.db import Database, Study, StudyState, log_pass_failure, utcnow
from medvision.jobs import WorkerPool, recover_orphans
from medvision.node._acceptors import AcceptorPool, AcceptorReporter, retire_slots
from medvision.node._assembler import complete_quiet_studies
from medvision.node._ingest import reindex_spool
from medvision.node._receivers import ReceiverRow, claim_prefix, requeue_lost
from medvision.node._scp import StorageSCP
from medvision.node._sender import Sender
from medvision.node._spool import replay_journals, replay_unnamed

LOG = logging.getLogger("medvision.node")


class Node:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        self.db = Database(settings.db_url)
        self.db.create_schema()
        self.audit = DbAuditLog(self.db)
        processes = settings.acceptor_count
        self.scp: StorageSCP | None = None
        self.acceptors: AcceptorPool | None = None
        self._reporter: AcceptorReporter | None = None
        if processes == 1:
            self.scp = StorageSCP(settings, self.db, self.audit)
        else:
            self.acceptors = AcceptorPool(settings, self.db, processes)
        self.distributed = bool(settings.broker_url)
        #: With a ``node_name``, one of several receivers on this database (``_receivers``).
        self.receiver = ReceiverRow(self.db, settings.node_name) if settings.node_name else None
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
        self._beater: threading.Thread | None = None
        self.publisher = None
        if self.distributed:
            from medvision.jobs import Publisher

            self.publisher = Publisher(settings.broker_url)

    def start(self) -> None:
        if self.receiver is not None:
            self.receiver.check_alone(self.settings.worker_stale_s)
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
        if self.scp is not None:
            self.scp.start()
            # The one acceptor is this process (slot 1), shown like the others would be.
            name = self.settings.receiver_name
            self._reporter = AcceptorReporter(self.db, 1, self.scp.counts, name)
            self._reporter.start()
            retire_slots(self.db, 1, name)
        else:
            assert self.acceptors is not None
            self.acceptors.start()
        # From when the node can receive again: acceptor processes take seconds to start.
        self._restart_quiet_periods()
        if self.receiver is not None:
            self.receiver.beat(self._local_busy())
            self._beater = threading.Thread(
                target=self._receiver_loop, name="medvision-receiver", daemon=True
            )
            self._beater.start()
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
        if self.scp is not None:
            self.scp.stop()
        if self._reporter is not None:
            self._reporter.stop()
        if self.acceptors is not None:
            self.acceptors.stop()
        interrupted = self.workers.stop() if self.workers is not None else []
        self.sender.stop()
        for thread in (self._assembler, self._sweeper, self._anchor_thread, self._beater):
            if thread is not None:
                thread.join(5)
        if self.publisher is not None:
            self.publisher.close()
        if self.receiver is not None:
            try:
                self.receiver.beat((), state="stopped")
            except Exception as err:
                log_pass_failure(LOG, "receiver report", err)
        if interrupted:
            self.audit.record("application.stop", interrupted_jobs=interrupted)
        else:
            self.audit.record("application.stop")
        self._checkpoint()
        self.db.dispose()
        return interrupted

    @property
    def dicom_port(self) -> int:
        """The plain DICOM listener's port (``dicom_port`` 0: the one it got)."""
        receiver = self.scp if self.scp is not None else self.acceptors
        assert receiver is not None
        return receiver.port

    @property
    def dicom_tls_port(self) -> int:
        """The DICOM TLS listener's port."""
        receiver = self.scp if self.scp is not None else self.acceptors
        assert receiver is not None
        return receiver.tls_port

    def recover(self) -> dict[str, int]:
        if self.scp is not None:
            partial = self.scp.spool.discard_partial()
            # Journals of acceptor processes from a run with scp_processes > 1.
            partial += replay_journals(self.settings.spool_dir, node=self.settings.node_name)
        else:
            assert self.acceptors is not None
            partial = self.acceptors.recover()
        if self.settings.node_name:
            partial += replay_unnamed(self.settings.spool_dir)
        indexed = reindex_spool(self.db, self.settings.spool_dir)
        # Scale-out: running jobs belong to Celery workers that may well be alive; the
        # sweep requeues those whose worker stopped reporting. Of several receivers, each
        # takes back only its own earlier claims: the others' may be running right now.
        if self.distributed:
            requeued = 0
        elif self.receiver is not None:
            requeued = recover_orphans(self.db, claim_prefix(self.settings.node_name))
        else:
            requeued = recover_orphans(self.db)
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

    def _assemble_loop(self) -> None:
        while not self._stop.is_set():
            try:
                # Not while a dead acceptor's instances are being indexed again.
                lock: contextlib.AbstractContextManager = (
                    self.acceptors.assembly_lock
                    if self.acceptors is not None
                    else contextlib.nullcontext()
                )
                busy = self._local_busy()
                if self.receiver is not None:
                    # Not quiet while any live receiver still has instances of it on their
                    # way into the index (each publishes its own: _receiver_loop).
                    busy |= self.receiver.others_busy(self.settings.worker_stale_s)
                with lock:
                    complete_quiet_studies(
                        self.settings,
                        self.db,
                        self.audit,
                        busy=busy,
                        publish=self.publisher.publish if self.publisher is not None else None,
                    )
            except Exception as err:
                log_pass_failure(LOG, "study assembly", err)
            self._stop.wait(self.settings.poll_interval_s)

    def _local_busy(self) -> set[str]:
        """Studies with instances acknowledged here and not yet in the index."""
        if self.acceptors is not None:
            return self.acceptors.busy()
        assert self.scp is not None
        return self.scp.indexer.pending()

    def _receiver_loop(self) -> None:
        """One of several receivers: our heartbeat and busy studies for the others every
        ``poll_interval_s`` (its own thread, so a long assembly pass does not hold it up),
        and, without Celery, the jobs of receivers taken for dead queued again."""
        assert self.receiver is not None
        last_sweep = 0.0
        while not self._stop.wait(self.settings.poll_interval_s):
            try:
                self.receiver.beat(self._local_busy())
                if not self.distributed and time.monotonic() - last_sweep >= 5.0:
                    last_sweep = time.monotonic()
                    requeue_lost(self.db, self.settings.node_name, self.settings.worker_stale_s)
            except Exception as err:
                log_pass_failure(LOG, "receiver report", err)

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
        from medvision.jobs import Sweeper

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
