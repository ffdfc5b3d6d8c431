"""Solid lung nodules: what the caller asks for, and the exact voxels each one covers.

A nodule's coverage of each voxel is measured by supersampling (5 x 5 x 5 points per voxel),
not by a distance ramp, because small nodules on thick slices are where partial volume
matters most: a 6 mm nodule on 3 mm slices is mostly edge. The image is painted with that
coverage, and the ground-truth mask is "coverage >= 1/2", which is what a threshold half-way
between nodule and lung recovers from the image.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from medvision.synthetic.anatomy import SCAN_CENTER_Z_MM, Grid, Window

#: Supersampling points per voxel edge.
SUBSAMPLES = 5
#: A nodule, grown by this much, must lie wholly in one lung (off the chest wall, the
#: mediastinum and the diaphragm): an isolated nodule, as the detection tests assume.
LUNG_MARGIN_MM = 3.0


@dataclass(frozen=True)
class NoduleSpec:
    """A solid nodule: an axis-aligned ellipsoid of uniform density inside a lung.

    ``center_lps_mm`` is in patient LPS (x to the patient's left, y posterior, z to the
    head), on the same table coordinates as the images; see :func:`default_nodules` for
    positions that fit the phantom. Semi-axes are ``diameter_mm / 2 * axis_ratios``.
    """

    center_lps_mm: tuple[float, float, float]
    diameter_mm: float
    hu: float = 45.0
    axis_ratios: tuple[float, float, float] = (1.0, 1.0, 1.0)

    def __post_init__(self) -> None:
        if len(self.center_lps_mm) != 3:
            raise ValueError(f"center_lps_mm needs 3 values (x, y, z), got {self.center_lps_mm}.")
        if not 3.0 <= self.diameter_mm <= 40.0:
            raise ValueError(f"Nodule diameter must be 3-40 mm, got {self.diameter_mm}.")
        if not -300.0 <= self.hu <= 300.0:
            raise ValueError(f"A solid nodule's HU must be -300..300, got {self.hu}.")
        if len(self.axis_ratios) != 3 or not all(0.5 <= r <= 2.0 for r in self.axis_ratios):
            raise ValueError(f"axis_ratios must be 3 values in 0.5-2.0, got {self.axis_ratios}.")

    @property
    def semi_axes_mm(self) -> tuple[float, float, float]:
        r = self.diameter_mm / 2.0
        return (r * self.axis_ratios[0], r * self.axis_ratios[1], r * self.axis_ratios[2])

    @property
    def side(self) -> str:
        """The lung it must be in: patient left is +x in LPS."""
        return "left" if self.center_lps_mm[0] > 0 else "right"


def default_nodules(center_z: float = SCAN_CENTER_Z_MM) -> list[NoduleSpec]:
    """Three nodules of different sizes at different levels, at least one per lung: right
    upper zone 12 mm, left lower zone 20 mm (slightly ellipsoidal), right lower zone 8 mm."""
    return [
        NoduleSpec((-70.0, -5.0, center_z + 30.0), 12.0, hu=40.0),
        NoduleSpec((80.0, 40.0, center_z - 35.0), 20.0, hu=50.0, axis_ratios=(1.0, 0.9, 1.1)),
        NoduleSpec((-95.0, 30.0, center_z - 20.0), 8.0, hu=35.0),
    ]


def occupancy(
    spec: NoduleSpec, grid: Grid, k: int, grow_mm: float = 0.0
) -> tuple[Window, np.ndarray] | None:
    """Fraction of each voxel of slice ``k`` inside the ellipsoid (grown by ``grow_mm``),
    on the smallest window that holds it; ``None`` when the slice misses it."""
    cx, cy, cz = spec.center_lps_mm
    ax, ay, az = (s + grow_mm for s in spec.semi_axes_mm)
    z = grid.z(k)
    if abs(z - cz) > az + grid.slice_mm:
        return None
    w = grid.window(cx, cy, ax, ay)
    offsets = (np.arange(SUBSAMPLES) + 0.5) / SUBSAMPLES - 0.5
    xs = grid.xs[w[1]][:, None] + offsets[None, :] * grid.pixel_mm
    ys = grid.ys[w[0]][:, None] + offsets[None, :] * grid.pixel_mm
    zs = z + offsets * grid.slice_mm
    qx, qy, qz = ((xs - cx) / ax) ** 2, ((ys - cy) / ay) ** 2, ((zs - cz) / az) ** 2
    inside = (qy[:, None, :, None, None] + qx[None, :, None, :, None] + qz) <= 1.0
    frac = inside.mean(axis=(2, 3, 4)).astype(np.float32)
    if not frac.any():
        return None
    return w, frac
