"""lung-ct against the synthetic chest phantom of ``dicom_samples`` with known nodules.

The pipeline reports lesions of 0.5 mL and more (about 10 mm across); smaller truth
nodules are listed as known misses rather than silently skipped.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from medvision.dicom import load_series, scan
from medvision.pipelines import get
from medvision.pipelines.lung_ct import LungParams

generate = pytest.importorskip("dicom_samples.generate", reason="dicom_samples not available")
truth_module = pytest.importorskip("dicom_samples.truth")


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory: pytest.TempPathFactory):
    out: Path = tmp_path_factory.mktemp("chest-ct")
    generate.generate_study(out)
    truth = truth_module.GroundTruth.read(out)
    (study,) = scan(out)
    findings = get("lung-ct").run(load_series(study.series[0]))
    return truth, findings


def test_finds_each_reportable_nodule(synthetic) -> None:
    truth, findings = synthetic
    reportable = [n for n in truth.nodules if n.volume_ml >= LungParams().min_lesion_ml]
    assert reportable, "the phantom should hold at least one nodule of 0.5 mL or more"
    for nodule in reportable:
        centre = np.asarray(nodule.mask_centroid_lps_mm)
        dist = [
            np.linalg.norm(np.asarray(f.measurements.centroid_lps) - centre)
            for f in findings.lesions
        ]
        best = int(np.argmin(dist))
        found = findings.lesions[best]
        assert dist[best] <= 2.0, f"nodule {nodule.number}: nearest lesion {dist[best]:.1f} mm away"
        assert found.measurements.volume_ml == pytest.approx(nodule.volume_ml, rel=0.15)
        side = "44029006" if nodule.lung == "left" else "3341006"
        assert found.site is not None and found.site.value == side


def test_lungs_match_truth(synthetic) -> None:
    truth, findings = synthetic
    organs = {f.tracking_id: f.measurements.volume_ml for f in findings.organs}
    assert organs["Left lung"] == pytest.approx(truth.lung_volume_ml["left"], rel=0.10)
    assert organs["Right lung"] == pytest.approx(truth.lung_volume_ml["right"], rel=0.10)
