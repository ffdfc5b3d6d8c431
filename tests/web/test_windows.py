"""The windows the viewer offers: CT presets in HU for CT; for MR, whose signal has no
fixed scale, the scanner's DICOM window and one computed from the volume."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from medvision.dicom import Volume, load_series, scan
from medvision.web._imaging import PRESETS, auto_window, dicom_window, window_presets


@pytest.fixture(scope="module")
def mr(shared_data: Path) -> Volume:
    (study,) = scan(shared_data / "mr" / "philips-3t-brain" / "classic-t1")
    return load_series(study.series[0])


def test_mr_defaults_to_the_median_of_the_scanners_windows(mr: Volume) -> None:
    presets = window_presets(mr)
    assert list(presets) == ["dicom", "auto"]
    centres = [float(h.WindowCenter) for h in mr.source_headers]
    widths = [float(h.WindowWidth) for h in mr.source_headers]
    assert len(set(centres)) > 10  # Philips stores one window per slice
    assert presets["dicom"] == (np.median(centres), np.median(widths)) == (939.0, 1632.0)


def test_auto_window_spans_the_volumes_percentiles(mr: Volume) -> None:
    centre, width = auto_window(mr.array)
    lo, hi = centre - width / 2, centre + width / 2
    assert lo == pytest.approx(np.percentile(mr.array, 1), abs=5)  # air: 0
    assert hi == pytest.approx(np.percentile(mr.array, 99.5), rel=0.02)
    assert (mr.array > hi).mean() < 0.01


def test_mr_without_a_dicom_window_gets_the_auto_window(mr: Volume) -> None:
    headers = []
    for h in mr.source_headers:
        h = h.copy()
        del h.WindowCenter, h.WindowWidth
        headers.append(h)
    bare = dataclasses.replace(mr, source_headers=tuple(headers))
    assert dicom_window(bare) is None
    assert window_presets(bare) == {"auto": auto_window(mr.array)}


def test_ct_keeps_the_chest_presets(chest_ct_dir: Path) -> None:
    (study,) = scan(chest_ct_dir)
    presets = window_presets(load_series(study.series[0]))
    assert presets == PRESETS and next(iter(presets)) == "lung"
