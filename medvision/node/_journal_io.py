"""The spool journal's on-disk format, and the low-level I/O the spool is built on:
aligned records with a CRC, written with pwrite and flushed with fdatasync / syncfs.

Kept apart from ``_journal`` (the journal's life: appends, materialisation, replay) and
``_spool`` (what is stored where) so that the record layout and the segment files a crash
replay depends on read in one place.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import hashlib
import logging
import os
import re
import struct
import threading
import zlib
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

LOG = logging.getLogger("medvision.spool")

#: The UI value representation (PS3.5 6.2): digits in dot-separated components, at most
#: 64 characters. Matched against the whole string (``fullmatch``): ``$`` would also accept
#: a trailing newline, and a UID names a spool folder. Leading zeros in a component
#: (forbidden by PS3.5 9.1) are tolerated: they are harmless in a path and occur in the wild.
_UID = re.compile(r"[0-9]+(?:\.[0-9]+)*")

#: Size of one journal segment. Each is written once in full before use and then recycled.
SEGMENT_SIZE = 32 * 1024 * 1024
#: Instances larger than this take the direct path (a segment holds at least four).
MAX_RECORD = SEGMENT_SIZE // 4
ALIGN = 4096
#: Version 1 records: magic, generation, length of the relative path, length of the data,
#: CRC-32 of generation, path and data. Still read (a journal written before the upgrade).
HEADER = struct.Struct("<4sQHQI")
MAGIC = b"MVJ1"
#: Version 2 records, written now: magic, generation, path length, data length, the data's
#: SHA-256, CRC-32 of the rest (generation, data length, digest, path). The spool computes
#: the SHA-256 for the index anyway, so a record costs no second pass over its data (a
#: CRC-32 of a 512x512 CT slice is ~0.12 ms of CPU per instance here); replay checks it.
HEADER_V2 = struct.Struct("<4sQHQ32sI")
MAGIC_V2 = b"MVJ2"


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


def _v2_crc(gen: int, data_len: int, digest: bytes, path: bytes) -> int:
    return zlib.crc32(path, zlib.crc32(digest, zlib.crc32(struct.pack("<QQ", gen, data_len))))


def record_head(gen: int, path: bytes, data_len: int, digest: bytes) -> bytes:
    """A version 2 record's header and path; ``digest``: the data's SHA-256 (32 bytes)."""
    crc = _v2_crc(gen, data_len, digest, path)
    return HEADER_V2.pack(MAGIC_V2, gen, len(path), data_len, digest, crc) + path


def _record_at(blob: bytes, offset: int, gen: int) -> tuple[bytes, bytes, int] | None:
    """(path, data, end) of the whole record of generation ``gen`` at ``offset``, if any."""
    magic = blob[offset : offset + 4]
    if magic == MAGIC_V2 and offset + HEADER_V2.size <= len(blob):
        _, g, plen, dlen, digest, crc = HEADER_V2.unpack_from(blob, offset)
        start = offset + HEADER_V2.size
    elif magic == MAGIC and offset + HEADER.size <= len(blob):
        _, g, plen, dlen, crc = HEADER.unpack_from(blob, offset)
        digest, start = b"", offset + HEADER.size
    else:
        return None
    if g != gen:
        return None
    raw_path = blob[start : start + plen]
    data = blob[start + plen : start + plen + dlen]
    if len(data) != dlen:
        return None
    if magic == MAGIC_V2:
        if _v2_crc(g, dlen, digest, raw_path) != crc or hashlib.sha256(data).digest() != digest:
            return None
    elif zlib.crc32(data, zlib.crc32(raw_path, zlib.crc32(struct.pack("<Q", g)))) != crc:
        return None
    return raw_path, data, start + plen + dlen


def read_records(path: Path, gen: int) -> list[tuple[str, bytes]]:
    """The whole records of generation ``gen`` at the start of a segment, in order."""
    out: list[tuple[str, bytes]] = []
    with open(path, "rb") as fh:
        blob = fh.read()
    offset = 0
    while True:
        found = _record_at(blob, offset, gen)
        if found is None:
            break
        raw_path, data, end = found
        relpath = raw_path.decode(errors="replace")
        parts = relpath.split("/")
        if (
            len(parts) != 3
            or not parts[2].endswith(".dcm")
            or not all(valid_uid(p) for p in (parts[0], parts[1], parts[2][:-4]))
        ):
            break
        out.append((relpath, data))
        offset = aligned(end)
    return out


def prepare_segment(folder: Path, gen: int, counts: Counter[str]) -> Segment:
    """Segment ``gen`` in ``folder``, its blocks written and its name durable, ready for
    appends: a recycled one of the right size if there is one, else a new one of zeros
    (``counts``: ``segments_reused`` / ``segments_made``)."""
    path = folder / f"seg-{gen:016d}.wal"
    free = sorted(folder.glob("free-*.wal"))
    reuse = next((f for f in free if f.stat().st_size == SEGMENT_SIZE), None)
    if reuse is not None:
        reuse.rename(path)
        counts["segments_reused"] += 1
    else:
        part = folder / f"new-{gen:016d}.part"
        try:
            with open(part, "wb") as fh:
                zeros = bytes(1 << 20)
                for _ in range(SEGMENT_SIZE // len(zeros)):
                    fh.write(zeros)
                fh.flush()
                os.fsync(fh.fileno())
            part.rename(path)
            counts["segments_made"] += 1
        except OSError:
            part.unlink(missing_ok=True)
            raise
    fsync_dir(folder)
    return Segment(path, gen, os.open(path, os.O_WRONLY))


def recycle_segment(folder: Path, path: Path, generation: int) -> None:
    """Keep a retired segment for reuse.

    Its stale records carry generation ``generation`` or older; the name keeps that number
    so that a later start never hands out a generation a stale record has.
    """
    try:
        path.rename(folder / f"free-{generation:016d}.wal")
    except OSError as err:
        LOG.warning("cannot recycle journal segment %s: %s", path.name, err)


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
    "HEADER_V2",
    "MAGIC",
    "MAGIC_V2",
    "MAX_RECORD",
    "SEGMENT_SIZE",
    "Record",
    "Segment",
    "aligned",
    "fsync_dir",
    "generation_of",
    "prepare_segment",
    "record_head",
    "pwrite_all",
    "read_records",
    "recycle_segment",
    "syncfs",
    "valid_uid",
]
