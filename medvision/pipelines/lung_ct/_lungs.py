"""Body, airway and the two lungs, by HU thresholds and connectivity.

1. Body: voxels above ``body_hu``, largest 3-D component (drops the table and the air
   outside), holes filled slice by slice so that the lungs lie inside it.
2. Lung air: below ``lung_hu`` inside the body; components under ``min_lung_component_ml``
   (bowel gas, noise) dropped.
3. Airway: followed from the top slice down. The trachea is the small (< ``airway_max_area_mm2``)
   air component nearest the body's centre line; on each slice below, the small components
   that overlap the airway of the slice above continue it. Tracking ends where the bronchi
   enter the lungs (their component is no longer small). The airway is removed, so that
   trachea and main bronchi neither count as lung nor join the two lungs.
4. Left and right: on each slice, the lungs are cut at the column with the fewest lung
   voxels within ``split_search_mm`` of the body's centre (this also cuts the anterior
   junction where the lungs touch). Patient left is +x in LPS; each side keeps its largest
   3-D component.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from medvision.dicom import Volume
from medvision.pipelines.lung_ct._morph import (
    fill_holes_per_slice,
    largest_component,
    remove_small,
)
from medvision.pipelines.lung_ct._params import LungParams


@dataclass(frozen=True)
class LungMasks:
    """The masks the lesion search and the findings are built from."""

    body: np.ndarray
    airway: np.ndarray
    left: np.ndarray
    right: np.ndarray


def segment_lungs(volume: Volume, p: LungParams) -> LungMasks:
    """Body, airway, left and right lung masks on the volume's grid."""
    hu = volume.array
    body = fill_holes_per_slice(largest_component(hu > p.body_hu))
    air = remove_small((hu < p.lung_hu) & body, p.min_lung_component_ml, volume.spacing)
    airway = track_airway(air, body, volume, p)
    lungs = air & ~ndimage.binary_dilation(airway, iterations=1)
    left, right = split_left_right(lungs, body, volume, p)
    return LungMasks(body=body, airway=airway, left=left, right=right)


def track_airway(air: np.ndarray, body: np.ndarray, volume: Volume, p: LungParams) -> np.ndarray:
    """The trachea and main bronchi, followed from the most superior slice downwards."""
    si, sj, _ = volume.spacing
    airway = np.zeros_like(air)
    head_first = volume.direction[2, 2] * 1.0 > 0  # k grows towards the head (+z, superior)
    order = range(air.shape[0] - 1, -1, -1) if head_first else range(air.shape[0])
    previous: np.ndarray | None = None
    for k in order:
        labels, n = ndimage.label(air[k])
        if n == 0:
            if previous is not None:
                break
            continue
        areas = np.bincount(labels.ravel())[1:] * si * sj
        small = {i + 1 for i in np.flatnonzero(areas < p.airway_max_area_mm2)}
        if previous is None:
            seed = _trachea_seed(labels, small, body[k], si, p)
            if seed is None:
                continue
            current = labels == seed
        else:
            touching = set(np.unique(labels[previous & (labels > 0)])) & small
            if not touching:
                break
            current = np.isin(labels, sorted(touching))
        airway[k] = current
        previous = ndimage.binary_dilation(current, iterations=2)
    return airway


def _trachea_seed(
    labels: np.ndarray, small: set[int], body: np.ndarray, column_mm: float, p: LungParams
) -> int | None:
    """The small air component nearest the body's centre column, if near enough."""
    if not small or not body.any():
        return None
    centre = np.flatnonzero(body.any(axis=0)).mean()
    ids = sorted(small)
    cols = ndimage.center_of_mass(np.ones_like(labels), labels, ids)
    offsets = [abs(c[1] - centre) * column_mm for c in cols]
    best = int(np.argmin(offsets))
    return ids[best] if offsets[best] <= p.airway_seed_max_offset_mm else None


def split_left_right(
    lungs: np.ndarray, body: np.ndarray, volume: Volume, p: LungParams
) -> tuple[np.ndarray, np.ndarray]:
    """(left, right): cut each slice near the midline where the lungs are thinnest."""
    si = volume.spacing[0]
    # +1 when the column index grows towards patient left (+x), -1 when it grows to the right.
    towards_left = 1 if volume.direction[0, 0] >= 0 else -1
    high_side = np.zeros_like(lungs)
    half = int(round(p.split_search_mm / si))
    for k in np.flatnonzero(lungs.any(axis=(1, 2))):
        body_cols = np.flatnonzero(body[k].any(axis=0))
        centre = int(round(body_cols.mean())) if body_cols.size else lungs.shape[2] // 2
        lo, hi = max(centre - half, 0), min(centre + half + 1, lungs.shape[2])
        counts = lungs[k, :, lo:hi].sum(axis=0)
        candidates = np.flatnonzero(counts == counts.min()) + lo
        cut = int(candidates[np.argmin(np.abs(candidates - centre))])
        high_side[k, :, cut:] = lungs[k, :, cut:]
    low_side = lungs & ~high_side
    left, right = (high_side, low_side) if towards_left > 0 else (low_side, high_side)
    return largest_component(left), largest_component(right)


__all__ = ["LungMasks", "segment_lungs", "split_left_right", "track_airway"]
