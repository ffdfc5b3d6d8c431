"""The durable spool: every instance we acknowledge is on disk first.

The spool's files live at ``<spool>/<study>/<series>/<sop>.dcm``. An instance reaches the
disk in one of two ways, and the SCP answers Success only after either has completed:

- **Journal (the usual way).** The instance is appended as one record to the spool's
  write-ahead journal ``<spool>/.journal`` and flushed (group commit); a background thread
  writes it out as its file later, and opening the spool writes out again whatever the
  journal still holds (``_journal``: segments, materialisation, replay).
- **Direct.** Written to a temporary file, fsync'ed, renamed into place and the folder
  fsync'ed. Used for instances too large for a segment, while no prepared segment is
  ready (the first instances after start-up), and after materialisation has failed (for
  example a full disk), so that a spool that cannot take files answers Out of Resources.

This module holds what is stored where (the layout above, the temporary files, the direct
path) and the node's recovery of acceptor journals; the journal itself is ``_journal``'s.
A second copy of the same SOP Instance is not written again (the first is kept). Files are
never deleted because processing failed; only a retention policy may remove them.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import re
import uuid
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from medvision._hashing import sha256_file
from medvision.node._journal import Journal
from medvision.node._journal_io import fsync_dir, valid_uid
from medvision.node._spool_errors import InvalidUID, SpoolError

LOG = logging.getLogger("medvision.spool")


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
    """The spool folder and its journal.

    Opening a spool replays whatever the journal still holds (see ``_journal``);
    :meth:`start` starts the journal's background thread that materialises records and
    prepares segments, :meth:`stop` drains it. Without :meth:`start`, every store takes the
    direct path.
    """

    def __init__(
        self, root: Path, journal: bool = True, name: str = "", lock_wait_s: float = 0.0
    ) -> None:
        self.root = Path(root)
        # The per-instance path work is done on strings: pathlib's object for every join,
        # parent and exists was ~8 % of an acceptor's Python at four associations.
        self._root = os.fspath(self.root)
        #: Several acceptor processes write one spool, each with its own journal segments
        #: and temporary files (``.journal/<name>``, ``.incoming/<name>``): a process
        #: replays, recycles and cleans up only what is its own. "" is the node's own.
        self.name = name
        self.tmp = self.root / ".incoming" / name if name else self.root / ".incoming"
        self.tmp.mkdir(parents=True, exist_ok=True)
        self._tmp = os.fspath(self.tmp)
        self.journal_dir = self.root / ".journal" / name if name else self.root / ".journal"
        self.use_journal = journal
        self._known_dirs: set[str] = set()
        #: Counters for benchmarks and logs: instances by path, segments made and reused.
        self.counts: Counter[str] = Counter()
        # Takes the journal's lock (``lock_wait_s``: see Journal) and replays it.
        self.journal = Journal(
            self.root, self.journal_dir, self._write_file, self.counts, lock_wait_s
        )

    # -- public -----------------------------------------------------------------------

    def path_for(self, study_uid: str, series_uid: str, sop_uid: str) -> Path:
        return self.root / self.relpath_for(study_uid, series_uid, sop_uid)

    def relpath_for(self, study_uid: str, series_uid: str, sop_uid: str) -> str:
        """The instance's path under the spool root; :class:`InvalidUID` for a UID that
        could not name a folder safely (checked before anything is written)."""
        for name, uid in (("Study", study_uid), ("Series", series_uid), ("SOP", sop_uid)):
            if not valid_uid(uid):
                raise InvalidUID(f"{name} Instance UID {uid!r} is missing or not a valid UID")
        return f"{study_uid}/{series_uid}/{sop_uid}.dcm"

    def start(self) -> None:
        """Start materialising and preparing segments (the journal's fast path)."""
        if self.use_journal:
            self.journal.start()

    def stop(self, timeout: float = 60.0) -> None:
        """Materialise every acknowledged record, make the files durable, retire segments."""
        self.journal.stop(timeout)

    def store(self, data: bytes, study_uid: str, series_uid: str, sop_uid: str) -> StoredFile:
        """Write ``data`` (a complete DICOM file) durably; idempotent per SOP Instance."""
        relpath = self.relpath_for(study_uid, series_uid, sop_uid)
        final = os.path.join(self._root, relpath)
        existing = self._existing(relpath, final)
        if existing is not None:
            return existing
        try:
            folder = os.path.dirname(final)
            if folder not in self._known_dirs:
                os.makedirs(folder, exist_ok=True)
                self._known_dirs.add(folder)
        except OSError as err:
            raise SpoolError(f"cannot write to the spool: {err.strerror or err}") from err
        sha = hashlib.sha256(data)
        digest = sha.hexdigest()
        if self.journal.accepts(len(data)):
            seq = self.journal.append(relpath, data, sha.digest())
            if seq:
                self.counts["journal"] += 1
                return StoredFile(relpath, len(data), digest, created=True, seq=seq)
        self._write_file(final, data, sync=True)
        self.counts["direct"] += 1
        return StoredFile(relpath, len(data), digest, created=True)

    def wait_journal(self, timeout: float = 30.0) -> bool:
        """Wait until appends can go to the journal (a prepared segment is ready)."""
        return self.journal.wait_ready(timeout)

    def wait_materialised(self, seqs: list[int], timeout: float | None = None) -> bool:
        """Wait until the journal records ``seqs`` are files at their paths."""
        return self.journal.wait_materialised(seqs, timeout)

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

    def _existing(self, relpath: str, final: str) -> StoredFile | None:
        data = self.journal.unmaterialised(relpath)
        if data is not None:
            return StoredFile(relpath, len(data), hashlib.sha256(data).hexdigest(), False)
        try:
            size = os.stat(final).st_size
        except (FileNotFoundError, NotADirectoryError):  # what Path.exists() took for "no"
            return None
        return StoredFile(relpath, size, sha256_file(Path(final)), created=False)

    def _write_file(self, final: str, data: bytes, sync: bool) -> None:
        tmp = os.path.join(self._tmp, f"{uuid.uuid4().hex}.part")
        try:
            try:
                self._write_tmp(tmp, data, sync)
                os.replace(tmp, final)
            except FileNotFoundError:
                # The instance's folder is gone (retention removed the study meanwhile) or
                # never was: make it and write again, rather than a mkdir per instance.
                os.makedirs(os.path.dirname(final), exist_ok=True)
                self._write_tmp(tmp, data, sync)
                os.replace(tmp, final)
            if sync:
                fsync_dir(Path(os.path.dirname(final)))
        except OSError as err:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise SpoolError(f"cannot write to the spool: {err.strerror or err}") from err

    @staticmethod
    def _write_tmp(tmp: str, data: bytes, sync: bool) -> None:
        with open(tmp, "wb") as fh:
            fh.write(data)
            if sync:
                fh.flush()
                os.fsync(fh.fileno())
            else:
                # A journal record written out: start its writeback now (Linux: DONTNEED
                # writes dirty pages back and drops none of them, the file stays cached
                # for the pipeline) rather than leave ~32 MB for the syncfs that retires
                # the segment, which the acknowledging fdatasyncs then queued behind: a
                # C-STORE in ~100 waited 20-30 ms (bench/store_latency.py: p99 8-12 ms
                # instead of 18-20).
                fh.flush()
                with contextlib.suppress(OSError, AttributeError):
                    os.posix_fadvise(fh.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)


# -- the node's recovery of acceptor journals ------------------------------------------


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
