"""``medvision models import nnunet``: the tiny nnU-Net fixture becomes a listed pipeline.

These tests need no nnU-Net install: importing copies files and writes ``pipeline.yaml``.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
import yaml

from medvision.pipelines.bundle import read_spec
from medvision.pipelines.nnunet import (
    NO_CODE_SCHEME,
    NnunetPipeline,
    find_nnunet_pipelines,
    import_nnunet,
    shipped_mapping,
)
from medvision.pipelines.nnunet._labels import SHIPPED, read_mapping
from tests.test_cli import medvision

FIXTURE = (
    Path(__file__).resolve().parents[2]
    / "fixtures/nnunet/Dataset999_TinySpheres/nnUNetTrainer__nnUNetPlans__3d_fullres"
)


def test_fixture_is_small_and_complete() -> None:
    files = [FIXTURE / "dataset.json", FIXTURE / "plans.json"]
    files.append(FIXTURE / "fold_0" / "checkpoint_final.pth")
    assert all(f.is_file() for f in files)
    assert sum(f.stat().st_size for f in files) < 5_000_000


def test_import_writes_a_pipeline_with_coded_lateral_labels(tmp_path: Path) -> None:
    folder = import_nnunet(FIXTURE, tmp_path)
    assert folder == tmp_path / "nnunet-tinyspheres"
    assert (folder / "nnunet" / "fold_0" / "checkpoint_final.pth").is_file()
    spec = read_spec(folder / "pipeline.yaml")
    assert spec.name == "nnunet-tinyspheres"
    [rule] = spec.inputs
    assert rule.modality == "CT" and rule.max_slice_thickness_mm == 5.0
    left, right = spec.labels
    assert (left.value, left.label.name) == (1, "kidney_left")
    assert (right.value, right.label.name) == (2, "kidney_right")
    assert left.label.type.value == right.label.type.value == "64033007"  # SCT Kidney
    raw = yaml.safe_load((folder / "pipeline.yaml").read_text())
    assert raw["labels"][1]["laterality"]["value"] == "7771000"  # SCT Left
    assert raw["labels"][2]["laterality"]["value"] == "24028007"  # SCT Right
    assert raw["nnunet"]["folds"] == ["0"] and raw["nnunet"]["orientation"] == "RAS"
    card = (folder / "docs" / "README.md").read_text()
    assert "fold_0/checkpoint_final.pth" in card and "sha256" in card
    assert find_nnunet_pipelines([tmp_path]) == {
        "nnunet-tinyspheres": (folder, folder / "pipeline.yaml")
    }
    assert NnunetPipeline(folder).labels == tuple(s.label for s in spec.labels)


def test_unknown_label_gets_the_flagged_no_code_default(tmp_path: Path) -> None:
    results = tmp_path / "Dataset5_Mixed" / "nnUNetTrainer__nnUNetPlans__3d_fullres"
    shutil.copytree(FIXTURE, results)
    dataset = json.loads((results / "dataset.json").read_text())
    dataset["labels"] = {"background": 0, "liver": 1, "mystery_blob": 2}
    (results / "dataset.json").write_text(json.dumps(dataset))
    spec = read_spec(import_nnunet(results, tmp_path / "models") / "pipeline.yaml")
    liver, blob = spec.labels
    assert (liver.label.type.scheme, liver.label.type.value) == ("SCT", "10200004")
    assert blob.label.type.scheme == NO_CODE_SCHEME
    assert blob.label.type.meaning == "mystery_blob"
    assert blob.label.category.scheme == NO_CODE_SCHEME  # not claimed to be anatomy either


def test_shipped_totalsegmentator_mapping_is_consistent() -> None:
    total = read_mapping(SHIPPED[0])
    assert len(total) == 117
    mapping = shipped_mapping()
    assert set(total) < set(mapping)  # the lung tasks' labels too, no name redefined
    seen: dict[tuple, str] = {}
    for name, entry in mapping.items():
        if entry.get("code") == "none":
            continue
        side = entry.get("laterality")
        # A name that says left/right carries that laterality, and only such names do
        # (lung_middle_lobe_right's code already means the right lung).
        if name != "lung_middle_lobe_right":
            expected = "left" if "_left" in name else "right" if "_right" in name else None
            assert side == expected, name
        key = (str(entry["type"][0]), side, str(entry.get("site", [""])[0]))
        assert key not in seen, f"{name} and {seen.get(key)} share one code"
        seen[key] = name
    assert len(seen) >= 110


def test_cli_import_list_and_errors(tmp_path: Path) -> None:
    models = tmp_path / "models"
    result = medvision("models", "import", "nnunet", str(FIXTURE), "--name", "tiny", models=models)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"wrote {models / 'tiny'}"
    listing = medvision("models", "list", models=models)
    assert "tiny\t" in listing.stdout and "kidney_left, kidney_right" in listing.stdout
    bad = medvision("models", "import", "nnunet", str(FIXTURE), "--folds", "3", models=models)
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    assert bad.stderr.startswith("error: No checkpoint_final.pth for fold(s) 3")
    nothing = medvision("models", "import", "nnunet", str(tmp_path), models=models)
    assert nothing.returncode == 2 and "not an nnU-Net results folder" in nothing.stderr


@pytest.mark.parametrize("name", ["Bad Name", "UPPER"])
def test_bad_names_are_refused(name: str, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="--name"):
        import_nnunet(FIXTURE, tmp_path, name=name)


def test_totalsegmentator_task_imports_from_a_weights_folder(tmp_path: Path) -> None:
    # The layout `totalseg_download_weights` leaves; the tiny model stands in for the weights.
    weights, models = tmp_path / "weights", tmp_path / "models"
    shutil.copytree(
        FIXTURE,
        weights / "Dataset258_lung_vessels_248subj" / "nnUNetTrainer__nnUNetPlans__3d_fullres",
    )
    args = ("models", "import", "totalsegmentator", "--weights", str(weights))
    result = medvision(*args, "--task", "lung_vessels_LEGACY", models=models)
    assert result.returncode == 0, result.stderr
    folder = models / "totalseg-lung-vessels-legacy-258"
    assert result.stdout.strip() == f"wrote {folder}"
    assert read_spec(folder / "pipeline.yaml").inputs[0].modality == "CT"
    # TotalSegmentator runs its models without test-time mirroring; so does the import.
    raw = yaml.safe_load((folder / "pipeline.yaml").read_text())
    assert raw["nnunet"]["use_mirroring"] is False
    assert "Apache-2.0" in (folder / "docs" / "README.md").read_text()
    missing = medvision(*args, "--task", "total", models=models)
    assert missing.returncode == 2
    assert "no weights for dataset(s) 291, 292, 293, 294, 295" in missing.stderr
    assert "totalseg_download_weights -t total`" in missing.stderr
    # Today's lung_vessels is another model (117, four labels) than the legacy one (258).
    newer = medvision(*args, "--task", "lung_vessels", models=models)
    assert newer.returncode == 2 and "no weights for dataset(s) 117" in newer.stderr


def test_totalsegmentator_fast_imports_its_lower_resolution_model(tmp_path: Path) -> None:
    """``--fast``: TotalSegmentator's one 3 mm model of all 117 labels (dataset 297)."""
    weights, models = tmp_path / "weights", tmp_path / "models"
    args = ("models", "import", "totalsegmentator", "--weights", str(weights), "--task", "total")
    missing = medvision(*args, "--fast", models=models)
    assert missing.returncode == 2
    assert "task 'total' --fast: no weights for dataset(s) 297" in missing.stderr
    assert "totalseg_download_weights -t total_fast`" in missing.stderr

    trainer = "nnUNetTrainer_4000epochs_NoMirroring__nnUNetPlans__3d_fullres"
    shutil.copytree(FIXTURE, weights / "Dataset297_TotalSegmentator_total_3mm_1559subj" / trainer)
    result = medvision(*args, "--fast", models=models)
    assert result.returncode == 0, result.stderr
    folder = models / "totalseg-total-fast-297"
    assert result.stdout.strip() == f"wrote {folder}"
    raw = yaml.safe_load((folder / "pipeline.yaml").read_text())
    assert raw["nnunet"]["use_mirroring"] is False and raw["nnunet"]["folds"] == ["0"]
    assert "Dataset297_TotalSegmentator_total_3mm_1559subj" in raw["description"]

    refused = medvision(*args[:-1], "lung_nodules", "--fast", models=models)
    assert refused.returncode == 2 and "has no --fast model" in refused.stderr
    both = medvision(*args, "--fast", "--fastest", models=models)
    assert both.returncode == 2 and "not allowed with argument" in both.stderr


def test_run_without_nnunet_installed_says_how_to_install(tmp_path: Path, monkeypatch) -> None:
    from tests.pipelines.nnunet.synthetic import AXIAL, write_series

    # Hide nnunetv2 whether or not it is installed: a package of that name that fails.
    shim = tmp_path / "shim" / "nnunetv2"
    shim.mkdir(parents=True)
    (shim / "__init__.py").write_text("raise ImportError('hidden by the test')\n")
    paths = [str(shim.parent), *filter(None, [os.environ.get("PYTHONPATH")])]
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(paths))
    models = tmp_path / "models"
    import_nnunet(FIXTURE, models)
    series, _, _ = write_series(AXIAL, tmp_path / "study")
    out = tmp_path / "out"
    result = medvision(
        "run", str(series), "--out", str(out), "--pipeline", "nnunet-tinyspheres", models=models
    )
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "pip install 'medvision[nnunet]'" in result.stderr
