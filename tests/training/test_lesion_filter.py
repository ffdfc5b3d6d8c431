"""``medvision train lesions``' parts on small volumes: scanner changes, labels, the
training loop's checkpoint and resume, calibration and the reliability table.

The real training (three CTs, about 8 min of CPU) is recorded in docs/accuracy.md.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from medvision.dicom import Volume
from medvision.training._lesion_filter_data import (
    Variant,
    label_candidates,
    make_variant,
    plan_variants,
    resample_mask,
    resample_thickness,
)
from medvision.training._lesion_filter_train import (
    FilterHP,
    fit_platt,
    reliability,
    train_network,
)
from tests.volumes import array_volume


def test_thick_slices_average_slabs() -> None:
    """1 mm slices valued 0, 1, 2, ... resampled to 3 mm: every third position, each the
    mean of the 3-slice slab around it (the ends repeat the edge slice)."""
    a = np.arange(10, dtype=np.float32)[:, None, None] * np.ones((1, 2, 2), np.float32)
    out = resample_thickness(a, 1.0, 3.0)
    assert out.shape == (4, 2, 2)
    assert out[:, 0, 0].tolist() == pytest.approx([1 / 3, 3.0, 6.0, 9 - 1 / 3])
    mask = np.zeros((10, 2, 2), bool)
    mask[4, 0, 0] = True  # a thin thing is kept on the slab that holds it
    assert resample_mask(mask, 1.0, 3.0)[:, 0, 0].tolist() == [False, True, False, False]


def test_variants_are_seeded_and_the_first_is_the_scan_as_acquired() -> None:
    a = plan_variants("LIDC-IDRI-0001", 6, seed=12, native_mm=2.5)
    b = plan_variants("LIDC-IDRI-0001", 6, seed=12, native_mm=2.5)
    assert a == b and a[0] == Variant("LIDC-IDRI-0001", 0, 12)
    assert plan_variants("LIDC-IDRI-0001", 6, seed=13, native_mm=2.5)[1:] != a[1:]
    for v in a[1:]:
        assert 6 <= v.synthetic <= 10
        assert v.thickness_mm is None or 2.5 <= v.thickness_mm <= 10.0
    thin = plan_variants("LIDC-IDRI-0002", 6, seed=12, native_mm=1.25)
    assert thin[0].thickness_mm is None  # as acquired
    assert all(2.5 <= v.thickness_mm <= 10.0 for v in thin[1:])  # copies on >= 2.5 mm slabs


def _chest() -> tuple[Volume, np.ndarray]:
    shape = (40, 64, 64)
    hu = np.full(shape, 40.0, np.float32)
    lung = np.zeros(shape, bool)
    lung[4:36, 8:56, 8:56] = True
    hu[lung] = -850.0
    vol = array_volume(hu, spacing=(1.5, 1.5, 2.0))
    return vol, lung


def test_variant_pastes_lesions_into_lung_and_changes_the_scanner() -> None:
    vol, lung = _chest()
    pos = np.zeros(vol.shape, bool)
    pos[18:22, 30:34, 30:34] = True  # a real nodule: no synthetic lesion within 25 mm
    ign = np.zeros(vol.shape, bool)
    v = Variant("p", 1, 5, synthetic=3, kernel="smooth", kernel_strength=1.0, thickness_mm=5.0)
    out, vpos, vign = make_variant(vol, lung, pos, ign, v)
    assert out.spacing[2] == pytest.approx(5.0)
    assert out.shape[0] == vpos.shape[0] == vign.shape[0] == 16  # 0..39 mm every 5 mm
    assert out.sop_instance_uids[0] == "variant-0" and out.array.dtype == np.float32
    assert vpos.sum() > resample_mask(pos, 2.0, 5.0).sum()  # synthetic lesions added
    assert out.array[vpos].mean() > -700  # and they are denser than the lung
    same, p0, _ = make_variant(vol, lung, pos, ign, Variant("p", 0, 5))
    assert same is vol and p0 is pos


def test_candidate_labels() -> None:
    from medvision.pipelines.lung_ct._candidates import Crop

    pos = np.zeros((4, 10, 10), bool)
    pos[1, 1:3, 1:3] = True
    ign = np.zeros_like(pos)
    ign[2, 6:8, 6:8] = True

    def crop(k, j, i) -> Crop:
        box = (slice(k, k + 1), slice(j, j + 2), slice(i, i + 2))
        return Crop(box, np.ones((1, 2, 2), bool), 0.1, 0.0, "solid", 0.5, True)

    labels = label_candidates([crop(1, 2, 2), crop(2, 6, 6), crop(3, 0, 0)], pos, ign)
    assert labels.tolist() == [1, -1, 0]


def test_training_checkpoints_and_resumes(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(12, 4, 32, 32, 32)).astype(np.float16)
    y = np.array([1, 0] * 6, np.int8)
    x[y == 1, 0] += 1.0
    ckpt = tmp_path / "run.ckpt.pt"
    lines: list[str] = []
    hp = replace(FilterHP(), steps=2, batch=4)
    train_network(x, y, hp, ckpt, lines.append)
    assert ckpt.is_file() and "step 2/2" in lines[-1]
    net = train_network(x, y, replace(hp, steps=3), ckpt, lines.append)
    assert any("resumed from" in line and "step 2" in line for line in lines)
    assert "step 3/3" in lines[-1]
    assert not net.training


def test_platt_and_reliability() -> None:
    """Logits that are twice too confident: Platt scaling halves them (a ~ 0.5)."""
    rng = np.random.default_rng(1)
    true_logit = rng.normal(0, 2, size=4000)
    labels = (rng.random(4000) < 1 / (1 + np.exp(-true_logit))).astype(float)
    a, b = fit_platt(2 * true_logit, labels)
    assert a == pytest.approx(0.5, abs=0.08) and b == pytest.approx(0.0, abs=0.15)
    rows = reliability(np.array([0.05, 0.2, 0.2, 0.95]), np.array([0, 0, 1, 1]))
    assert [r["n"] for r in rows] == [1, 2, 0, 0, 0, 1]
    assert rows[1]["fraction_lesion"] == 0.5 and rows[1]["mean_score"] == 0.2


def test_train_lesions_refuses_an_unknown_patient(tmp_path: Path, capsys) -> None:
    from medvision.cli import main

    args = ["train", "lesions", "--fold", "LIDC-IDRI-9999", "--work-dir", str(tmp_path)]
    assert main(args) == 2
    assert "Unknown case" in capsys.readouterr().err


def test_training_is_reproducible(tmp_path: Path) -> None:
    """The same seed and data give the same weights (one CPU thread, as the recipe runs)."""
    import torch

    rng = np.random.default_rng(0)
    x = rng.normal(size=(8, 4, 32, 32, 32)).astype(np.float16)
    y = np.array([1, 0] * 4, np.int8)
    hp = replace(FilterHP(), steps=2, batch=4)
    a = train_network(x, y, hp, tmp_path / "a.ckpt.pt", lambda m: None).state_dict()
    b = train_network(x, y, hp, tmp_path / "b.ckpt.pt", lambda m: None).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_augmentation_keeps_posterior_and_caudal() -> None:
    """Patches are sampled along the patient's axes: whatever the augmentation draws, a
    bright corner at (caudal, posterior) stays there (z and y are never flipped or turned);
    only left and right may swap."""
    from medvision.training._lesion_filter_train import augment

    x = np.full((16, 4, 32, 32, 32), -0.8, np.float32)
    x[:, :, :4, -4:, :4] = 0.8  # k low (caudal here), j high (posterior), i low
    out = augment(x, np.random.default_rng(3))
    corner = out[:, 0, :4, -4:]
    left, right = corner[..., :4].mean(axis=(1, 2, 3)), corner[..., -4:].mean(axis=(1, 2, 3))
    assert np.all(np.maximum(left, right) > 0.5)  # still caudal and posterior
    assert (left > 0.5).any() and (right > 0.5).any()  # mirrored left-right in some
    assert out[:, 0, -4:, :4].mean() < -0.5  # never moved to cranial and anterior


def test_central_masses_start_in_the_medial_lung() -> None:
    """``medial_lung`` keeps each slice's lung voxels nearest the midline between the two
    lungs, where a central tumour meets the mediastinum."""
    from medvision.training._lesion_filter_data import MEDIAL_FRACTION, medial_lung

    lung = np.zeros((4, 20, 40), bool)
    lung[:, 5:15, 2:16] = True  # right lung (low columns)
    lung[:, 5:15, 24:38] = True  # left lung
    medial = medial_lung(lung)
    assert not (medial & ~lung).any()
    cols = np.flatnonzero(medial.any(axis=(0, 1)))
    assert set(cols) <= set(range(12, 16)) | set(range(24, 28))  # next to the midline
    assert medial.sum() == pytest.approx(MEDIAL_FRACTION * lung.sum(), rel=0.3)
