"""The durable spool: every instance we acknowledge is on disk first.

The spool's files live at ``<spool>/<study>/<series>/<sop>.dcm``. An instance reaches the
disk in one of two ways, and the SCP answers Success only after either has completed:

- **Journal (the usual way).** The instance is appended as one record (header, CRC-32,
  relative path, bytes) to a *segment* of the write-ahead journal ``<spool>/.journal``,
  and the segment is ``fdatasync``'ed. Segments are written in full (zeros) and fsync'ed,
  and their name fsync'ed into the folder, *before* they take records, so an append
  changes no file metadata: the flush writes only the record's data blocks, one flush per
  instance instead of the two (file, then folder) that a new file needs. Concurrent
  associations share flushes (group commit). A background thread then *materialises* each
  record as the file above (temporary file + rename, no flush of its own); once every
  record of a full segment is materialised, one ``syncfs`` makes those files durable and
  the segment is recycled. At start-up, every record still in a segment is written out
  again as a file, this time with a flush of the file and of its folder, before anything
  reads the spool. Records carry their segment's generation and a CRC, so a recycled
  segment's stale records and a torn last record are never replayed; records are
  appended and flushed strictly in order within a segment, so every acknowledged record
  lies in the valid prefix that start-up replays.
- **Direct.** Written to a temporary file, fsync'ed, renamed into place and the folder
  fsync'ed. Used for instances too large for a segment, while no prepared segment is
  ready (the first instances after start-up), and after materialisation has failed (for
  example a full disk), so that a spool that cannot take files answers Out of Resources.

A second copy of the same SOP Instance is not written again (the first is kept). Files are
never deleted because processing failed; only a retention policy may remove them.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import logging
import os
import re
import struct
import threading
import time
import uuid
import zlib
from collections import Counter, deque
from dataclasses import dataclass
from pathlib import Path

from medvision._hashing import sha256_file
from medvision.node._journal_io import (
    HEADER,
    MAGIC,
    MAX_RECORD,
    SEGMENT_SIZE,
    Record,
    Segment,
    aligned,
    fsync_dir,
    generation_of,
    pwrite_all,
    read_records,
    syncfs,
    valid_uid,
)

#: The UI value representation (PS3.5 6.2): digits in dot-separated components, at most
#: 64 characters. Matched against the whole string (``fullmatch``): ``$`` would also accept
#: a trailing newline, and a UID names a spool folder. Leading zeros in a component
#: (forbidden by PS3.5 9.1) are tolerated: they are harmless in a path and occur in the wild.
LOG = logging.getLogger("medvision.spool")

class SpoolError(Exception):
    """The instance could not be stored (disk full, unwritable spool, bad UID)."""


class InvalidUID(SpoolError):
    """A UID of the instance is missing or not a valid UID: the sender's data is at fault
    (C-STORE Cannot Understand), not the node's resources (Out of Resources, retry)."""


@dataclass(frozen=True)
class StoredFile:
    #: Path relative to the spool root.
    relpath: str
    size: int
    sha256: str
    #: False when the same SOP Instance was already in the spool (nothing was written).
    created: bool
    #: Journal sequence number while the file may still be on its way from the journal to
    #: its path (see :meth:`Spool.wait_materialised`); 0 when it is in place already.
    seq: int = 0


