"""The durable spool: every instance we acknowledge is on disk first.

An instance is written to a temporary file, fsync'ed, renamed to
``<spool>/<study>/<series>/<sop>.dcm`` and its directory fsync'ed; only then may the SCP
answer Success. A second copy of the same SOP Instance is not written again. Files are never
deleted because processing failed; only a retention policy may remove them.
"""

from __future__ import annotations

import hashlib
import os
import re
import uuid
from dataclasses import dataclass
from pathlib import Path

from medvision._hashing import sha256_file

_UID = re.compile(r"^[0-9]+(\.[0-9]+)*$")


class SpoolError(Exception):
    """The instance could not be stored (disk full, unwritable spool, bad UID)."""


@dataclass(frozen=True)
class StoredFile:
    #: Path relative to the spool root.
    relpath: str
    size: int
    sha256: str
    #: False when the same SOP Instance was already in the spool (nothing was written).
    created: bool


def valid_uid(uid: str) -> bool:
    return bool(uid) and len(uid) <= 64 and bool(_UID.match(uid))


class Spool:
    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.tmp = self.root / ".incoming"
        self.tmp.mkdir(parents=True, exist_ok=True)

    def path_for(self, study_uid: str, series_uid: str, sop_uid: str) -> Path:
        for name, uid in (("Study", study_uid), ("Series", series_uid), ("SOP", sop_uid)):
            if not valid_uid(uid):
                raise SpoolError(f"{name} Instance UID {uid!r} is missing or not a valid UID")
        return self.root / study_uid / series_uid / f"{sop_uid}.dcm"

    def store(self, data: bytes, study_uid: str, series_uid: str, sop_uid: str) -> StoredFile:
        """Write ``data`` (a complete DICOM file) durably; idempotent per SOP Instance."""
        final = self.path_for(study_uid, series_uid, sop_uid)
        relpath = str(final.relative_to(self.root))
        if final.exists():
            return StoredFile(relpath, final.stat().st_size, sha256_file(final), created=False)
        tmp = self.tmp / f"{uuid.uuid4().hex}.part"
        try:
            final.parent.mkdir(parents=True, exist_ok=True)
            with open(tmp, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, final)
            _fsync_dir(final.parent)
        except OSError as err:
            tmp.unlink(missing_ok=True)
            raise SpoolError(f"cannot write to the spool: {err.strerror or err}") from err
        return StoredFile(relpath, len(data), hashlib.sha256(data).hexdigest(), created=True)

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


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


__all__ = ["Spool", "SpoolError", "StoredFile", "valid_uid"]
