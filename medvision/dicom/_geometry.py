"""Slice geometry: orientation labels, sorting along the slice normal, and the checks that
decide whether a set of image planes forms one regular volume.

Everything here works on plain numbers (positions, direction cosines), not on datasets, so
the rules can be tested without DICOM files and are shared by classic single-frame series
and Enhanced multi-frame objects alike.

Tolerances (documented in docs/dicom-input.md):

* orientation: all planes must share ImageOrientationPatient within ``ORIENTATION_TOL``
  (absolute, on direction cosines; 1e-3 is about 0.06 degrees);
* duplicates: two planes closer than ``DUPLICATE_TOL_MM`` along the normal are one position;
* gaps: a gap that is a whole multiple (2x, 3x...) of the median gap, within the spacing
  tolerance, is reported as missing slices;
* spacing: every plane must lie within ``max(SPACING_TOL_MM, SPACING_TOL_REL * spacing)``
  (0.01 mm or 5% of the slice spacing) of the regular grid through the first and last
  plane, where ``spacing = (last - first) / (n - 1)``;
* tilt: a plane may sit at most ``max(TILT_TOL_MM, TILT_TOL_REL * pixel)`` off the line
  through the first plane along the normal; more is a gantry tilt and is refused.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from medvision.errors import GeometryError

ORIENTATION_TOL = 1e-3
DUPLICATE_TOL_MM = 1e-3
SPACING_TOL_MM = 0.01
SPACING_TOL_REL = 0.05
TILT_TOL_MM = 0.01
TILT_TOL_REL = 0.1
#: A plane whose normal is within this many degrees of a patient axis is named after it.
NAMED_PLANE_MAX_DEG = 30.0


def orientation_label(iop: tuple[float, ...] | list[float] | None) -> str:
    """AXIAL, CORONAL, SAGITTAL or OBLIQUE from ImageOrientationPatient ("" if unusable).

    The label follows the patient axis closest to the slice normal; a normal more than
    ``NAMED_PLANE_MAX_DEG`` from every axis is OBLIQUE. A 20 degree gantry tilt is still
    AXIAL here: pipelines select on this label, the loader refuses the tilt itself.
    """
    if iop is None or len(iop) != 6:
        return ""
    try:
        row = np.asarray([float(v) for v in iop[:3]])
        col = np.asarray([float(v) for v in iop[3:]])
    except (TypeError, ValueError):
        return ""
    normal = np.cross(row, col)
    norm = float(np.linalg.norm(normal))
    if not np.isfinite(norm) or norm < 1e-6:
        return ""
    normal = np.abs(normal / norm)
    axis = int(np.argmax(normal))
    if normal[axis] < np.cos(np.deg2rad(NAMED_PLANE_MAX_DEG)):
        return "OBLIQUE"
    return ("SAGITTAL", "CORONAL", "AXIAL")[axis]


@dataclass(frozen=True)
class Plane:
    """One image frame's place in space, plus a short name for messages."""

    position: tuple[float, float, float]
    orientation: tuple[float, float, float, float, float, float]
    #: (row spacing, column spacing) as in PixelSpacing.
    pixel_spacing: tuple[float, float]
    #: e.g. "instance 12" or "frame 7 of instance 3"; used in one-line refusals.
    name: str


@dataclass(frozen=True)
class Stack:
    """The planes sorted along the normal, and the grid they lie on (ITK conventions)."""

    order: tuple[int, ...]
    origin: tuple[float, float, float]
    spacing: tuple[float, float, float]
    direction: np.ndarray


def stack_planes(
    planes: list[Plane],
    label: str,
    *,
    single_slice_spacing: float | None = None,
    header_tilt_deg: float | None = None,
) -> Stack:
    """Sort ``planes`` along their common normal and check they form a regular volume.

    Raises :class:`GeometryError` naming ``label`` (the series) and the problem: mixed
    orientations or pixel spacings, gantry tilt, several volumes in one series, duplicate
    positions, missing positions (gaps) or non-uniform spacing.
    """
    if not planes:
        raise GeometryError(f"{label}: no image planes to stack.")
    ori = np.asarray([p.orientation for p in planes], dtype=np.float64)
    if np.any(np.abs(ori - ori[0]) > ORIENTATION_TOL):
        distinct = {tuple(np.round(o, 3)) for o in ori}
        raise GeometryError(
            f"{label}: mixed orientations ({len(distinct)} different ImageOrientationPatient "
            "values); the slices do not form one volume."
        )
    pix = np.asarray([p.pixel_spacing for p in planes], dtype=np.float64)
    if np.any(np.abs(pix - pix[0]) > 1e-4 * np.maximum(pix[0], 1.0)):
        raise GeometryError(f"{label}: mixed pixel spacings; the slices do not form one volume.")
    row = ori[0, :3] / np.linalg.norm(ori[0, :3])
    col = ori[0, 3:] / np.linalg.norm(ori[0, 3:])
    if abs(float(row @ col)) > 1e-3:
        raise GeometryError(f"{label}: ImageOrientationPatient row and column are not orthogonal.")
    normal = np.cross(row, col)
    normal /= np.linalg.norm(normal)
    direction = np.stack([row, col, normal], axis=1)

    pos = np.asarray([p.position for p in planes], dtype=np.float64)
    dist = pos @ normal
    order = np.argsort(dist, kind="stable")
    dist = dist[order]
    pos = pos[order]
    col_spacing, row_spacing = float(pix[0, 1]), float(pix[0, 0])

    if len(planes) == 1:
        sk = single_slice_spacing if single_slice_spacing and single_slice_spacing > 0 else 1.0
        return Stack(
            tuple(int(i) for i in order), _xyz(pos[0]), (col_spacing, row_spacing, sk), direction
        )

    _check_tilt(pos, dist, normal, min(row_spacing, col_spacing), label, header_tilt_deg)
    _check_positions(dist, label, [planes[i].name for i in order])
    sk = float((dist[-1] - dist[0]) / (len(dist) - 1))
    return Stack(
        tuple(int(i) for i in order), _xyz(pos[0]), (col_spacing, row_spacing, sk), direction
    )


