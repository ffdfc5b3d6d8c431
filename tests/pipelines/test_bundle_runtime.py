"""The bundle runtime on the real MONAI Model Zoo configs (read unchanged from shared data).

No zoo weights exist here, so networks run untrained (random, seeded) and are marked so;
the geometry test swaps in a network with a known answer to check that the bundle's own
pre-processing and Invertd bring the output back onto exactly the source voxels.
"""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
from scipy import ndimage

from medvision.dicom import load_series, scan
from medvision.errors import PipelineError
from medvision.pipelines.bundle import UNTRAINED_FLAG, BundlePipeline, read_spec
from medvision.pipelines.bundle._spec import spec_path_for
from medvision.results import write_results
from tests.pipelines.bundle_helpers import dciodvfy_errors, slab

THRESHOLD_NET = {"network_def": {"_target_": "tests.pipelines.bundle_helpers.ThresholdNet"}}
FAST = {"inferer#overlap": 0.0}


@pytest.fixture(scope="module")
def chest_slab(shared_data):
    """16 real CT slices (5 mm, 512^2): small enough for the spleen UNet on CPU."""
    volume = load_series(
        scan(shared_data / "ct" / "lung-pet-ct-dx-A0001" / "series-5mm")[0].series[0]
    )
    return slab(volume, 40, 56)


@pytest.fixture(scope="module")
def spleen_dir(shared_data):
    return shared_data / "monai-bundles" / "spleen_ct_segmentation"


def test_output_lands_on_the_source_voxels(chest_slab, spleen_dir):
    # A bright box off-centre in all three axes: a flip or shift in the inversion moves it.
    box = np.zeros(chest_slab.shape, bool)
    box[2:14, 60:140, 300:420] = True
    volume = chest_slab.with_array(np.where(box, 120.0, -1000.0).astype(np.float32))
    pipe = BundlePipeline(
        spleen_dir, allow_untrained=True, tta_passes=0, overrides={**THRESHOLD_NET, **FAST}
    )
    findings = pipe.run(volume)
    assert len(findings.items) == 1
    mask = findings.items[0].mask
    dice = 2 * (mask & box).sum() / (mask.sum() + box.sum())
    assert dice > 0.9, dice
    # Resampled to 1.5 x 1.5 x 2 mm and back: an edge voxel may flip (its probability is
    # 0.5 after two interpolations), never more.
    assert np.array_equal(ndimage.binary_erosion(box, iterations=1) & ~mask, np.zeros_like(box))
    assert not (mask & ~ndimage.binary_dilation(box, iterations=1)).any()
    centroid = np.argwhere(mask).mean(0)
    assert np.allclose(centroid, np.argwhere(box).mean(0), atol=0.6)
    assert findings.items[0].confidence > 0.9


def test_spleen_zoo_bundle_untrained_end_to_end(chest_slab, spleen_dir, tmp_path):
    pipe = BundlePipeline(spleen_dir, allow_untrained=True, tta_passes=1, overrides=FAST)
    assert pipe.name == "spleen-ct" and pipe.version == "0.5.9"
    stages = []
    findings = pipe.run(chest_slab, progress=lambda s, f: stages.append(s))
    assert "inference" in stages and "uncertainty (test-time augmentation)" in stages
    assert findings.algorithm.version == "0.5.9-untrained"
    assert findings.quality_flags[0] == UNTRAINED_FLAG
    assert findings.items, "the seeded random UNet labels some voxels as spleen"
    item = findings.items[0]
    assert item.mask.shape == chest_slab.shape and item.label.type.value == "78961009"
    assert 0.5 < item.confidence < 1.0  # mean softmax inside the segment, not a constant
    assert item.uncertainty is not None and 0.0 <= item.uncertainty < 0.5
    doc = findings.to_json()["findings"][0]
    assert doc["uncertainty"] == item.uncertainty and "test-time" in doc["uncertainty_method"]
    files = write_results(findings, tmp_path / "out")
    assert files.seg_path is not None and files.seg_path.is_file()
    assert dciodvfy_errors(files.seg_path) == []
    written = json.loads(files.json_path.read_text())
    assert UNTRAINED_FLAG in written["quality_flags"]


def test_brats_zoo_bundle_needs_four_series(shared_data):
    mr = load_series(scan(shared_data / "mr" / "philips-3t-brain" / "classic-t1")[0].series[0])
    t1 = slab(mr, 70, 86)  # 16 sagittal slices keep the untrained SegResNet fast on CPU
    shifted = slab(mr, 72, 88)  # another grid: must be resampled onto the reference
    root = shared_data / "monai-bundles" / "brats_mri_segmentation"
    # Random weights label noise: keep only specks of 5 mL or more.
    spec = dataclasses.replace(read_spec(spec_path_for(root)), min_volume_ml=5.0)
    pipe = BundlePipeline(
        root,
        spec,
        allow_untrained=True,
        tta_passes=0,
        overrides={"inferer#roi_size": [128, 128, 16]},
    )
    with pytest.raises(PipelineError, match="needs 4 series"):
        pipe.run(t1)
    with pytest.raises(PipelineError, match="flair"):
        pipe.run_multi({"t1c": t1, "t1": t1, "t2": t1})
    findings = pipe.run_multi({"t1c": t1, "t1": t1, "t2": shifted, "flair": t1})
    assert findings.volume is t1
    assert findings.algorithm.version.endswith("-untrained")
    assert findings.algorithm.parameters["inputs"] == "t1c,t1,t2,flair"
    values = {i.label.name for i in findings.items}
    assert values <= {
        "Necrotic and non-enhancing tumour core",
        "Peritumoural oedema",
        "Enhancing tumour",
    }
    for item in findings.items:
        assert item.mask.shape == t1.shape and 0.0 <= item.confidence <= 1.0


def test_missing_weights_are_refused(spleen_dir, chest_slab):
    pipe = BundlePipeline(spleen_dir)
    with pytest.raises(PipelineError, match="has no weights"):
        pipe.run(chest_slab)
    assert dataclasses.is_dataclass(pipe.spec)
