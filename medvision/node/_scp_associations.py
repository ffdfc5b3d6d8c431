"""The SCP's association control: who is admitted, the association slots, and what each
association leaves in the audit trail.

An A-ASSOCIATE-RQ is judged before pynetdicom negotiates anything (``_admission``: deny by
default); a refused caller gets A-ASSOCIATE-RJ (permanent) and a security alert, as does a
caller whose TLS handshake failed. Admitted associations are counted against
``max_associations`` here (in an acceptor process: over all the node's processes, through
its link); pynetdicom's own limit, which counts silent connections too, is out of reach.
Each association's counters (:class:`AssocStats`) are written by the C-STORE handler
(``_cstore``) and audited once when it closes, as ``instances.received`` per study and
``instances.refused``.
"""

from __future__ import annotations

import logging
import socket
import ssl
import threading
from collections import Counter
from dataclasses import dataclass, field

from pynetdicom import evt
from pynetdicom.association import Association

from medvision.audit import DbAuditLog
from medvision.config import Settings
from medvision.node._admission import ConnectionGuard, refusal
from medvision.node._scp_status import (
    LOCAL_LIMIT_EXCEEDED,
    REJECTED_PERMANENT,
    REJECTED_TRANSIENT,
    SERVICE_PROVIDER_PRESENTATION,
    SERVICE_USER,
)
from medvision.node._servers import AcceptorLink
from medvision.node._tls import describe, peer_subject

LOG = logging.getLogger("medvision.scp")

#: Events that only pynetdicom's own logging handlers listen to (we bind none of them).
_LOGGING_EVENTS = (evt.EVT_PDU_RECV, evt.EVT_PDU_SENT, evt.EVT_DIMSE_RECV, evt.EVT_DIMSE_SENT)


@dataclass
class AssocStats:
    """One open association's counters (written by its own thread)."""

    calling_aet: str
    host: str
    received: Counter[str] = field(default_factory=Counter)
    duplicates: int = 0
    failures: int = 0
    received_bytes: int = 0


class Associations:
    """The association event handlers of one :class:`~medvision.node.StorageSCP`, the
    associations it admitted, and the counts of those it served."""

    def __init__(
        self,
        settings: Settings,
        audit: DbAuditLog,
        guard: ConnectionGuard,
        acceptor: AcceptorLink | None = None,
    ) -> None:
        self.settings = settings
        self.audit = audit
        #: The SCP's connection guard (not consulted in an acceptor process: the node's is).
        self.guard = guard
        self.acceptor = acceptor
        self._stats: dict[int, AssocStats] = {}
        #: Totals of closed associations (``counts`` adds the open ones).
        self._closed_counts: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._admitted: set[Association] = set()

    def stats_of(self, assoc: Association) -> AssocStats | None:
        """The counters of an accepted association that is still open."""
        return self._stats.get(id(assoc))

    def count_refused(self) -> None:
        """An instance refused outside any association's counters (audited at once)."""
        with self._lock:
            self._closed_counts["refused"] += 1

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
                    out.update(stats_counts(stats))
                    break
                except RuntimeError:  # its study Counter grew while we summed it
                    continue
        return out

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

    def on_requested(self, event: evt.Event) -> None:
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
                shown(calling),
                host,
                shown(called),
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
            _reject(assoc, REJECTED_PERMANENT, SERVICE_USER, found.diagnostic)
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
                shown(calling),
                host,
                self.settings.max_associations,
            )
            # Rejected-transient, by the service provider (presentation): local limit exceeded.
            _reject(assoc, REJECTED_TRANSIENT, SERVICE_PROVIDER_PRESENTATION, LOCAL_LIMIT_EXCEEDED)
            return
        if self.acceptor is not None:
            self.acceptor.settle(_socket_of(assoc))
        else:
            self.guard.settle(_socket_of(assoc))

    def on_accepted(self, event: evt.Event) -> None:
        """An admitted association: its counters start, and ``association.accepted`` is
        audited (over TLS, with the subject of the peer's certificate)."""
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
            self._stats[id(assoc)] = AssocStats(calling, assoc.requestor.address)
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

    def on_handshake_failed(self, host: str, port: int, err: BaseException) -> None:
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
            self.guard.note(
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

    def on_closed(self, event: evt.Event) -> None:
        with self._lock:
            stats = self._stats.pop(id(event.assoc), None)
            if stats is not None:
                self._closed_counts.update(stats_counts(stats))
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


def stats_counts(stats: AssocStats) -> Counter[str]:
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


def shown(value: str) -> str:
    """A peer-supplied value fit for one log line: printable, at most 80 characters."""
    return repr(value[:80]) if not value.isprintable() else value[:80]


__all__ = ["AssocStats", "Associations", "shown", "stats_counts"]
