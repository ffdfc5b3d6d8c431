"""The node's reading of a P-DATA-TF (medvision.node._pdata).

What the DIMSE layer receives must be what pynetdicom's own decoding gives it, fragment for
fragment; a PDU whose items do not add up is refused (an association sent one is aborted:
tests/node/test_fuzz.py sends such PDUs to a running node).
"""

from __future__ import annotations

import random
import struct

import pytest
from pynetdicom.pdu import P_DATA_TF

from medvision.node._pdata import InvalidPData, ReceivedPData, split_pdvs


def _body(pdvs: list[tuple[int, bytes]]) -> bytes:
    return b"".join(struct.pack(">IB", len(data) + 1, ctx) + data for ctx, data in pdvs)


def _pynetdicom(body: bytes) -> list[tuple[int, bytes]]:
    pdu = P_DATA_TF()
    pdu.decode(struct.pack(">BBI", 0x04, 0, len(body)) + body)
    return [(ctx, bytes(data)) for ctx, data in pdu.to_primitive().presentation_data_value_list]


@pytest.mark.parametrize("seed", range(20))
def test_fragments_are_pynetdicoms(seed: int) -> None:
    rng = random.Random(seed)
    pdvs = []
    for _ in range(rng.randrange(1, 6)):
        header = bytes([rng.randrange(4)])  # message control header: command/data, last or not
        pdvs.append((rng.randrange(1, 256, 2), header + rng.randbytes(rng.randrange(0, 5000))))
    body = _body(pdvs)
    mine = ReceivedPData(split_pdvs(bytearray(body))).to_primitive()
    assert [(c, bytes(d)) for c, d in mine.presentation_data_value_list] == _pynetdicom(body)
    assert [(c, bytes(d)) for c, d in mine.presentation_data_value_list] == pdvs


def test_an_empty_pdu_has_no_fragments() -> None:
    assert split_pdvs(bytearray()) == []


@pytest.mark.parametrize(
    "body",
    [
        struct.pack(">IB", 0xFFFF, 1) + b"\x03" + b"x" * 10,  # an item past the PDU's end
        struct.pack(">IB", 1, 1),  # no message control header
        struct.pack(">IB", 0, 1),
        _body([(1, b"\x03abc")]) + b"\x00\x00\x00",  # not room for another item
    ],
    ids=["past-end", "no-control-header", "zero-length", "cut-item-header"],
)
def test_items_that_do_not_add_up_are_refused(body: bytes) -> None:
    with pytest.raises(InvalidPData):
        split_pdvs(bytearray(body))
