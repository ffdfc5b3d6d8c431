"""Measurements of one segment on the grid of its source volume.

Everything here works in physical units taken from the volume's own geometry (spacing and
direction), so a mask on an anisotropic grid (0.8 mm pixels, 5 mm slices) measures the same
object as it would on an isotropic one.

Diameter method (RECIST-style, documented because readers compare it with their calipers):

* On each axial slice the lesion's outline is the 0.5 iso-contour of the binary slice
  (marching squares, ``skimage.measure.find_contours``): it runs halfway between inside and
  outside pixel centres, where the edge of a digitised object lies. A 20-pixel row of
  0.7 mm pixels is 14.0 mm long; a digital disk measures its diameter within half a pixel.
* The **long axis** on a slice is the largest distance between two contour points, in mm
  from the volume's spacing and direction (only convex-hull vertices are compared, which
  gives the same answer faster).
* The **short axis** is measured on the slice of the longest long axis by projecting the
  contour onto the in-plane direction perpendicular to the long axis (the spread of the
  projections). For convex, roughly symmetric lesions this equals RECIST's longest
  perpendicular chord; for irregular ones it can be larger, never smaller.
* The lesion's long axis is the largest over all slices; ``long_axis_slice`` says where.
"""

from __future__ import annotations

import numpy as np
from scipy.spatial import ConvexHull, QhullError
from skimage.measure import find_contours as measure_contours

from medvision.dicom import Volume
from medvision.findings._model import Measurements

# Above this many boundary points, compare only convex-hull vertices (same answer, faster).
_HULL_ABOVE = 64


def measure(mask: np.ndarray, volume: Volume, *, lesion: bool) -> Measurements:
    """Measure ``mask`` (boolean, shape == volume.shape) on ``volume``.

    ``lesion=True`` adds the long and short axis; organs get ``None`` there because a
    diameter of a lung means nothing to a reader. Raises ``ValueError`` for an empty mask or
    a mask on another grid, because a finding without voxels must never be reported.
    """
    mask = np.asarray(mask)
    if mask.shape != volume.shape:
        raise ValueError(f"Mask shape {mask.shape} does not match volume shape {volume.shape}.")
    mask = mask.astype(bool, copy=False)
    kji = np.argwhere(mask)
    if kji.size == 0:
        raise ValueError("Cannot measure an empty mask.")

    values = volume.array[mask]
    centroid_kji = kji.mean(axis=0)
    centroid_lps = volume.index_to_lps(centroid_kji)
    centroid_slice = _nearest_occupied_slice(kji[:, 0], float(centroid_kji[0]))

    long_mm: float | None = None
    short_mm: float | None = None
    long_slice: int | None = None
    if lesion:
        long_mm, short_mm, long_slice = axial_diameters(mask, volume)

    return Measurements(
        volume_ml=float(kji.shape[0] * volume.voxel_volume_mm3 / 1000.0),
        mean_hu=float(values.mean()),
        max_hu=float(values.max()),
        centroid_lps=(float(centroid_lps[0]), float(centroid_lps[1]), float(centroid_lps[2])),
        centroid_slice=centroid_slice,
        centroid_sop_instance_uid=volume.sop_instance_uids[centroid_slice],
        long_axis_mm=long_mm,
        short_axis_mm=short_mm,
        long_axis_slice=long_slice,
    )


def axial_diameters(mask: np.ndarray, volume: Volume) -> tuple[float, float, int]:
    """Longest in-plane diameter over all slices, its perpendicular width, and its slice.

    See the module docstring for the method. ``mask`` must not be empty.
    """
    # In-plane physical axes: columns of direction scaled by the pixel spacing (mm per index).
    e_i = volume.direction[:, 0] * volume.spacing[0]
    e_j = volume.direction[:, 1] * volume.spacing[1]
    best: tuple[float, float, int] | None = None
    for k in np.flatnonzero(mask.any(axis=(1, 2))):
        plane = mask[k]
        long_mm, unit = _long_axis(plane, e_i, e_j)
        if best is None or long_mm > best[0] + 1e-9:
            short_mm = _perpendicular_width(plane, e_i, e_j, unit)
            best = (long_mm, short_mm, int(k))
    if best is None:
        raise ValueError("Cannot measure diameters of an empty mask.")
    return best


def _contour_points(plane: np.ndarray, e_i: np.ndarray, e_j: np.ndarray) -> np.ndarray:
    """Physical in-plane positions (mm, LPS axes, no origin) of the slice's 0.5 iso-contour.

    Marching squares on the binary slice puts each contour point halfway between an inside
    and an outside pixel centre: that is where the object's edge is when a pixel was counted
    as inside because more than half of it was.
    """
    padded = np.pad(plane.astype(np.float32), 1)
    contours = measure_contours(padded, 0.5)
    ji = np.concatenate(contours, axis=0) - 1.0
    return ji[:, 1:2] * e_i[None, :] + ji[:, 0:1] * e_j[None, :]


def _long_axis(plane: np.ndarray, e_i: np.ndarray, e_j: np.ndarray) -> tuple[float, np.ndarray]:
    """Largest distance between two contour points of one slice, and its unit direction."""
    pts = _contour_points(plane, e_i, e_j)
    if pts.shape[0] > _HULL_ABOVE:
        try:
            pts = pts[ConvexHull(_plane_coords(pts, e_i, e_j)).vertices]
        except QhullError:  # degenerate (collinear) contour: compare every point
            pass
    diff = pts[:, None, :] - pts[None, :, :]
    dist = np.linalg.norm(diff, axis=-1)
    a, b = np.unravel_index(int(np.argmax(dist)), dist.shape)
    return float(dist[a, b]), diff[a, b] / dist[a, b]


def _perpendicular_width(
    plane: np.ndarray, e_i: np.ndarray, e_j: np.ndarray, unit: np.ndarray
) -> float:
    """Spread of the slice's contour along the in-plane direction perpendicular to ``unit``."""
    perp = np.cross(np.cross(e_i, e_j), unit)
    perp /= np.linalg.norm(perp)
    proj = _contour_points(plane, e_i, e_j) @ perp
    return float(proj.max() - proj.min())


def _plane_coords(pts: np.ndarray, e_i: np.ndarray, e_j: np.ndarray) -> np.ndarray:
    """2-D coordinates of points in the slice plane (orthonormal in-plane basis), for the hull."""
    u = e_i / np.linalg.norm(e_i)
    v = e_j - (e_j @ u) * u
    v /= np.linalg.norm(v)
    return np.stack([pts @ u, pts @ v], axis=1)


def _nearest_occupied_slice(ks: np.ndarray, centre_k: float) -> int:
    """The slice nearest the centroid that holds mask voxels.

    A C-shaped mask can have its centre of mass on a slice it does not touch; a reader sent
    to that slice would see nothing, so point at the nearest slice that shows the finding.
    """
    occupied = np.unique(ks)
    return int(occupied[np.argmin(np.abs(occupied - centre_k))])


__all__ = ["axial_diameters", "measure"]
