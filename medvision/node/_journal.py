"""The spool's write-ahead journal: an instance is acknowledged after one flush.

Each instance is one record (header with the data's SHA-256 and a CRC-32 of the rest,
relative path, bytes; ``_journal_io``) appended to a *segment* of
``<spool>/.journal[/<name>]``, which is then ``fdatasync``'ed. Segments are written in
full (zeros) and fsync'ed, their name fsync'ed into the folder, *before* they take records,
so an append changes no file metadata: one flush per instance instead of the two (file,
then folder) a new file needs, and concurrent associations share flushes (group commit). A
background thread then *materialises* each record as its file (temporary file + rename, no
flush of its own); once a full segment's records are all materialised, one ``syncfs`` makes
those files durable and the segment is recycled. Opening a journal writes out again, with a
flush of each file and folder, every record its segments still hold. Records carry their
segment's generation and are checked (CRC, SHA-256), so stale records of a recycled
segment and a torn last record are never replayed; records are appended and flushed in
order within a segment, so every acknowledged record lies in the valid prefix that replay
reads.

The spool (``_spool``: file layout, the direct path it falls back to) owns one journal; the
record format and the low-level I/O are ``_journal_io``'s.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import logging
import os
import threading
import time
from collections import Counter, deque
from collections.abc import Callable
from pathlib import Path

from medvision.node._journal_io import (
    HEADER_V2,
    MAX_RECORD,
    Record,
    Segment,
    aligned,
    generation_of,
    prepare_segment,
    pwrite_all,
    read_records,
    record_head,
    recycle_segment,
    syncfs,
)
from medvision.node._spool_errors import SpoolError

LOG = logging.getLogger("medvision.spool")

#: How the spool writes a file at its path: (final path, data, flush the file and folder).
WriteFile = Callable[[str, bytes, bool], None]


class Journal:
    """One process's journal segments and the thread that materialises their records.

    Opening a journal takes its lock (one process per journal: a second one would replay
    and recycle the first one's live segments) and replays what its segments still hold;
    :meth:`start` starts the background thread that materialises records and prepares
    segments, :meth:`stop` drains it. Without :meth:`start`, :meth:`accepts` is always
    False and every store takes the spool's direct path.
    """

    def __init__(
        self,
        root: Path,
        folder: Path,
        write_file: WriteFile,
        counts: Counter[str],
        lock_wait_s: float = 0.0,
    ) -> None:
        #: The spool root, which a record's relative path is relative to.
        self.root = root
        self._root = os.fspath(root)
        self.dir = folder
        self._write_file = write_file
        #: The spool's counters: segments made and reused.
        self.counts = counts
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
        self._stopping = False
        self._thread: threading.Thread | None = None
        self.dir.mkdir(parents=True, exist_ok=True)
        # ``lock_wait_s``: an acceptor process of a node that died may still be finishing
        # (it stops when it sees the node gone); its successor waits for it.
        self._lock_fd = os.open(self.dir / "lock", os.O_RDWR | os.O_CREAT, 0o644)
        deadline = time.monotonic() + lock_wait_s
        while True:
            try:
                fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as err:
                if time.monotonic() >= deadline:
                    os.close(self._lock_fd)
                    raise SpoolError(
                        f"the spool journal {self.dir} is in use by another process"
                    ) from err
                time.sleep(0.1)
        self._generation = self._replay()

    # -- public -------------------------------------------------------------------------

    def start(self) -> None:
        """Start materialising and preparing segments (the journal's fast path)."""
        if self._thread is not None:
            return
        self._stopping = False
        self._thread = threading.Thread(
            target=self._loop, name="medvision-spool-journal", daemon=True
        )
        self._thread.start()

    def stop(self, timeout: float = 60.0) -> None:
        """Materialise every acknowledged record, make the files durable, retire segments,
        and release the journal's lock."""
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

    def accepts(self, size: int) -> bool:
        """Whether a record of ``size`` bytes may try the journal: it is running, the
        record fits a segment, and writing records out has not been failing."""
        return self._thread is not None and size <= MAX_RECORD and self._failure is None

    def unmaterialised(self, relpath: str) -> bytes | None:
        """The data of an acknowledged record for ``relpath`` not yet at its path."""
        with self._cond:
            record = self._unmaterialised.get(relpath)
        return record.data if record is not None else None

    def wait_ready(self, timeout: float = 30.0) -> bool:
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
        """Wait until the records ``seqs`` are files at their paths."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while any(s in self._pending_seqs for s in seqs):
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return False
                self._cond.wait(left if left is not None else 1.0)
        return True

    # -- appending ----------------------------------------------------------------------

    def append(self, relpath: str, data: bytes, digest: bytes | None = None) -> int:
        """Append a record and flush it; its sequence number, or 0 to take the direct path.

        ``digest``: the data's SHA-256 if the caller has it (the record carries it).
        Space is reserved and the record written under one lock, so a segment's records are
        whole up to ``written``; a flush covers everything written before it started, so
        one ``fdatasync`` answers every association waiting on the same segment.
        """
        path = relpath.encode()
        if digest is None:
            digest = hashlib.sha256(data).digest()
        head = HEADER_V2.size + len(path)
        with self._append_lock:
            seg = self._segment_for(head + len(data))
            if seg is None:
                return 0
            offset = seg.offset
            seg.offset = aligned(offset + head + len(data))
            gen = seg.generation
            header = record_head(gen, path, len(data), digest)
            try:
                pwrite_all(seg.fd, header, offset)
                pwrite_all(seg.fd, data, offset + head)
            except OSError as err:
                # Nothing after a failed record may go into this segment: replay reads a
                # segment's records only up to the first one that is not whole.
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
        final = os.path.join(self._root, record.relpath)
        if not os.path.exists(final):  # else a second copy: the first is kept
            self._write_file(final, record.data, False)
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
        recycle_segment(self.dir, path, generation)

    def _prepare(self) -> Segment:
        """The next generation's segment, ready for appends."""
        with self._cond:
            self._generation += 1
            gen = self._generation
        return prepare_segment(self.dir, gen, self.counts)

    # -- opening ------------------------------------------------------------------------

    def _replay(self) -> int:
        """Write out every record the segments still hold; returns the highest generation.

        A record exists only for an instance that was neither a file nor in the journal when
        it arrived, so a file at its path that matches none of its records is a write-out
        cut short by a power cut (not yet flushed by ``syncfs``) and is written again from
        the first record. Two records for one path (two copies arriving at once) keep
        whichever copy is already there.
        """
        highest = 0
        for part in self.dir.glob("new-*.part"):
            part.unlink(missing_ok=True)
        for free in self.dir.glob("free-*.wal"):
            highest = max(highest, generation_of(free))
        segments = sorted(self.dir.glob("seg-*.wal"), key=generation_of)
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
            self._write_file(os.fspath(final), datas[0], True)
            written += 1
        if segments:
            LOG.info("journal: %d records, %d written out again", len(copies), written)
            syncfs(self.root)  # the files that were already there, too
        for seg in segments:
            self._recycle(seg, generation_of(seg))
        return highest


__all__ = ["Journal", "WriteFile"]