class Spool:
    """The spool folder, its journal and the thread that materialises journal records.

    Opening a spool replays whatever the journal still holds (see the module docstring);
    :meth:`start` starts the background thread that materialises records and prepares
    segments, :meth:`stop` drains it. Without :meth:`start`, every store takes the direct
    path.
    """

    def __init__(
        self, root: Path, journal: bool = True, name: str = "", lock_wait_s: float = 0.0
    ) -> None:
        self.root = Path(root)
        #: Several acceptor processes write one spool, each with its own journal segments
        #: and temporary files (``.journal/<name>``, ``.incoming/<name>``): a process
        #: replays, recycles and cleans up only what is its own. "" is the node's own.
        self.name = name
        self.tmp = self.root / ".incoming" / name if name else self.root / ".incoming"
        self.tmp.mkdir(parents=True, exist_ok=True)
        self.journal_dir = self.root / ".journal" / name if name else self.root / ".journal"
        self.use_journal = journal
        self._append_lock = threading.Lock()
        self._cond = threading.Condition()  # guards everything below
        self._active: Segment | None = None
        self._ready: Segment | None = None
        self._segments: list[Segment] = []  # with records possibly not yet materialised
        self._queue: deque[Record] = deque()
        self._unmaterialised: dict[str, Record] = {}  # relpath -> record
        self._pending_seqs: set[int] = set()
        self._seq = 0
        self._failure: str | None = None
        self._known_dirs: set[Path] = set()
        self._stopping = False
        self._thread: threading.Thread | None = None
        #: Counters for benchmarks and logs: instances by path, segments made and reused.
        self.counts: Counter[str] = Counter()
        self.journal_dir.mkdir(parents=True, exist_ok=True)
        # One process per journal: a second one would replay and recycle the first one's
        # live segments.
        # ``lock_wait_s``: an acceptor process of a node that died may still be finishing
        # (it stops when it sees the node gone); its successor waits for it.
        self._lock_fd = os.open(self.journal_dir / "lock", os.O_RDWR | os.O_CREAT, 0o644)
        deadline = time.monotonic() + lock_wait_s
        while True:
            try:
                fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as err:
                if time.monotonic() >= deadline:
                    os.close(self._lock_fd)
                    raise SpoolError(
                        f"the spool journal {self.journal_dir} is in use by another process"
                    ) from err
                time.sleep(0.1)
        self._generation = self._replay()

    # -- public -----------------------------------------------------------------------

    def path_for(self, study_uid: str, series_uid: str, sop_uid: str) -> Path:
        for name, uid in (("Study", study_uid), ("Series", series_uid), ("SOP", sop_uid)):
            if not valid_uid(uid):
                raise InvalidUID(f"{name} Instance UID {uid!r} is missing or not a valid UID")
        return self.root / study_uid / series_uid / f"{sop_uid}.dcm"

    def start(self) -> None:
        """Start materialising and preparing segments (the journal's fast path)."""
        if not self.use_journal or self._thread is not None:
            return
        self._stopping = False
        self._thread = threading.Thread(
            target=self._loop, name="medvision-spool-journal", daemon=True
        )
        self._thread.start()

    def stop(self, timeout: float = 60.0) -> None:
        """Materialise every acknowledged record, make the files durable, retire segments."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
        with self._cond:
            if self._active is not None:
                self._active.closed = True
            ready, self._active, self._ready = self._ready, None, None
            drained = not self._queue
        if ready is not None:
            os.close(ready.fd)
            self._recycle(ready.path, ready.generation)
        if drained:
            self._retire_done()
        if self._lock_fd >= 0:
            os.close(self._lock_fd)  # releases the lock
            self._lock_fd = -1

    def store(self, data: bytes, study_uid: str, series_uid: str, sop_uid: str) -> StoredFile:
        """Write ``data`` (a complete DICOM file) durably; idempotent per SOP Instance."""
        final = self.path_for(study_uid, series_uid, sop_uid)
        relpath = str(final.relative_to(self.root))
        existing = self._existing(relpath, final)
        if existing is not None:
            return existing
        try:
            if final.parent not in self._known_dirs:
                final.parent.mkdir(parents=True, exist_ok=True)
                self._known_dirs.add(final.parent)
        except OSError as err:
            raise SpoolError(f"cannot write to the spool: {err.strerror or err}") from err
        digest = hashlib.sha256(data).hexdigest()
        if self._thread is not None and len(data) <= MAX_RECORD and self._failure is None:
            seq = self._append(relpath, data)
            if seq:
                self.counts["journal"] += 1
                return StoredFile(relpath, len(data), digest, created=True, seq=seq)
        self._write_file(final, data, sync=True)
        self.counts["direct"] += 1
        return StoredFile(relpath, len(data), digest, created=True)

    def wait_journal(self, timeout: float = 30.0) -> bool:
        """Wait until appends can go to the journal (a prepared segment is ready)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._ready is None and (self._active is None or self._active.closed):
                left = deadline - time.monotonic()
                if left <= 0 or self._thread is None:
                    return False
                self._cond.wait(min(left, 0.1))
        return True

    def wait_materialised(self, seqs: list[int], timeout: float | None = None) -> bool:
        """Wait until the journal records ``seqs`` are files at their paths."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while any(s in self._pending_seqs for s in seqs):
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return False
                self._cond.wait(left if left is not None else 1.0)
        return True

    def discard_partial(self) -> int:
        """Remove temporary files left by a crash: they were never acknowledged."""
        n = 0
        for part in self.tmp.glob("*.part"):
            part.unlink(missing_ok=True)
            n += 1
        return n

    def files(self) -> list[Path]:
        return sorted(p for p in self.root.glob("*/*/*.dcm"))

    def study_dir(self, study_uid: str) -> Path:
        return self.root / study_uid

    # -- storing ------------------------------------------------------------------------

    def _existing(self, relpath: str, final: Path) -> StoredFile | None:
        with self._cond:
            record = self._unmaterialised.get(relpath)
        if record is not None:
            data = record.data
            return StoredFile(relpath, len(data), hashlib.sha256(data).hexdigest(), False)
        if final.exists():
            return StoredFile(relpath, final.stat().st_size, sha256_file(final), created=False)
        return None

    def _append(self, relpath: str, data: bytes) -> int:
        """Append a record and flush it; its sequence number, or 0 to take the direct path.

        Space is reserved and the record written under one lock, so a segment's records are
        whole up to ``written``; a flush covers everything written before it started, so
        one ``fdatasync`` answers every association waiting on the same segment.
        """
        path = relpath.encode()
        head = HEADER.size + len(path)
        with self._append_lock:
            seg = self._segment_for(head + len(data))
            if seg is None:
                return 0
            offset = seg.offset
            seg.offset = aligned(offset + head + len(data))
            gen = seg.generation
            crc = zlib.crc32(data, zlib.crc32(path, zlib.crc32(struct.pack("<Q", gen))))
            header = HEADER.pack(MAGIC, gen, len(path), len(data), crc) + path
            try:
                pwrite_all(seg.fd, header, offset)
                pwrite_all(seg.fd, data, offset + head)
            except OSError as err:
                # Nothing after a failed record may go into this segment: start-up replays
                # a segment's records only up to the first one that is not whole.
                seg.closed = True
                raise SpoolError(f"cannot write to the spool journal: {err}") from err
            seg.written = seg.offset
            target = seg.written
            with self._cond:
                seg.in_flight += 1
        try:
            with seg.sync_lock:
                if seg.broken:
                    raise OSError(errno.EIO, "an earlier flush of this segment failed")
                if seg.synced < target:
                    upto = seg.written
                    try:
                        os.fdatasync(seg.fd)
                    except OSError:
                        seg.broken = True
                        raise
                    seg.synced = upto
        except OSError as err:
            with self._append_lock:
                seg.closed = True
            with self._cond:
                seg.in_flight -= 1
            raise SpoolError(f"cannot flush the spool journal: {err}") from err
        with self._cond:
            self._seq += 1
            record = Record(self._seq, seg, relpath, data)
            seg.in_flight -= 1
            seg.unmaterialised += 1
            self._queue.append(record)
            self._unmaterialised[relpath] = record
            self._pending_seqs.add(record.seq)
            self._cond.notify_all()
        return record.seq

    def _segment_for(self, length: int) -> Segment | None:
        """The active segment with room for ``length`` bytes (caller holds the append lock)."""
        seg = self._active
        if seg is not None and not seg.closed and seg.offset + length <= seg.size:
            return seg
        with self._cond:
            if seg is not None:
                seg.closed = True
            self._active = self._ready
            self._ready = None
            if self._active is not None:
                self._segments.append(self._active)
            self._cond.notify_all()  # prepare the next one
        return self._active

    def _write_file(self, final: Path, data: bytes, sync: bool) -> None:
        tmp = self.tmp / f"{uuid.uuid4().hex}.part"
        try:
            final.parent.mkdir(parents=True, exist_ok=True)
            with open(tmp, "wb") as fh:
                fh.write(data)
                if sync:
                    fh.flush()
                    os.fsync(fh.fileno())
            os.replace(tmp, final)
            if sync:
                fsync_dir(final.parent)
        except OSError as err:
            tmp.unlink(missing_ok=True)
            raise SpoolError(f"cannot write to the spool: {err.strerror or err}") from err

    # -- the background thread ----------------------------------------------------------

    def _loop(self) -> None:
        delay = 0.1
        while True:
            with self._cond:
                while not self._queue and not self._stopping and not self._wants_work():
                    self._cond.wait(1.0)
                record = self._queue[0] if self._queue else None
                if record is None and self._stopping:
                    return
            try:
                if record is not None:
                    self._materialise(record)
                else:
                    self._housekeeping()
                delay = 0.1
                with self._cond:
                    self._failure = None
            # Whatever goes wrong (a full disk, say), this thread must not die: the records
            # stay safe in the journal and are retried; meanwhile stores go the direct way.
            except Exception as err:
                LOG.error("cannot write out journal records (retrying): %s", err)
                with self._cond:
                    self._failure = str(err)
                    if self._stopping:
                        return
                time.sleep(delay)
                delay = min(delay * 2, 5.0)

    def _wants_work(self) -> bool:
        """Caller holds ``_cond``: a segment to prepare or to retire."""
        if self._ready is None and not self._stopping:
            return True
        return any(s.closed and s.in_flight == 0 and s.unmaterialised == 0 for s in self._segments)

    def _materialise(self, record: Record) -> None:
        final = self.root / record.relpath
        if not final.exists():  # else a second copy: the first is kept
            self._write_file(final, record.data, sync=False)
        with self._cond:
            self._queue.popleft()
            record.segment.unmaterialised -= 1
            if self._unmaterialised.get(record.relpath) is record:
                del self._unmaterialised[record.relpath]
            self._pending_seqs.discard(record.seq)
            self._cond.notify_all()

    def _housekeeping(self) -> None:
        self._retire_done()
        with self._cond:
            need = self._ready is None and not self._stopping
        if need:
            seg = self._prepare()
            with self._cond:
                if self._stopping:
                    os.close(seg.fd)
                    self._recycle(seg.path, seg.generation)
                else:
                    self._ready = seg
                    self._cond.notify_all()

    def _retire_done(self) -> None:
        """Make materialised files durable (one flush), then recycle their segments."""
        with self._cond:
            done = [
                s for s in self._segments if s.closed and s.in_flight == 0 and s.unmaterialised == 0
            ]
            for seg in done:
                self._segments.remove(seg)
        if not done:
            return
        try:
            syncfs(self.root)
        except OSError:
            with self._cond:  # not durable as files yet: keep the segments
                self._segments.extend(done)
            raise
        for seg in done:
            os.close(seg.fd)
            self._recycle(seg.path, seg.generation)

    def _recycle(self, path: Path, generation: int) -> None:
        """Keep a retired segment for reuse.

        Its stale records carry generation ``generation`` or older; the name keeps that
        number so that a later start never hands out a generation a stale record has.
        """
        try:
            path.rename(self.journal_dir / f"free-{generation:016d}.wal")
        except OSError as err:
            LOG.warning("cannot recycle journal segment %s: %s", path.name, err)

    def _prepare(self) -> Segment:
        """A segment whose blocks are written and whose name is durable, ready for appends."""
        with self._cond:
            self._generation += 1
            gen = self._generation
        path = self.journal_dir / f"seg-{gen:016d}.wal"
        free = sorted(self.journal_dir.glob("free-*.wal"))
        reuse = next((f for f in free if f.stat().st_size == SEGMENT_SIZE), None)
        if reuse is not None:
            reuse.rename(path)
            self.counts["segments_reused"] += 1
        else:
            part = self.journal_dir / f"new-{gen:016d}.part"
            try:
                with open(part, "wb") as fh:
                    zeros = bytes(1 << 20)
                    for _ in range(SEGMENT_SIZE // len(zeros)):
                        fh.write(zeros)
                    fh.flush()
                    os.fsync(fh.fileno())
                part.rename(path)
                self.counts["segments_made"] += 1
            except OSError:
                part.unlink(missing_ok=True)
                raise
        fsync_dir(self.journal_dir)
        return Segment(path, gen, os.open(path, os.O_WRONLY))

    # -- start-up -----------------------------------------------------------------------

    def _replay(self) -> int:
        """Write out every record the segments still hold; returns the highest generation.

        A record exists only for an instance that was neither a file nor in the journal when
        it arrived, so a file at its path that matches none of its records is a write-out
        cut short by a power cut (not yet flushed by ``syncfs``) and is written again from
        the first record. Two records for one path (two copies arriving at once) keep
        whichever copy is already there.
        """
        highest = 0
        for part in self.journal_dir.glob("new-*.part"):
            part.unlink(missing_ok=True)
        for free in self.journal_dir.glob("free-*.wal"):
            highest = max(highest, generation_of(free))
        segments = sorted(self.journal_dir.glob("seg-*.wal"), key=generation_of)
        copies: dict[str, list[bytes]] = {}
        for seg in segments:
            highest = max(highest, generation_of(seg))
            for relpath, data in read_records(seg, generation_of(seg)):
                copies.setdefault(relpath, []).append(data)
        written = 0
        for relpath, datas in copies.items():
            final = self.root / relpath
            if final.exists() and final.read_bytes() in datas:
                continue
            self._write_file(final, datas[0], sync=True)
            written += 1
        if segments:
            LOG.info("journal: %d records, %d written out again", len(copies), written)
            syncfs(self.root)  # the files that were already there, too
        for seg in segments:
            self._recycle(seg, generation_of(seg))
        return highest


def journal_names(root: Path, node: str = "") -> list[str]:
    """The names of the acceptor journals of receiver ``node`` (``node_name``; "" for the
    only receiver of its spool) under the spool ``root`` (see ``Spool.name``).

    Only ``acceptor-N`` folders count: with several receivers on one spool each has its
    journals under ``.journal/<node_name>``, and a receiver never lists another's.
    """
    folder = Path(root) / ".journal" / node if node else Path(root) / ".journal"
    if not folder.is_dir():
        return []
    names = sorted(p.name for p in folder.iterdir() if p.is_dir() and _ACCEPTOR.fullmatch(p.name))
    return [f"{node}/{name}" for name in names] if node else names


_ACCEPTOR = re.compile(r"acceptor-[0-9]+")


#: How long the node and a new acceptor process wait for an acceptor journal's lock.
LOCK_WAIT_S = 30.0


def replay_journals(root: Path, names: list[str] | None = None, node: str = "") -> int:
    """Write out what the acceptor journals ``names`` (default: all of receiver ``node``,
    see :func:`journal_names`) still hold, as opening
    their spool does, and remove their temporary files; returns how many were removed.

    For the node, before its acceptor processes start and after one of them died: each
    record in a journal was acknowledged by its process. A journal still locked by a live
    process is left to it.
    """
    removed = 0
    for name in journal_names(root, node) if names is None else names:
        try:
            spool = Spool(root, name=name, lock_wait_s=LOCK_WAIT_S)
        except SpoolError as err:
            LOG.warning("journal %s not replayed: %s", name, err)
            continue
        removed += spool.discard_partial()
        spool.stop()
    return removed


def replay_unnamed(root: Path) -> int:
    """For a receiver with a ``node_name``: write out what the journals of a receiver
    *without* one left (``.journal`` and ``.journal/acceptor-N``), so that naming the only
    receiver of a data folder, after a crash, loses nothing it acknowledged. Such journals
    belong to no live receiver once receivers are named (an unnamed one must not share the
    data folder); one still locked is left alone, and two named receivers starting at once
    take turns on each journal's lock (the second finds it empty)."""
    if not (Path(root) / ".journal").is_dir():
        return 0
    try:
        spool = Spool(root)
    except SpoolError as err:
        LOG.warning("journal of an unnamed receiver not replayed: %s", err)
        return replay_journals(root)
    removed = spool.discard_partial()
    spool.stop()
    return removed + replay_journals(root)


__all__ = [
    "Spool",
    "InvalidUID",
    "SpoolError",
    "StoredFile",
    "journal_names",
    "replay_journals",
    "replay_unnamed",
    "valid_uid",
]
