"""A seeded corpus of malformed DICOM for the node's fuzz test (tests/node/test_fuzz.py).

Two kinds of input, both made from a real CT slice so that everything around the defect
is what a PACS really sends:

- :func:`file_cases`: DICOM files whose File Meta Information is sound (so that a C-STORE
  SCU sends them byte for byte, as pynetdicom does for a path) and whose dataset is not:
  truncated, a value length past the end, an unclosed sequence, sequences nested 200 deep,
  the bytes of another transfer syntax than the one negotiated, flipped bytes, garbage, UIDs
  that are not UIDs, a SOP Instance UID the node already holds in another study.
- :func:`pdu_cases`: raw bytes for a TCP connection to the SCP, below any DICOM library:
  garbage, unknown PDU types, A-ASSOCIATE-RQs truncated or with lengths past the end (of the
  PDU or of an item in it), a PDU length of 4 GiB, and after a sound association a
  P-DATA-TF larger than the negotiated maximum, PDVs past the end of their PDU, a second
  A-ASSOCIATE-RQ.

The same seed gives the same corpus (random choices come from one ``random.Random(seed)``;
UIDs from ``generate_uid(entropy_srcs=...)``), so a failure can be reproduced by its seed.
Each case says what it is and what the node may answer: ``refused`` (a failure status, an
A-ASSOCIATE-RJ, an A-ABORT or a closed connection), or ``either`` (refused, or stored
harmlessly: its own study, indexed and spooled alike).
"""

from __future__ import annotations

import random
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path

from pydicom import Dataset, dcmread
from pydicom.dataelem import DataElement
from pydicom.filewriter import write_dataset, write_file_meta_info
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    generate_uid,
)

CT_IMAGE = "1.2.840.10008.5.1.4.1.1.2"
VERIFICATION = "1.2.840.10008.1.1"
APPLICATION_CONTEXT = "1.2.840.10008.3.1.1.1"

REFUSED = "refused"
EITHER = "either"

_STUDY_UID = 0x0020000D
_PIXEL_DATA = 0x7FE00010


@dataclass(frozen=True)
class FileCase:
    """A file to C-STORE as it is (file meta sound, dataset not)."""

    name: str
    path: Path
    #: What the request says (the file meta's Media Storage SOP Instance UID).
    sop_instance_uid: str
    #: The study this instance would go to if it were stored.
    study_instance_uid: str
    expect: str

    @property
    def dataset(self) -> bytes:
        """The dataset's bytes as sent (after the file meta)."""
        raw = self.path.read_bytes()
        (group_length,) = struct.unpack_from("<I", raw, 132 + 8)
        return raw[132 + 12 + group_length :]


@dataclass(frozen=True)
class PduCase:
    """Bytes for one TCP connection: sent as its first bytes (``after_association`` False)
    or after a sound A-ASSOCIATE-RQ/AC exchange (True)."""

    name: str
    data: bytes
    after_association: bool
    expect: str = REFUSED


# -- files ---------------------------------------------------------------------------------


def _encode(ds: Dataset, implicit: bool = False, little: bool = True) -> bytes:
    fp = BytesIO()
    from pydicom.filebase import DicomFileLike

    out = DicomFileLike(fp)
    out.is_implicit_VR = implicit
    out.is_little_endian = little
    write_dataset(out, ds)
    return fp.getvalue()


def _split(ds: Dataset, tag: int) -> tuple[Dataset, Dataset]:
    """The elements of ``ds`` before ``tag``, and from it on."""
    head, tail = Dataset(), Dataset()
    for elem in ds:
        (head if int(elem.tag) < tag else tail).add(elem)
    return head, tail


def _sq_header(tag: int, length: int) -> bytes:
    """Explicit VR LE header of an SQ element."""
    return struct.pack("<HH", tag >> 16, tag & 0xFFFF) + b"SQ\x00\x00" + struct.pack("<I", length)


def _item(length: int) -> bytes:
    return struct.pack("<HHI", 0xFFFE, 0xE000, length)


