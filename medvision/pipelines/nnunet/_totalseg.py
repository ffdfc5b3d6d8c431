"""``medvision models import totalsegmentator``: TotalSegmentator's downloaded weights.

TotalSegmentator's tasks are plain nnU-Net v2 results folders, fetched on a machine with
internet by its own tool (``totalseg_download_weights -t TASK``) into
``$TOTALSEG_WEIGHTS_PATH`` or ``$TOTALSEG_HOME_DIR/nnunet/results`` (default
``~/.totalsegmentator/nnunet/results``), one ``DatasetNNN_*`` folder per model. A task may
be several models (``total`` is five, each with part of the 117 labels); each is imported
by :func:`import_nnunet` as its own pipeline, named ``totalseg-<task>[-fast]-<NNN>``.

Dataset ids and modes are TotalSegmentator's own (v2.18: ``map_tasks_config.py``,
``bin/totalseg_download_weights.py``): ``total`` runs five 1.5 mm models; its ``--fast``
mode one 3 mm model (297) and ``--fastest`` one 6 mm model (298), each with all 117 labels.
Like TotalSegmentator, the imported pipelines run without mirroring (it passes
``tta=False``), which is 8x less work than nnU-Net's default.

Only tasks whose weights TotalSegmentator publishes under its open licence (Apache-2.0) are
listed; the tasks it marks as licensed need a licence from its authors and are not imported
by name (import such a folder with ``models import nnunet`` and ``--licence``).
"""

from __future__ import annotations

import os
from pathlib import Path

from medvision.pipelines.nnunet._import import import_nnunet

#: Task -> mode -> the nnU-Net dataset ids of its models (TotalSegmentator v2.18). Modes:
#: "default", "fast" (TotalSegmentator's --fast, 3 mm) and "fastest" (--fastest, 6 mm).
TASKS: dict[str, dict[str, tuple[int, ...]]] = {
    "total": {"default": (291, 292, 293, 294, 295), "fast": (297,), "fastest": (298,)},
    "lung_vessels": {"default": (117,)},
    "lung_vessels_LEGACY": {"default": (258,)},
    "lung_nodules": {"default": (913,)},
    "pleural_pericard_effusion": {"default": (315,)},
}
#: ``totalseg_download_weights -t`` names, where a mode's models download under another name.
DOWNLOAD_NAMES = {("total", "fast"): "total_fast", ("total", "fastest"): "total_fast"}
LICENCE = "Apache-2.0 (TotalSegmentator open weights; see its README for citation terms)"


def default_weights_dir() -> Path:
    """Where ``totalseg_download_weights`` puts the weights, by TotalSegmentator's rules."""
    if os.environ.get("TOTALSEG_WEIGHTS_PATH"):
        return Path(os.environ["TOTALSEG_WEIGHTS_PATH"]).expanduser()
    home = Path(os.environ.get("TOTALSEG_HOME_DIR") or "~/.totalsegmentator").expanduser()
    return home / "nnunet" / "results"


def task_models(task: str, mode: str = "default") -> tuple[int, ...]:
    """The dataset ids of ``task`` in ``mode``; a clear error for what does not exist."""
    if task not in TASKS:
        raise ValueError(f"Unknown TotalSegmentator task {task!r}; importable: {sorted(TASKS)}.")
    modes = TASKS[task]
    if mode not in modes:
        raise ValueError(
            f"TotalSegmentator task {task!r} has no --{mode} model (TotalSegmentator itself "
            f"refuses --{mode} for it); modes: {', '.join(sorted(modes))}."
        )
    return modes[mode]


def find_task(weights: Path, task: str, mode: str = "default") -> list[Path]:
    """The results folders of ``task`` in ``mode`` under ``weights``, one per model."""
    found, missing = [], []
    for number in task_models(task, mode):
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
        download = DOWNLOAD_NAMES.get((task, mode), task)
        raise FileNotFoundError(
            f"TotalSegmentator task {task!r}{'' if mode == 'default' else f' --{mode}'}: "
            f"no weights for dataset(s) {', '.join(map(str, missing))} under {weights}; "
            "download them on a machine with internet with "
            f"`totalseg_download_weights -t {download}` and copy the folder here "
            "(or pass --weights)."
        )
    return found


def pipeline_name(task: str, mode: str, number: str) -> str:
    suffix = "" if mode == "default" else f"-{mode}"
    return f"totalseg-{task.lower().replace('_', '-')}{suffix}-{number}"


def import_totalsegmentator(
    weights: Path, out_dir: Path, task: str = "total", mode: str = "default"
) -> list[Path]:
    """Import ``task`` in ``mode`` as one pipeline; returns the folder written, in a list.

    A task of several models (``total``: 291-295) becomes one pipeline that runs them all
    and merges their labels (``totalseg-total-291-295``), so that a study gets one SEG and
    one SR with every structure, as TotalSegmentator's own DICOM output does.
    """
    found = find_task(Path(weights), task, mode)
    numbers = [r.parent.name.split("_", 1)[0].removeprefix("Dataset") for r in found]
    number = numbers[0] if len(numbers) == 1 else f"{numbers[0]}-{numbers[-1]}"
    return [
        import_nnunet(
            found[0] if len(found) == 1 else found,
            out_dir,
            name=pipeline_name(task, mode, number),
            modality="CT",
            licence=LICENCE,
            use_mirroring=False,
        )
    ]


__all__ = [
    "LICENCE",
    "TASKS",
    "default_weights_dir",
    "find_task",
    "import_totalsegmentator",
    "pipeline_name",
    "task_models",
]
