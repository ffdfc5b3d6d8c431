"""The DICOM SCP: C-ECHO and C-STORE into the durable spool.

Handlers are plain functions bound with their collaborators (pynetdicom's style). A
C-STORE answers Success (0x0000) only after the instance is durable in the spool: its
record flushed into the spool journal (one fdatasync for a group of records), or for a large
instance the file itself written and synced (``_spool``); the index follows in batches.
An unwritable or full spool answers Out of Resources (0xA700) and a bad instance
Cannot Understand (0xC000): undecodable, a UID that is not a whole UI value, or a SOP
Instance UID the node already holds in another study or series (see ``_conflict``).
Who may associate is decided in ``_admission`` (deny by default): a refused caller gets
A-ASSOCIATE-RJ (permanent) and a security alert in the audit trail. Connections that have
not become an admitted association are limited per address and in all, and closed by the
ARTIM timer when they say nothing, so strangers cannot take the slots of allowed AEs.

With ``dicom_tls_port`` a second listener speaks DICOM TLS (``_tls``: BCP 195 profile,
mutual certificates). Its handshake runs on the connection's own thread under the ARTIM
timer, after the connection guard admitted it (pynetdicom would run it in the accept loop,
where one silent connection stops every other); a caller whose certificate does not chain
to ``dicom_tls_ca``, or who presents none, is refused there and audited as a security alert,
before it can send an A-ASSOCIATE-RQ.
"""

from __future__ import annotations

import logging
import socket
import ssl
import threading
from collections import Counter
from dataclasses import dataclass, field
from io import BytesIO

from pydicom import Dataset, dcmread
from pydicom.tag import Tag
from pynetdicom import (
    AE,
    ALL_TRANSFER_SYNTAXES,
    evt,
)
from pynetdicom.association import Association
from pynetdicom.sop_class import Verification

from medvision.audit import DbAuditLog
from medvision.config import Settings
from medvision.db import Database
from medvision.node._admission import ConnectionGuard, refusal
from medvision.node._dataset_bytes import file_meta_bytes, header_uids
from medvision.node._dul_guard import guard_association
from medvision.node._ingest import Indexer, Received
from medvision.node._net import set_nodelay
from medvision.node._servers import AcceptorLink, GuardedServer, HandedServer, LinkGuard
from medvision.node._spool import LOCK_WAIT_S, InvalidUID, Spool, SpoolError
from medvision.node._tls import describe, peer_subject, server_context

LOG = logging.getLogger("medvision.scp")

SUCCESS = 0x0000
OUT_OF_RESOURCES = 0xA700
CANNOT_UNDERSTAND = 0xC000

_STUDY_UID = Tag(0x0020, 0x000D)
_SERIES_UID = Tag(0x0020, 0x000E)
_SOP_UID = Tag(0x0008, 0x0018)
#: Events that only pynetdicom's own logging handlers listen to (we bind none of them).
_LOGGING_EVENTS = (evt.EVT_PDU_RECV, evt.EVT_PDU_SENT, evt.EVT_DIMSE_RECV, evt.EVT_DIMSE_SENT)

#: What a PACS may push to us: images to analyse, and the kinds of objects we send back.
STORAGE_SOP_CLASSES = [
    "1.2.840.10008.5.1.4.1.1.2",  # CT Image
    "1.2.840.10008.5.1.4.1.1.2.1",  # Enhanced CT Image
    "1.2.840.10008.5.1.4.1.1.2.2",  # Legacy Converted Enhanced CT Image
    "1.2.840.10008.5.1.4.1.1.4",  # MR Image
    "1.2.840.10008.5.1.4.1.1.4.1",  # Enhanced MR Image
    "1.2.840.10008.5.1.4.1.1.4.4",  # Legacy Converted Enhanced MR Image
    "1.2.840.10008.5.1.4.1.1.66.4",  # Segmentation
    "1.2.840.10008.5.1.4.1.1.66.7",  # Label Map Segmentation
    "1.2.840.10008.5.1.4.1.1.88.34",  # Comprehensive 3D SR
    "1.2.840.10008.5.1.4.1.1.88.33",  # Comprehensive SR
    "1.2.840.10008.5.1.4.1.1.88.22",  # Enhanced SR
    "1.2.840.10008.5.1.4.1.1.7",  # Secondary Capture Image
    "1.2.840.10008.5.1.4.1.1.7.4",  # Multi-frame True Color Secondary Capture
    "1.2.840.10008.5.1.4.1.1.88.59",  # Key Object Selection Document
]


