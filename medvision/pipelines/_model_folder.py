"""Putting an imported model's folder in place without a moment where it is half there.

A node keeps running while an administrator imports a model, and builds its pipelines from
the model folder for each study. Writing the new model over the old one file by file (or
deleting the old folder first) lets a study that starts meanwhile read a mixture, or no
model at all, and fail. The model is therefore written into a hidden folder beside its
target, which model discovery skips (its name starts with a dot), and renamed into place
once complete; a failed import leaves the model that was there untouched.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def is_staging(folder: Path) -> bool:
    """A folder that model discovery must not list: being written, or being replaced."""
    return folder.name.startswith(".")


@contextmanager
def replacing(target: Path) -> Iterator[Path]:
    """An empty folder to write the model into; it becomes ``target`` when the block ends.

    The old ``target``, if any, is renamed aside and then removed, so that ``target`` is
    missing only between two renames on the same file system (never while files are being
    written). If the block raises, the new folder is removed and ``target`` is as it was.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.importing-", dir=target.parent))
    try:
        yield staging
        staging.chmod(0o755)  # mkdtemp's 0700 would hide the model from a node's service user
        old = None
        if target.exists():
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


__all__ = ["is_staging", "replacing"]
