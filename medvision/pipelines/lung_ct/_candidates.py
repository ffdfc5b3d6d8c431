"""A sensitive lesion candidate generator, for the learned false-positive filter to judge.

The classical rules (:func:`find_lesions` with the default :class:`LungParams`) are tuned to
report few false positives, and so miss what they were not tuned on: on the real LIDC-IDRI
scans a 24 mm ground-glass nodule (mean -665 HU) is never a candidate, because every
candidate starts as solid tissue above -300 HU. With a classifier after it, the generator
should rather find everything that might be a lesion; the classifier rejects the rest.

Two sources, merged:

1. **Solid**: :func:`find_lesions` with looser rules (:data:`SENSITIVE`): mean HU up to
   300 (contrast-filled vessels are left for the classifier to reject), half the bounding
   box fill, twice the z-elongation, from 5 mm. Tumours, nodules, vessels, hilum, scars.
2. **Ground glass**: inside the closed lung envelope, the HU smoothed over ~1.5 mm above
   :data:`GGO_HU` but below solid, opened with a 3 mm disk (vessels and their blurred halo
   are thinner) and at least :data:`GGO_MIN_DIAMETER_MM`: ground-glass nodules, and many
   look-alikes (dependent lung, atelectasis, breathing blur) for the classifier.

Candidates are kept as masks cropped to their bounding box (:class:`Crop`): a sensitive
generator gives tens of candidates, and a full-size mask of a 261-slice CT is 68 MB.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np
from scipy import ndimage

from medvision.dicom import Volume
from medvision.pipelines.lung_ct._lesions import (
    Candidate,
    confidence,
    features,
    find_lesions,
    lung_envelopes,
)
from medvision.pipelines.lung_ct._lungs import LungMasks
from medvision.pipelines.lung_ct._morph import open_2d
from medvision.pipelines.lung_ct._params import LungParams


@dataclass(frozen=True)
class Crop:
    """One candidate: its mask on its bounding box, and what the classical rules saw."""

    box: tuple[slice, slice, slice]
    mask: np.ndarray
    volume_ml: float
    mean_hu: float
    #: "solid" or "ground-glass".
    source: str
    #: The classical heuristic score (:func:`confidence`), kept for comparison.
    heuristic: float
    left: bool

    def full(self, shape: tuple[int, ...]) -> np.ndarray:
        out = np.zeros(shape, dtype=bool)
        out[self.box] = self.mask
        return out

    @property
    def centroid(self) -> np.ndarray:
        """``(k, j, i)`` of the mask's centre of mass (voxel units)."""
        return np.array(ndimage.center_of_mass(self.mask)) + [b.start for b in self.box]


def crop_of(c: Candidate, source: str) -> Crop:
    """The candidate cropped to the tight bounding box of its mask."""
    (tight,) = ndimage.find_objects(c.local.astype(np.uint8))
    box = tuple(
        slice(b.start + t.start, b.start + t.stop) for b, t in zip(c.box, tight, strict=True)
    )
    return Crop(
        box,  # type: ignore[arg-type]
        c.local[tight].copy(),
        c.volume_ml,
        c.mean_hu,
        source,
        c.confidence,
        c.left,
    )


#: The solid generator's rules, looser than the reporting defaults (see the module text).
SENSITIVE = {
    "lesion_min_mean_hu": -400.0,
    "lesion_max_mean_hu": 300.0,
    "max_z_elongation": 5.0,
    "min_bbox_fill": 0.08,
    "min_lesion_diameter_mm": 5.0,
}
#: Smoothed HU above which lung is denser than normal parenchyma (about -850 HU).
GGO_HU = -750.0
GGO_SMOOTH_MM = 1.5
GGO_OPEN_MM = 3.0
GGO_MIN_DIAMETER_MM = 6.0


def sensitive_params(p: LungParams) -> LungParams:
    return replace(p, **SENSITIVE)


