"""lung-ct's learned lesion filter: patches, merging, the bundle and the stage switch.

Figures on real scans are in docs/accuracy.md (``medvision train lesions`` folds); here the
parts are checked on small volumes whose right answer can be worked out by hand.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from medvision.dicom import Volume
from medvision.pipelines.lung_ct._candidates import Crop
from medvision.pipelines.lung_ct._filter import (
    Calibration,
    LesionFilter,
    build_network,
    merge_close,
)
from medvision.pipelines.lung_ct._patches import PATCH, candidate_patches
from tests.volumes import array_volume


def _crop(mask: np.ndarray, volume: Volume) -> Crop:
    from scipy import ndimage

    box = ndimage.find_objects(mask.astype(np.uint8))[0]
    ml = mask.sum() * volume.voxel_volume_mm3 / 1000
    return Crop(box, mask[box], ml, float(volume.array[mask].mean()), "solid", 0.5, True)


def _ball(shape, centre_kji, radius_mm, spacing_kji) -> np.ndarray:
    grids = np.ogrid[tuple(slice(0, s) for s in shape)]
    d2 = sum(((g - c) * s) ** 2 for g, c, s in zip(grids, centre_kji, spacing_kji, strict=True))
    return d2 <= radius_mm**2


def test_patch_is_centred_and_independent_of_slice_order() -> None:
    """A 6 mm ball in lung: at 1 mm the centre voxel is ball and 10 mm out is lung, on
    both scales the mask channel is centred; the same ball on a grid whose slices run the
    other way (k towards the feet) gives the same patch, because sampling is in LPS."""
    shape = (30, 40, 40)
    hu = np.full(shape, -850.0)
    ball = _ball(shape, (15, 20, 20), 6.0, (2.0, 1.0, 1.0))
    hu[ball] = 40.0
    up = array_volume(hu)
    flipped = array_volume(
        hu[::-1].copy(), direction=np.diag([1.0, 1.0, -1.0]), origin=(0, 0, 58.0)
    )
    a = candidate_patches(up, [_crop(ball, up)])
    b = candidate_patches(flipped, [_crop(ball[::-1].copy(), flipped)])
    assert a.shape == (1, 4, PATCH, PATCH, PATCH)
    c = PATCH // 2
    hu_1mm, mask_1mm, mask_2mm = a[0, 0], a[0, 1], a[0, 3]
    assert hu_1mm[c, c, c] > 0.0 > hu_1mm[c, c, c + 10]  # 40 HU -> +0.2, lung -> -0.78
    assert mask_1mm[c, c, c] > 0.5 and mask_1mm[c, c, c + 10] == 0.0
    assert mask_2mm[c, c, c] > 0.5
    assert np.allclose(a, b, atol=1e-4)


def test_close_findings_merge_and_far_ones_stay() -> None:
    """Two boxes 3 mm apart (under the 5 mm merge distance) become one finding with the
    higher score; a third 20 mm away stays on its own."""
    shape = (10, 60, 60)
    vol = array_volume(np.zeros(shape), spacing=(1.0, 1.0, 1.0))
    m1, m2, m3 = (np.zeros(shape, bool) for _ in range(3))
    m1[4:6, 10:15, 10:15] = True
    m2[4:6, 10:15, 18:22] = True  # columns 15-17 free: 3 mm gap
    m3[4:6, 40:45, 40:45] = True
    kept = [(_crop(m, vol), s) for m, s in ((m1, 0.6), (m2, 0.9), (m3, 0.7))]
    merged = merge_close(kept, vol)
    assert len(merged) == 2
    big, score = merged[0]
    assert score == 0.9
    assert big.mask.sum() == m1.sum() + m2.sum()
    assert merged[1][1] == 0.7


def _bundle(tmp_path: Path, threshold: float = 0.5) -> Path:
    import torch

    from medvision.training._lesion_bundle import write_filter_bundle
    from medvision.training._lesion_filter_train import FilterHP

    torch.manual_seed(0)
    hp = replace(FilterHP(), threshold=threshold, steps=0)
    summary = {"calibration": {"a": 0.5, "b": -1.0, "fitted_on": 10}}
    return write_filter_bundle(build_network(), tmp_path / "lung_lesion_filter", hp, summary)


def test_bundle_round_trip_scores_and_calibration(tmp_path: Path) -> None:
    root = _bundle(tmp_path, threshold=0.0)
    card = (root / "docs" / "README.md").read_text()
    for needed in ("CC BY 3.0", "CC BY 4.0", "10.7937/K9/TCIA.2015.LO9QL9SX", "Platt", "sha256"):
        assert needed in card
    f = LesionFilter.load(root, device="cpu")
    assert f.threshold == 0.0 and f.calibration == Calibration(0.5, -1.0)
    assert (root / "models" / "model.pt").stat().st_size < 20 * 2**20
    shape = (20, 40, 40)
    hu = np.full(shape, -850.0)
    ball = _ball(shape, (10, 20, 20), 5.0, (2.0, 1.0, 1.0))
    hu[ball] = 30.0
    vol = array_volume(hu)
    raw = f.score(vol, [_crop(ball, vol)])
    assert raw.shape == (1,) and 0.0 < raw[0] < 1.0
    ((crop, calibrated),) = f.select(vol, [_crop(ball, vol)])
    logit = np.log(raw[0] / (1 - raw[0]))
    assert calibrated == pytest.approx(1 / (1 + np.exp(-(0.5 * logit - 1.0))), rel=1e-4)


def test_lung_ct_uses_the_installed_filter(tmp_path: Path, monkeypatch) -> None:
    """The rules by default, even with a filter bundle in the model folder; with
    MEDVISION_LESION_FILTER=on lung-ct uses it and records it and its confidence method;
    with =off the rules run alone again."""
    from medvision.pipelines.lung_ct import LungCT, _filter, _stage

    root = _bundle(tmp_path)
    monkeypatch.setattr(_filter, "find_filter", lambda name="": root)
    monkeypatch.delenv("MEDVISION_LESION_FILTER", raising=False)
    assert _stage.stage_info() is None
    assert LungCT().algorithm.family == "classical"
    monkeypatch.setenv("MEDVISION_LESION_FILTER", "on")
    info = _stage.stage_info()
    assert info is not None and info.name == "lung_lesion_filter"
    algorithm = LungCT().algorithm
    assert algorithm.family == "AI"
    from medvision.training._lesion_bundle import VERSION

    assert algorithm.parameters["lesion_filter"].startswith(f"lung_lesion_filter {VERSION} sha256:")
    monkeypatch.setenv("MEDVISION_LESION_FILTER", "off")
    assert _stage.stage_info() is None
    assert LungCT().algorithm.family == "classical"


def test_ground_glass_touching_a_solid_candidate_is_its_halo() -> None:
    """A ground-glass block that touches a solid candidate only across the face of its own
    bounding box (a cap on one side of a tumour) is the tumour's halo and no candidate of
    its own; the same block away from any solid candidate is one."""
    from medvision.pipelines.lung_ct._candidates import ground_glass
    from medvision.pipelines.lung_ct._lungs import LungMasks
    from medvision.pipelines.lung_ct._params import LungParams

    shape = (30, 64, 64)
    hu = np.full(shape, -850.0, np.float32)
    hu[10:20, 30:40, 20:40] = -600.0  # ground glass, 10 x 10 x 20 mm
    vol = array_volume(hu, spacing=(1.0, 1.0, 1.0))
    env = np.zeros(shape, bool)
    env[2:28, 4:60, 4:60] = True
    lungs = LungMasks(body=env, airway=np.zeros(shape, bool), left=env, right=np.zeros(shape, bool))
    envelopes = (env, np.zeros(shape, bool))
    p = LungParams()

    far = np.zeros(shape, bool)
    far[10:20, 5:8, 50:55] = True  # a solid candidate elsewhere
    alone = ground_glass(vol, lungs, p, far, envelopes)
    assert len(alone) == 1 and alone[0].source == "ground-glass"
    assert alone[0].mean_hu == pytest.approx(-600, abs=60)

    cap = np.zeros(shape, bool)
    cap[8:22, 18:30, 18:42] = True  # the solid candidate right next to the block, in j
    assert ground_glass(vol, lungs, p, cap, envelopes) == []
