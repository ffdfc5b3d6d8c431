"""The first promise others rely on: scan a real CT folder and load its series."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from medvision.dicom import Volume, load_series, scan


def test_scan_and_load_real_chest_ct(chest_ct_dir: Path) -> None:
    (study,) = scan(chest_ct_dir)
    (series,) = study.series
    assert series.modality == "CT" and series.orientation == "AXIAL"
    assert series.num_frames == 64 and series.problems == ()
    vol = load_series(series)
    assert isinstance(vol, Volume)
    assert vol.shape == (64, 512, 512)
    assert vol.array.dtype == np.float32
    assert vol.spacing[2] == 5.0
