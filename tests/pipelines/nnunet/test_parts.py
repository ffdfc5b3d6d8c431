"""TotalSegmentator's ``total`` is five nnU-Net models; imported, it is one pipeline.

A radiologist gets one SEG with every structure (and one SR), as from TotalSegmentator's own
DICOM output, instead of five SEG series of one CT. The tiny model stands in for the weights:
copied under TotalSegmentator's dataset ids with other label names, and for the run, once with
one class silenced in its checkpoint so that the two models disagree. What is checked: the
import writes one pipeline whose labels are all the models' labels, numbered in model order
and coded; ``medvision run`` gives a SEG whose label map is the models' own predictions
(medvision's nnU-Net runtime, which tests/pipelines/nnunet/test_nnunet_run.py proves equal to
nnU-Net's) merged with the later model winning, as TotalSegmentator merges them.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import yaml

from medvision.pipelines.bundle import read_spec
from medvision.pipelines.nnunet import find_nnunet_pipelines, import_nnunet
from tests.pipelines.nnunet.reference import require_nnunet, seg_on_source_grid
from tests.pipelines.nnunet.synthetic import AXIAL, write_series
from tests.pipelines.nnunet.test_import import FIXTURE
from tests.test_cli import medvision

TRAINER = "nnUNetTrainerNoMirroring__nnUNetPlans__3d_fullres"  # total's, as downloaded
#: Stand-in label names per TotalSegmentator `total` model (real `total` names, so coded).
PARTS = {
    291: ("spleen", "kidney_right"),
    292: ("kidney_left", "gallbladder"),
    293: ("liver", "stomach"),
    294: ("pancreas", "adrenal_gland_right"),
    295: ("adrenal_gland_left", "esophagus"),
}


def _model(dest: Path, names: tuple[str, str], silence: int | None = None) -> Path:
    """The tiny model under ``dest`` with ``names`` for its labels 1 and 2; ``silence``: a
    class whose output the checkpoint suppresses (its bias lowered by 100)."""
    shutil.copytree(FIXTURE, dest)
    dataset = json.loads((dest / "dataset.json").read_text())
    dataset["labels"] = {"background": 0, names[0]: 1, names[1]: 2}
    (dest / "dataset.json").write_text(json.dumps(dataset))
    if silence is not None:
        import torch

        checkpoint = dest / "fold_0" / "checkpoint_final.pth"
        saved = torch.load(checkpoint, map_location="cpu", weights_only=False)
        for key, value in saved["network_weights"].items():
            if key.startswith("decoder.seg_layers.") and key.endswith(".bias"):
                value[silence] -= 100.0
        torch.save(saved, checkpoint)
    return dest


def test_total_imports_as_one_pipeline_of_its_five_models(tmp_path: Path) -> None:
    weights, models = tmp_path / "weights", tmp_path / "models"
    for number, names in PARTS.items():
        _model(weights / f"Dataset{number}_TotalSegmentator_part{number - 290}" / TRAINER, names)
    args = ("models", "import", "totalsegmentator", "--weights", str(weights), "--task", "total")
    result = medvision(*args, models=models)
    assert result.returncode == 0, result.stderr
    folder = models / "totalseg-total-291-295"
    assert result.stdout.strip() == f"wrote {folder}"
    assert list(find_nnunet_pipelines([models])) == ["totalseg-total-291-295"]

    raw = yaml.safe_load((folder / "pipeline.yaml").read_text())
    parts = raw["nnunet"]["parts"]
    assert [p["folder"] for p in parts] == [f"nnunet/part-{n}" for n in PARTS]
    assert [p["labels"] for p in parts] == [{1: 2 * i + 1, 2: 2 * i + 2} for i in range(5)]
    assert raw["nnunet"]["use_mirroring"] is False
    for part in parts:
        assert (folder / part["folder"] / "fold_0" / "checkpoint_final.pth").is_file()
    spec = read_spec(folder / "pipeline.yaml")
    names = [name for pair in PARTS.values() for name in pair]
    assert [(s.value, s.label.name) for s in spec.labels] == list(enumerate(names, start=1))
    coded = {s.label.name: s.label.type.value for s in spec.labels}
    assert coded["spleen"] == "78961009" and coded["kidney_left"] == coded["kidney_right"]
    card = (folder / "docs" / "README.md").read_text()
    assert all(f"Dataset{n}_TotalSegmentator_part{n - 290}" in card for n in PARTS)
    assert "**Merged**" in card and "Apache-2.0" in card
    listed = medvision("models", "list", models=models)
    assert listed.returncode == 0, listed.stderr
    [line] = [x for x in listed.stdout.splitlines() if x.startswith("totalseg-total-291-295")]
    assert "part-291/fold_0" in line and "part-295/fold_0" in line


def test_merged_run_is_the_models_run_one_by_one_later_winning(tmp_path: Path) -> None:
    require_nnunet()
    from medvision.dicom import load_series, scan
    from medvision.pipelines.nnunet._runtime import NnunetRuntime

    first = _model(tmp_path / "w" / "Dataset901_First" / TRAINER, ("kidney_left", "kidney_right"))
    # The second model's class 1 silenced: it labels only (its) class 2, where it overlaps
    # and where it does not agree with the first model.
    second = _model(tmp_path / "w" / "Dataset902_Second" / TRAINER, ("liver", "stomach"), 1)
    models = tmp_path / "models"
    import_nnunet([first, second], models, name="merged", use_mirroring=False)
    series, uids, _ = write_series(AXIAL, tmp_path / "study")
    out = tmp_path / "out"
    result = medvision("run", str(series), "--out", str(out), "--pipeline", "merged", models=models)
    assert result.returncode == 0, result.stderr
    [seg_path] = list(out.glob("*/merged/seg.dcm"))

    # Each model alone, as medvision runs a single imported model.
    volume = load_series(scan(series)[0].series[0])
    alone = []
    for part in ("part-901", "part-902"):
        settings = {"folder": f"nnunet/{part}", "folds": ["0"], "use_mirroring": False}
        alone.append(NnunetRuntime(models / "merged", settings, device="cpu").predict([volume]))
    a, b = (p.labels for p in alone)
    expected = np.where(b == 2, 4, np.where(b == 1, 3, a))  # merged: 1, 2 | 3, 4
    assert set(np.unique(a)) == {0, 1, 2} and set(np.unique(b)) == {0, 2}

    values = {"kidney_left": 1, "kidney_right": 2, "liver": 3, "stomach": 4}
    ours = seg_on_source_grid(seg_path, uids, AXIAL, values)
    assert np.array_equal(ours, expected)
    # Both models show in the one SEG: the first's kidney_left survives, the second's
    # stomach won where both labelled the right sphere.
    assert {1, 4} <= set(np.unique(ours)) and not ((a == 2) & (b == 2) & (ours == 2)).any()
    findings = json.loads(next(out.glob("*/merged/findings.json")).read_text())
    assert findings["algorithm"]["parameters"]["models"] == "nnunet/part-901,nnunet/part-902"
