"""The few header bytes the SCP reads and writes itself, without pydicom.

Why by hand: the SCP stores what the peer sent byte for byte (no decode and re-encode) and
answers within milliseconds, so it builds the file meta group itself and finds the three
UIDs it needs by walking the dataset's first elements; pydicom is the fallback where this
walk cannot follow (deflated or big-endian data, see :func:`header_uids`).
"""

from __future__ import annotations

import struct

from pynetdicom import PYNETDICOM_IMPLEMENTATION_UID, PYNETDICOM_IMPLEMENTATION_VERSION

_IMPLICIT_LE = "1.2.840.10008.1.2"
_BIG_ENDIAN = "1.2.840.10008.1.2.2"
_DEFLATED = ("1.2.840.10008.1.2.1.99", "1.2.840.10008.1.2.4.95")
#: Explicit VRs whose value length takes 4 bytes (PS3.5 7.1.2).
_LONG_VRS = frozenset(
    {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV"}
)
_UNDEFINED = 0xFFFFFFFF
_ITEM, _ITEM_END, _SEQ_END = 0xFFFEE000, 0xFFFEE00D, 0xFFFEE0DD
_WANTED = {0x00080018: "sop", 0x0020000D: "study", 0x0020000E: "series"}


def _element(tag: int, vr: bytes, value: bytes) -> bytes:
    """One Explicit VR Little Endian element of the file meta (group 0002)."""
    head = struct.pack("<HH", tag >> 16, tag & 0xFFFF) + vr
    if vr in _LONG_VRS:
        return head + struct.pack("<HI", 0, len(value)) + value
    return head + struct.pack("<H", len(value)) + value


def _text(value: str, pad: bytes) -> bytes:
    raw = value.encode("ascii")
    return raw + pad if len(raw) % 2 else raw


def file_meta_bytes(sop_class: str, sop_instance: str, syntax: str, calling_aet: str) -> bytes:
    """The encoded File Meta Information group, as pydicom would write it.

    Written by hand because building and encoding a pydicom dataset for eight elements
    costs ~1-2 ms of Python per instance on the C-STORE path, which is serial per
    association.
    """
    body = b"".join(
        (
            _element(0x00020001, b"OB", b"\x00\x01"),
            _element(0x00020002, b"UI", _text(sop_class, b"\x00")),
            _element(0x00020003, b"UI", _text(sop_instance, b"\x00")),
            _element(0x00020010, b"UI", _text(syntax, b"\x00")),
            _element(0x00020012, b"UI", _text(PYNETDICOM_IMPLEMENTATION_UID, b"\x00")),
            _element(0x00020013, b"SH", _text(PYNETDICOM_IMPLEMENTATION_VERSION, b" ")),
            _element(0x00020016, b"AE", _text(calling_aet, b" ")),
        )
    )
    return _element(0x00020000, b"UL", struct.pack("<I", len(body))) + body


def header_uids(dataset: bytes, syntax: str) -> dict[str, str] | None:
    """Study, Series and SOP Instance UIDs from an encoded little-endian dataset.

    Walks the top-level elements only as far as (0020,000E), skipping values (and
    sequences of undefined length) without decoding them, which is all the spool needs.
    None for a deflated or big-endian dataset, or one this walk cannot follow: the caller
    then asks pydicom.
    """
    if syntax == _BIG_ENDIAN or syntax in _DEFLATED:
        return None
    implicit = syntax == _IMPLICIT_LE
    found: dict[str, str] = {}
    try:
        pos, end = 0, len(dataset)
        while pos + 8 <= end and len(found) < 3:
            tag, pos, length = _element_at(dataset, pos, implicit)
            if tag > 0x0020000E:
                break
            if length == _UNDEFINED:
                pos = _skip_undefined(dataset, pos, implicit)
                continue
            if tag in _WANTED:
                value = dataset[pos : pos + length].decode("ascii")
                found[_WANTED[tag]] = value.rstrip("\x00 ")
            pos += length
    except (struct.error, UnicodeDecodeError, ValueError):
        return None
    return found


def _element_at(buf: bytes, pos: int, implicit: bool) -> tuple[int, int, int]:
    """(tag, offset of the value, value length) of the element at ``pos``."""
    group, elem = struct.unpack_from("<HH", buf, pos)
    tag = group << 16 | elem
    if implicit or group == 0xFFFE:
        (length,) = struct.unpack_from("<I", buf, pos + 4)
        return tag, pos + 8, length
    vr = buf[pos + 4 : pos + 6]
    if vr in _LONG_VRS:
        (length,) = struct.unpack_from("<I", buf, pos + 8)
        return tag, pos + 12, length
    if not vr.isalpha():
        raise ValueError("not an explicit VR")
    (length,) = struct.unpack_from("<H", buf, pos + 6)
    return tag, pos + 8, length


def _skip_undefined(buf: bytes, pos: int, implicit: bool, depth: int = 0) -> int:
    """Past the delimiter of a value of undefined length that starts at ``pos``."""
    if depth > 16:
        raise ValueError("sequences nested too deep")
    while True:
        tag, pos, length = _element_at(buf, pos, implicit)
        if tag in (_SEQ_END, _ITEM_END):
            return pos
        if length == _UNDEFINED:
            pos = _skip_undefined(buf, pos, implicit, depth + 1)
        elif pos + length > len(buf):
            raise ValueError("value runs past the end")
        else:
            pos += length


__all__ = ["file_meta_bytes", "header_uids"]
