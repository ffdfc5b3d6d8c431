"""nnU-Net's own answer for a synthetic series, and the check that our SEG equals it.

Shared by ``medvision run`` (test_nnunet_run.py) and the node (tests/node/test_nnunet_node.py):
both must give, voxel for voxel, what a site gets from nnU-Net alone the way TotalSegmentator
feeds it: the DICOM series read by SimpleITK, made RAS-canonical by nibabel, predicted by
``nnUNetPredictor`` from the file.
"""

from __future__ import annotations

import os
from pathlib import Path

import highdicom as hd
import nibabel as nib
import numpy as np
import pytest

from tests.pipelines.nnunet.synthetic import Layout
from tests.pipelines.nnunet.test_import import FIXTURE

LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])
#: The tiny model's label values by segment label.
VALUES = {"kidney_left": 1, "kidney_right": 2}


def require_nnunet() -> None:
    """Fail, not skip, without nnU-Net v2: it comes with the test extras (``[test]``)."""
    try:
        import nnunetv2  # noqa: F401
    except ImportError as exc:
        pytest.fail(f"nnU-Net v2 is not installed ({exc}): bash scripts/install.sh ('.[test]')")


def nnunet_reference(series: Path, work: Path, mirroring: bool = True) -> nib.Nifti1Image:
    """nnU-Net's own prediction for a DICOM series, as a site would run it."""
    os.environ.setdefault("nnUNet_compile", "false")
    import SimpleITK as sitk
    import torch
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(series)))
    sitk.WriteImage(reader.Execute(), str(work / "series.nii.gz"))
    canonical = nib.as_closest_canonical(nib.load(work / "series.nii.gz"))
    nib.save(canonical, work / "case_0000.nii.gz")
    (work / "pred").mkdir()
    predictor = nnUNetPredictor(
        device=torch.device("cpu"), use_mirroring=mirroring, allow_tqdm=False
    )
    predictor.initialize_from_trained_model_folder(str(FIXTURE), use_folds=(0,))
    predictor.predict_from_files_sequential(
        [[str(work / "case_0000.nii.gz")]], str(work / "pred"), save_probabilities=False,
        overwrite=True, folder_with_segs_from_prev_stage=None,
    )  # fmt: skip
    return nib.load(work / "pred" / "case.nii.gz")


def seg_on_source_grid(
    seg_path: Path, uids: list[str], layout: Layout, values: dict[str, int] | None = None
) -> np.ndarray:
    """Our SEG read back by highdicom: label values by segment label (``values``, default
    the tiny model's), ``[slice, row, column]``; no voxel may be in two segments."""
    seg = hd.seg.segread(seg_path)
    values = values or VALUES
    out = np.zeros((layout.slices, layout.rows, layout.columns), np.uint8)
    for item in seg.SegmentSequence:
        pixels = seg.get_pixels_by_source_instance(
            source_sop_instance_uids=uids,
            segment_numbers=[item.SegmentNumber],
            ignore_spatial_locations=True,
            assert_missing_frames_are_empty=True,
        )[..., 0]
        assert not out[pixels > 0].any(), f"{item.SegmentLabel} overlaps another segment"
        out[pixels > 0] = values[item.SegmentLabel]
    return out


def assert_seg_equals_nnunet(
    seg_path: Path,
    series: Path,
    uids: list[str],
    layout: Layout,
    affine: np.ndarray,
    work: Path,
    mirroring: bool,
) -> np.ndarray:
    """Assert our SEG of ``series`` equals nnU-Net's prediction voxel for voxel, on the same
    RAS grid; returns our labels on the source grid (``[slice, row, column]``)."""
    ours = seg_on_source_grid(seg_path, uids, layout)
    ours_image = nib.Nifti1Image(ours.transpose(2, 1, 0), LPS_TO_RAS @ affine)
    ours_canonical = nib.as_closest_canonical(ours_image)
    work.mkdir(parents=True, exist_ok=True)
    reference = nnunet_reference(series, work, mirroring=mirroring)

    assert np.allclose(ours_canonical.affine, reference.affine, atol=1e-3)
    expected = np.asarray(reference.dataobj).astype(np.uint8)
    assert set(np.unique(expected)) == {0, 1, 2}  # the model finds both spheres
    assert np.array_equal(np.asarray(ours_canonical.dataobj), expected)
    return ours


__all__ = [
    "LPS_TO_RAS",
    "VALUES",
    "assert_seg_equals_nnunet",
    "nnunet_reference",
    "require_nnunet",
    "seg_on_source_grid",
]
