"""The node's reads of a PDU (medvision.node._dul_guard): what comes back, and the
acknowledgement a sender with Nagle's algorithm on is waiting for."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from types import SimpleNamespace

import pytest

from medvision.node._dul_guard import _whole_recv


@pytest.fixture
def tcp_pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    server = socket.create_server(("127.0.0.1", 0))
    sender = socket.create_connection(server.getsockname())
    node, _ = server.accept()
    server.close()
    yield sender, node
    sender.close()
    node.close()


def _quick_ack(sock: socket.socket) -> int:
    return sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_QUICKACK)


@pytest.mark.skipif(not hasattr(socket, "TCP_QUICKACK"), reason="Linux only")
def test_a_read_is_acknowledged_at_once(tcp_pair: tuple[socket.socket, socket.socket]) -> None:
    sender, node = tcp_pair
    # Requests answered at once (C-STORE-RQ, C-STORE-RSP) put Linux into delayed-ACK mode
    # on the node's side: the last short segment of a Nagle sender then waits up to 40 ms.
    for _ in range(5):
        sender.sendall(b"q" * 200)
        node.recv(200)
        node.sendall(b"r" * 20)
        sender.recv(20)
    assert _quick_ack(node) == 0
    recv = _whole_recv(SimpleNamespace(socket=node))
    sender.sendall(b"p" * 300)
    assert recv(300) == b"p" * 300
    assert _quick_ack(node) == 1


def test_a_short_read_returns_what_came(tcp_pair: tuple[socket.socket, socket.socket]) -> None:
    sender, node = tcp_pair
    recv = _whole_recv(SimpleNamespace(socket=node))
    sender.sendall(b"abc")
    sender.shutdown(socket.SHUT_WR)
    assert recv(10) == b"abc"  # the peer closed: fewer bytes, as pynetdicom's recv returns
