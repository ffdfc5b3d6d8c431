"""Socket settings shared by the SCP and the sender."""

from __future__ import annotations

import socket

from pynetdicom import evt


def set_nodelay(event: evt.Event) -> None:
    """EVT_CONN_OPEN handler: turn Nagle off on the association's socket.

    pynetdicom never sets TCP_NODELAY; a peer that waits for delayed ACKs (dcmtk, Orthanc)
    then spends ~40 ms per DIMSE message.
    """
    sock = event.assoc.dul.socket
    if sock is not None and sock.socket is not None:
        sock.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


__all__ = ["set_nodelay"]
