"""The socket side of the SCP: pynetdicom's threaded server, asking the connection guard
before it spends a thread, running the TLS handshake on the connection's own thread, and
the variant an acceptor process uses for connections the node handed over.
"""

from __future__ import annotations

import socket
import ssl
from collections.abc import Callable
from typing import Protocol

from pynetdicom.transport import ThreadedAssociationServer

from medvision.node._admission import ConnectionGuard


class AcceptorLink(Protocol):
    """What an SCP in an acceptor process (``medvision.node._acceptor_process``) shares
    with the node that handed it its connections: the node's connection guard and
    association slots, and which studies it has on their way into the index."""

    #: Journal name in the spool (``Spool.name``).
    name: str

    def settle(self, sock: socket.socket | None) -> None:
        """The connection became an admitted association (``ConnectionGuard.settle``)."""

    def track(self, sock: socket.socket) -> None:
        """Watch a handed-over connection (the socket pynetdicom serves): the node hears
        when it is closed."""

    def replace(self, old: socket.socket, new: socket.socket) -> None:
        """``new`` (the TLS socket wrapping ``old``) is the same connection."""

    def reserve(self, admitted: int) -> bool:
        """Whether this process may hold ``admitted`` associations, within the node's
        ``max_associations`` over all its acceptor processes; records the count if so."""

    def release(self, admitted: int) -> None:
        """This process now holds ``admitted`` associations."""

    def busy(self, study_uid: str, busy: bool) -> None:
        """``Indexer.on_busy``."""


class GuardedServer(ThreadedAssociationServer):
    """pynetdicom's threaded server, asking the :class:`ConnectionGuard` before it starts
    an association thread for a new connection (socketserver's ``verify_request``: a
    refused connection is closed at once and costs no thread)."""

    guard: ConnectionGuard
    #: listen() backlog (socketserver's default is 5): a burst of connections is accepted
    #: and judged by the guard instead of waiting in SYN retries, a PACS's among them.
    request_queue_size = 256

    #: DICOM TLS: the context each connection is wrapped in (None: plain DICOM).
    tls: ssl.SSLContext | None = None
    #: How long a TLS connection may take to finish its handshake (the ARTIM timer).
    handshake_timeout: float = 10.0
    #: Called with (host, port, error) when a TLS handshake fails.
    on_handshake_failed: Callable[[str, int, BaseException], None] | None = None

    def get_request(self) -> tuple[socket.socket, tuple[str, int]]:
        # Accepted as plain TCP: pynetdicom's get_request would run the TLS handshake here,
        # in the accept loop, where a silent connection blocks every other caller.
        assert self.socket is not None
        return self.socket.accept()  # type: ignore[return-value]

    def verify_request(self, request: object, client_address: object) -> bool:
        host = client_address[0] if isinstance(client_address, tuple) else str(client_address)
        return self.guard.admit(request, host)  # type: ignore[arg-type]

    def process_request_thread(self, request: object, client_address: object) -> None:
        if self.tls is not None:
            secured = self._handshake(request, client_address)  # type: ignore[arg-type]
            if secured is None:
                return
            request = secured
        super().process_request_thread(request, client_address)  # type: ignore[arg-type]

    def _handshake(
        self, raw: socket.socket, client_address: tuple[str, int]
    ) -> ssl.SSLSocket | None:
        """The connection, TLS-secured with a client certificate we trust, or None (closed)."""
        assert self.tls is not None
        host, port = client_address[0], int(client_address[1])
        try:
            secured = self.tls.wrap_socket(raw, server_side=True, do_handshake_on_connect=False)
        except OSError:
            raw.close()
            return None
        self.guard.replace(raw, secured, host)
        try:
            secured.settimeout(self.handshake_timeout)
            secured.do_handshake()
            secured.settimeout(None)
        except (OSError, ValueError) as err:
            try:
                secured.close()
            finally:
                if self.on_handshake_failed is not None:
                    self.on_handshake_failed(host, port, err)
            return None
        return secured


class LinkGuard:
    """The guard an acceptor process's servers see: the node's guard judged the connection
    before handing it over; a TLS handshake's new socket is followed (``replace``)."""

    def __init__(self, link: AcceptorLink) -> None:
        self.link = link

    def admit(self, sock: socket.socket, host: str) -> bool:
        return True

    def replace(self, old: socket.socket, new: socket.socket, host: str) -> None:
        self.link.replace(old, new)

    def settle(self, sock: socket.socket | None) -> None:
        self.link.settle(sock)


class HandedServer(GuardedServer):
    """The association server of an acceptor process: it never listens (the node's
    listener accepts and hands connections over, :meth:`StorageSCP.serve`), so it binds
    nothing."""

    def server_bind(self) -> None:
        pass

    def server_activate(self) -> None:
        pass


__all__ = ["AcceptorLink", "GuardedServer", "HandedServer", "LinkGuard"]
