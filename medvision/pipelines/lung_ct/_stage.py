"""lung-ct's lesion stage: the classical rules by default, the learned filter on request.

* By default (``MEDVISION_LESION_FILTER`` unset or ``off``): the classical rules
  (:func:`find_lesions`) and their heuristic confidence, as in lung-ct 1.1.0.
* ``MEDVISION_LESION_FILTER=on``: the bundle ``lung_lesion_filter`` from the model folders
  (the repository's ``models/`` ships it): the sensitive generator (:func:`find_candidates`),
  the classifier's score on each candidate, the candidates at or above the bundle's
  threshold, merged when closer than 5 mm; each finding's confidence is the calibrated score.
* ``MEDVISION_LESION_FILTER=/path/to/bundle``: that filter bundle instead of the installed
  one (how ``medvision evaluate lesions --bundle`` measures a filter that is not installed).

Why opt-in: on the held-out folds of filter 0.2.0 (docs/accuracy.md) it cuts false
positives on LIDC-IDRI-0002 (10 -> 1) but adds them on A0001 (9 against the rules' 4, the
tumour in two findings) and misses one of the synthetic sample's three nodules. It is not
made the default until it is at least as good as the rules on every unseen patient.

The filter is loaded once per process (on CUDA with AMP where present).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from medvision.dicom import Volume
from medvision.pipelines.lung_ct._lesions import CONFIDENCE_METHOD as RULES_METHOD
from medvision.pipelines.lung_ct._lesions import find_lesions
from medvision.pipelines.lung_ct._lungs import LungMasks
from medvision.pipelines.lung_ct._params import LungParams


@dataclass(frozen=True)
class Lesion:
    """One lesion finding's mask (full grid), confidence and side."""

    mask: np.ndarray
    confidence: float
    left: bool


@dataclass(frozen=True)
class StageInfo:
    """Which lesion stage runs, for the algorithm record and the confidence method."""

    name: str
    version: str
    sha256: str
    confidence_method: str


def filter_root() -> Path | None:
    choice = os.environ.get("MEDVISION_LESION_FILTER", "").strip()
    if choice.lower() in ("", "off", "0", "no"):
        return None
    if choice.lower() not in ("on", "1", "yes"):
        return Path(choice) if Path(choice).is_dir() else None
    from medvision.pipelines.lung_ct._filter import find_filter

    return find_filter()


@lru_cache(maxsize=2)
def _load(root: Path) -> object:
    from medvision.pipelines.lung_ct._filter import LesionFilter

    return LesionFilter.load(root)


def stage_info() -> StageInfo | None:
    """The installed filter's identity, or None when the classical rules run."""
    root = filter_root()
    if root is None:
        return None
    from medvision.pipelines.lung_ct._filter import CONFIDENCE_METHOD, LesionFilter

    f = _load(root)
    assert isinstance(f, LesionFilter)
    return StageInfo(root.name, f.version, f.sha256, CONFIDENCE_METHOD.format(version=f.version))


def find_lesion_findings(
    volume: Volume, lungs: LungMasks, p: LungParams
) -> tuple[list[Lesion], str]:
    """The lesions to report, largest first, and what their confidence means."""
    root = filter_root()
    if root is None:
        found = find_lesions(volume, lungs, p)
        return [Lesion(c.mask, c.confidence, c.left) for c in found], RULES_METHOD
    from medvision.pipelines.lung_ct._candidates import find_candidates
    from medvision.pipelines.lung_ct._filter import CONFIDENCE_METHOD, LesionFilter

    lesion_filter = _load(root)
    assert isinstance(lesion_filter, LesionFilter)
    crops = find_candidates(volume, lungs, p)
    selected = lesion_filter.select(volume, crops)
    lesions = [Lesion(c.full(volume.shape), round(s, 4), c.left) for c, s in selected]
    return lesions, CONFIDENCE_METHOD.format(version=lesion_filter.version)


__all__ = ["Lesion", "StageInfo", "filter_root", "find_lesion_findings", "stage_info"]