@dataclass
class _AssocStats:
    calling_aet: str
    host: str
    received: Counter[str] = field(default_factory=Counter)
    duplicates: int = 0
    failures: int = 0
    received_bytes: int = 0


class StorageSCP:
    """Runs the DICOM listener in background threads until :meth:`stop`."""

    def __init__(
        self,
        settings: Settings,
        db: Database,
        audit: DbAuditLog,
        acceptor: AcceptorLink | None = None,
    ) -> None:
        self.settings = settings
        self.db = db
        self.audit = audit
        #: Set in an acceptor process: connections come from the node's listener
        #: (:meth:`serve`), which guards them; admission slots are the node's.
        self.acceptor = acceptor
        self.spool = (
            Spool(settings.spool_dir, name=acceptor.name, lock_wait_s=LOCK_WAIT_S)
            if acceptor is not None
            else Spool(settings.spool_dir, name=settings.node_name)
        )
        self.indexer = Indexer(
            db, spool=self.spool, on_busy=acceptor.busy if acceptor is not None else None
        )
        self._stats: dict[int, _AssocStats] = {}
        #: Totals of closed associations (``counts`` adds the open ones).
        self._closed_counts: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._servers: list[GuardedServer] = []
        # Built now, so that an unreadable certificate stops the node at start (ConfigError).
        self._tls = server_context(settings) if settings.dicom_tls_port is not None else None
        self._admitted: set[Association] = set()
        self._guard = ConnectionGuard(
            settings.max_connections_per_host, settings.max_pending_connections
        )
        ae = AE(ae_title=settings.ae_title)
        ae.maximum_pdu_size = settings.max_pdu
        # Our own limit counts admitted associations only (see _on_requested); pynetdicom's
        # counts every open connection (silent ones, ones being closed), so it is put out of
        # reach: the ConnectionGuard bounds those.
        ae.maximum_associations = 1_000_000
        # The ARTIM timer (PS3.8 9.1.5): pynetdicom waits this long for the A-ASSOCIATE-RQ
        # (and for the A-RELEASE-RP or close after a rejection) before closing.
        ae.acse_timeout = settings.artim_timeout_s
        ae.network_timeout = 60
        ae.add_supported_context(Verification, ALL_TRANSFER_SYNTAXES)
        for uid in STORAGE_SOP_CLASSES:
            ae.add_supported_context(uid, ALL_TRANSFER_SYNTAXES)
        self.ae = ae

    @property
    def port(self) -> int:
        """The plain DICOM listener's port."""
        return self._port_of(plain=True)

    @property
    def tls_port(self) -> int:
        """The DICOM TLS listener's port."""
        return self._port_of(plain=False)

    def _port_of(self, plain: bool) -> int:
        server = next((s for s in self._servers if (s.tls is None) == plain), None)
        if server is None:
            which = "plain DICOM" if plain else "DICOM TLS"
            raise RuntimeError(f"the SCP has no {which} listener (started? dicom_tls_*?)")
        return int(server.server_address[1])

    def start(self) -> None:
        self.spool.start()
        self.indexer.start()
        handlers = [
            (evt.EVT_CONN_OPEN, set_nodelay),
            (evt.EVT_CONN_OPEN, guard_association, [self.settings.max_pdu]),
            (evt.EVT_REQUESTED, self._on_requested),
            (evt.EVT_ACCEPTED, self._on_accepted),
            (evt.EVT_C_ECHO, _on_echo),
            (evt.EVT_C_STORE, self._on_store),
            (evt.EVT_RELEASED, self._on_closed),
            (evt.EVT_ABORTED, self._on_closed),
        ]
        listeners: list[tuple[int, ssl.SSLContext | None]] = []
        if not self.settings.dicom_tls_only:
            listeners.append((self.settings.dicom_port, None))
        if self._tls is not None and self.settings.dicom_tls_port is not None:
            listeners.append((self.settings.dicom_tls_port, self._tls))
        for port, tls in listeners:
            server = self.ae.make_server(
                (self.settings.bind_address, port),
                evt_handlers=handlers,
                # An acceptor process's servers listen nowhere: the node hands it connections.
                server_class=HandedServer if self.acceptor is not None else GuardedServer,
            )
            server.guard = self._guard if self.acceptor is None else LinkGuard(self.acceptor)
            if tls is not None:
                server.tls = tls
                server.handshake_timeout = self.settings.artim_timeout_s
                server.on_handshake_failed = self._on_handshake_failed
            if self.acceptor is None:
                name = "medvision-scp-accept" + ("-tls" if tls is not None else "")
                threading.Thread(target=server.serve_forever, name=name, daemon=True).start()
            # As AE.start_server does, so that AE.shutdown() and server.shutdown() find it.
            self.ae._servers.append(server)
            self._servers.append(server)

    def serve(self, sock: socket.socket, address: tuple[str, int], tls: bool = False) -> None:
        """Serve a connection the node's listener accepted (on its TLS port: ``tls``) and
        handed to this acceptor process, as the listener thread does after ``accept`` and
        the guard's verdict (the TLS handshake then runs on the connection's thread)."""
        assert self.acceptor is not None
        server = next((s for s in self._servers if (s.tls is not None) == tls), None)
        self.acceptor.track(sock)  # a closed one is reported as such
        if server is None:  # not configured here (cannot happen: the node has our settings)
            sock.close()
            return
        server.process_request(sock, address)

    def counts(self) -> Counter[str]:
        """This process's counts since it started: associations, instances (stored),
        duplicates, refused, bytes (received and stored), active (associations now)."""
        with self._lock:
            out = Counter(self._closed_counts)
            live = list(self._stats.values())
        out["active"] = len(live)
        for stats in live:  # the open associations' own counters (written by their thread)
            for _ in range(3):
                try:
                    out.update(_stats_counts(stats))
                    break
                except RuntimeError:  # its study Counter grew while we summed it
                    continue
        return out

    def stop(self) -> None:
        for server in self._servers:
            if self.acceptor is None:
                server.shutdown()
            else:  # no serve_forever to end (shutdown() would wait for it): close, and
                # abort what is still open, before the index and journal are closed
                for assoc in server.active_associations:
                    assoc.abort()
                server.server_close()
                self.ae._servers.remove(server)
        self._servers = []
        self.indexer.stop()  # waits for the spool's journal to be materialised
        self.spool.stop()

    # -- association control ------------------------------------------------------------

    def _on_requested(self, event: evt.Event) -> None:
        """Admit or reject an A-ASSOCIATE-RQ before pynetdicom negotiates anything.

        Strangers are rejected here, before they can take one of the ``max_associations``
        slots; those slots are counted over admitted associations only (pynetdicom's own
        limit counts every open connection, silent ones included, and is set out of reach).
        """
        assoc = event.assoc
        primitive = assoc.requestor.primitive
        calling = primitive.calling_ae_title.strip()
        called = primitive.called_ae_title.strip()
        host = assoc.requestor.address
        tls = isinstance(_socket_of(assoc), ssl.SSLSocket)
        found = refusal(self.settings, calling, called, host, tls)
        if found is not None:
            # Recorded before the peer hears of it, so the trail never lags the rejection.
            LOG.warning(
                "association rejected: calling AE %s at %s, called AE %s: %s",
                _shown(calling),
                host,
                _shown(called),
                found.reason,
            )
            self.audit.record(
                "association.rejected",
                outcome="failure",
                calling_aet=calling,
                calling_host=host,
                called_aet=called,
                reason=found.reason,
                security_alert=True,
                tls=tls,
            )
            # Rejected-permanent, by the service user, with the diagnostic that names it.
            _reject(assoc, 0x01, 0x01, found.diagnostic)
            return
        with self._lock:
            # A released or aborted association gives its slot back at once: its thread
            # lingers a moment (stopping the DUL), and a PACS that opens its next
            # association straight away must not be told "local limit exceeded".
            self._admitted = {
                a for a in self._admitted if a.is_alive() and not (a.is_released or a.is_aborted)
            }
            if self.acceptor is not None:  # the node's slots, over all its processes
                full = not self.acceptor.reserve(len(self._admitted) + 1)
            else:
                full = len(self._admitted) >= self.settings.max_associations
            if not full:
                self._admitted.add(assoc)
        if full:
            LOG.warning(
                "association rejected: calling AE %s at %s: all %d association slots are busy",
                _shown(calling),
                host,
                self.settings.max_associations,
            )
            # Rejected-transient, by the service provider (presentation): local limit exceeded.
            _reject(assoc, 0x02, 0x03, 0x02)
            return
        if self.acceptor is not None:
            self.acceptor.settle(_socket_of(assoc))
        else:
            self._guard.settle(_socket_of(assoc))

    def _on_accepted(self, event: evt.Event) -> None:
        assoc = event.assoc
        # Every pynetdicom association binds logging handlers to each PDU and DIMSE message
        # it receives or sends (LOG_HANDLER_LEVEL "standard"). Their Event objects and log
        # lines cost ~0.5 ms of CPU per instance on the serial receive path (~10% of
        # pynetdicom's own cost, bench/scp_profile.py --breakdown) for one INFO line per
        # instance ("Received Store Request") that the audit trail already covers. They are
        # unbound here, before the first P-DATA, for our associations only:
        # _config.LOG_HANDLER_LEVEL = "none" would silence the sender's as well.
        for logged in _LOGGING_EVENTS:
            for handler, _args in assoc.get_handlers(logged):
                assoc.unbind(logged, handler)
        calling = assoc.requestor.ae_title.strip()
        with self._lock:
            self._stats[id(assoc)] = _AssocStats(calling, assoc.requestor.address)
            self._closed_counts["associations"] += 1
        sock = _socket_of(assoc)
        tls = (
            {"tls": True, "tls_subject": peer_subject(sock)}
            if isinstance(sock, ssl.SSLSocket)
            else {}
        )
        self.audit.record(
            "association.accepted", calling_aet=calling, calling_host=assoc.requestor.address, **tls
        )

    def _on_handshake_failed(self, host: str, port: int, err: BaseException) -> None:
        """A TLS handshake on the TLS listener failed.

        A peer that spoke and was refused (no certificate, one that does not chain to
        ``dicom_tls_ca``, no common TLS version or cipher suite, plain DICOM on the TLS
        port, or it refused ours) is a failed node authentication: logged and audited as
        ``association.rejected`` with ``security_alert``, like a caller refused by AE title.
        A connection that closed or stayed silent before saying anything is only logged,
        at most once per 10 s per address, as the connection guard does for its closes.
        """
        spoke = isinstance(err, ssl.SSLError) and not isinstance(
            err, ssl.SSLEOFError | ssl.SSLZeroReturnError
        )
        if not spoke:
            self._guard.note(
                f"tls:{host}",
                f"TLS connection from {host} closed before its handshake: {describe(err)}",
            )
            return
        reason = f"TLS handshake failed: {describe(err)}"
        LOG.warning("association rejected: connection from %s:%d: %s", host, port, reason)
        try:
            self.audit.record(
                "association.rejected",
                outcome="failure",
                calling_host=host,
                calling_port=port,
                reason=reason,
                security_alert=True,
                tls=True,
            )
        except Exception as audit_err:  # the refusal stands; the log line above stays
            LOG.error("cannot audit the refused TLS connection from %s: %s", host, audit_err)

    def _on_closed(self, event: evt.Event) -> None:
        with self._lock:
            stats = self._stats.pop(id(event.assoc), None)
            if stats is not None:
                self._closed_counts.update(_stats_counts(stats))
            if self.acceptor is not None and event.assoc in self._admitted:
                self._admitted.discard(event.assoc)
                self.acceptor.release(len(self._admitted))
        if stats is None:
            return
        for study_uid, count in stats.received.items():
            self.audit.record(
                "instances.received",
                study_instance_uid=study_uid,
                calling_aet=stats.calling_aet,
                calling_host=stats.host,
                instances=count,
            )
        if stats.failures:
            self.audit.record(
                "instances.refused",
                outcome="failure",
                calling_aet=stats.calling_aet,
                calling_host=stats.host,
                instances=stats.failures,
            )

    # -- storage ------------------------------------------------------------------------

    def _on_store(self, event: evt.Event) -> int | Dataset:
        """Spool the instance as received (no re-encoding) and answer only once it is durable.

        Only the three UIDs the spool needs are parsed from the received bytes; the whole
        dataset is never decoded here. Indexing in the database happens afterwards, in
        batches, on the :class:`~medvision.node._ingest.Indexer` thread.
        """
        assoc = event.assoc
        stats = self._stats.get(id(assoc))
        try:
            calling = assoc.requestor.ae_title.strip()
            sop_class = str(event.request.AffectedSOPClassUID or "")
            sop_instance = str(event.request.AffectedSOPInstanceUID or "")
            syntax = str(event.context.transfer_syntax)
            dataset = event.encoded_dataset(False)
            # The file meta records who sent it, so that a re-index after a crash still
            # knows where the results go by default.
            data = b"".join(
                (
                    b"\x00" * 128,
                    b"DICM",
                    file_meta_bytes(sop_class, sop_instance, syntax, calling),
                    dataset,
                )
            )
            uids = header_uids(dataset, syntax)
            if uids is None:  # deflated, big endian, or not what we can walk: pydicom
                header = dcmread(
                    BytesIO(data),
                    stop_before_pixels=True,
                    specific_tags=[_STUDY_UID, _SERIES_UID, _SOP_UID],
                )
                uids = {
                    "study": str(header.get("StudyInstanceUID", "")),
                    "series": str(header.get("SeriesInstanceUID", "")),
                    "sop": str(header.get("SOPInstanceUID", "")),
                }
            item = Received(
                study_instance_uid=uids.get("study", ""),
                series_instance_uid=uids.get("series", ""),
                sop_instance_uid=sop_instance,
                sop_class_uid=sop_class,
                calling_aet=calling,
                calling_host=assoc.requestor.address,
            )
            if uids.get("sop", "") != item.sop_instance_uid:
                raise InvalidUID("SOP Instance UID in the dataset differs from the request's")
            # Whole-string UI checks before anything else: a UID names a spool folder.
            self.spool.path_for(
                item.study_instance_uid, item.series_instance_uid, item.sop_instance_uid
            )
        except InvalidUID as err:
            return self._refuse(event, stats, CANNOT_UNDERSTAND, str(err))
        except Exception as err:  # undecodable dataset from the peer
            return self._refuse(event, stats, CANNOT_UNDERSTAND, f"cannot decode dataset: {err}")
        held = self.indexer.claim(item)  # never raises: without a database it cannot check
        if held is not None:
            return self._conflict(event, stats, item, held)
        try:
            stored = self.spool.store(
                data, item.study_instance_uid, item.series_instance_uid, item.sop_instance_uid
            )
        except SpoolError as err:
            self.indexer.release(item)
            status = CANNOT_UNDERSTAND if isinstance(err, InvalidUID) else OUT_OF_RESOURCES
            return self._refuse(event, stats, status, str(err))
        # Durable now: the index follows (and is rebuilt from the spool after a crash).
        self.indexer.put(item, stored)
        if stats is not None:
            if stored.created:
                stats.received[item.study_instance_uid] += 1
                stats.received_bytes += stored.size
            else:
                stats.duplicates += 1
        return SUCCESS

    def _refuse(self, event: evt.Event, stats: _AssocStats | None, status: int, reason: str) -> int:
        """Log a refused C-STORE with what an operator needs to find it at the sender: the
        SOP Instance UID and the calling AE and address (UIDs and AE titles are not PHI;
        the dataset's patient attributes are never read here). Counted for the
        association's ``instances.refused`` audit event."""
        LOG.warning(
            "C-STORE refused (0x%04X): SOP Instance UID %s from %s at %s: %s",
            status,
            _shown(str(event.request.AffectedSOPInstanceUID or "")),
            _shown(event.assoc.requestor.ae_title.strip()),
            event.assoc.requestor.address,
            reason,
        )
        if stats is not None:
            stats.failures += 1
        return status

    def _conflict(
        self,
        event: evt.Event,
        stats: _AssocStats | None,
        item: Received,
        held: tuple[str, str],
    ) -> Dataset:
        """Refuse an instance whose SOP Instance UID the node already holds elsewhere.

        A SOP Instance UID names one instance (PS3.5 9): one arriving in another study or
        series is either a different instance under a reused UID or the same instance
        with contradicting study data. Storing it would leave a file the index (one row per
        UID) cannot hold; replacing the first would change a study that may already have
        results. So it is refused with Error: Cannot understand (PS3.4 B.2.3, Cxxx): the
        node cannot make sense of the dataset it was given. Not Out of Resources (A7xx), which
        tells the sender to retry, and not A9xx, since the dataset does match its SOP
        class. The response carries the related fields Cxxx allows: Offending Element
        (0008,0018) and an Error Comment. Audited at once as ``instances.refused`` with
        both places, so QA can follow it up with the sending PACS.
        """
        reason = (
            f"SOP Instance UID is already held in study {held[0]}, series {held[1]}"
            if held[0] != item.study_instance_uid
            else f"SOP Instance UID is already held in series {held[1]} of this study"
        )
        self._refuse(event, None, CANNOT_UNDERSTAND, reason)
        with self._lock:
            self._closed_counts["refused"] += 1
        try:
            self._audit_conflict(item, held)
        except Exception as err:  # the answer is the same; the log line above stays
            LOG.error("cannot audit the refused instance %s: %s", item.sop_instance_uid, err)
        status = Dataset()
        status.Status = CANNOT_UNDERSTAND
        status.OffendingElement = [_SOP_UID]
        status.ErrorComment = "SOP Instance UID already held elsewhere"
        return status

    def _audit_conflict(self, item: Received, held: tuple[str, str]) -> None:
        self.audit.record(
            "instances.refused",
            outcome="failure",
            study_instance_uid=item.study_instance_uid,
            series_instance_uid=item.series_instance_uid,
            sop_instance_uid=item.sop_instance_uid,
            held_in_study_instance_uid=held[0],
            held_in_series_instance_uid=held[1],
            calling_aet=item.calling_aet,
            calling_host=item.calling_host,
            instances=1,
            reason="SOP Instance UID already held in another study or series",
        )

    def prune_admitted(self) -> None:
        """Acceptor process: give back the slots of associations that ended without a
        release or abort event (a dropped connection), as the next request would."""
        assert self.acceptor is not None
        with self._lock:
            alive = {
                a for a in self._admitted if a.is_alive() and not (a.is_released or a.is_aborted)
            }
            if len(alive) != len(self._admitted):
                self._admitted = alive
                self.acceptor.release(len(alive))


def _stats_counts(stats: _AssocStats) -> Counter[str]:
    return Counter(
        instances=sum(stats.received.values()),
        duplicates=stats.duplicates,
        refused=stats.failures,
        bytes=stats.received_bytes,
    )


def _reject(assoc: Association, result: int, source: int, diagnostic: int) -> None:
    assoc.acse.send_reject(result, source, diagnostic)
    # As pynetdicom does for its own rejections: wait until the DUL has sent the
    # A-ASSOCIATE-RJ. Otherwise the reactor closes the socket first and the peer sees an
    # abort ("never connected") instead of the reason.
    assoc.kill()


def _socket_of(assoc: Association) -> socket.socket | None:
    dul_socket = assoc.dul.socket
    return dul_socket.socket if dul_socket is not None else None


def _shown(value: str) -> str:
    """A peer-supplied value fit for one log line: printable, at most 80 characters."""
    return repr(value[:80]) if not value.isprintable() else value[:80]


def _on_echo(event: evt.Event) -> int:
    return SUCCESS


__all__ = ["STORAGE_SOP_CLASSES", "AcceptorLink", "StorageSCP", "file_meta_bytes", "header_uids"]
