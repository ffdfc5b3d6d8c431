"""Multi-scale patches around lesion candidates, the classifier's input.

Each candidate is seen at two scales, both centred on its centre of mass and sampled along
the patient's axes (LPS), so that every scanner's grid gives the same picture:

* 32 mm across at 1 mm: the candidate's own shape and texture (a nodule is round, a vessel
  is a tube, a scar is a strand);
* 64 mm across at 2 mm: its surroundings (a vessel continues, a tumour sits in lung, the
  diaphragm is a dome under the lung).

At each scale two channels: HU (clipped to -1000..400, scaled to about -1..1) and the
candidate's own mask (which object is being judged when several touch). A slice spacing of
5-10 mm shows as blur along z at 1 mm, which the training augments for.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import ndimage

from medvision.dicom import Volume
from medvision.pipelines.lung_ct._candidates import Crop

PATCH = 32
SCALES_MM = (1.0, 2.0)
CHANNELS = 2 * len(SCALES_MM)
HU_RANGE = (-1000.0, 400.0)


def normalise_hu(hu: np.ndarray) -> np.ndarray:
    lo, hi = HU_RANGE
    return ((np.clip(hu, lo, hi) - (lo + hi) / 2) / ((hi - lo) / 2)).astype(np.float32)


def _grid(scale_mm: float) -> np.ndarray:
    """Offsets (mm) of the patch's sample points along one axis, centred on 0."""
    return (np.arange(PATCH) - (PATCH - 1) / 2.0) * scale_mm


def candidate_patches(volume: Volume, crops: Sequence[Crop]) -> np.ndarray:
    """``(N, CHANNELS, PATCH, PATCH, PATCH)`` float32, axes (z, y, x) in LPS order."""
    out = np.zeros((len(crops), CHANNELS, PATCH, PATCH, PATCH), dtype=np.float32)
    to_voxel = np.linalg.inv(volume.affine)
    hu = volume.array
    for n, crop in enumerate(crops):
        k, j, i = crop.centroid
        centre = volume.affine @ np.array([i, j, k, 1.0])
        for s, scale in enumerate(SCALES_MM):
            g = _grid(scale)
            z, y, x = np.meshgrid(g, g, g, indexing="ij")
            lps = (
                np.stack([x.ravel(), y.ravel(), z.ravel(), np.ones(x.size)])
                + np.r_[centre[:3], 0.0][:, None]
            )
            ijk = (to_voxel @ lps)[:3]
            kji = ijk[::-1]
            # Sample from a crop of the volume around the points (cheaper than the whole).
            lo = np.maximum(np.floor(kji.min(axis=1)).astype(int) - 1, 0)
            hi = np.minimum(np.ceil(kji.max(axis=1)).astype(int) + 2, hu.shape)
            if np.any(hi <= lo):
                out[n, 2 * s] = -1.0
                continue
            region = tuple(slice(a, b) for a, b in zip(lo, hi, strict=True))
            local = kji - lo[:, None]
            values = ndimage.map_coordinates(
                hu[region], local, order=1, mode="constant", cval=HU_RANGE[0]
            )
            out[n, 2 * s] = normalise_hu(values).reshape(PATCH, PATCH, PATCH)
            mask = np.zeros(tuple(hi - lo), dtype=np.float32)
            inter = [
                (max(b.start, a), min(b.stop, c)) for b, a, c in zip(crop.box, lo, hi, strict=True)
            ]
            if all(a < b for a, b in inter):
                dst = tuple(slice(a - o, b - o) for (a, b), o in zip(inter, lo, strict=True))
                src = tuple(
                    slice(a - b.start, c - b.start)
                    for (a, c), b in zip(inter, crop.box, strict=True)
                )
                mask[dst] = crop.mask[src]
            out[n, 2 * s + 1] = ndimage.map_coordinates(
                mask, local, order=1, mode="constant"
            ).reshape(PATCH, PATCH, PATCH)
    return out


__all__ = ["CHANNELS", "PATCH", "SCALES_MM", "candidate_patches", "normalise_hu"]
