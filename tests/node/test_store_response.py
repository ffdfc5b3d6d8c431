"""The node's own C-STORE-RSP encoding (medvision.node._store_response).

The peer must receive what pynetdicom would have sent: the same command set, byte for byte,
for any Message ID and UID length; a response that is not a plain Success still goes
through pynetdicom (tests/node/test_scp_uids.py checks such a refusal's Offending Element
and Error Comment at a real storescu).
"""

from __future__ import annotations

from io import BytesIO

import pytest
from pynetdicom.dimse_messages import C_STORE_RSP
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.dsutils import decode

from medvision.node._store_response import store_success_bytes, takes_fast_path

CT = "1.2.840.10008.5.1.4.1.1.2"


def _response(message_id: int, sop_instance: str, status: int = 0x0000) -> C_STORE:
    rsp = C_STORE()
    rsp.MessageIDBeingRespondedTo = message_id
    rsp.AffectedSOPClassUID = CT
    rsp.AffectedSOPInstanceUID = sop_instance
    rsp.Status = status
    return rsp


def _pynetdicom_bytes(rsp: C_STORE) -> bytes:
    message = C_STORE_RSP()
    message.primitive_to_message(rsp)
    (pdata,) = list(message.encode_msg(1, 65536))
    ((context_id, pdv),) = pdata.presentation_data_value_list
    assert context_id == 1 and pdv[:1] == b"\x03"
    return pdv[1:]


@pytest.mark.parametrize("message_id", [1, 2, 255, 256, 65535])
@pytest.mark.parametrize(
    "sop_instance",
    ["1.2.3", "1.2.34", "2.25.331523470563290364325357262779440434179", "1." + "2" * 62],
)
def test_success_is_what_pynetdicom_sends(message_id: int, sop_instance: str) -> None:
    rsp = _response(message_id, sop_instance)
    assert takes_fast_path(rsp)
    mine = store_success_bytes(message_id, CT, sop_instance)
    assert mine == _pynetdicom_bytes(rsp)
    command = decode(BytesIO(mine), True, True)  # and a reader sees the response a PACS expects
    assert command.CommandField == 0x8001
    assert command.Status == 0x0000
    assert command.MessageIDBeingRespondedTo == message_id
    assert command.AffectedSOPInstanceUID == sop_instance


def test_anything_else_goes_through_pynetdicom() -> None:
    assert not takes_fast_path(_response(1, "1.2.3", status=0xA700))  # out of resources
    assert not takes_fast_path(_response(1, "1.2.3", status=0xB000))  # a warning
    refused = _response(1, "1.2.3", status=0xC000)
    refused.ErrorComment = "SOP Instance UID is already held in another study"
    assert not takes_fast_path(refused)
    with_offending = _response(1, "1.2.3")
    with_offending.OffendingElement = [0x00080018]
    assert not takes_fast_path(with_offending)
    request = C_STORE()  # a request (the node's sender), not a response
    request.MessageID = 1
    request.AffectedSOPClassUID = CT
    request.AffectedSOPInstanceUID = "1.2.3"
    request.DataSet = BytesIO(b"")
    assert not takes_fast_path(request)