_ITEM_END = struct.pack("<HHI", 0xFFFE, 0xE00D, 0)
_SEQ_END = struct.pack("<HHI", 0xFFFE, 0xE0DD, 0)
_UNDEFINED = 0xFFFFFFFF


def nested_sequences(depth: int, tag: int, defined: bool) -> bytes:
    """An SQ element holding one item holding an SQ ... ``depth`` levels deep, with
    undefined lengths and delimiters or with every length given."""
    if defined:
        inner = b""
        for _ in range(depth):
            item = _item(len(inner)) + inner
            inner = _sq_header(tag, len(item)) + item
        return inner
    opening = (_sq_header(tag, _UNDEFINED) + _item(_UNDEFINED)) * depth
    closing = (_ITEM_END + _SEQ_END) * depth
    return opening + closing


def _file(out: Path, name: str, meta_syntax: str, sop: str, dataset: bytes) -> Path:
    meta = Dataset()
    meta.MediaStorageSOPClassUID = CT_IMAGE
    meta.MediaStorageSOPInstanceUID = sop
    meta.TransferSyntaxUID = meta_syntax
    meta.ImplementationClassUID = "1.2.826.0.1.3680043.9.7433.1.1"
    fp = BytesIO()
    from pydicom.filebase import DicomFileLike

    f = DicomFileLike(fp)
    f.is_little_endian, f.is_implicit_VR = True, False
    write_file_meta_info(f, meta, enforce_standard=True)
    path = out / f"{name}.dcm"
    path.write_bytes(b"\x00" * 128 + b"DICM" + fp.getvalue() + dataset)
    return path


