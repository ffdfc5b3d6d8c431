"""C-STORE-RQ command sets read without pydicom datasets (medvision.node._store_request).

What a peer would notice if the parser were wrong: a different Message ID in the response,
another SOP Instance UID or priority in the audit, a data set cut or joined. So each check
compares the primitive with the one pynetdicom itself decodes from the same P-DATAs, and a
real association shows that stores take the parsed path and that everything else does not.
"""

from __future__ import annotations

import random
import struct
import threading
from io import BytesIO
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.uid import generate_uid
from pynetdicom import AE, evt
from pynetdicom._handlers import standard_dimse_recv_handler
from pynetdicom.dimse_messages import C_ECHO_RQ, C_STORE_RQ, DIMSEMessage
from pynetdicom.dimse_primitives import C_ECHO, C_STORE
from pynetdicom.pdu_primitives import P_DATA
from sqlalchemy import select

from medvision.db import Instance
from medvision.node import _store_request
from medvision.node._store_request import (
    ParsedStoreRQ,
    decode_store_requests,
    parse_store_rq,
    start_message,
)
from tests.node.peers import dcmtk, free_port

FIELDS = (
    "MessageID",
    "AffectedSOPClassUID",
    "AffectedSOPInstanceUID",
    "Priority",
    "MoveOriginatorApplicationEntityTitle",
    "MoveOriginatorMessageID",
    "MessageIDBeingRespondedTo",
    "Status",
    "ErrorComment",
    "OffendingElement",
)


def store_pdatas(rng: random.Random, max_pdu: int = 16_384) -> list[P_DATA]:
    """A C-STORE-RQ with random fields as pynetdicom's SCU would send it."""
    request = C_STORE()
    request.MessageID = rng.randrange(0, 65536)
    request.AffectedSOPClassUID = rng.choice(["1.2.840.10008.5.1.4.1.1.2", "1.2.3"])
    # odd and even lengths: an odd UID is padded with a NUL that must not reach the value
    request.AffectedSOPInstanceUID = generate_uid()[: rng.randrange(10, 64)].rstrip(".")
    request.Priority = rng.choice([0, 1, 2])
    if rng.random() < 0.5:  # sent on behalf of a C-MOVE
        request.MoveOriginatorApplicationEntityTitle = rng.choice(["PACS", " ARCHIVE 2 "])
        request.MoveOriginatorMessageID = rng.randrange(0, 65536)
    request.DataSet = BytesIO(rng.randbytes(rng.randrange(2, 60_000, 2)))
    message = C_STORE_RQ()
    message.primitive_to_message(request)
    return list(message.encode_msg(rng.choice([1, 3, 255]), max_pdu))


def pynetdicoms(pdatas: list[P_DATA]) -> tuple[DIMSEMessage, C_STORE]:
    message = DIMSEMessage()
    done = [message.decode_msg(p) for p in pdatas]
    assert done[-1] and not any(done[:-1])
    return message, message.message_to_primitive()


@pytest.mark.parametrize("seed", range(40))
def test_the_parsed_primitive_is_the_one_pynetdicom_decodes(seed: int) -> None:
    rng = random.Random(seed)
    pdatas = store_pdatas(rng)
    theirs_message, theirs = pynetdicoms(pdatas)

    ours_message = start_message(pdatas[0])
    assert isinstance(ours_message, ParsedStoreRQ)
    done = [ours_message.decode_msg(p) for p in pdatas[1:]]
    assert done[-1] and not any(done[:-1])
    ours = ours_message.message_to_primitive()

    assert type(ours) is C_STORE
    for name in FIELDS:
        assert getattr(ours, name) == getattr(theirs, name), name
    assert ours._context_id == theirs._context_id == pdatas[0].presentation_data_value_list[0][0]
    assert ours.DataSet.getvalue() == theirs.DataSet.getvalue()
    # and the command set, for anything that asks for it, is pynetdicom's own decoding
    assert ours_message.command_set == theirs_message.command_set


def _command(*elements: tuple[int, bytes]) -> bytes:
    body = b"".join(struct.pack("<HHI", 0, e, len(v)) + v for e, v in elements)
    return struct.pack("<HHII", 0, 0, 4, len(body)) + body


def _us(value: int) -> bytes:
    return struct.pack("<H", value)


STORE = [
    (0x0002, b"1.2.840.10008.5.1.4.1.1.2\x00"),
    (0x0100, _us(0x0001)),
    (0x0110, _us(7)),
    (0x0700, _us(0)),
    (0x0800, _us(0x0000)),
    (0x1000, b"1.2.3.4"),
]


def test_a_plain_command_set_parses() -> None:
    parsed = parse_store_rq(_command(*STORE))
    assert parsed is not None
    assert (parsed.message_id, parsed.sop_class_uid, parsed.sop_instance_uid) == (
        7,
        "1.2.840.10008.5.1.4.1.1.2",
        "1.2.3.4",
    )


@pytest.mark.parametrize(
    "command",
    [
        pytest.param(_command(*STORE[:-1]), id="no SOP Instance UID"),
        pytest.param(_command(*STORE, (0x0900, _us(0))), id="an element a request lacks"),
        pytest.param(_command(*STORE, (0x1000, b"1.2.3.5\x00")), id="an element twice"),
        pytest.param(_command(*STORE[:4], (0x0800, _us(0x0101)), STORE[5]), id="no data set"),
        pytest.param(_command(*STORE[:1], (0x0100, _us(0x0030)), *STORE[2:]), id="C-ECHO"),
        pytest.param(_command(*STORE[:2], (0x0110, b"\x07\x00\x00\x00"), *STORE[3:]), id="UL ID"),
        pytest.param(_command(*STORE[:5], (0x1000, b"1.2.3\\1.2.4")), id="two UIDs"),
        pytest.param(_command(*STORE[:5], (0x1000, "1.2.\u00e93".encode())), id="not ASCII"),
        pytest.param(_command(*STORE)[:-3], id="cut value"),
        pytest.param(_command(*STORE) + b"\x00\x00\x10", id="cut element header"),
        pytest.param(
            _command(*STORE) + struct.pack("<HHI", 0x0008, 0x0018, 4) + b"1.23",
            id="another group",
        ),
    ],
)
def test_anything_else_is_left_to_pynetdicom(command: bytes) -> None:
    assert parse_store_rq(command) is None


