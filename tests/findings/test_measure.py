"""measure(): volumes, centroids and RECIST diameters of digital shapes of known size."""

from __future__ import annotations

import math

import numpy as np
import pytest

from medvision.dicom import Volume
from medvision.findings import axis_endpoints, measure

# Anisotropic on purpose: columns 0.7 mm, rows 0.8 mm, slices 2.5 mm.
SPACING = (0.7, 0.8, 2.5)
SHAPE = (40, 96, 110)  # (k, j, i)


def make_volume(direction: np.ndarray | None = None, origin=(-30.0, 12.0, 100.0)) -> Volume:
    n = SHAPE[0]
    array = np.full(SHAPE, -800.0, dtype=np.float32)
    return Volume(
        array=array,
        origin=origin,
        spacing=SPACING,
        direction=np.eye(3) if direction is None else direction,
        frame_of_reference_uid="1.2.3.0",
        study_instance_uid="1.2.3.1",
        series_instance_uid="1.2.3.2",
        modality="CT",
        sop_instance_uids=tuple(f"1.2.3.4.{k}" for k in range(n)),
        frame_numbers=(1,) * n,
        source_headers=(),
    )


def ellipsoid(volume: Volume, centre_lps, semi_axes, angle_deg: float = 0.0) -> np.ndarray:
    """Voxels whose centre lies inside an ellipsoid, rotated in the axial plane by angle."""
    k, j, i = np.indices(volume.shape)
    xyz = volume.index_to_lps(np.stack([k, j, i], axis=-1)) - np.asarray(centre_lps)
    a = math.radians(angle_deg)
    u = xyz[..., 0] * math.cos(a) + xyz[..., 1] * math.sin(a)
    v = -xyz[..., 0] * math.sin(a) + xyz[..., 1] * math.cos(a)
    ax, ay, az = semi_axes
    return (u / ax) ** 2 + (v / ay) ** 2 + (xyz[..., 2] / az) ** 2 <= 1.0


def centre_of(volume: Volume) -> np.ndarray:
    return volume.index_to_lps(np.array([19.6, 47.3, 55.2]))


def test_sphere_volume_and_diameters_on_anisotropic_grid() -> None:
    vol = make_volume()
    centre = centre_of(vol)
    mask = ellipsoid(vol, centre, (12.0, 12.0, 12.0))
    m = measure(mask, vol, lesion=True)
    truth_ml = 4 / 3 * math.pi * 12.0**3 / 1000
    assert m.volume_ml == pytest.approx(truth_ml, rel=0.05)
    assert np.allclose(m.centroid_lps, centre, atol=0.5)
    # Diameters within one voxel of the truth (24 mm); the slice is the sphere's equator.
    assert m.long_axis_mm == pytest.approx(24.0, abs=max(SPACING[:2]))
    assert m.short_axis_mm == pytest.approx(24.0, abs=max(SPACING[:2]))
    assert m.long_axis_slice is not None and abs(m.long_axis_slice - 19.6) <= 1


def test_rotated_ellipse_long_and_short_axis() -> None:
    vol = make_volume()
    centre = centre_of(vol)
    mask = ellipsoid(vol, centre, (15.0, 7.0, 10.0), angle_deg=30.0)
    m = measure(mask, vol, lesion=True)
    assert m.long_axis_mm == pytest.approx(30.0, abs=max(SPACING[:2]))
    assert m.short_axis_mm == pytest.approx(14.0, abs=max(SPACING[:2]))
    truth_ml = 4 / 3 * math.pi * 15 * 7 * 10 / 1000
    assert m.volume_ml == pytest.approx(truth_ml, rel=0.05)


def test_centroid_follows_direction_and_origin() -> None:
    # Rows run towards patient anterior (-y), slices towards patient inferior (-z).
    direction = np.array([[1.0, 0.0, 0.0], [0.0, -1.0, 0.0], [0.0, 0.0, -1.0]])
    vol = make_volume(direction=direction)
    centre = centre_of(vol)
    mask = ellipsoid(vol, centre, (8.0, 6.0, 9.0))
    m = measure(mask, vol, lesion=True)
    assert np.allclose(m.centroid_lps, centre, atol=0.5)
    assert m.centroid_sop_instance_uid == vol.sop_instance_uids[m.centroid_slice]
    assert m.centroid_slice == 20


