"""The C-STORE-RQ command set, decoded without building a pydicom dataset.

Why: pynetdicom decodes every command set into a pydicom ``Dataset`` and then copies it
into a ``C_STORE`` primitive element by element, converting and checking each value: ~14 %
of an acceptor process's GIL time at four associations (py-spy, docs/benchmarks.md), on the
thread that also reads the next PDUs. A C-STORE-RQ's command set is at most nine elements
of group 0000 in Implicit VR Little Endian (PS3.7 9.3.1.1, E.1), so :func:`parse_store_rq`
reads exactly those and :func:`decode_store_requests` builds the primitive from them through
its public setters (pynetdicom's own checks on each value). Anything else (another command,
an element a C-STORE-RQ does not have, a value with several items, a command in several
fragments, a P-DATA that also carries data set fragments, a handler bound to
``EVT_DIMSE_RECV``, chunked data sets) is decoded by pynetdicom as before; the message's
``command_set`` is still there, decoded by pynetdicom on first use.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from io import BytesIO
from typing import Any

from pydicom.dataset import Dataset
from pydicom.values import convert_AE_string, convert_UI
from pynetdicom import _config, evt
from pynetdicom.dimse_messages import C_STORE_RQ, DIMSEMessage
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.dsutils import decode
from pynetdicom.pdu_primitives import P_DATA

_ELEMENT_HEAD = struct.Struct("<HHI")
_C_STORE_RQ = 0x0001
_NO_DATA_SET = 0x0101
#: The elements of a C-STORE-RQ command set (PS3.7 table 9.3-1) and their VRs.
_VRS = {
    0x0000: "UL",  # Command Group Length
    0x0002: "UI",  # Affected SOP Class UID
    0x0100: "US",  # Command Field
    0x0110: "US",  # Message ID
    0x0700: "US",  # Priority
    0x0800: "US",  # Command Data Set Type
    0x1000: "UI",  # Affected SOP Instance UID
    0x1030: "AE",  # Move Originator Application Entity Title
    0x1031: "US",  # Move Originator Message ID
}
_REQUIRED = (0x0002, 0x0100, 0x0110, 0x0700, 0x0800, 0x1000)


@dataclass(slots=True, frozen=True)
class StoreRequest:
    """The fields of a C-STORE-RQ command set, decoded as pydicom decodes them."""

    message_id: int
    sop_class_uid: str
    sop_instance_uid: str
    priority: int
    move_originator_aet: str | None = None
    move_originator_message_id: int | None = None


def parse_store_rq(command: bytes) -> StoreRequest | None:
    """The C-STORE-RQ (with a data set) that ``command`` encodes, or None for anything else:
    None never means "refuse", only "let pynetdicom decode it"."""
    values: dict[int, Any] = {}
    end, pos = len(command), 0
    while pos < end:
        if pos + 8 > end:
            return None
        group, element, length = _ELEMENT_HEAD.unpack_from(command, pos)
        pos += 8
        vr = _VRS.get(element) if group == 0x0000 else None
        if vr is None or element in values or pos + length > end:
            return None
        raw = command[pos : pos + length]
        pos += length
        if vr == "US" or vr == "UL":
            if length != (2 if vr == "US" else 4):
                return None
            values[element] = int.from_bytes(raw, "little")
            continue
        if b"\\" in raw or not raw.isascii():
            return None  # several values, or not the default character repertoire
        values[element] = convert_UI(raw, True) if vr == "UI" else convert_AE_string(raw, True)
    if any(element not in values for element in _REQUIRED):
        return None
    if values[0x0100] != _C_STORE_RQ or values[0x0800] == _NO_DATA_SET:
        return None
    return StoreRequest(
        message_id=values[0x0110],
        sop_class_uid=values[0x0002],
        sop_instance_uid=values[0x1000],
        priority=values[0x0700],
        move_originator_aet=values.get(0x1030),
        move_originator_message_id=values.get(0x1031),
    )


class ParsedStoreRQ(C_STORE_RQ):
    """A C-STORE-RQ message whose command set :func:`parse_store_rq` read.

    The data set fragments that follow are pynetdicom's to collect (``decode_msg`` is
    DIMSEMessage's); only the primitive is built from the parsed fields.
    """

    request: StoreRequest

    @property  # type: ignore[override]
    def command_set(self) -> Dataset:
        """pynetdicom's decoding of the command set, made when something first asks."""
        if "_command_set" not in self.__dict__:
            self.command_set = decode(BytesIO(self.encoded_command_set.getvalue()), True, True)
        return self.__dict__["_command_set"]

    @command_set.setter
    def command_set(self, value: Dataset) -> None:
        # Kept in the instance's own "command_set" too: pynetdicom changes an instance's
        # class when it decodes a command, and its class reads the plain attribute.
        self.__dict__["_command_set"] = self.__dict__["command_set"] = value

    def message_to_primitive(self) -> C_STORE:  # type: ignore[override]
        request = self.request
        primitive = C_STORE()
        primitive.MessageID = request.message_id
        primitive.AffectedSOPClassUID = request.sop_class_uid
        primitive.AffectedSOPInstanceUID = request.sop_instance_uid
        primitive.Priority = request.priority
        if request.move_originator_aet is not None:
            primitive.MoveOriginatorApplicationEntityTitle = request.move_originator_aet
        if request.move_originator_message_id is not None:
            primitive.MoveOriginatorMessageID = request.move_originator_message_id
        primitive.DataSet = self.data_set
        primitive._context_id = self.context_id
        primitive._dataset_path = self._data_set_path
        primitive._dataset_file = self._data_set_file
        return primitive


def start_message(primitive: Any) -> DIMSEMessage | None:
    """The message a P-DATA starts when it is one whole C-STORE-RQ command, else None."""
    if type(primitive) is not P_DATA:
        return None
    pdvs = primitive.presentation_data_value_list
    if len(pdvs) != 1:
        return None
    context_id, data = pdvs[0]
    if len(data) < 2 or data[0] & 0x03 != 0x03:  # not a command's last fragment
        return None
    command = bytes(data[1:])
    request = parse_store_rq(command)
    if request is None:
        return None
    message = DIMSEMessage()
    message.encoded_command_set.write(command)
    message.context_id = context_id
    message.__class__ = ParsedStoreRQ  # as pynetdicom's decode_msg does on a command
    message.request = request  # type: ignore[attr-defined]
    return message


def decode_store_requests(event: evt.Event) -> None:
    """EVT_CONN_OPEN handler: the association's C-STORE-RQ command sets are decoded by
    :func:`parse_store_rq`; every other message by pynetdicom."""
    assoc = event.assoc
    dimse = assoc.dimse
    receive = dimse.receive_primitive

    def receive_primitive(primitive: Any) -> None:
        if (
            dimse.message is None
            and not _config.STORE_RECV_CHUNKED_DATASET
            and not assoc.get_handlers(evt.EVT_DIMSE_RECV)
        ):
            dimse.message = start_message(primitive)
            if dimse.message is not None:
                return  # the data set follows in the next P-DATAs
        receive(primitive)

    dimse.receive_primitive = receive_primitive  # type: ignore[method-assign]


__all__ = [
    "ParsedStoreRQ",
    "StoreRequest",
    "decode_store_requests",
    "parse_store_rq",
    "start_message",
]
