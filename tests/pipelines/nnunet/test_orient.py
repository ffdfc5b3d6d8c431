"""The re-ordering into nnU-Net's array layout equals nibabel's canonical RAS, for any series."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest

from medvision.pipelines.nnunet import reorientation
from medvision.pipelines.nnunet._orient import check_code

LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])

DIRECTIONS = {
    "axial": [[1, 0, 0], [0, 1, 0], [0, 0, 1]],
    "axial, slices head first": [[1, 0, 0], [0, 1, 0], [0, 0, -1]],
    "rows flipped": [[1, 0, 0], [0, -1, 0], [0, 0, -1]],
    "sagittal": [[0, 0, 1], [1, 0, 0], [0, -1, 0]],
    "coronal": [[1, 0, 0], [0, 0, -1], [0, 1, 0]],
    "tilted 10 degrees": [
        [1, 0, 0],
        [0, np.cos(0.17), -np.sin(0.17)],
        [0, np.sin(0.17), np.cos(0.17)],
    ],
}


@pytest.mark.parametrize("name", sorted(DIRECTIONS))
def test_layout_matches_nibabel_canonical(name: str) -> None:
    # Columns of `direction` are the LPS directions of voxel axes i, j, k.
    direction = np.asarray(DIRECTIONS[name], dtype=float).T
    spacing = (0.75, 1.25, 3.0)
    array = np.random.default_rng(0).normal(size=(7, 5, 4)).astype(np.float32)  # [k, j, i]
    affine = np.eye(4)
    affine[:3, :3] = direction * np.asarray(spacing)[None, :]
    image = nib.Nifti1Image(array.transpose(2, 1, 0), LPS_TO_RAS @ affine)
    canonical = nib.as_closest_canonical(image)

    turn = reorientation(direction, spacing, "RAS")
    ours = turn.forward(array)
    assert np.array_equal(ours, np.asarray(canonical.dataobj).transpose(2, 1, 0))
    assert turn.spacing == pytest.approx(tuple(canonical.header.get_zooms()[::-1]))
    assert np.array_equal(turn.backward(ours), array)


def test_lps_code_is_the_identity_for_a_standard_axial_series() -> None:
    turn = reorientation(np.eye(3), (0.7, 0.7, 2.5), "LPS")
    assert turn.transpose == (0, 1, 2) and turn.flips == ()
    assert turn.spacing == (2.5, 0.7, 0.7)


@pytest.mark.parametrize("bad", ["RAA", "XYZ", "RA", "RASS"])
def test_bad_codes_are_refused(bad: str) -> None:
    with pytest.raises(ValueError, match="three letters"):
        check_code(bad)
