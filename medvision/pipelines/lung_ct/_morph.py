"""Per-slice morphology in millimetres, and the MONAI transforms used on binary masks.

Slices are 0.6-1 mm pixels but 1-5 mm apart, so a ball in voxels is not a ball in the
patient. Closing and opening are therefore done slice by slice with a disk of a radius in
mm, through Euclidean distance transforms with the pixel spacing (exact disks, and much
faster than a structuring element of 25+ pixels). MONAI has no anisotropic disk morphology;
where MONAI has the operation (largest component, hole filling, small objects) we use it.
"""

from __future__ import annotations

import warnings

import numpy as np
from monai.transforms import FillHoles, KeepLargestConnectedComponent, RemoveSmallObjects
from scipy import ndimage

_FILL_2D = FillHoles(applied_labels=[1], connectivity=1)
_LARGEST = KeepLargestConnectedComponent(applied_labels=[1], connectivity=1)


def largest_component(mask: np.ndarray) -> np.ndarray:
    """The largest face-connected 3-D component (MONAI ``KeepLargestConnectedComponent``)."""
    if not mask.any():
        return mask.copy()
    return np.asarray(_LARGEST(mask[None].astype(np.uint8))[0]).astype(bool)


def fill_holes_per_slice(mask: np.ndarray) -> np.ndarray:
    """Fill enclosed holes in each axial slice (MONAI ``FillHoles`` on a 2-D image).

    Per slice, because in 3-D the airway opens the lungs to the top of the volume and a
    3-D fill would not close them.
    """
    out = np.zeros_like(mask, dtype=bool)
    for k in np.flatnonzero(mask.any(axis=(1, 2))):
        out[k] = np.asarray(_FILL_2D(mask[k][None].astype(np.uint8))[0]).astype(bool)
    return out


def remove_small(
    mask: np.ndarray, min_ml: float, spacing: tuple[float, float, float]
) -> np.ndarray:
    """Drop components under ``min_ml`` (MONAI ``RemoveSmallObjects`` measured in mm³)."""
    if not mask.any():
        return mask.copy()
    pixdim = (spacing[2], spacing[1], spacing[0])  # array axes are (k, j, i)
    small = RemoveSmallObjects(min_size=min_ml * 1000.0, by_measure=True, pixdim=pixdim)
    with warnings.catch_warnings():
        # MONAI 1.6 passes skimage's deprecated ``min_size``; the meaning is unchanged.
        warnings.simplefilter("ignore", FutureWarning)
        return np.asarray(small(mask[None].astype(np.uint8))[0]).astype(bool)


def _bbox(mask2d: np.ndarray, pad: int) -> tuple[slice, slice]:
    rows = np.flatnonzero(mask2d.any(axis=1))
    cols = np.flatnonzero(mask2d.any(axis=0))
    h, w = mask2d.shape
    return (
        slice(max(rows[0] - pad, 0), min(rows[-1] + pad + 1, h)),
        slice(max(cols[0] - pad, 0), min(cols[-1] + pad + 1, w)),
    )


def close_fill_2d(mask: np.ndarray, radius_mm: float, pixel_mm: tuple[float, float]) -> np.ndarray:
    """Per-slice closing with a disk of ``radius_mm``, then hole filling.

    ``pixel_mm`` is (row spacing, column spacing). Each slice is cropped to the mask's box
    plus the radius, padded so that the closing is not clipped by the crop.
    """
    out = np.zeros_like(mask, dtype=bool)
    pad = int(np.ceil(radius_mm / min(pixel_mm))) + 2
    for k in np.flatnonzero(mask.any(axis=(1, 2))):
        rs, cs = _bbox(mask[k], 0)
        crop = np.pad(mask[k, rs, cs], pad)
        dilated = ndimage.distance_transform_edt(~crop, sampling=pixel_mm) <= radius_mm
        closed = ndimage.distance_transform_edt(dilated, sampling=pixel_mm) > radius_mm
        closed = ndimage.binary_fill_holes(closed | crop)[pad:-pad, pad:-pad]
        out[k, rs, cs] = closed
    return out


def open_2d(mask: np.ndarray, radius_mm: float, pixel_mm: tuple[float, float]) -> np.ndarray:
    """Per-slice opening with a disk of ``radius_mm``: removes what is thinner than 2 r."""
    out = np.zeros_like(mask, dtype=bool)
    for k in np.flatnonzero(mask.any(axis=(1, 2))):
        rs, cs = _bbox(mask[k], 0)
        crop = np.pad(mask[k, rs, cs], 1)  # a zero border: the array edge is not inside
        eroded = ndimage.distance_transform_edt(crop, sampling=pixel_mm) > radius_mm
        if not eroded.any():
            continue
        opened = ndimage.distance_transform_edt(~eroded, sampling=pixel_mm) <= radius_mm
        out[k, rs, cs] = (opened & crop)[1:-1, 1:-1]
    return out


#: Face connectivity within a slice only: growth and merging never jump between slices
#: 5 mm apart through a single voxel corner.
IN_PLANE = np.zeros((3, 3, 3), dtype=bool)
IN_PLANE[1] = ndimage.generate_binary_structure(2, 1)
#: Face connectivity in 3-D.
FACES = ndimage.generate_binary_structure(3, 1)


__all__ = [
    "FACES",
    "IN_PLANE",
    "close_fill_2d",
    "fill_holes_per_slice",
    "largest_component",
    "open_2d",
    "remove_small",
]
