"""Two guards on pynetdicom's upper layer for each association the SCP accepts.

**A PDU longer than the node allows is refused before it is read** (PS3.8 9.3.1, D.1).
pynetdicom reads a PDU by its 6-byte header and then ``recv``\\ s the announced length into
memory, whatever that length is and whatever the node negotiated: a P-DATA-TF four times the
maximum length the node offered was decoded and answered, and a stranger announcing an
A-ASSOCIATE-RQ of 4 GiB had the node buffer whatever it sent, before any AE title was
checked. :func:`limit_pdu_lengths` checks each header first: a P-DATA-TF longer than the
node's ``max_pdu`` (the Maximum Length it offered: the longest P-DATA-TF variable field it
receives), or any other PDU longer than :data:`MAX_OTHER_PDU`, gets an A-ABORT (service
provider, invalid PDU parameter value) and the connection is closed, the body unread;
pynetdicom then sees a closed transport and ends the association as aborted.

**A message the upper layer cannot handle aborts the association** instead of killing its
thread. pynetdicom's state machine re-raises an exception from an action (a P-DATA-TF whose
command set has no Command Field is one) out of its reactor thread: the peer got no
A-ABORT, and the association ended without EVT_ABORTED or EVT_RELEASED, so the SCP never
audited the instances it had already acknowledged on it (``instances.received``).
:func:`guard_association` turns such an exception into the standard answer to an invalid
PDU (event 19: A-ABORT to the peer, A-P-ABORT to the association, which then ends as
aborted).
"""

from __future__ import annotations

import logging
import socket
import struct
from typing import Any

from pynetdicom import evt
from pynetdicom.fsm import TRANSITION_TABLE

from medvision.node._pdata import queue_p_data, takes_direct_path

LOG = logging.getLogger("medvision.scp")

P_DATA_TF = 0x04
#: A-ASSOCIATE-RQ/AC/RJ, P-DATA-TF, A-RELEASE-RQ/RP, A-ABORT (PS3.8 9.3).
_KNOWN_TYPES = frozenset(range(0x01, 0x08))
#: Longest A-ASSOCIATE-RQ (or any PDU but a P-DATA-TF) read: 128 presentation contexts of 30
#: transfer syntaxes each come to ~120 KiB, a user identity assertion to at most 64 KiB more.
MAX_OTHER_PDU = 1 << 20
#: A-ABORT, source service provider (2), reason invalid PDU parameter value (6), PS3.8 9.3.8.
_ABORT = struct.pack(">BBIBBBB", 0x07, 0, 4, 0, 0, 0x02, 0x06)


def guard_association(event: evt.Event, max_pdu: int) -> None:
    """EVT_CONN_OPEN handler: both guards (see the module), before the reactor starts."""
    limit_pdu_lengths(event, max_pdu)
    abort_on_failed_action(event)


def abort_on_failed_action(event: evt.Event) -> None:
    """Wrap the state machine's ``do_action``: an action that raises is followed by
    event 19 (invalid PDU) in the same state, where the table has one."""
    assoc = event.assoc
    dul = assoc.dul
    machine = dul.state_machine
    do_action = machine.do_action

    def guarded(fsm_event: str) -> None:
        try:
            do_action(fsm_event)
        except Exception as err:
            state = machine.current_state
            if fsm_event == "Evt19" or ("Evt19", state) not in TRANSITION_TABLE:
                raise
            LOG.warning(
                "association aborted: %s sent what the node cannot handle (%s in %s): %s: %s",
                assoc.requestor.address,
                fsm_event,
                state,
                type(err).__name__,
                err,
            )
            # do_action has already told the reactor to stop; this sends the A-ABORT and
            # queues the A-P-ABORT the association thread ends on.
            do_action("Evt19")
            if dul.socket is not None:
                dul.socket.close()

    machine.do_action = guarded  # type: ignore[method-assign]


