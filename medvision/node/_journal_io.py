"""The spool journal's on-disk format, and the low-level I/O the spool is built on:
aligned records with a CRC, written with pwrite and flushed with fdatasync / syncfs.

Kept apart from ``_spool`` (what is stored where, the journal's life) so that the record
layout a crash replay depends on reads in one place.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
import re
import struct
import threading
import zlib
from dataclasses import dataclass, field
from pathlib import Path

_UID = re.compile(r"[0-9]+(?:\.[0-9]+)*")

#: Size of one journal segment. Each is written once in full before use and then recycled.
SEGMENT_SIZE = 32 * 1024 * 1024
#: Instances larger than this take the direct path (a segment holds at least four).
MAX_RECORD = SEGMENT_SIZE // 4
ALIGN = 4096
#: magic, generation, length of the relative path, length of the data, CRC-32.
HEADER = struct.Struct("<4sQHQI")
MAGIC = b"MVJ1"


def valid_uid(uid: str) -> bool:
    """Whether ``uid`` is a whole, well-formed DICOM UID (the UI VR, <= 64 characters)."""
    return len(uid) <= 64 and _UID.fullmatch(uid) is not None


@dataclass
class Segment:
    path: Path
    generation: int
    fd: int
    size: int = SEGMENT_SIZE
    #: Next free offset; advanced (and the record written) under the spool's append lock.
    offset: int = 0
    #: Offset up to which records are written / flushed; records below `written` are whole.
    written: int = 0
    synced: int = 0
    sync_lock: threading.Lock = field(default_factory=threading.Lock)
    #: No more appends (full, or a write into it failed).
    closed: bool = False
    #: A flush failed: nothing written to this segment may be acknowledged any more (after
    #: a failed fdatasync a later one may succeed without the lost pages).
    broken: bool = False
    #: Appends that reserved space and have not finished (written + flushed, or failed).
    in_flight: int = 0
    #: Records acknowledged and not yet materialised.
    unmaterialised: int = 0


@dataclass(frozen=True)
class Record:
    seq: int
    segment: Segment
    relpath: str
    data: bytes


def generation_of(path: Path) -> int:
    try:
        return int(path.stem.split("-", 1)[1])
    except ValueError:
        return 0


def read_records(path: Path, gen: int) -> list[tuple[str, bytes]]:
    """The whole records of generation ``gen`` at the start of a segment, in order."""
    out: list[tuple[str, bytes]] = []
    with open(path, "rb") as fh:
        blob = fh.read()
    offset = 0
    while offset + HEADER.size <= len(blob):
        magic, g, plen, dlen, crc = HEADER.unpack_from(blob, offset)
        if magic != MAGIC or g != gen:
            break
        start = offset + HEADER.size
        raw_path = blob[start : start + plen]
        data = blob[start + plen : start + plen + dlen]
        if len(data) != dlen:
            break
        if zlib.crc32(data, zlib.crc32(raw_path, zlib.crc32(struct.pack("<Q", g)))) != crc:
            break
        relpath = raw_path.decode(errors="replace")
        parts = relpath.split("/")
        if (
            len(parts) != 3
            or not parts[2].endswith(".dcm")
            or not all(valid_uid(p) for p in (parts[0], parts[1], parts[2][:-4]))
        ):
            break
        out.append((relpath, data))
        offset = aligned(start + plen + dlen)
    return out


def aligned(n: int) -> int:
    return (n + ALIGN - 1) // ALIGN * ALIGN


def pwrite_all(fd: int, data: bytes, offset: int) -> None:
    view = memoryview(data)
    while view:
        n = os.pwrite(fd, view, offset)
        if n <= 0:
            raise OSError(errno.EIO, "short write")
        view, offset = view[n:], offset + n


_LIBC = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)


def syncfs(path: Path) -> None:
    """Flush the file system that holds ``path`` (one flush for many files)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        syncfs = getattr(_LIBC, "syncfs", None)
        if syncfs is None:
            os.sync()
        elif syncfs(fd) != 0:
            err = ctypes.get_errno()
            raise OSError(err, os.strerror(err))
    finally:
        os.close(fd)


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


__all__ = [
    "ALIGN",
    "HEADER",
    "MAGIC",
    "MAX_RECORD",
    "SEGMENT_SIZE",
    "Record",
    "Segment",
    "aligned",
    "fsync_dir",
    "generation_of",
    "pwrite_all",
    "read_records",
    "syncfs",
    "valid_uid",
]
