"""The lesion table's figures on hand-checkable cases.

Every expected number below is worked out in the comments from the voxels drawn, so a
change to the scoring rules (what is a hit, a false positive, an irrelevant finding, the
Dice reference) breaks a test whose arithmetic a reader can redo.
"""

from __future__ import annotations

import numpy as np
import pytest

from medvision.training._lesion_cases import grid_map, to_volume_grid
from medvision.training._lesion_eval import format_table, targets_met
from medvision.training._lesion_score import (
    BoxReference,
    Nodule,
    ReaderReference,
    score_boxes,
    score_readers,
)
from tests.volumes import array_volume

SHAPE = (4, 20, 20)


def _mask(*index: slice | int) -> np.ndarray:
    m = np.zeros(SHAPE, dtype=bool)
    m[index] = True
    return m


def _readers_case() -> tuple[list[np.ndarray], ReaderReference]:
    # Nodule A: 4 readers, 8 mm (a target). Core 2 x 4 x 4 = 32 voxels outlined by all 4,
    # one more row of 2 x 4 = 8 voxels by 1 reader only.
    a = np.zeros(SHAPE, np.uint8)
    a[1:3, 2:6, 2:6] = 4
    a[1:3, 6, 2:6] = 1
    # Nodule B: 2 readers, 10 mm (not a target: fewer than 3 readers; but Dice counts it).
    b = np.zeros(SHAPE, np.uint8)
    b[1:3, 10:14, 10:14] = 2  # 32 voxels
    ref = ReaderReference(
        (Nodule(a, readers=4, diameter_mm=8.0), Nodule(b, readers=2, diameter_mm=10.0)),
        points=((0, 18, 18),),  # a reader's sub-3 mm nodule mark
    )
    masks = [
        _mask(1, slice(2, 6), slice(2, 6)),  # 16 voxels in A's core: hit
        _mask(2, slice(2, 6), slice(2, 4)),  # 8 more in A's core: A split in two findings
        _mask(slice(1, 3), slice(10, 14), slice(10, 16)),  # 48 voxels, 32 on B: irrelevant
        _mask(0, slice(17, 20), slice(17, 20)),  # holds the point mark: irrelevant
        _mask(3, slice(15, 17), slice(2, 4)),  # on no mark: false positive
    ]
    return masks, ref


def test_readers_hits_false_positives_and_irrelevant_findings() -> None:
    masks, ref = _readers_case()
    s = score_readers(masks, ref)
    assert (s.targets, s.hits, s.findings) == (1, 1, 5)
    assert s.outcomes == ("hit", "hit", "irrelevant", "irrelevant", "fp")
    assert (s.false_positives, s.irrelevant) == (1, 2)
    assert s.most_findings_on_one_tumour == 2  # A is split in two


def test_readers_dice_against_two_reader_consensus() -> None:
    masks, ref = _readers_case()
    # A: reference = voxels by >= 2 readers = the 32-voxel core; predicted = the two
    # findings on A = 16 + 8 = 24 voxels, all inside: 2*24 / (24 + 32) = 6/7.
    # B: reference 32 voxels; predicted 48, of which 32 overlap: 2*32 / (48 + 32) = 0.8.
    s = score_readers(masks, ref)
    assert s.dice == pytest.approx((6 / 7 + 0.8) / 2)


def test_small_or_few_reader_nodules_are_not_targets() -> None:
    masks, ref = _readers_case()
    small = Nodule(ref.nodules[0].reader_count, readers=4, diameter_mm=5.0)
    s = score_readers(masks, ReaderReference((small,), ()))
    # A alone: its two findings irrelevant; B and the point mark gone: 3 false positives.
    assert (s.targets, s.hits, s.false_positives) == (0, 0, 3)
    assert s.outcomes == ("irrelevant", "irrelevant", "fp", "fp", "fp")


def test_boxes_hits_coverage_and_false_positives() -> None:
    ref = BoxReference({1: ((2, 2, 7, 7),), 2: ((2, 2, 7, 7),), 3: ((10, 10, 12, 12),)})
    # Rows 3-5, columns 3-8 on slices 1 and 2: 18 voxels per slice, columns 3-7 (15) inside.
    tumour = _mask(slice(1, 3), slice(3, 6), slice(3, 9))
    elsewhere = _mask(0, slice(15, 18), slice(15, 18))
    s = score_boxes([tumour, elsewhere], ref)
    assert (s.targets, s.hits, s.findings, s.false_positives) == (3, 2, 2, 1)
    assert s.in_box == pytest.approx(30 / 36)
    assert s.most_findings_on_one_tumour == 1
    assert s.dice is None


def test_table_and_targets() -> None:
    masks, ref = _readers_case()
    from medvision.training._lesion_eval import _figures

    row = {
        "case": "hand",
        "about": "",
        "slices": 4,
        "slice_mm": 2.5,
        "reference": "nodules",
        "seconds": 1.0,
    } | _figures(score_readers(masks, ref))
    met = targets_met([row])
    assert met == {
        "hit >= 80 %": True,
        "FP <= 3 per scan": True,
        "LIDC Dice >= 0.5": True,
        "in-box >= 50 %": None,
        "one tumour, one finding": False,
    }
    table = format_table({"pipeline": "p", "version": "1", "cases": [row], "targets_met": met})
    line = table.splitlines()[2].split()
    # patient, scan, hits, FP, other, per tumour, Dice, in-box, time
    assert line == [
        "hand",
        "4",
        "x",
        "2.5",
        "mm",
        "1/1",
        "nodules",
        "1",
        "2",
        "2",
        "0.83",
        "-",
        "1",
        "s",
    ]
    assert "one tumour, one finding: NOT met" in table


def test_reference_mask_mapped_onto_a_flipped_series_grid() -> None:
    """A mask written head-first on a grid whose slices run the other way, one slice
    longer: each voxel lands where its LPS position says."""
    other = np.zeros((3, 2, 5), np.uint8)  # indexed (i, j, k) on the mask's grid
    other[1, 0, 4] = 7  # i=1, j=0, k=4 -> z = 0 + 4*2 = 8 mm
    affine = np.diag([1.0, 1.0, 2.0, 1.0])  # origin 0, k towards +z
    # The series: 4 slices from z = 8 down to z = 2 (k towards -z).
    vol = array_volume(
        np.zeros((4, 2, 3)), direction=np.diag([1.0, 1.0, -1.0]), origin=(0.0, 0.0, 8.0)
    )
    assert grid_map(vol, affine) == [(0, 1, 0), (1, 1, 0), (2, -1, 4)]
    out = to_volume_grid(other, affine, vol)
    assert out.shape == (4, 2, 3)
    assert out[0, 0, 1] == 7 and out.sum() == 7
