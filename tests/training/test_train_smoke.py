"""CI smoke run of ``medvision train``: the script that made the default models still runs.

Why a smoke run and not a training: a real training takes an hour on this CPU; what CI can
guard is that the script builds its data on the model grid with the right sides, trains,
checkpoints, resumes, and writes a bundle that the bundle runtime loads and runs unchanged.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from medvision.cli import main
from medvision.training._data import synthetic_chest, synthetic_recipes, to_model_grid
from tests.volumes import array_volume


def test_model_grid_keeps_sides() -> None:
    """Right lung (label 1) at larger RAS x than the left one (label 2), after the same
    Orientationd/Spacingd the bundle applies: a side swap here would swap every output."""
    recipe = synthetic_recipes(1, seed0=3, smoke=True)[0]
    hu, label, affine = synthetic_chest(recipe.params)
    image, lab = to_model_grid(hu, label, affine, (8.0, 8.0, 8.0))
    assert image.shape == lab.shape
    x_right = np.argwhere(lab == 1)[:, 0].mean()
    x_left = np.argwhere(lab == 2)[:, 0].mean()
    assert x_right > x_left
    assert image[lab == 1].mean() < -600  # lung is air-like
    assert image[lab == 0].mean() > image[lab == 1].mean()


def test_smoke_train_writes_loadable_bundle(tmp_path: Path) -> None:
    from medvision.pipelines.bundle import read_spec
    from medvision.pipelines.bundle._runtime import BundleRuntime
    from medvision.training._evaluate import nifti_volume  # noqa: F401  (import check)

    work, out = tmp_path / "work", tmp_path / "bundle"
    args = ["train", "lungs", "--smoke", "--work-dir", str(work), "--out", str(out)]
    assert main(args) == 0
    for name in (
        "configs/inference.json",
        "configs/metadata.json",
        "models/model.pt",
        "pipeline.yaml",
        "docs/README.md",
    ):
        assert (out / name).is_file(), name
    assert (out / "models" / "model.pt").stat().st_size < 5 * 2**20
    card = (out / "docs" / "README.md").read_text()
    assert "Synthetic chest CTs" in card and "sha256" in card and "Not measured yet" in card
    record = json.loads((work / "datalist.json").read_text())
    assert record["hyper_parameters"]["seed"] and len(record["data"]) == 2
    assert (work / "checkpoint.pt").is_file()
    log = (work / "log.txt").read_text()
    assert "step 3/3" in log

    # Resuming a finished run continues from its checkpoint instead of starting again.
    assert main([*args, "--resume"]) == 0
    assert "resumed from" in (work / "log.txt").read_text()

    spec = read_spec(out / "pipeline.yaml")
    assert spec.name == "lungs-ct-unet"
    runtime = BundleRuntime(out, device="cpu")
    assert not runtime.weights.untrained
    recipe = synthetic_recipes(1, seed0=5, smoke=True)[0]
    hu, _, affine = synthetic_chest(recipe.params)
    spacing = np.linalg.norm(affine[:3, :3], axis=0)
    volume = array_volume(
        hu, spacing=spacing, direction=affine[:3, :3] / spacing[None, :], origin=affine[:3, 3]
    )
    prediction = runtime.predict([volume])
    assert prediction.labels.shape == volume.shape
    assert prediction.probabilities.shape[0] == 3


def test_evaluate_refuses_non_bundle(tmp_path: Path) -> None:
    assert main(["evaluate", "lungs", "--bundle", str(tmp_path)]) == 2


def test_keep_inside_body_zeroes_lung_outside_the_patient() -> None:
    """Air outside the body is never lung: its lung probability goes to background."""
    import torch

    from medvision.training.transforms import KeepInsideBodyd

    image = np.zeros((1, 20, 20, 4), np.float32)  # scaled units: 0 = air
    image[0, 4:16, 4:16] = 0.6  # the body...
    image[0, 7:13, 7:13] = 0.1  # ...with air-filled lungs inside
    pred = torch.zeros((3, 20, 20, 4))
    pred[1] = 1.0  # the network calls everything right lung
    out = KeepInsideBodyd(keys="pred")({"image": torch.from_numpy(image), "pred": pred})["pred"]
    assert float(out[1, 10, 10, 0]) == 1.0  # lung inside the body kept
    assert float(out[1, 1, 1, 0]) == 0.0 and float(out[0, 1, 1, 0]) == 1.0