def test_hu_statistics_and_organ_has_no_diameters() -> None:
    array = np.full(SHAPE, -800.0, dtype=np.float32)
    array[10:12, 20:30, 20:30] = 40.0
    array[11, 25, 25] = 300.0
    vol = make_volume().with_array(array)
    mask = np.zeros(SHAPE, dtype=bool)
    mask[10:12, 20:30, 20:30] = True
    m = measure(mask, vol, lesion=False)
    assert m.max_hu == 300.0
    assert m.mean_hu == pytest.approx((199 * 40.0 + 300.0) / 200)
    assert m.volume_ml == pytest.approx(200 * 0.7 * 0.8 * 2.5 / 1000)
    assert m.long_axis_mm is None and m.short_axis_mm is None and m.long_axis_slice is None


def test_single_voxel_and_line() -> None:
    vol = make_volume()
    mask = np.zeros(SHAPE, dtype=bool)
    mask[5, 5, 5] = True
    m = measure(mask, vol, lesion=True)
    assert m.long_axis_mm == pytest.approx(0.8)  # the longer pixel edge
    mask[5, 5, 5:25] = True  # 20 columns of 0.7 mm
    m = measure(mask, vol, lesion=True)
    assert m.long_axis_mm == pytest.approx(14.0)
    assert m.short_axis_mm == pytest.approx(0.8)


def test_c_shaped_mask_points_at_a_slice_it_touches() -> None:
    vol = make_volume()
    mask = np.zeros(SHAPE, dtype=bool)
    mask[2:5, 10:20, 10:20] = True
    mask[30:33, 10:20, 10:20] = True
    m = measure(mask, vol, lesion=True)
    assert mask[m.centroid_slice].any()


def test_rejects_empty_or_misshaped_masks() -> None:
    vol = make_volume()
    with pytest.raises(ValueError, match="empty"):
        measure(np.zeros(SHAPE, dtype=bool), vol, lesion=True)
    with pytest.raises(ValueError, match="shape"):
        measure(np.ones((2, 2, 2), dtype=bool), vol, lesion=True)


def _in_mm(volume: Volume, point: tuple[float, float]) -> np.ndarray:
    """In-plane position (mm, LPS axes) of a (column, row) pixel point."""
    i, j = point
    return (
        i * volume.direction[:, 0] * volume.spacing[0]
        + j * volume.direction[:, 1] * (volume.spacing[1])
    )


@pytest.mark.parametrize("flipped", [False, True])
def test_axis_endpoints_draw_the_measured_axes(flipped: bool) -> None:
    """The ends a viewer draws measure what measure() reported, on the same slice: the long
    axis exactly, the short axis exactly and perpendicular to it, crossing it."""
    direction = np.diag([1.0, -1.0, -1.0]) if flipped else None
    vol = make_volume(direction=direction)
    mask = ellipsoid(vol, centre_of(vol), (15.0, 6.0, 8.0), angle_deg=30.0)
    m = measure(mask, vol, lesion=True)
    ends = axis_endpoints(mask[m.long_axis_slice], vol)
    a, b = (_in_mm(vol, p) for p in ends.long)
    c, d = (_in_mm(vol, p) for p in ends.short)
    assert np.linalg.norm(b - a) == pytest.approx(m.long_axis_mm, abs=1e-6)
    assert np.linalg.norm(d - c) == pytest.approx(m.short_axis_mm, abs=1e-6)
    assert abs((b - a) @ (d - c)) < 1e-6
    # the short axis crosses the long axis between its ends
    s, t = np.linalg.lstsq(np.stack([b - a, c - d], axis=1), c - a, rcond=None)[0]
    assert 0.0 <= s <= 1.0 and 0.0 <= t <= 1.0
    # both long-axis ends lie on the lesion's edge: within a pixel of a mask pixel
    plane = mask[m.long_axis_slice]
    for i, j in ends.long:
        near = plane[int(round(j)) - 1 : int(round(j)) + 2, int(round(i)) - 1 : int(round(i)) + 2]
        assert near.any()