def test_messages_that_are_not_one_whole_store_command_are_left_to_pynetdicom() -> None:
    rng = random.Random(1)
    # the command in several fragments (a peer with a tiny maximum PDU)
    assert len(split := store_pdatas(rng, max_pdu=40)) > 2
    assert start_message(split[0]) is None
    # the command and the first data set fragment in one P-DATA
    pdatas = store_pdatas(rng)
    joined = P_DATA()
    joined.presentation_data_value_list = [
        list(pdv) for p in pdatas[:2] for pdv in p.presentation_data_value_list
    ]
    assert start_message(joined) is None
    # a data set fragment where a command should start, and a C-ECHO
    assert start_message(pdatas[1]) is None
    echo = C_ECHO()
    echo.MessageID = 1
    echo.AffectedSOPClassUID = "1.2.840.10008.1.1"
    echo_message = C_ECHO_RQ()
    echo_message.primitive_to_message(echo)
    assert start_message(next(echo_message.encode_msg(1, 16_384))) is None


@pytest.fixture
def counted(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """How many primitives were built from parsed command sets."""
    calls: list[int] = []
    build = ParsedStoreRQ.message_to_primitive

    def counting(self: ParsedStoreRQ) -> C_STORE:
        calls.append(1)
        return build(self)

    monkeypatch.setattr(_store_request.ParsedStoreRQ, "message_to_primitive", counting)
    return calls


def _store_over_an_association(folder: Path, extra_handlers: list) -> list:  # noqa: ANN001
    """Store five slices of the real CT into a pynetdicom SCP with the parser installed."""
    sent = [dcmread(f) for f in sorted(folder.glob("*.dcm"))[:5]]
    context = (sent[0].SOPClassUID, sent[0].file_meta.TransferSyntaxUID)
    received: list = []

    def on_store(event: evt.Event) -> int:
        received.append((event.request.MessageID, event.request.AffectedSOPInstanceUID,
                         event.encoded_dataset(False)))  # fmt: skip
        return 0x0000

    scp = AE(ae_title="SCP")
    scp.add_supported_context(*context)
    port = free_port()

    def unbind_logging(event: evt.Event) -> None:
        # as the node does (_scp_associations.on_accepted): pynetdicom's standard logging
        # handler for EVT_DIMSE_RECV would otherwise keep every message on its own path
        for handler, _args in event.assoc.get_handlers(evt.EVT_DIMSE_RECV):
            if handler is standard_dimse_recv_handler:
                event.assoc.unbind(evt.EVT_DIMSE_RECV, handler)

    handlers = [
        (evt.EVT_CONN_OPEN, decode_store_requests),
        (evt.EVT_ACCEPTED, unbind_logging),
        (evt.EVT_C_STORE, on_store),
        *extra_handlers,
    ]
    server = scp.start_server(("127.0.0.1", port), block=False, evt_handlers=handlers)
    try:
        scu = AE(ae_title="SCU")
        scu.add_requested_context(*context)
        assoc = scu.associate("127.0.0.1", port, ae_title="SCP")
        assert assoc.is_established
        for number, ds in enumerate(sent, start=1):
            status = assoc.send_c_store(ds, msg_id=number)
            assert status.Status == 0x0000
        assoc.release()
    finally:
        server.shutdown()
    assert [(m, str(u)) for m, u, _ in received] == [
        (n, ds.SOPInstanceUID) for n, ds in enumerate(sent, start=1)
    ]
    return received


def test_stores_over_an_association_take_the_parsed_path(
    counted: list[int], chest_ct_dir: Path
) -> None:
    _store_over_an_association(chest_ct_dir, [])
    assert len(counted) == 5


def test_a_dimse_recv_handler_gets_pynetdicoms_messages(
    counted: list[int], chest_ct_dir: Path
) -> None:
    seen: list[int] = []
    lock = threading.Lock()

    def on_dimse(event: evt.Event) -> None:
        with lock:
            seen.append(int(event.message.command_set.CommandField))

    _store_over_an_association(chest_ct_dir, [(evt.EVT_DIMSE_RECV, on_dimse)])
    assert counted == []
    assert seen == [0x0001] * 5


def test_the_node_parses_what_dcmtk_sends(
    start_scp, chest_ct_dir: Path, counted: list[int]
) -> None:  # noqa: ANN001
    """dcmtk's storescu, an encoder other than pynetdicom's, into the node's own SCP."""
    scp = start_scp()
    files = sorted(chest_ct_dir.glob("*.dcm"))[:5]
    sent = dcmtk("storescu", "-aet", "PACS1", "-aec", "MEDVISION", "127.0.0.1", scp.port, *files)
    assert sent.returncode == 0, sent.stderr
    assert len(counted) == 5
    scp.flush()
    with scp.db.session() as session:
        stored = set(session.scalars(select(Instance.sop_instance_uid)))
    assert stored == {dcmread(f, stop_before_pixels=True).SOPInstanceUID for f in files}
