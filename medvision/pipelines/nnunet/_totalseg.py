"""``medvision models import totalsegmentator``: TotalSegmentator's downloaded weights.

TotalSegmentator's tasks are plain nnU-Net v2 results folders, fetched on a machine with
internet by its own tool (``totalseg_download_weights -t TASK``) into
``$TOTALSEG_WEIGHTS_PATH`` or ``$TOTALSEG_HOME_DIR/nnunet/results`` (default
``~/.totalsegmentator/nnunet/results``), one ``DatasetNNN_*`` folder per model. A task may
be several models (``total`` is five, each with part of the 117 labels); each is imported
by :func:`import_nnunet` as its own pipeline, named ``totalseg-<task>-<NNN>``.

Only tasks whose weights TotalSegmentator publishes under its open licence (Apache-2.0)
are listed here; tasks it marks as licensed need a licence from its authors and are not
imported by name (import such a folder with ``models import nnunet`` and ``--licence``).
"""

from __future__ import annotations

import os
from pathlib import Path

from medvision.pipelines.nnunet._import import import_nnunet

#: Task -> the nnU-Net dataset ids of its models (TotalSegmentator v2).
TASKS: dict[str, tuple[int, ...]] = {
    "total": (291, 292, 293, 294, 295),
    "total-fast": (297,),
    "lung_vessels": (258,),
}
LICENCE = "Apache-2.0 (TotalSegmentator open weights; see its README for citation terms)"


def default_weights_dir() -> Path:
    """Where ``totalseg_download_weights`` puts the weights, by TotalSegmentator's rules."""
    if os.environ.get("TOTALSEG_WEIGHTS_PATH"):
        return Path(os.environ["TOTALSEG_WEIGHTS_PATH"]).expanduser()
    home = Path(os.environ.get("TOTALSEG_HOME_DIR") or "~/.totalsegmentator").expanduser()
    return home / "nnunet" / "results"


def find_task(weights: Path, task: str) -> list[Path]:
    """The results folders of ``task`` under ``weights``, one per model, in id order."""
    if task not in TASKS:
        raise ValueError(f"Unknown TotalSegmentator task {task!r}; importable: {sorted(TASKS)}.")
    found, missing = [], []
    for number in TASKS[task]:
        folders = sorted(
            p.parent
            for p in Path(weights).glob(f"Dataset{number}_*/*__*/plans.json")
            if p.parent.is_dir()
        )
        if folders:
            found.append(folders[0])
        else:
            missing.append(number)
    if missing:
        raise FileNotFoundError(
            f"TotalSegmentator task {task!r}: no weights for dataset(s) "
            f"{', '.join(map(str, missing))} under {weights}; download them on a machine with "
            f"internet with `totalseg_download_weights -t {task.replace('-fast', '_fast')}` "
            "and copy the folder here (or pass --weights)."
        )
    return found


def import_totalsegmentator(weights: Path, out_dir: Path, task: str = "total") -> list[Path]:
    """Import every model of ``task``; returns the pipeline folders written."""
    written = []
    for results in find_task(Path(weights), task):
        number = results.parent.name.split("_", 1)[0].removeprefix("Dataset")
        written.append(
            import_nnunet(
                results,
                out_dir,
                name=f"totalseg-{task.replace('_', '-')}-{number}",
                modality="CT",
                licence=LICENCE,
            )
        )
    return written


__all__ = ["LICENCE", "TASKS", "default_weights_dir", "find_task", "import_totalsegmentator"]