def limit_pdu_lengths(event: evt.Event, max_pdu: int) -> None:
    """Check each PDU's announced length before its body is read.

    ``max_pdu``: the Maximum Length the node offers (0: P-DATA-TF unlimited, as the setting
    says). Wraps the association's socket ``recv`` so that the header read of each PDU
    (the first 6-byte read of pynetdicom's ``_read_pdu_data``) is checked; a PDU within
    the limits costs one comparison.
    """
    assoc = event.assoc
    dul = assoc.dul
    sock = dul.socket
    if sock is None:
        return
    read_pdu = dul._read_pdu_data
    recv = _whole_recv(sock) if sock.socket is not None else sock.recv
    header_next = [False]
    #: A header read for the direct path that turned out not to be a P-DATA-TF: the next
    #: read (pynetdicom's, for that header) gets it.
    pushed_back: list[Any] = [None]

    def read_pdu_data() -> None:
        header_next[0] = True
        try:
            if takes_direct_path(dul):
                head = checked_recv(6)
                if len(head) == 6 and head[0] == P_DATA_TF and not refused[0]:
                    length = struct.unpack_from(">I", head, 2)[0]
                    queue_p_data(dul, checked_recv(length), length)
                    return
                pushed_back[0] = head  # checked already: pynetdicom reads the rest
            read_pdu()
        finally:
            header_next[0] = False
            pushed_back[0] = None

    refused = [False]

    def checked_recv(nr_bytes: int) -> Any:
        if pushed_back[0] is not None:
            data, pushed_back[0] = pushed_back[0], None
            return data
        if refused[0]:  # nothing more is read from this peer: pynetdicom sees the end
            return bytearray()
        data = recv(nr_bytes)
        if not header_next[0]:
            return data
        header_next[0] = False
        if nr_bytes != 6 or len(data) != 6:
            return data
        pdu_type, _, length = struct.unpack(">BBI", bytes(data))
        if pdu_type not in _KNOWN_TYPES:  # pynetdicom aborts on the header, body unread
            return data
        if pdu_type == P_DATA_TF:
            limit, what = max_pdu, "max_pdu, the maximum length the node offered"
        else:
            limit, what = MAX_OTHER_PDU, "the limit for PDUs other than P-DATA-TF"
        if limit and length > limit:
            LOG.warning(
                "association aborted: %s sent a PDU (type 0x%02X) of %d bytes, longer than %s "
                "(%d bytes)",
                assoc.requestor.address,
                pdu_type,
                length,
                what,
                limit,
            )
            raw = sock.socket
            if raw is not None:
                try:
                    raw.sendall(_ABORT)
                    raw.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
            # The body read that follows gets nothing: pynetdicom logs a short PDU and
            # handles a closed transport (event 17), which ends the association as aborted.
            refused[0] = True
        return data

    dul._read_pdu_data = read_pdu_data  # type: ignore[method-assign]
    sock.recv = checked_recv  # type: ignore[method-assign]


def _whole_recv(sock: Any) -> Any:
    """``AssociationSocket.recv`` reading into one buffer of the wanted size.

    pynetdicom reads a PDU's body 4 KiB at a time, appending each piece to a bytearray:
    sixteen ``recv`` calls and copies for each 64 KiB P-DATA-TF of the ~130 a CT study
    brings. Reading straight into a buffer of the announced size takes one or two, and
    returns what pynetdicom's returns: the bytes read, fewer only when the peer closed.
    """
    raw = sock.socket
    quick_ack = _quick_ack(raw)

    def recv(nr_bytes: int) -> bytearray:
        buf = bytearray(nr_bytes)
        got = 0
        with memoryview(buf) as view:
            while got < nr_bytes:
                n = raw.recv_into(view[got:])
                if not n:
                    break
                got += n
                quick_ack()
        if got < nr_bytes:
            del buf[got:]
        return buf

    return recv


def _quick_ack(raw: Any) -> Any:
    """A function that asks the kernel to acknowledge what was read at once (Linux
    ``TCP_QUICKACK``), or one that does nothing where there is no such option.

    A sender that leaves Nagle's algorithm on (dcmtk's storescu as Debian builds it, unless
    ``TCP_NODELAY=1`` is set) holds the short last segment of an instance until its earlier
    data is acknowledged, and Linux delays that acknowledgement by up to 40 ms: with the
    sender waiting for each C-STORE-RSP, about one instance in ten took 40-160 ms instead
    of 3 ms (bench: storescu's timestamps, docs/benchmarks.md). Quick-ack mode lapses by
    itself, so it is asked again after each read.
    """
    option = getattr(socket, "TCP_QUICKACK", None)
    if option is None or raw.family not in (socket.AF_INET, socket.AF_INET6):
        return lambda: None
    setsockopt = raw.setsockopt

    def quick_ack() -> None:
        try:
            setsockopt(socket.IPPROTO_TCP, option, 1)
        except OSError:  # closed meanwhile: the next read says so
            pass

    return quick_ack


__all__ = ["MAX_OTHER_PDU", "guard_association"]
