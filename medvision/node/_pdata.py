"""A received P-DATA-TF handed to pynetdicom without its PDU objects.

A CT slice comes as four or more P-DATA-TF PDUs of up to ``max_pdu`` bytes. For each,
pynetdicom copies the whole PDU into ``bytes``, decodes it into a ``P_DATA_TF`` with one
``PresentationDataValueItem`` per fragment (copying each fragment again), converts that into
a ``P_DATA`` primitive, and its DIMSE layer copies each fragment once more (``data[1:]``)
before appending it to the message. That was ~9 % of an acceptor's Python at four
associations (py-spy, docs/benchmarks.md). :func:`queue_p_data` splits the PDU body read by
the node's own ``recv`` into its presentation data values as views of that buffer and
queues what pynetdicom's reader queues (event 10 and an object whose ``to_primitive`` gives
the ``P_DATA``), so that the state machine, the DIMSE decoding and every error path stay
pynetdicom's; one copy remains, into the DIMSE message.

Only in state 6 (data transfer) and while nothing observes the received PDUs (no
EVT_DATA_RECV or EVT_PDU_RECV handler bound): the node unbinds pynetdicom's logging
handlers when it accepts an association.
"""

from __future__ import annotations

import logging
import struct
from typing import Any

from pynetdicom import evt
from pynetdicom.pdu_primitives import P_DATA

LOG = logging.getLogger("medvision.scp")

_ITEM_HEAD = struct.Struct(">IB")


class InvalidPData(ValueError):
    """A P-DATA-TF whose presentation data value items do not add up to its length."""


def split_pdvs(body: bytearray) -> list[tuple[int, memoryview]]:
    """The (presentation context ID, message control header + fragment) of each PDV item
    of a P-DATA-TF's variable field (PS3.8 9.3.5.1), as views of ``body``."""
    view = memoryview(body)
    pdvs: list[tuple[int, memoryview]] = []
    offset, end = 0, len(body)
    while offset < end:
        if end - offset < 6:
            raise InvalidPData(f"{end - offset} bytes left at offset {offset}, not a PDV item")
        length, context_id = _ITEM_HEAD.unpack_from(body, offset)
        # An item holds its context ID and at least the message control header.
        if length < 2 or offset + 4 + length > end:
            raise InvalidPData(f"a PDV item of length {length} at offset {offset} of {end}")
        pdvs.append((context_id, view[offset + 5 : offset + 4 + length]))
        offset += 4 + length
    return pdvs


class ReceivedPData:
    """What pynetdicom's state machine takes from ``dul._recv_pdu`` for event 10: a
    P-DATA-TF it only asks for its primitive (actions DT-2 and AR-6; the abort actions
    drop it)."""

    __slots__ = ("pdvs",)

    def __init__(self, pdvs: list[tuple[int, memoryview]]) -> None:
        self.pdvs = pdvs

    def to_primitive(self) -> P_DATA:
        primitive = P_DATA()
        # pynetdicom's own to_primitive fills the list the same way; its setter would
        # insist on bytes, and the DIMSE layer reads a view as it reads bytes.
        values: list[Any] = primitive.presentation_data_value_list
        values.extend(self.pdvs)
        return primitive


def takes_direct_path(dul: Any) -> bool:
    """Whether the next PDU of ``dul``'s association may be read by :func:`queue_p_data`."""
    assoc = dul.assoc
    return (
        dul.state_machine.current_state == "Sta6"
        and not assoc.get_handlers(evt.EVT_PDU_RECV)
        and not assoc.get_handlers(evt.EVT_DATA_RECV)
    )


def queue_p_data(dul: Any, body: bytearray, length: int) -> None:
    """Queue a P-DATA-TF whose 6-byte header announced ``length`` and whose variable
    field ``body`` has been read, as pynetdicom's ``_read_pdu_data`` would: event 17 for a
    short read (the peer closed), 19 for items that do not fit, else 10 and the PDU."""
    if len(body) != length:
        LOG.error(
            "The received PDU is shorter than expected (%d of %d bytes received)",
            len(body) + 6,
            length + 6,
        )
        dul.event_queue.put("Evt17")
        return
    try:
        pdvs = split_pdvs(body)
    except InvalidPData as err:
        LOG.error("Unable to decode the received P-DATA-TF: %s", err)
        dul.event_queue.put("Evt19")
        return
    dul.event_queue.put("Evt10")
    dul._recv_pdu.put(ReceivedPData(pdvs))


__all__ = ["InvalidPData", "ReceivedPData", "queue_p_data", "split_pdvs", "takes_direct_path"]