def _xyz(v: np.ndarray) -> tuple[float, float, float]:
    return (float(v[0]), float(v[1]), float(v[2]))


def _check_tilt(
    pos: np.ndarray,
    dist: np.ndarray,
    normal: np.ndarray,
    pixel: float,
    label: str,
    header_tilt_deg: float | None,
) -> None:
    """Refuse planes that step sideways as they advance: a tilted gantry (or a sheared stack).

    ITK quietly builds such a series as if it were not sheared, which misplaces every voxel
    off the first slice by up to ``extent * tan(tilt)``; we refuse instead (see docs).
    """
    lateral = (pos - pos[0]) - np.outer(dist - dist[0], normal)
    off = np.linalg.norm(lateral, axis=1)
    if float(off.max()) <= max(TILT_TOL_MM, TILT_TOL_REL * pixel):
        return
    span = pos[-1] - pos[0]
    along = float(abs(span @ normal)) / max(float(np.linalg.norm(span)), 1e-9)
    angle = float(np.degrees(np.arccos(min(1.0, along))))
    header = f", GantryDetectorTilt {header_tilt_deg:g}" if header_tilt_deg else ""
    raise GeometryError(
        f"{label}: gantry tilt of {angle:.1f} degrees{header} (slice positions step sideways "
        f"by up to {off.max():.1f} mm instead of following the slice normal); tilted series "
        "are refused, not resampled."
    )


def _check_positions(dist: np.ndarray, label: str, names: list[str]) -> None:
    gaps = np.diff(dist)
    dup = np.flatnonzero(gaps <= DUPLICATE_TOL_MM)
    if dup.size:
        # Group equal positions: the same count at every position means several volumes.
        groups = np.split(dist, np.flatnonzero(gaps > DUPLICATE_TOL_MM) + 1)
        counts = {len(g) for g in groups}
        if len(counts) == 1 and len(groups) > 1:
            raise GeometryError(
                f"{label}: {len(dist)} frames at {len(groups)} slice positions "
                f"({counts.pop()} per position): several volumes (time points or contrasts) in "
                "one series are not supported."
            )
        i = int(dup[0])
        raise GeometryError(
            f"{label}: duplicate slice positions ({dup.size} in all; the first at "
            f"{dist[i]:.2f} mm along the normal, {names[i]} and {names[i + 1]})."
        )
    step = float(np.median(gaps))
    tol = max(SPACING_TOL_MM, SPACING_TOL_REL * step)
    big = np.flatnonzero(gaps > 1.5 * step)
    if big.size:
        ratios = gaps[big] / step
        if np.all(np.abs(ratios - np.round(ratios)) * step <= tol):
            missing = int(np.sum(np.round(ratios) - 1))
            i = int(big[0])
            raise GeometryError(
                f"{label}: missing slice positions: about {missing} slice(s) missing "
                f"(first gap {gaps[i]:.2f} mm between {names[i]} and {names[i + 1]}, "
                f"expected {step:.2f} mm)."
            )
    sk = (dist[-1] - dist[0]) / (len(dist) - 1)
    offset = dist - (dist[0] + sk * np.arange(len(dist)))
    tol = max(SPACING_TOL_MM, SPACING_TOL_REL * sk)
    worst = int(np.argmax(np.abs(offset)))
    if abs(offset[worst]) > tol:
        raise GeometryError(
            f"{label}: non-uniform slice spacing: gaps from {gaps.min():.2f} to "
            f"{gaps.max():.2f} mm; {names[worst]} lies {abs(offset[worst]):.2f} mm off a regular "
            f"{sk:.3f} mm grid (tolerance {tol:.2f} mm)."
        )


__all__ = ["Plane", "Stack", "orientation_label", "stack_planes"]
