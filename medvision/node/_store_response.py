"""The C-STORE-RSP of a stored instance, encoded without building a pydicom dataset.

Why: pynetdicom turns every response primitive into a pydicom ``Dataset`` (seven elements,
each value validated) and encodes it with pydicom's writer, ~0.3 ms of Python per
response, on the association's thread and under the GIL the other associations of the
process need. The Success response of a C-STORE is seven fixed elements in Implicit VR
Little Endian (PS3.7 9.3.1.2, E.1), so :func:`answer_stores_directly` sends those bytes
itself; every other response (a failure status with its Error Comment or Offending
Element, a warning, any other DIMSE message) goes through pynetdicom as before.
"""

from __future__ import annotations

import struct
from typing import Any

from pynetdicom import evt
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.pdu_primitives import P_DATA

#: Command Field of a C-STORE-RSP, and Command Data Set Type "no data set" (PS3.7 E.1).
_C_STORE_RSP = 0x8001
_NO_DATA_SET = 0x0101
#: PDV message control header: a command, the last (only) fragment (PS3.8 E.2).
_LAST_COMMAND_FRAGMENT = b"\x03"


def _ui(tag_element: int, uid: str) -> bytes:
    raw = uid.encode("ascii")
    if len(raw) % 2:
        raw += b"\x00"
    return struct.pack("<HHI", 0x0000, tag_element, len(raw)) + raw


def _us(tag_element: int, value: int) -> bytes:
    return struct.pack("<HHIH", 0x0000, tag_element, 2, value)


def store_success_bytes(message_id: int, sop_class: str, sop_instance: str) -> bytes:
    """The encoded command set of a C-STORE-RSP with Status Success (0000H), as pynetdicom
    encodes it: the same elements in the same order, so the peer sees the same bytes."""
    body = b"".join(
        (
            _ui(0x0002, sop_class),
            _us(0x0100, _C_STORE_RSP),
            _us(0x0120, message_id),
            _us(0x0800, _NO_DATA_SET),
            _us(0x0900, 0x0000),
            _ui(0x1000, sop_instance),
        )
    )
    return struct.pack("<HHII", 0x0000, 0x0000, 4, len(body)) + body


def takes_fast_path(primitive: Any) -> bool:
    """A Success C-STORE-RSP with nothing but the fields :func:`store_success_bytes` writes."""
    return (
        type(primitive) is C_STORE
        and primitive.MessageIDBeingRespondedTo is not None
        and primitive.Status == 0x0000
        and primitive.AffectedSOPClassUID is not None
        and primitive.AffectedSOPInstanceUID is not None
        and primitive.ErrorComment is None
        and primitive.OffendingElement is None
    )


def answer_stores_directly(event: evt.Event) -> None:
    """EVT_CONN_OPEN handler: the association's Success C-STORE-RSPs are encoded by
    :func:`store_success_bytes`; anything else is sent by pynetdicom."""
    dimse = event.assoc.dimse
    send_msg = dimse.send_msg

    def send(primitive: Any, context_id: int) -> None:
        if not takes_fast_path(primitive):
            send_msg(primitive, context_id)
            return
        encoded = store_success_bytes(
            primitive.MessageIDBeingRespondedTo,
            str(primitive.AffectedSOPClassUID),
            str(primitive.AffectedSOPInstanceUID),
        )
        limit = dimse.maximum_pdu_size
        if limit and len(encoded) > limit - 6:  # a peer taking tiny PDUs: fragments
            send_msg(primitive, context_id)
            return
        pdata = P_DATA()
        pdata.presentation_data_value_list.append((context_id, _LAST_COMMAND_FRAGMENT + encoded))
        dimse.dul.send_pdu(pdata)

    dimse.send_msg = send  # type: ignore[method-assign]


__all__ = ["answer_stores_directly", "store_success_bytes", "takes_fast_path"]