def file_cases(source: Path, out: Path, seed: int, held: Path | None = None) -> list[FileCase]:
    """The malformed files, written to ``out``.

    ``source``: a real CT slice (any transfer syntax pydicom can decode). ``held``: an
    instance the node already holds; the corpus then adds a copy of it moved to another
    study (a SOP Instance UID held elsewhere).
    """
    rng = random.Random(seed)
    out.mkdir(parents=True, exist_ok=True)
    base = dcmread(source)
    base.decompress() if base.file_meta.TransferSyntaxUID.is_compressed else None
    cases: list[FileCase] = []

    def fresh(name: str) -> tuple[Dataset, str, str]:
        """A copy of the slice as a new instance of its own new study."""
        ds = dcmread(source)
        study = generate_uid(entropy_srcs=[str(seed), name, "study"])
        sop = generate_uid(entropy_srcs=[str(seed), name, "sop"])
        ds.StudyInstanceUID = study
        ds.SeriesInstanceUID = generate_uid(entropy_srcs=[str(seed), name, "series"])
        ds.SOPInstanceUID = sop
        return ds, study, sop

    def add(
        name: str,
        make: Callable[[Dataset], bytes],
        expect: str,
        syntax: str = ExplicitVRLittleEndian,
        request_sop: str | None = None,
    ) -> None:
        ds, study, sop = fresh(name)
        data = make(ds)
        path = _file(out, name, syntax, request_sop or sop, data)
        cases.append(FileCase(name, path, request_sop or sop, study, expect))

    explicit = _encode  # Explicit VR Little Endian

    # Truncated: inside the header before the UIDs (refused: no UIDs), and at seeded
    # places after them (the header is whole; pixel data is short).
    def truncated_before(ds: Dataset) -> bytes:
        head, _ = _split(ds, _STUDY_UID)
        raw = explicit(ds)
        return raw[: rng.randrange(8, len(explicit(head)))]

    add("truncated-before-uids", truncated_before, REFUSED)
    for k in range(3):

        def truncated_after(ds: Dataset) -> bytes:
            head, tail = _split(ds, _PIXEL_DATA)
            cut = len(explicit(head)) + rng.randrange(0, len(explicit(tail)) - 1)
            return explicit(ds)[:cut]

        add(f"truncated-pixel-data-{k}", truncated_after, EITHER)
    add("empty-dataset", lambda ds: b"", REFUSED)
    add("eight-bytes", lambda ds: explicit(ds)[:8], REFUSED)

    # A value length past the end: on a short-VR element before the UIDs, and on the pixel
    # data (4 GiB - 2).
    def long_length_before(ds: Dataset) -> bytes:
        head, tail = _split(ds, 0x00080060)  # Modality: CS, a 2-byte length
        raw_tail = bytearray(explicit(tail))
        raw_tail[6:8] = struct.pack("<H", 0xFFFE)
        return explicit(head) + bytes(raw_tail)

    add("length-past-end-before-uids", long_length_before, REFUSED)

    def long_pixel_length(ds: Dataset) -> bytes:
        head, tail = _split(ds, _PIXEL_DATA)
        raw_tail = bytearray(explicit(tail))
        raw_tail[8:12] = struct.pack("<I", 0xFFFFFFFE)
        return explicit(head) + bytes(raw_tail)

    add("length-past-end-pixel-data", long_pixel_length, EITHER)

    # Sequences: one never closed (before the UIDs), and 200 deep before and after them.
    def unclosed(ds: Dataset) -> bytes:
        head, tail = _split(ds, 0x00081115)
        del head[0x00081110:0x00081116]
        opened = _sq_header(0x00081115, _UNDEFINED) + _item(_UNDEFINED)
        return explicit(head) + opened + explicit(tail)

    add("sequence-never-closed", unclosed, REFUSED)
    for defined in (False, True):
        kind = "defined" if defined else "undefined"

        def deep_before(ds: Dataset, defined: bool = defined) -> bytes:
            head, tail = _split(ds, 0x00081115)
            del head[0x00081110:0x00081116]
            return explicit(head) + nested_sequences(200, 0x00081115, defined) + explicit(tail)

        def deep_after(ds: Dataset, defined: bool = defined) -> bytes:
            head, tail = _split(ds, 0x00400275)
            if 0x00400275 in tail:
                del tail[0x00400275]
            return explicit(head) + nested_sequences(200, 0x00400275, defined) + explicit(tail)

        add(f"nested-200-{kind}-before-uids", deep_before, EITHER)
        add(f"nested-200-{kind}-after-uids", deep_after, EITHER)

    # The bytes of another transfer syntax than the one the file meta (and so the
    # presentation context) names.
    add(
        "implicit-bytes-as-explicit",
        lambda ds: _encode(ds, implicit=True),
        EITHER,
        ExplicitVRLittleEndian,
    )
    add("explicit-bytes-as-implicit", explicit, EITHER, ImplicitVRLittleEndian)
    add(
        "big-endian-bytes-as-little",
        lambda ds: _encode(ds, little=False),
        REFUSED,
        ExplicitVRLittleEndian,
    )
    add("little-endian-bytes-as-big", explicit, EITHER, ExplicitVRBigEndian)
    add("raw-bytes-as-deflated", explicit, EITHER, DeflatedExplicitVRLittleEndian)

    def bad_deflate(ds: Dataset) -> bytes:
        packed = zlib.compress(explicit(ds))[2:-4]  # raw deflate, as PS3.5 A.5 wants
        return packed[: len(packed) // 2]

    add("deflated-truncated", bad_deflate, REFUSED, DeflatedExplicitVRLittleEndian)

    # UIDs that are not UIDs, and a dataset that names another instance than the request.
    def uid(tag: int, value: bytes) -> Callable[[Dataset], bytes]:
        """The UI element ``tag`` with ``value`` as its bytes (pydicom would clean it)."""

        def make(ds: Dataset) -> bytes:
            raw = explicit(ds)
            at = raw.find(struct.pack("<HH", tag >> 16, tag & 0xFFFF) + b"UI")
            (old,) = struct.unpack_from("<H", raw, at + 6)
            padded = value + b"\x00" * (len(value) % 2)
            return raw[: at + 6] + struct.pack("<H", len(padded)) + padded + raw[at + 8 + old :]

        return make

    add("study-uid-with-newline", uid(_STUDY_UID, b"1.2.3\n"), REFUSED)
    add("series-uid-path", uid(0x0020000E, b"../../etc"), REFUSED)
    add("study-uid-65-chars", uid(_STUDY_UID, b"1." + b"2" * 63), REFUSED)
    add("study-uid-blank", uid(_STUDY_UID, b""), REFUSED)
    add("sop-uid-differs", uid(0x00080018, b"1.2.3.4"), REFUSED)

    def odd_value(ds: Dataset) -> bytes:
        ds.add(DataElement(0x00081030, "LO", "X"))  # stays 1 byte: pydicom pads on write
        raw = bytearray(explicit(ds))
        at = raw.find(b"\x08\x00\x30\x10LO")
        raw[at + 6 : at + 8] = struct.pack("<H", 1)
        del raw[at + 9]  # the padding byte: an odd length, and every element after it shifted
        return bytes(raw)

    add("odd-length-value", odd_value, EITHER)

    # Seeded byte flips in the first 1 KiB, and seeded garbage.
    for k in range(6):

        def flipped(ds: Dataset) -> bytes:
            raw = bytearray(explicit(ds))
            for _ in range(rng.randrange(1, 8)):
                raw[rng.randrange(0, 1024)] = rng.randrange(256)
            return bytes(raw)

        add(f"flipped-{k}", flipped, EITHER)
    for k in range(3):
        add(f"garbage-{k}", lambda ds: rng.randbytes(rng.randrange(1, 4096)), REFUSED)

    if held is not None:  # a SOP Instance UID the node holds, in a new study
        ds = dcmread(held)
        sop = str(ds.SOPInstanceUID)
        study = generate_uid(entropy_srcs=[str(seed), "held-elsewhere"])
        ds.StudyInstanceUID = study
        path = _file(out, "uid-held-elsewhere", ExplicitVRLittleEndian, sop, _encode(ds))
        cases.append(FileCase("uid-held-elsewhere", path, sop, study, REFUSED))
    return cases


# -- PDUs ----------------------------------------------------------------------------------


def _pdu(pdu_type: int, body: bytes, length: int | None = None) -> bytes:
    return struct.pack(">BBI", pdu_type, 0, len(body) if length is None else length) + body


def _sub(item_type: int, body: bytes, length: int | None = None) -> bytes:
    return struct.pack(">BBH", item_type, 0, len(body) if length is None else length) + body


def _ae(title: str) -> bytes:
    return title.encode("ascii").ljust(16)


def associate_rq(
    called: str,
    calling: str,
    max_pdu: int = 16384,
    abstract: str = VERIFICATION,
    context_length: int | None = None,
) -> bytes:
    """A sound A-ASSOCIATE-RQ proposing ``abstract`` in Implicit and Explicit VR LE
    (context 1); ``context_length`` sets a wrong length on the presentation context item."""
    context = (
        struct.pack(">BBBB", 1, 0, 0, 0)
        + _sub(0x30, abstract.encode())
        + _sub(0x40, ImplicitVRLittleEndian.encode())
        + _sub(0x40, ExplicitVRLittleEndian.encode())
    )
    user = _sub(0x51, struct.pack(">I", max_pdu)) + _sub(0x52, b"1.2.826.0.1.3680043.9.7433.1")
    body = (
        struct.pack(">HH", 1, 0)
        + _ae(called)
        + _ae(calling)
        + b"\x00" * 32
        + _sub(0x10, APPLICATION_CONTEXT.encode())
        + _sub(0x20, context, context_length)
        + _sub(0x50, user)
    )
    return _pdu(0x01, body)


def p_data(pdvs: list[tuple[int, int, bytes]], pdu_length: int | None = None) -> bytes:
    """A P-DATA-TF of (context id, message control header, fragment) PDVs."""
    body = b"".join(struct.pack(">IBB", len(frag) + 2, ctx, mch) + frag for ctx, mch, frag in pdvs)
    return _pdu(0x04, body, pdu_length)


def echo_command(message_id: int = 1) -> bytes:
    """A C-ECHO-RQ command set, Implicit VR Little Endian (PS3.7 9.3.5)."""

    def element(tag: int, value: bytes) -> bytes:
        return struct.pack("<HHI", tag >> 16, tag & 0xFFFF, len(value)) + value

    uid = VERIFICATION.encode() + (b"\x00" if len(VERIFICATION) % 2 else b"")
    body = (
        element(0x00000002, uid)
        + element(0x00000100, struct.pack("<H", 0x0030))
        + element(0x00000110, struct.pack("<H", message_id))
        + element(0x00000800, struct.pack("<H", 0x0101))
    )
    return element(0x00000000, struct.pack("<I", len(body))) + body


def pdu_cases(called: str, calling: str, max_pdu: int, seed: int) -> list[PduCase]:
    """Raw PDUs for an SCP whose AE title is ``called`` and that admits ``calling``, and
    that offered ``max_pdu`` as its maximum PDU length."""
    rng = random.Random(seed)
    rq = associate_rq(called, calling)
    cases = [
        PduCase(f"garbage-{k}", rng.randbytes(rng.randrange(1, 2048)), False) for k in range(4)
    ]
    cases += [
        PduCase("unknown-pdu-type", _pdu(0x09, rng.randbytes(64)), False),
        PduCase("zero-length-associate-rq", _pdu(0x01, b""), False),
        PduCase("p-data-before-associate", p_data([(1, 0x03, echo_command())]), False),
        PduCase("release-rq-before-associate", _pdu(0x05, b"\x00" * 4), False),
        PduCase("associate-rq-length-past-end", _pdu(0x01, rq[6:], len(rq) - 6 + 4096), False),
        PduCase(
            "associate-rq-item-past-end",
            associate_rq(called, calling, context_length=0xFFFF),
            False,
        ),
        # 4 GiB announced, 256 KiB sent: the node must not wait for (or buffer) the rest.
        PduCase("associate-rq-4-gib", _pdu(0x01, rq[6:] + b"\x00" * 262144, 0xFFFFFFFF), False),
        PduCase("associate-rq-to-another-ae", associate_rq("NOT-" + called[:10], calling), False),
    ]
    for k in range(3):
        cut = rng.randrange(1, len(rq) - 1)
        cases.append(PduCase(f"associate-rq-truncated-{k}", rq[:cut], False))
    for k in range(3):
        raw = bytearray(rq)
        for _ in range(rng.randrange(1, 6)):
            raw[rng.randrange(6, len(raw))] = rng.randrange(256)
        cases.append(PduCase(f"associate-rq-flipped-{k}", bytes(raw), False, EITHER))
    # After a sound association (context 1: Verification).
    big = echo_command() + b"\x00" * (max_pdu * 4)
    cases += [
        PduCase("p-data-larger-than-negotiated", p_data([(1, 0x03, big)]), True),
        PduCase("p-data-4-gib", p_data([(1, 0x03, echo_command())], 0xFFFFFFFF), True),
        PduCase(
            "pdv-length-past-end",
            _pdu(0x04, struct.pack(">IBB", 0xFFFF, 1, 0x03) + echo_command()),
            True,
        ),
        PduCase("pdv-unknown-context", p_data([(99, 0x03, echo_command())]), True),
        PduCase("command-set-garbage", p_data([(1, 0x03, rng.randbytes(200))]), True),
        PduCase("second-associate-rq", rq, True),
        PduCase("truncated-p-data", p_data([(1, 0x03, echo_command())])[:20], True),
        # A PDV item of length 1: a context ID and no message control header.
        PduCase(
            "pdv-without-control-header",
            _pdu(0x04, struct.pack(">IB", 1, 1) + p_data([(1, 0x03, echo_command())])[6:]),
            True,
        ),
        # Three bytes after the last whole PDV item: not room for another's header.
        PduCase(
            "pdv-item-header-cut",
            _pdu(0x04, p_data([(1, 0x03, echo_command())])[6:] + b"\x00\x00\x00"),
            True,
        ),
    ]
    return cases


__all__ = [
    "EITHER",
    "REFUSED",
    "FileCase",
    "PduCase",
    "associate_rq",
    "echo_command",
    "file_cases",
    "nested_sequences",
    "p_data",
    "pdu_cases",
]
