"""The DICOM SCP: C-ECHO and C-STORE into the durable spool.

Handlers are plain functions bound with their collaborators (pynetdicom's style). A
C-STORE answers Success (0x0000) only after the instance is durable in the spool: its
record flushed into the spool journal (one fdatasync for a group of records), or for a large
instance the file itself written and synced (``_spool``); the index follows in batches.
An unwritable or full spool answers Out of Resources (0xA700) and a bad instance
Cannot Understand (0xC000): undecodable, a UID that is not a whole UI value, or a SOP
Instance UID the node already holds in another study or series (``_cstore``).
Who may associate is decided in ``_admission`` (deny by default): a refused caller gets
A-ASSOCIATE-RJ (permanent) and a security alert in the audit trail (``_scp_associations``).
Connections that have not become an admitted association are limited per address and in
all, and closed by the ARTIM timer when they say nothing, so strangers cannot take the slots
of allowed AEs.

With ``dicom_tls_port`` a second listener speaks DICOM TLS (``_tls``: BCP 195 profile,
mutual certificates). Its handshake runs on the connection's own thread under the ARTIM
timer, after the connection guard admitted it (pynetdicom would run it in the accept loop,
where one silent connection stops every other); a caller whose certificate does not chain
to ``dicom_tls_ca``, or who presents none, is refused there and audited as a security alert,
before it can send an A-ASSOCIATE-RQ.

This module builds the SCP and its listeners and wires the handlers: association control
in ``_scp_associations``, C-STORE in ``_cstore``, the numbers they answer with in
``_scp_status``, the socket side in ``_servers``.
"""

from __future__ import annotations

import socket
import ssl
import threading
from collections import Counter

from pydicom import Dataset
from pynetdicom import (
    AE,
    ALL_TRANSFER_SYNTAXES,
    evt,
)
from pynetdicom.sop_class import Verification

from medvision.audit import DbAuditLog
from medvision.config import Settings
from medvision.db import Database
from medvision.node._admission import ConnectionGuard
from medvision.node._cstore import StoreHandler
from medvision.node._dul_guard import guard_association
from medvision.node._ingest import Indexer
from medvision.node._net import set_nodelay
from medvision.node._reactor_wait import wake_on_work
from medvision.node._scp_associations import Associations
from medvision.node._scp_status import SUCCESS
from medvision.node._servers import AcceptorLink, GuardedServer, HandedServer, LinkGuard
from medvision.node._spool import LOCK_WAIT_S, Spool
from medvision.node._store_request import decode_store_requests
from medvision.node._store_response import answer_stores_directly
from medvision.node._tls import server_context

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
        self._servers: list[GuardedServer] = []
        # Built now, so that an unreadable certificate stops the node at start (ConfigError).
        self._tls = server_context(settings) if settings.dicom_tls_port is not None else None
        self._guard = ConnectionGuard(
            settings.max_connections_per_host, settings.max_pending_connections
        )
        self._associations = Associations(settings, audit, self._guard, acceptor)
        self._store = StoreHandler(self.spool, self.indexer, audit, self._associations)
        ae = AE(ae_title=settings.ae_title)
        ae.maximum_pdu_size = settings.max_pdu
        # Our own limit counts admitted associations only (Associations.on_requested);
        # pynetdicom's counts every open connection (silent ones, ones being closed), so it
        # is put out of reach: the ConnectionGuard bounds those.
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
            (evt.EVT_CONN_OPEN, wake_on_work),
            (evt.EVT_CONN_OPEN, answer_stores_directly),
            (evt.EVT_CONN_OPEN, decode_store_requests),
            (evt.EVT_REQUESTED, self._associations.on_requested),
            (evt.EVT_ACCEPTED, self._associations.on_accepted),
            (evt.EVT_C_ECHO, _on_echo),
            (evt.EVT_C_STORE, self._on_store),
            (evt.EVT_RELEASED, self._associations.on_closed),
            (evt.EVT_ABORTED, self._associations.on_closed),
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
                server.on_handshake_failed = self._associations.on_handshake_failed
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
        return self._associations.counts()

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

    def prune_admitted(self) -> None:
        """Acceptor process: give back the slots of associations that ended without a
        release or abort event (a dropped connection), as the next request would."""
        self._associations.prune_admitted()

    def _on_store(self, event: evt.Event) -> int | Dataset:
        """The C-STORE handler (``_cstore``); a method of the SCP's own so that
        bench/scp_profile.py can time it."""
        return self._store.on_store(event)


def _on_echo(event: evt.Event) -> int:
    return SUCCESS


__all__ = ["STORAGE_SOP_CLASSES", "AcceptorLink", "StorageSCP"]
