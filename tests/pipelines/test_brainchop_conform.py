"""brainchop's conform step (``Conformd``) on the real Philips T1 and the same head as axial.

No network runs here (a few seconds each): the conformed volume is what brainchop's models
see, so it must be the same head on the same grid whatever the acquisition's orientation,
and the same voxels FreeSurfer's conform (the reference brainchop's niivue port follows)
would give.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.data import MetaTensor
from nibabel.orientations import aff2axcodes
from scipy import ndimage

from medvision.dicom import Volume, load_series, scan
from medvision.pipelines.brainchop import Conformd, robust_range
from medvision.pipelines.bundle._runtime import LPS_TO_RAS
from tests.pipelines.mr_rewrite import resample_axial


@pytest.fixture(scope="module")
def t1(shared_data) -> Volume:
    (study,) = scan(shared_data / "mr" / "philips-3t-brain" / "classic-t1")
    return load_series(study.series[0])


@pytest.fixture(scope="module")
def axial_t1(t1) -> Volume:
    """The same head resampled onto a 12-degree tilted axial grid (as an AC-PC axial T1)."""
    array, direction, origin, spacing = resample_axial(t1, tilt_deg=12.0)
    return Volume(
        array=array,
        origin=tuple(origin),
        spacing=tuple(spacing),
        direction=direction,
        frame_of_reference_uid=t1.frame_of_reference_uid,
        study_instance_uid=t1.study_instance_uid,
        series_instance_uid="1.2.3.4",
        modality="MR",
        sop_instance_uids=("1.2.3.5",) * array.shape[0],
        frame_numbers=tuple(range(1, array.shape[0] + 1)),
        source_headers=t1.source_headers[:1],
    )


def _metatensor(volume: Volume) -> MetaTensor:
    """As the bundle runtime hands a volume to MONAI: [1, i, j, k] with a RAS affine."""
    array = volume.array.transpose(2, 1, 0)[None].copy()
    return MetaTensor(torch.from_numpy(array), affine=torch.from_numpy(LPS_TO_RAS @ volume.affine))


def _conform(volume: Volume) -> MetaTensor:
    return Conformd("image")({"image": _metatensor(volume)})["image"]


def _freesurfer_reference(volume: Volume) -> np.ndarray:
    """FreeSurfer's conform geometry, written from its definition (scipy, not MONAI)."""
    image = _metatensor(volume)
    affine = image.affine.numpy()
    shape = np.asarray(image.shape[1:], dtype=float)
    mdc = np.array([[-1.0, 0, 0], [0, 0, -1.0], [0, 1.0, 0]])  # rows: x, y, z axis directions
    centre = (affine @ np.append(shape / 2, 1))[:3]
    out = np.eye(4)
    out[:3, :3] = mdc.T
    out[:3, 3] = centre - mdc.T @ np.full(3, 128.0)
    out_to_in = np.linalg.inv(affine) @ out
    return ndimage.affine_transform(
        image[0].numpy().astype(np.float64), out_to_in, output_shape=(256, 256, 256), order=1
    )


def test_conformed_grid_is_freesurfers(t1):
    conformed = _conform(t1)
    assert tuple(conformed.shape) == (1, 256, 256, 256)
    affine = conformed.affine.numpy()
    assert aff2axcodes(affine) == ("L", "I", "A")
    assert np.allclose(np.abs(affine[:3, :3]).sum(axis=0), 1.0)  # 1 mm, no obliquity left
    source = _metatensor(t1)
    centre = (source.affine.numpy() @ np.append(np.asarray(source.shape[1:]) / 2, 1))[:3]
    assert np.allclose(affine @ [128, 128, 128, 1], np.append(centre, 1), atol=1e-6)
    values = conformed.numpy()
    assert values.min() == 0 and values.max() == 255
    assert np.array_equal(values, np.floor(values))  # whole uint8 levels, as brainchop stores


@pytest.mark.parametrize("which", ["sagittal", "axial"])
def test_conform_matches_freesurfer_reference(which, t1, axial_t1):
    volume = t1 if which == "sagittal" else axial_t1
    ours = _conform(volume)[0].numpy()
    low, high = robust_range(volume.array)
    reference = np.clip((_freesurfer_reference(volume) - low) * 255 / (high - low), 0, 255)
    head = reference > 20
    diff = np.abs(ours - np.floor(reference))
    assert head.sum() > 1_000_000
    assert np.mean(diff[head] <= 1) > 0.995, "resampling differs from FreeSurfer's conform"
    assert np.mean(diff) < 0.1


def test_sagittal_and_axial_acquisitions_conform_to_the_same_head(t1, axial_t1):
    sagittal, axial = _conform(t1), _conform(axial_t1)
    # The same grid up to FreeSurfer's centre convention (affine @ shape/2 is half an input
    # voxel off the centre, along each acquisition's own axes): about 1 mm apart at most.
    assert np.allclose(sagittal.affine.numpy(), axial.affine.numpy(), atol=1.5)
    a = sagittal[0].numpy()
    b_to_a = np.linalg.inv(axial.affine.numpy()) @ sagittal.affine.numpy()
    b = ndimage.affine_transform(axial[0].numpy(), b_to_a, order=1)  # onto the same voxels
    both = (a > 20) & (b > 20)
    assert both.sum() > 0.9 * min((a > 20).sum(), (b > 20).sum())
    correlation = np.corrcoef(a[both], b[both])[0, 1]
    print(f"sagittal vs axial conformed: r = {correlation:.3f}")
    assert correlation > 0.95
    # Where both fields of view hold head, the intensity sits in the same place (no shift).
    centre_a = np.array(ndimage.center_of_mass(np.where(both, a, 0)))
    centre_b = np.array(ndimage.center_of_mass(np.where(both, b, 0)))
    assert np.linalg.norm(centre_a - centre_b) < 0.5  # mm (1 mm voxels)
    # The same intensity scale within a few percent: the robust maximum is measured on each
    # series as acquired, and resampling softens the brightest voxels a little.
    ratio = np.median(b[both]) / np.median(a[both])
    print(f"median intensity axial / sagittal: {ratio:.3f}")
    assert 0.93 < ratio < 1.07


def test_robust_range_ignores_background_and_a_few_bright_voxels(t1):
    data = t1.array
    low, high = robust_range(data)
    assert low == data.min()
    nonzero = np.sort(data[data != 0])
    exact = nonzero[len(nonzero) - int(0.001 * len(nonzero))]  # where the top 0.1 % begin
    bin_width = (data.max() - data.min()) / 1000
    assert exact - 4 * bin_width <= high <= exact
    # A wider field of view (more air around the head) does not change the scale...
    assert robust_range(np.pad(data, 60)) == (low, high)
    # ...and neither do a handful of very bright voxels (vessels, fat, artefacts).
    spiked = data.copy()
    spiked.flat[:: data.size // 50] = data.max() * 3
    assert robust_range(spiked)[1] == pytest.approx(high, rel=0.05)