def find_candidates(volume: Volume, lungs: LungMasks, p: LungParams) -> list[Crop]:
    """Solid and ground-glass candidates, solid first, largest first within each."""
    envelopes = lung_envelopes(volume, lungs, p)
    found = find_lesions(volume, lungs, sensitive_params(p), envelopes)
    taken = np.zeros(volume.shape, dtype=bool)
    solid = []
    for c in found:
        taken[c.box] |= c.local
        solid.append(crop_of(c, "solid"))
    return solid + ground_glass(volume, lungs, p, taken, envelopes)


def ground_glass(
    volume: Volume,
    lungs: LungMasks,
    p: LungParams,
    taken: np.ndarray,
    envelopes: tuple[np.ndarray, np.ndarray] | None = None,
) -> list[Crop]:
    """Ground-glass candidates that do not touch ``taken`` (the solid candidates)."""
    pixel = (volume.spacing[1], volume.spacing[0])
    env_left, env_right = envelopes or lung_envelopes(volume, lungs, p)
    env = env_left | env_right
    # Work on the envelope's bounding box only: the smoothing is the costly step.
    box = _bounding_box(env)
    if box is None:
        return []
    hu = volume.array[box]
    sigma = [GGO_SMOOTH_MM / s for s in (volume.spacing[2], volume.spacing[1], volume.spacing[0])]
    smooth = ndimage.gaussian_filter(hu, sigma=sigma)
    dense = (smooth > GGO_HU) & env[box]
    glass = open_2d(dense, GGO_OPEN_MM, pixel) & (smooth < p.solid_hu) & ~taken[box]
    labels, _ = ndimage.label(glass, structure=np.ones((3, 3, 3), bool))
    min_ml = math.pi / 6.0 * GGO_MIN_DIAMETER_MM**3 / 1000.0
    min_voxels = min_ml * 1000.0 / volume.voxel_volume_mm3
    taken_box = taken[box]
    out = []
    for index, sub in enumerate(ndimage.find_objects(labels), start=1):
        if sub is None:
            continue
        part = labels[sub] == index
        if part.sum() < min_voxels:  # a speck: skipped before the costlier checks
            continue
        # Touching a solid candidate: its halo (the ground-glass rim of a part-solid nodule
        # or of a tumour), not a lesion of its own. Looked for one voxel beyond the
        # component's box too: a halo capping a tumour touches it across the box's face.
        near = tuple(
            slice(max(s.start - 1, 0), min(s.stop + 1, n))
            for s, n in zip(sub, labels.shape, strict=True)
        )
        grown = np.zeros([s.stop - s.start for s in near], bool)
        grown[
            tuple(
                slice(s.start - g.start, s.stop - g.start) for s, g in zip(sub, near, strict=True)
            )
        ] = part
        if (taken_box[near] & ndimage.binary_dilation(grown)).any():
            continue
        abs_box = tuple(
            slice(b.start + s.start, b.start + s.stop) for b, s in zip(box, sub, strict=True)
        )
        f = features(part, abs_box, volume)
        if f["volume_ml"] < min_ml or f["slices"] < p.min_lesion_slices:
            continue
        on_left = int((part & env_left[abs_box]).sum()) >= int((part & env_right[abs_box]).sum())
        out.append(
            Crop(
                abs_box,  # type: ignore[arg-type]
                part,
                f["volume_ml"],
                f["mean_hu"],
                "ground-glass",
                confidence(f),
                on_left,
            )
        )
    out.sort(key=lambda c: -c.volume_ml)
    return out


def _bounding_box(mask: np.ndarray) -> tuple[slice, slice, slice] | None:
    """The bounding box of a 3-D mask from its projections (None when empty); cheaper than
    ``find_objects`` on a full-grid mask."""
    k, j, i = (np.flatnonzero(mask.any(axis=a)) for a in ((1, 2), (0, 2), (0, 1)))
    if not len(k):
        return None
    return slice(k[0], k[-1] + 1), slice(j[0], j[-1] + 1), slice(i[0], i[-1] + 1)


__all__ = [
    "GGO_HU",
    "SENSITIVE",
    "Crop",
    "crop_of",
    "find_candidates",
    "ground_glass",
    "sensitive_params",
]
