"""Putting an imported model's folder in place without a moment where it is half there.

A node keeps running while an administrator imports a model, and builds its pipelines from
the model folder for each study. Writing the new model over the old one file by file (or
deleting the old folder first) lets a study that starts meanwhile read a mixture, or no
model at all, and fail. The model is therefore written into a hidden folder beside its
target, which model discovery skips (its name starts with a dot), and renamed into place
once complete; a failed import leaves the model that was there untouched.
"""

from __future__ import annotations

import ctypes
import errno
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def is_staging(folder: Path) -> bool:
    """A folder that model discovery must not list: being written, or being replaced."""
    return folder.name.startswith(".")


@contextmanager
def replacing(target: Path) -> Iterator[Path]:
    """An empty folder to write the model into; it becomes ``target`` when the block ends.

    An old ``target`` is swapped with the new folder in one step where Linux can
    (``renameat2``: ``target`` never stops existing), else renamed aside first (missing for
    the moment between two renames); then removed. If the block raises, the new folder is
    removed and ``target`` is as it was.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    _remove_abandoned(target)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.importing-", dir=target.parent))
    try:
        yield staging
        staging.chmod(0o755)  # mkdtemp's 0700 would hide the model from a node's service user
        old = None
        if target.exists() and _exchange(staging, target):
            shutil.rmtree(staging, ignore_errors=True)  # the old model, swapped out whole
            return
        if target.exists():  # no atomic exchange here: two renames, a moment without it
            old = Path(tempfile.mkdtemp(prefix=f".{target.name}.replaced-", dir=target.parent))
            os.replace(target, old / target.name)
        try:
            os.replace(staging, target)
        except BaseException:
            if old is not None:  # put the old model back
                os.replace(old / target.name, target)
            raise
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


#: A hidden folder of an import of the same model untouched for this long was left by an
#: import that was killed (an import takes minutes): it is removed by the next import.
ABANDONED_AFTER_S = 24 * 3600


def _remove_abandoned(target: Path) -> None:
    """Remove what killed imports of ``target`` left beside it (GBs of weights, hidden)."""
    now = time.time()
    for pattern in (f".{target.name}.importing-*", f".{target.name}.replaced-*"):
        for folder in target.parent.glob(pattern):
            try:
                if now - folder.stat().st_mtime > ABANDONED_AFTER_S:
                    shutil.rmtree(folder, ignore_errors=True)
            except OSError:  # another import removed it meanwhile
                continue


#: renameat2(2)'s flag that swaps two paths in one step (Linux 3.15+, most file systems).
_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def _exchange(a: Path, b: Path) -> bool:
    """Swap the folders ``a`` and ``b`` in one step (``renameat2`` with RENAME_EXCHANGE),
    so that ``b`` never stops existing; False where the system cannot (then nothing moved)."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):  # no libc symbol (old glibc, musl without it)
        return False
    renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p]
    renameat2.argtypes += [ctypes.c_uint]
    renameat2.restype = ctypes.c_int
    done = renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE)
    if done == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):  # unsupported here: fall back
        return False
    raise OSError(err, os.strerror(err), str(b))


__all__ = ["ABANDONED_AFTER_S", "is_staging", "replacing"]
