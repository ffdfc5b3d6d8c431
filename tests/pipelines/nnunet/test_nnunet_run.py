"""Issue 13 item 4: an nnU-Net v2 model through ``medvision run`` equals nnU-Net's own answer.

The tiny model (trained once by nnU-Net's own planner and trainer, see
tests/fixtures/nnunet/make_tiny_nnunet.py) is imported with ``medvision models import
nnunet`` and run with ``medvision run`` on synthetic CT series stored axially, axially with
rows flipped, and sagittally. The reference is what a site gets from nnU-Net alone, the way
TotalSegmentator feeds it: the DICOM series read by SimpleITK, made RAS-canonical by nibabel,
predicted by ``nnUNetPredictor`` from the file. Our SEG, read back with highdicom and put on
the source grid, must equal it voxel for voxel, and the patient's left sphere must be labelled
kidney_left.

nnU-Net v2 comes with the test extras (``[test]`` includes ``[nnunet]``, as
``scripts/install.sh`` and CI install it): when it is missing these tests fail, as a missing
reader from the test extras does (tests/tools.py), instead of skipping the one proof that an
nnU-Net model gives nnU-Net's own answer.
"""

from __future__ import annotations

import json
from pathlib import Path

import highdicom as hd
import numpy as np
import pytest
import yaml

from tests.pipelines.nnunet.reference import assert_seg_equals_nnunet, require_nnunet
from tests.pipelines.nnunet.synthetic import AXIAL, ROWS_FLIPPED, SAGITTAL, Layout, write_series
from tests.pipelines.nnunet.test_import import FIXTURE
from tests.test_cli import medvision


@pytest.fixture(autouse=True)
def nnunet_installed() -> None:
    require_nnunet()


NAME = "nnunet-tinyspheres"
#: The same model imported with --no-mirroring: nnU-Net's mirroring is 8 network passes per
#: tile, the bulk of these tests' CPU time, so one layout runs with it (the import's
#: default) and the others without, against nnU-Net run the same way.
NO_MIRRORING = "tiny-no-mirroring"


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("models")
    result = medvision("models", "import", "nnunet", str(FIXTURE), models=folder)
    assert result.returncode == 0, result.stderr
    args = ("--name", NO_MIRRORING, "--no-mirroring")
    result = medvision("models", "import", "nnunet", str(FIXTURE), *args, models=folder)
    assert result.returncode == 0, result.stderr
    return folder


@pytest.mark.parametrize(
    ("layout", "name"),
    [(AXIAL, NAME), (ROWS_FLIPPED, NO_MIRRORING), (SAGITTAL, NO_MIRRORING)],
    ids=lambda x: getattr(x, "name", x),
)
def test_medvision_run_equals_nnunet_predictor(
    layout: Layout, name: str, models: Path, tmp_path: Path
):
    series, uids, affine = write_series(layout, tmp_path / "study")
    out = tmp_path / "out"
    result = medvision("run", str(series), "--out", str(out), "--pipeline", name, models=models)
    assert result.returncode == 0, result.stderr
    [seg_path] = list(out.glob(f"*/{name}/seg.dcm"))
    mirroring = yaml.safe_load((models / name / "pipeline.yaml").read_text())["nnunet"]
    assert mirroring["use_mirroring"] is (name == NAME)

    ours = assert_seg_equals_nnunet(
        seg_path, series, uids, layout, affine, tmp_path / "nnunet", mirroring=name == NAME
    )

    # Laterality as a reader checks it: kidney_left lies on the patient's left (LPS x > 0),
    # and its segment says so in codes (Kidney + SCT 7771000 Left), not only in its name.
    k, j, i = np.nonzero(ours == 1)
    centre = affine @ np.array([i.mean(), j.mean(), k.mean(), 1.0])
    assert centre[0] > 5.0
    sides = {
        s.SegmentLabel: s.SegmentedPropertyTypeModifierCodeSequence[0].CodeValue
        for s in hd.seg.segread(seg_path).SegmentSequence
    }
    assert sides == {"kidney_left": "7771000", "kidney_right": "24028007"}


def test_label_without_code_is_flagged_in_seg_and_findings(tmp_path: Path) -> None:
    """A label missing from the mapping gets the private coding and a quality flag."""
    mapping = tmp_path / "labels.yaml"
    mapping.write_text("labels:\n  kidney_left: {type: [64033007, Kidney], laterality: left}\n")
    models = tmp_path / "models"
    args = ("--labels", str(mapping), "--no-mirroring")
    imported = medvision("models", "import", "nnunet", str(FIXTURE), *args, models=models)
    assert imported.returncode == 0, imported.stderr
    series, _, _ = write_series(AXIAL, tmp_path / "study")
    out = tmp_path / "out"
    result = medvision("run", str(series), "--out", str(out), "--pipeline", NAME, models=models)
    assert result.returncode == 0, result.stderr
    [folder] = list(out.glob(f"*/{NAME}"))
    findings = json.loads((folder / "findings.json").read_text())
    assert any(
        f.startswith("kidney_right: no SNOMED CT code") for f in findings["quality_flags"]
    ), findings["quality_flags"]
    seg = hd.seg.segread(folder / "seg.dcm")
    types = {
        s.SegmentLabel: s.SegmentedPropertyTypeCodeSequence[0].CodingSchemeDesignator
        for s in seg.SegmentSequence
    }
    assert types == {"kidney_left": "SCT", "kidney_right": "99MEDVISION"}


@pytest.mark.parametrize(
    "trainer",
    [
        "nnUNetTrainerNoMirroring",  # total
        "nnUNetTrainer_4000epochs_NoMirroring",  # total --fast / --fastest
        "nnUNetTrainerSkeletonRecall",  # lung_vessels: TotalSegmentator's own trainer
    ],
)
def test_totalsegmentator_trainers_load_and_predict_alike(trainer: str, tmp_path: Path) -> None:
    """TotalSegmentator's checkpoints name other trainers than ``nnUNetTrainer`` (``total``:
    NoMirroring; its 3 mm ``--fast`` model: 4000epochs_NoMirroring; lung_vessels: a trainer
    of TotalSegmentator's own). nnU-Net rebuilds the network through that trainer class,
    whose lookup imports every trainer module and so failed wherever torchvision does not
    import. The same weights under each name must load and give the labels they give under
    nnUNetTrainer."""
    import shutil

    import torch

    from medvision.dicom import load_series, scan
    from medvision.pipelines.nnunet import import_nnunet
    from medvision.pipelines.nnunet._runtime import NnunetRuntime

    results = tmp_path / "Dataset297_Renamed" / f"{trainer}__nnUNetPlans__3d_fullres"
    shutil.copytree(FIXTURE, results)
    checkpoint = results / "fold_0" / "checkpoint_final.pth"
    saved = torch.load(checkpoint, map_location="cpu", weights_only=False)
    assert saved["trainer_name"] == "nnUNetTrainer"
    saved["trainer_name"] = trainer
    torch.save(saved, checkpoint)

    series, _, _ = write_series(AXIAL, tmp_path / "study")
    volume = load_series(scan(series)[0].series[0])
    labels = []
    for source in (FIXTURE, results):
        folder = import_nnunet(source, tmp_path / "models", name=f"m{len(labels)}")
        settings = {"folds": ["0"], "orientation": "RAS", "use_mirroring": False}
        runtime = NnunetRuntime(folder, settings, device="cpu")
        labels.append(runtime.predict([volume]).labels)
    assert runtime.predictor.trainer_name == trainer
    assert set(np.unique(labels[0])) == {0, 1, 2}
    assert np.array_equal(labels[0], labels[1])
