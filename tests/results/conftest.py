"""Fixtures for the result writers: the real chest CT with hand-made findings.

The masks are drawn by hand (two spheres as lesions, a box as an organ) and measured by a
simple helper here, so these tests check the writers, not the measuring code.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import highdicom as hd
import numpy as np
import pytest

from medvision.dicom import Volume, load_series, scan
from medvision.findings import (
    AlgorithmInfo,
    Code,
    Finding,
    FindingKind,
    Findings,
    Label,
    Measurements,
)
from medvision.results import ResultFiles, write_results
from tests.tools import dciodvfy, tool  # noqa: F401 - used by the tests here

LUNG = Code("39607008", "SCT", "Lung")
LESION_LABEL = Label(
    name="lung-lesion",
    category=Code("49755003", "SCT", "Morphologically Abnormal Structure"),
    type=Code("108369006", "SCT", "Neoplasm"),
    kind=FindingKind.LESION,
    site=LUNG,
)
ORGAN_LABEL = Label(
    name="lung",
    category=Code("91723000", "SCT", "Anatomical Structure"),
    type=LUNG,
    kind=FindingKind.ORGAN,
    site=LUNG,
    cielab=(42631, 18841, 44020),  # green (60, 180, 75): shows on grey, so the SEG keeps it
)
ALGORITHM = AlgorithmInfo(
    name="lung-ct-test",
    version="1.2.3",
    weights_sha256=hashlib.sha256(b"test weights").hexdigest(),
    parameters={"threshold": "0.5"},
)


def sphere(
    shape: tuple[int, int, int],
    centre_kji: tuple[int, int, int],
    radius_mm: float,
    spacing: tuple[float, float, float],
) -> np.ndarray:
    k, j, i = np.ogrid[: shape[0], : shape[1], : shape[2]]
    d2 = ((k - centre_kji[0]) * spacing[2]) ** 2 + ((j - centre_kji[1]) * spacing[1]) ** 2
    return d2 + ((i - centre_kji[2]) * spacing[0]) ** 2 <= radius_mm**2


def simple_measurements(volume: Volume, mask: np.ndarray, lesion: bool) -> Measurements:
    kji = np.argwhere(mask)
    centre = kji.mean(axis=0)
    k = int(round(centre[0]))
    values = volume.array[mask]
    extent = (kji.max(axis=0) - kji.min(axis=0) + 1) * np.array(volume.spacing[::-1])
    return Measurements(
        volume_ml=float(mask.sum() * volume.voxel_volume_mm3 / 1000.0),
        mean_hu=float(values.mean()),
        max_hu=float(values.max()),
        centroid_lps=tuple(float(x) for x in volume.index_to_lps(centre)),
        centroid_slice=k,
        centroid_sop_instance_uid=volume.sop_instance_uids[k],
        long_axis_mm=float(max(extent[1:])) if lesion else None,
        short_axis_mm=float(min(extent[1:])) if lesion else None,
        long_axis_slice=k if lesion else None,
    )


def make_finding(
    volume: Volume, number: int, label: Label, mask: np.ndarray, name: str, confidence: float = 0.9
) -> Finding:
    lesion = label.kind is FindingKind.LESION
    return Finding(
        number=number,
        label=label,
        mask=mask,
        tracking_id=name,
        tracking_uid=hd.UID(),
        measurements=simple_measurements(volume, mask, lesion),
        confidence=confidence,
        confidence_method="mean voxel probability inside the mask",
    )


def make_findings(volume: Volume, items: tuple[Finding, ...]) -> Findings:
    return Findings("lung-ct", "0.1.0", ALGORITHM, volume, items)


@pytest.fixture(scope="session")
def chest_volume(chest_ct_dir: Path) -> Volume:
    (study,) = scan(chest_ct_dir)
    (series,) = study.series
    return load_series(series)


@pytest.fixture(scope="session")
def chest_findings(chest_volume: Volume) -> Findings:
    v = chest_volume
    shape, sp = v.shape, v.spacing
    box = np.zeros(shape, dtype=bool)
    box[20:44, 150:330, 280:430] = True
    items = (
        make_finding(v, 1, LESION_LABEL, sphere(shape, (30, 200, 150), 12.0, sp), "Lesion 1", 0.8),
        make_finding(v, 2, LESION_LABEL, sphere(shape, (40, 300, 350), 7.0, sp), "Lesion 2", 0.6),
        make_finding(v, 3, ORGAN_LABEL, box, "Left lung", 0.99),
    )
    return make_findings(v, items)


@pytest.fixture(scope="session")
def written(chest_findings: Findings, tmp_path_factory: pytest.TempPathFactory) -> ResultFiles:
    return write_results(chest_findings, tmp_path_factory.mktemp("results"))


@pytest.fixture(scope="session")
def written_json(written: ResultFiles) -> dict:
    return json.loads(written.json_path.read_text())
