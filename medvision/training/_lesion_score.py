"""Scoring lesion findings against expert marks, one patient at a time.

Two kinds of expert reference exist in ``../shared/data``, and each is scored the way its
experts marked it:

* **Readers' outlines** (LIDC-IDRI): four readers outlined every nodule >= 3 mm. A *target*
  is a nodule outlined by at least 3 of the 4 readers whose diameter is at least 6 mm (the
  size from which Lung-RADS and Fleischner act). Following the LUNA16 convention, findings
  on anything else a reader marked (a nodule by 1-2 readers, a nodule under 6 mm or under
  3 mm, a "non-nodule") are *irrelevant*: neither a hit nor a false positive. Lesion Dice is
  measured against the readers' consensus outline (voxels outlined by >= 2 readers) of each
  nodule outlined by >= 2 readers.
* **Boxed slices** (Lung-PET-CT-Dx A0001): radiologists drew a box around the tumour on 11
  slices. Each boxed slice is a target, hit when a finding overlaps its box; all the boxes
  belong to one tumour. Coverage is the fraction of the tumour findings' voxels on the
  boxed slices that lie inside the boxes (the mask is tight when this is high).

A *finding* is one lesion mask as the pipeline reports it (one SEG segment, one SR
measurement group), not a connected component: a tumour split into two findings counts as
two findings on one tumour (``most_findings_on_one_tumour``), and a false positive is a
finding, whatever its shape.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

#: A target nodule needs this many of the four readers' outlines...
MIN_READERS = 3
#: ...and at least this diameter (mm).
MIN_DIAMETER_MM = 6.0
#: Dice reference: voxels outlined by at least this many readers, on nodules outlined by
#: at least this many readers.
DICE_READERS = 2
#: Box = (xmin, ymin, xmax, ymax), pixel indices, inclusive (PASCAL VOC).
Box = tuple[int, int, int, int]


@dataclass(frozen=True)
class Nodule:
    """One nodule as outlined by the readers, on the scan's grid."""

    #: Voxel count of readers' outlines over this nodule only (0 outside it), ``(k, j, i)``.
    reader_count: np.ndarray
    #: How many distinct readers outlined it.
    readers: int
    #: Equivalent diameter (mm), the median over the readers who outlined it.
    diameter_mm: float

    @property
    def is_target(self) -> bool:
        return self.readers >= MIN_READERS and self.diameter_mm >= MIN_DIAMETER_MM


@dataclass(frozen=True)
class ReaderReference:
    """LIDC-style reference: outlined nodules plus the readers' point marks."""

    nodules: tuple[Nodule, ...]
    #: ``(k, j, i)`` of every other mark (nodules < 3 mm, non-nodules): irrelevant findings.
    points: tuple[tuple[int, int, int], ...] = ()


@dataclass(frozen=True)
class BoxReference:
    """A0001-style reference: one tumour boxed on some slices (slice index → boxes)."""

    boxes: dict[int, tuple[Box, ...]]


@dataclass(frozen=True)
class CaseScore:
    """The figures of one patient (one row of the table)."""

    targets: int
    hits: int
    findings: int
    false_positives: int
    #: Findings on reader marks that are not targets (LUNA16 "irrelevant findings").
    irrelevant: int
    #: The largest number of findings on one target tumour (1 = each tumour is one finding).
    most_findings_on_one_tumour: int
    #: Mean lesion Dice against the readers' >= 2 consensus (None: no such nodule).
    dice: float | None = None
    #: Fraction of tumour-finding voxels on boxed slices inside the boxes (None: no boxes
    #: or no finding on them).
    in_box: float | None = None
    #: Per-finding outcome, in the order given: "hit", "fp" or "irrelevant".
    outcomes: tuple[str, ...] = field(default=())

    @property
    def hit_fraction(self) -> float | None:
        return self.hits / self.targets if self.targets else None


def dice(a: np.ndarray, b: np.ndarray) -> float:
    total = int(a.sum()) + int(b.sum())
    return 1.0 if total == 0 else 2.0 * int((a & b).sum()) / total


def score_readers(masks: Sequence[np.ndarray], ref: ReaderReference) -> CaseScore:
    """Hits, false positives and Dice of lesion ``masks`` against readers' outlines."""
    regions = [n.reader_count > 0 for n in ref.nodules]
    outcomes: list[str] = []
    on_target = [0] * len(ref.nodules)
    hit = [False] * len(ref.nodules)
    for mask in masks:
        touched = [i for i, r in enumerate(regions) if (mask & r).any()]
        targets = [i for i in touched if ref.nodules[i].is_target]
        for i in targets:
            hit[i] = True
            on_target[i] += 1
        if targets:
            outcomes.append("hit")
        elif touched or any(mask[p] for p in ref.points):
            outcomes.append("irrelevant")
        else:
            outcomes.append("fp")
    dices = []
    for nodule, region in zip(ref.nodules, regions, strict=True):
        if nodule.readers < DICE_READERS:
            continue
        reference = nodule.reader_count >= DICE_READERS
        predicted = np.zeros(region.shape, dtype=bool)
        for mask in masks:
            if (mask & region).any():
                predicted |= mask
        dices.append(dice(predicted, reference))
    return CaseScore(
        targets=sum(n.is_target for n in ref.nodules),
        hits=sum(hit),
        findings=len(masks),
        false_positives=outcomes.count("fp"),
        irrelevant=outcomes.count("irrelevant"),
        most_findings_on_one_tumour=max(on_target, default=0),
        dice=float(np.mean(dices)) if dices else None,
        outcomes=tuple(outcomes),
    )


def score_boxes(masks: Sequence[np.ndarray], ref: BoxReference) -> CaseScore:
    """Boxed slices hit, false positives and in-box coverage of lesion ``masks``."""
    hit_slices: set[int] = set()
    outcomes: list[str] = []
    inside = total = 0
    for mask in masks:
        touched = False
        for k, boxes in ref.boxes.items():
            for x0, y0, x1, y1 in boxes:
                if mask[k, y0 : y1 + 1, x0 : x1 + 1].any():
                    hit_slices.add(k)
                    touched = True
        outcomes.append("hit" if touched else "fp")
        if touched:
            for k, boxes in ref.boxes.items():
                in_box = np.zeros(mask.shape[1:], dtype=bool)
                for x0, y0, x1, y1 in boxes:
                    in_box[y0 : y1 + 1, x0 : x1 + 1] = True
                inside += int((mask[k] & in_box).sum())
                total += int(mask[k].sum())
    tumour_findings = outcomes.count("hit")
    return CaseScore(
        targets=len(ref.boxes),
        hits=len(hit_slices),
        findings=len(masks),
        false_positives=outcomes.count("fp"),
        irrelevant=0,
        most_findings_on_one_tumour=tumour_findings,
        in_box=inside / total if total else None,
        outcomes=tuple(outcomes),
    )


def score_case(masks: Sequence[np.ndarray], ref: ReaderReference | BoxReference) -> CaseScore:
    if isinstance(ref, ReaderReference):
        return score_readers(masks, ref)
    return score_boxes(masks, ref)


__all__ = [
    "DICE_READERS",
    "MIN_DIAMETER_MM",
    "MIN_READERS",
    "BoxReference",
    "CaseScore",
    "Nodule",
    "ReaderReference",
    "dice",
    "score_boxes",
    "score_case",
    "score_readers",
]
