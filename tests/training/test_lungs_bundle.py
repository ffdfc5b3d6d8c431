"""The committed lung bundle ``models/lungs_ct_unet`` as the node runs it.

Why beside the smoke test: the smoke run proves the script works; this proves the weights
in the repository load strictly into the network the bundle describes, are discovered as a
pipeline, and still segment both lungs of the committed synthetic chest CT on the right
sides (a regression guard on the weights; the accuracy on real CT is in docs/accuracy.md,
measured by ``medvision evaluate lungs``).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from dicom_samples import GroundTruth
from medvision.dicom import load_series, scan

ROOT = Path(__file__).resolve().parents[2]
BUNDLE = ROOT / "models" / "lungs_ct_unet"
SAMPLE = ROOT / "dicom_samples" / "chest-ct"

pytestmark = pytest.mark.skipif(
    not (BUNDLE / "models" / "model.pt").is_file(), reason="lung bundle not trained yet"
)


def test_weights_are_small_and_described() -> None:
    assert (BUNDLE / "models" / "model.pt").stat().st_size < 5 * 2**20
    card = (BUNDLE / "docs" / "README.md").read_text()
    assert "Dice" in card and "Training data" in card


def test_bundle_segments_both_lungs_of_the_synthetic_sample() -> None:
    from medvision.pipelines.bundle import BundlePipeline, find_bundles

    assert "lungs-ct-unet" in find_bundles([ROOT / "models"])
    pipe = BundlePipeline(BUNDLE)
    (study,) = scan(SAMPLE)
    (series,) = study.series
    assert pipe.accepts(series).accepted
    findings = pipe.run(load_series(series))
    truth = GroundTruth.read(SAMPLE)
    by_name = {f.label.name: f for f in findings.items}
    for side, name in (("right", "Right lung"), ("left", "Left lung")):
        found = by_name[name]
        assert found.measurements.volume_ml == pytest.approx(truth.lung_volume_ml[side], rel=0.1)
        assert 0.5 < found.confidence <= 1.0
    assert not any("UNTRAINED" in q for q in findings.quality_flags)
