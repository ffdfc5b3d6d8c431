"""Who may open an association with the node: deny by default.

A caller is admitted when the called AE title is ours and its calling AE title is that of a
configured modality or on ``allowed_calling_aets`` (or ``accept_unknown_calling_ae`` is
set), from an address ``allowed_hosts`` and, for a modality that lists them, its
``calling_hosts`` allow, and, for a modality marked ``tls``, over the TLS listener only. A
node with no peers configured therefore accepts no one until the operator says whom (or says
"anyone"). On the TLS listener the caller has already presented a certificate that chains to
``dicom_tls_ca`` before any of this is asked (``_scp``); these checks apply on top.
"""

from __future__ import annotations

import ipaddress
import logging
import socket
import threading
import time
from dataclasses import dataclass

from medvision.config import Settings

LOG = logging.getLogger("medvision.scp")

#: A-ASSOCIATE-RJ diagnostics, rejected-permanent by the service user (PS3.8 9.3.4).
NO_REASON = 0x01
CALLING_AE_NOT_RECOGNISED = 0x03
CALLED_AE_NOT_RECOGNISED = 0x07


@dataclass(frozen=True)
class Refusal:
    """Why an association is rejected, and the diagnostic the peer is told."""

    reason: str
    diagnostic: int


def _in(host: str, networks: list[str]) -> bool:
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    return any(address in ipaddress.ip_network(n, strict=False) for n in networks)


def refusal(
    settings: Settings, calling: str, called: str, host: str, tls: bool = False
) -> Refusal | None:
    """None when the caller may associate, else why not (checked in the order a peer's
    operator would fix them: our AE title, their AE title, their address, the port).
    ``tls``: the association came in on the TLS listener."""
    if called != settings.ae_title:
        return Refusal(
            f"called AE title {called!r} is not ours ({settings.ae_title!r})",
            CALLED_AE_NOT_RECOGNISED,
        )
    modalities = [m for m in settings.modalities.values() if m.ae_title == calling]
    known = bool(modalities) or calling in settings.allowed_calling_aets
    if not known and not settings.accept_unknown_calling_ae:
        if not settings.modalities and not settings.allowed_calling_aets:
            why = "no calling AE titles are configured (modalities, allowed_calling_aets)"
        else:
            why = "it is in neither modalities nor allowed_calling_aets"
        return Refusal(
            f"calling AE title {calling!r} is not on the allow-list: {why}",
            CALLING_AE_NOT_RECOGNISED,
        )
    if settings.allowed_hosts and not _in(host, settings.allowed_hosts):
        return Refusal(f"host {host} is not on the allow-list (allowed_hosts)", NO_REASON)
    # A modality that lists its calling hosts is accepted from those only; an AE title that
    # is also on allowed_calling_aets, or a modality without a list, from anywhere allowed.
    restricted = [m for m in modalities if m.calling_hosts]
    if (
        restricted
        and len(restricted) == len(modalities)
        and calling not in settings.allowed_calling_aets
        and not any(_in(host, m.calling_hosts) for m in restricted)
    ):
        return Refusal(
            f"host {host} is not among the calling_hosts of AE title {calling!r}", NO_REASON
        )
    # A modality marked tls proves who it is with its certificate: with a TLS listener, its
    # AE title on the plain port, where anyone can claim it, is an impostor or a
    # misconfigured peer.
    if (
        not tls
        and settings.dicom_tls_port is not None
        and modalities
        and all(m.tls for m in modalities)
        and calling not in settings.allowed_calling_aets
    ):
        return Refusal(
            f"AE title {calling!r} must call over DICOM TLS (its modality has tls = true; "
            f"TLS port {settings.dicom_tls_port})",
            NO_REASON,
        )
    return None


class ConnectionGuard:
    """Bounds the connections that are not (yet) an admitted association.

    A connection is *pending* from the TCP accept until the SCP admits its
    A-ASSOCIATE-RQ (:meth:`settle`) or it closes (ARTIM timer, rejection, peer). Pending
    connections are limited per source address (``per_host``: more are closed at once) and
    in all (``total``: the one pending longest is closed to make room). A PACS sends its
    A-ASSOCIATE-RQ within milliseconds of connecting, so it always gets in, however many
    silent connections strangers hold; admitted associations are never counted or closed.
    """

    #: At most one log line per refused address in this many seconds.
    LOG_EVERY_S = 10.0

    def __init__(self, per_host: int, total: int) -> None:
        self.per_host = per_host
        self.total = total
        self._pending: dict[socket.socket, str] = {}  # insertion order: oldest first
        self._logged: dict[str, tuple[float, int]] = {}
        self._lock = threading.Lock()

    def admit(self, sock: socket.socket, host: str) -> bool:
        """Whether to serve a new connection; may close the oldest pending one."""
        evicted: socket.socket | None = None
        with self._lock:
            self._pending = {s: h for s, h in self._pending.items() if s.fileno() != -1}
            if sum(1 for h in self._pending.values() if h == host) >= self.per_host:
                self._note(
                    host,
                    f"connection(s) from {host} closed at once: {self.per_host} connections "
                    "from it are not yet associations (max_connections_per_host)",
                )
                return False
            if len(self._pending) >= self.total:
                evicted = next(iter(self._pending))
                del self._pending[evicted]
            self._pending[sock] = host
        if evicted is not None:
            self._note(
                "(silent)",
                "closed the silent connection(s) waiting longest to make room "
                "(max_pending_connections)",
            )
            try:  # the association's DUL sees the close and ends its thread
                evicted.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        return True

    def replace(self, old: socket.socket, new: socket.socket, host: str) -> None:
        """``new`` (the TLS socket wrapping ``old``) is the same pending connection."""
        with self._lock:
            self._pending.pop(old, None)
            self._pending[new] = host

    def note(self, key: str, message: str) -> None:
        """Log ``message`` at most once per ``LOG_EVERY_S`` for ``key`` (see ``_note``)."""
        with self._lock:
            self._note(key, message)

    def settle(self, sock: socket.socket | None) -> None:
        """The connection became an admitted association: no longer pending."""
        with self._lock:
            self._pending.pop(sock, None)  # type: ignore[arg-type]

    def pending(self) -> int:
        with self._lock:
            return sum(1 for s in self._pending if s.fileno() != -1)

    def _note(self, key: str, message: str) -> None:
        """Log ``message`` at most once per ``LOG_EVERY_S`` for ``key``, with a count of
        what was left unsaid, so that a flood cannot flood the log too."""
        now = time.monotonic()
        if len(self._logged) > 4096:  # many addresses: forget the old ones
            self._logged.clear()
        last, count = self._logged.get(key, (-self.LOG_EVERY_S, 0))
        if now - last >= self.LOG_EVERY_S:
            LOG.warning("%s%s", message, f"; {count} more since the last line" if count else "")
            self._logged[key] = (now, 0)
        else:
            self._logged[key] = (last, count + 1)


__all__ = ["ConnectionGuard", "Refusal", "refusal"]
