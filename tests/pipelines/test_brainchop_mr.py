"""brainchop's real MeshNet weights on a real Philips 3 T MPRAGE, end to end to a DICOM SEG.

The grey/white model (5 channels) runs on the whole conformed head once per module and
acquisition (the real sagittal series, and the same head rewritten as a tilted axial DICOM
series), each in about a minute on CPU. mindgrab (15 channels, 25 layers) needs ~10
minutes of CPU at 1 mm, so it runs only with a GPU or when MEDVISION_SLOW_TESTS=1; its
conversion is checked numerically in test_brainchop_import.py either way.
"""

from __future__ import annotations

import json
import os
import time

import numpy as np
import pytest
import torch
from scipy import ndimage

from medvision.dicom import load_series, scan
from medvision.pipelines.brainchop import import_brainchop
from medvision.pipelines.bundle import BundlePipeline
from medvision.results import write_results
from tests.pipelines.bundle_helpers import dciodvfy_errors
from tests.pipelines.mr_rewrite import write_axial_series

RUN_SLOW = bool(os.environ.get("MEDVISION_SLOW_TESTS")) or torch.cuda.is_available()


@pytest.fixture(scope="module")
def bundles(brainchop_src, tmp_path_factory):
    out = tmp_path_factory.mktemp("models")
    import_brainchop(brainchop_src, out, model="model5_gw_ae")
    import_brainchop(brainchop_src, out, model="mindgrab")
    return out


@pytest.fixture(scope="module")
def brainchop_src(shared_data):
    return shared_data / "models" / "brainchop"


@pytest.fixture(scope="module")
def t1(shared_data):
    studies = scan(shared_data / "mr" / "philips-3t-brain" / "classic-t1")
    return load_series(studies[0].series[0])


@pytest.fixture(scope="module")
def tissue(bundles, t1):
    start = time.perf_counter()
    findings = BundlePipeline(bundles / "brainchop-gwm-light", tta_passes=0).run(t1)
    print(f"brainchop-gwm-light on {t1.shape}: {time.perf_counter() - start:.1f} s")
    return findings


@pytest.fixture(scope="module")
def axial_t1(t1, tmp_path_factory):
    """The real T1 rewritten as a 12-degree tilted axial DICOM series (as an AC-PC axial 3-D T1)."""
    folder = write_axial_series(t1, tmp_path_factory.mktemp("axial-t1"), tilt_deg=12.0)
    (study,) = scan(folder)
    (series,) = study.series
    assert series.orientation == "AXIAL"
    return load_series(series)


@pytest.fixture(scope="module")
def axial_tissue(bundles, axial_t1):
    start = time.perf_counter()
    findings = BundlePipeline(bundles / "brainchop-gwm-light", tta_passes=0).run(axial_t1)
    print(f"brainchop-gwm-light on {axial_t1.shape}: {time.perf_counter() - start:.1f} s")
    return findings


def _assert_dciodvfy_clean(path):
    assert dciodvfy_errors(path) == []


def _by_name(findings):
    return {f.label.name: f for f in findings.items}


def test_grey_and_white_matter_volumes_are_adult(tissue):
    items = _by_name(tissue)
    assert set(items) == {"White matter", "Grey matter"}
    wm, gm = items["White matter"].measurements, items["Grey matter"].measurements
    print(f"WM {wm.volume_ml:.0f} mL, GM {gm.volume_ml:.0f} mL")
    assert 350 <= wm.volume_ml <= 700
    assert 450 <= gm.volume_ml <= 900
    assert 1000 <= wm.volume_ml + gm.volume_ml <= 1800
    assert tissue.quality_flags == ()
    for item in items.values():
        assert 0.7 < item.confidence < 1.0


def _on_grid(mask, source, target):
    """``mask`` on ``source``'s grid, sampled (nearest) at ``target``'s voxel centres."""
    values = mask.astype(np.uint8)
    out = np.zeros(target.shape, dtype=bool)
    j, i = np.meshgrid(np.arange(target.shape[1]), np.arange(target.shape[2]), indexing="ij")
    for k in range(target.shape[0]):  # slice by slice: a few MB at a time
        kji = np.stack([np.full_like(j, k), j, i], axis=-1)
        coords = np.moveaxis(source.lps_to_index(target.index_to_lps(kji)), -1, 0)
        out[k] = ndimage.map_coordinates(values, coords, order=0, cval=0) > 0
    return out


def test_axial_acquisition_gives_the_same_volumes(tissue, axial_tissue, t1, axial_t1):
    sagittal, axial = _by_name(tissue), _by_name(axial_tissue)
    assert set(axial) == {"White matter", "Grey matter"}
    assert axial_tissue.quality_flags == ()  # an axial 3-D T1 is within intended use
    for name in sagittal:
        s, a = sagittal[name].measurements.volume_ml, axial[name].measurements.volume_ml
        print(f"{name}: sagittal {s:.0f} mL, axial {a:.0f} mL")
        assert abs(a - s) / s < 0.05, name
    total_s = sum(f.measurements.volume_ml for f in sagittal.values())
    total_a = sum(f.measurements.volume_ml for f in axial.values())
    assert abs(total_a - total_s) / total_s < 0.05
    assert 1000 <= total_a <= 1800  # an adult's grey + white matter (about 1.0-1.4 L)
    # Not only the totals: the same voxels of the head are brain in both acquisitions.
    brain_s = sagittal["White matter"].mask | sagittal["Grey matter"].mask
    brain_a = _on_grid(axial["White matter"].mask | axial["Grey matter"].mask, axial_t1, t1)
    dice = 2 * (brain_s & brain_a).sum() / (brain_s.sum() + brain_a.sum())
    print(f"GM+WM Dice sagittal vs axial: {dice:.3f}")
    assert dice > 0.9


