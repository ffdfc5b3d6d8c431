"""pynetdicom's reactors waiting for work instead of polling (medvision.node._reactor_wait).

A pynetdicom acceptor on loopback with the node's two EVT_CONN_OPEN handlers (the PDU
guard and the waiters), talked to by a pynetdicom SCU in this process and by dcmtk: what
an operator would notice if the waiters were wrong is an association that stalls, one
that never ends, a timeout that no longer fires, or descriptors that pile up.
"""

from __future__ import annotations

import os
import socket
import statistics
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydicom import dcmread
from pynetdicom import AE, evt
from pynetdicom.sop_class import CTImageStorage, Verification

from medvision.node._dul_guard import guard_association
from medvision.node._reactor_wait import LONGEST_WAIT_S, wake_on_work
from tests.node.peers import dcmtk, wait_for


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


@pytest.fixture
def acceptor() -> Iterator[tuple[AE, object, list[str]]]:
    """A pynetdicom acceptor with the node's handlers; the SOP Instance UIDs it stored."""
    stored: list[str] = []

    def on_store(event: evt.Event) -> int:
        stored.append(str(event.request.AffectedSOPInstanceUID))
        return 0x0000

    ae = AE(ae_title="WAITS")
    ae.add_supported_context(Verification)
    ae.add_supported_context(CTImageStorage)
    server = ae.start_server(
        ("127.0.0.1", 0),
        block=False,
        evt_handlers=[
            (evt.EVT_CONN_OPEN, guard_association, [65536]),
            (evt.EVT_CONN_OPEN, wake_on_work),
            (evt.EVT_C_STORE, on_store),
        ],
    )
    try:
        yield ae, server, stored
    finally:
        server.shutdown()


def _scu() -> AE:
    ae = AE(ae_title="SCU")
    ae.add_requested_context(Verification)
    ae.add_requested_context(CTImageStorage)
    ae.dimse_timeout = 10
    return ae


def test_many_associations_store_and_leave_no_descriptors(acceptor, chest_ct_dir: Path) -> None:
    _, server, stored = acceptor
    port = server.server_address[1]
    ct = dcmread(sorted(chest_ct_dir.glob("*.dcm"))[0])
    scu = _scu()
    # One association first, so that what pynetdicom keeps for good is open before counting.
    first = scu.associate("127.0.0.1", port, ae_title="WAITS")
    assert first.is_established
    first.release()
    wait_for("the first association to end", lambda: not server.active_associations, 10)
    before = _open_fds()
    for _ in range(30):
        assoc = scu.associate("127.0.0.1", port, ae_title="WAITS")
        assert assoc.is_established
        assert assoc.send_c_echo().Status == 0x0000
        assert assoc.send_c_store(ct).Status == 0x0000
        assoc.release()
        assert assoc.is_released
    wait_for("the associations to end", lambda: not server.active_associations, 10)
    assert stored.count(ct.SOPInstanceUID) == 30
    # Each association's wake-up pair is closed with it, not left to the garbage collector.
    wait_for("descriptors to be given back", lambda: _open_fds() <= before, 10)


def test_answers_do_not_wait_for_the_upper_bound(acceptor) -> None:
    """Every hand-over between the threads wakes the one waiting: an echo is answered in
    about a millisecond, not after the waits' upper bound (which is what a hand-over
    that announces nothing would cost, per message)."""
    _, server, _ = acceptor
    assoc = _scu().associate("127.0.0.1", server.server_address[1], ae_title="WAITS")
    assert assoc.is_established
    round_trips = []
    for _ in range(21):
        start = time.perf_counter()
        assert assoc.send_c_echo().Status == 0x0000
        round_trips.append(time.perf_counter() - start)
    assoc.release()
    # Without its announcement a hand-over waits for a random part of the bound: ~25 ms.
    assert statistics.median(round_trips) < LONGEST_WAIT_S / 5, round_trips


def test_dcmtk_store_over_one_association(acceptor, chest_ct_dir: Path) -> None:
    _, server, stored = acceptor
    files = sorted(chest_ct_dir.glob("*.dcm"))[:12]
    done = dcmtk(
        "storescu", "-aet", "PEER", "-aec", "WAITS", "127.0.0.1", server.server_address[1], *files
    )
    assert done.returncode == 0, done.stderr
    assert sorted(stored) == sorted(
        str(dcmread(f, stop_before_pixels=True).SOPInstanceUID) for f in files
    )


def test_idle_timeout_still_ends_a_silent_association(acceptor) -> None:
    """The reactors now sleep until something happens; the node's own timers must still
    fire while nothing does (pynetdicom checks them on each turn of its reactors)."""
    ae, server, _ = acceptor
    ae.network_timeout = 1.0  # the acceptor's idle timeout, for associations opened from now
    scu = _scu()
    assoc = scu.associate("127.0.0.1", server.server_address[1], ae_title="WAITS")
    assert assoc.is_established
    wait_for("the idle association to be ended by the acceptor", lambda: not assoc.is_alive(), 10)
    assert assoc.is_aborted
    wait_for("the acceptor to drop it", lambda: not server.active_associations, 10)


def test_peer_that_vanishes_ends_the_association(acceptor) -> None:
    """A peer closing its TCP connection without a release or an abort (a crashed PACS):
    the waiting reactor sees the closed socket at once and the association ends."""
    _, server, _ = acceptor
    scu = _scu()
    assoc = scu.associate("127.0.0.1", server.server_address[1], ae_title="WAITS")
    assert assoc.is_established
    wait_for("the acceptor's association", lambda: len(server.active_associations) == 1, 10)
    raw = assoc.dul.socket.socket
    raw.shutdown(socket.SHUT_RDWR)
    raw.close()
    wait_for("the acceptor to end it", lambda: not server.active_associations, 10)
    assoc.abort()