def test_grey_matter_lies_outside_white_matter(tissue):
    items = _by_name(tissue)
    gm, wm = items["Grey matter"].mask, items["White matter"].mask
    brain = ndimage.binary_fill_holes(gm | wm)
    shell = brain & ~ndimage.binary_erosion(brain, iterations=3)
    core = ndimage.binary_erosion(brain, iterations=15)
    assert gm[shell].mean() > 2 * wm[shell].mean()  # the cortex is the brain's surface
    assert wm[core].mean() > gm[core].mean()  # white matter is inside
    assert (gm & wm).sum() == 0


def test_tissue_seg_is_valid_dicom(tissue, tmp_path):
    files = write_results(tissue, tmp_path)
    assert files.seg_path is not None
    _assert_dciodvfy_clean(files.seg_path)
    doc = json.loads(files.json_path.read_text())
    assert [f["label"] for f in doc["findings"]] == ["White matter", "Grey matter"]
    assert all(0.7 < f["confidence"] < 1 for f in doc["findings"])


@pytest.mark.slow
@pytest.mark.skipif(not RUN_SLOW, reason="mindgrab at 1 mm needs a GPU or MEDVISION_SLOW_TESTS=1")
def test_mindgrab_brain_mask(bundles, t1, tissue, tmp_path):
    start = time.perf_counter()
    findings = BundlePipeline(bundles / "brainchop-mindgrab", tta_passes=0).run(t1)
    print(f"mindgrab: {time.perf_counter() - start:.1f} s")
    (brain,) = findings.items
    print(f"brain {brain.measurements.volume_ml:.0f} mL, confidence {brain.confidence:.3f}")
    assert 1000 <= brain.measurements.volume_ml <= 1800
    tissue_mask = np.logical_or.reduce([f.mask for f in tissue.items])
    assert brain.mask[tissue_mask].mean() > 0.95
    files = write_results(findings, tmp_path)
    _assert_dciodvfy_clean(files.seg_path)


def _nums(item) -> list:
    """Every NUM content item under ``item``, depth first."""
    found = []
    for child in getattr(item, "ContentSequence", []):
        if child.ValueType == "NUM":
            found.append(child)
        found += _nums(child)
    return found


def test_mr_intensities_are_signal_in_the_sr_and_the_table(tissue, tmp_path):
    """MR values are no Hounsfield units: the SR says "MR signal intensity" with no
    physical unit (UCUM "1"), and the terminal table's column says "mean signal"."""
    from pydicom import dcmread

    from medvision.runner import PipelineRun
    from medvision.terminal_table import findings_table

    files = write_results(tissue, tmp_path)
    _assert_dciodvfy_clean(files.sr_path)
    concepts = {}
    for num in _nums(dcmread(files.sr_path)):
        name = num.ConceptNameCodeSequence[0]
        unit = num.MeasuredValueSequence[0].MeasurementUnitsCodeSequence[0]
        derivation = next(
            (m.ConceptCodeSequence[0].CodeMeaning for m in getattr(num, "ContentSequence", [])
             if m.ConceptNameCodeSequence[0].CodeValue == "121401"),
            None,
        )  # fmt: skip
        value = float(num.MeasuredValueSequence[0].NumericValue)
        key = (name.CodeValue, name.CodingSchemeDesignator, derivation)
        concepts.setdefault(key, []).append((unit.CodeValue, unit.CodingSchemeDesignator, value))
    assert not [k for k in concepts if k[0] == "112031"], "attenuation (HU) in an MR SR"
    means = concepts[("110852", "DCM", "Mean")]
    maxima = concepts[("110852", "DCM", "Maximum")]
    assert [u[:2] for u in means + maxima] == [("1", "UCUM")] * 4
    doc = json.loads(files.json_path.read_text())
    assert [round(v[2], 2) for v in means] == [
        round(f["measurements"]["mean_hu"], 2) for f in doc["findings"]
    ]
    # T1: white matter is brighter than grey matter.
    assert means[0][2] > means[1][2]

    table = findings_table(PipelineRun("brainchop-gwm-light", "1.2.3", "done", findings=tissue))
    header = table.splitlines()[1]
    assert "mean signal" in header and "HU" not in table
    wm_row = table.splitlines()[2]
    assert wm_row.split()[1:3] == ["White", "matter"]
    assert f"{_by_name(tissue)['White matter'].measurements.mean_hu:.0f}" in wm_row.split()
