"""Lesion candidates: solid tissue inside the closed lung envelope, with vessel suppression.

1. Envelope: each lung, slice by slice, closed with a disk of ``envelope_close_mm`` and
   hole-filled. Closing (not just hole filling) keeps a tumour that touches the pleura or
   the mediastinum partly inside the envelope; a convex hull would take in the whole
   mediastinum and merge every juxta-mediastinal mass with the heart and aorta.
2. Solid tissue: above ``solid_hu``, inside the envelope, not lung air.
3. Small scale: opening with a disk of ``open_small_mm`` removes vessels and strands thinner
   than 5 mm. Each remaining 3-D component is kept when it passes the shape rules
   (:func:`passes_rules`). A component that fails (typically a hilar vessel tree with a
   mass hanging on it) is opened again with ``open_large_mm`` and its thick parts are
   judged one by one: the two-scale opening.
4. Kept parts grow in-plane by up to ``grow_mm`` into adjacent solid tissue outside the lung
   (the rest of a mass that bulges out of the envelope), and parts closer than ``merge_mm``
   are merged into one lesion.
5. Partial-volume rim: each lesion takes the face-adjacent voxels (in 3-D) between
   ``lung_hu`` and ``solid_hu``. A voxel above −400 HU between lung (≈ −850) and solid
   tissue (≈ +40) is more than half lesion, so the mask is the lesion's half-way boundary
   rather than the stricter ``solid_hu`` one (an 8 mm nodule loses a quarter of its volume
   to the −300 HU threshold).
6. Lesions smaller than :meth:`LungParams.min_lesion_ml` for the slice spacing, and
   diaphragm domes (:func:`is_diaphragm_dome`), are dropped.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from medvision.dicom import Volume
from medvision.pipelines.lung_ct._lungs import LungMasks
from medvision.pipelines.lung_ct._morph import FACES, IN_PLANE, close_fill_2d, open_2d
from medvision.pipelines.lung_ct._params import LungParams


@dataclass(frozen=True)
class Candidate:
    """One lesion candidate: its mask, the features it was judged on, its confidence.

    The mask is kept on its bounding box (``box``, ``local``): a chest CT has tens of
    candidates, and building and scanning a full-grid mask for each cost seconds on a
    261-slice scan. :attr:`mask` gives the full-grid mask when a caller needs it.
    """

    #: Bounding box of the mask on the volume's grid, and the mask on it (the solid part
    #: and its partial-volume rim).
    box: tuple[slice, slice, slice]
    local: np.ndarray
    shape: tuple[int, int, int]
    #: Volume of the mask (the reported volume); the features below are the solid part's.
    volume_ml: float
    slices: int
    mean_hu: float
    #: z extent (mm) over the equivalent diameter of the largest cross-section (vessels >> 1).
    z_elongation: float
    #: voxels / bounding-box voxels: a compact nodule ~0.5, a branching vessel tree < 0.1.
    bbox_fill: float
    confidence: float
    left: bool

    @property
    def mask(self) -> np.ndarray:
        """The mask on the volume's full grid."""
        out = np.zeros(self.shape, dtype=bool)
        out[self.box] = self.local
        return out


CONFIDENCE_METHOD = (
    "classical heuristic: logistic function of hand-set weights over bounding-box fill, "
    "log volume, z-elongation and distance of mean HU from 30 HU; not a calibrated "
    "probability (lung-ct 1.1.0, see docs/pipelines.md)"
)


def find_lesions(
    volume: Volume,
    lungs: LungMasks,
    p: LungParams,
    envelopes: tuple[np.ndarray, np.ndarray] | None = None,
) -> list[Candidate]:
    """Lesion candidates, largest first.

    ``envelopes`` = (left, right) from :func:`lung_envelopes` when the caller already has
    them (the learned filter's generator uses them twice); computed here otherwise.
    """
    pixel = (volume.spacing[1], volume.spacing[0])
    lung = lungs.left | lungs.right
    env_left, env_right = envelopes or lung_envelopes(volume, lungs, p)
    solid = volume.array >= p.solid_hu
    min_ml = p.min_lesion_ml(volume.spacing[2])
    cores = open_2d((env_left | env_right) & solid & ~lung, p.open_small_mm, pixel)

    kept = np.zeros_like(cores)
    labels, _ = ndimage.label(cores)
    for index, box in enumerate(ndimage.find_objects(labels), start=1):
        part = labels[box] == index
        if passes_rules(features(part, box, volume), p, min_ml):
            kept[box] |= part
            continue
        thick = open_2d(part, p.open_large_mm, pixel)
        sub, _ = ndimage.label(thick)
        for j, sbox in enumerate(ndimage.find_objects(sub), start=1):
            piece = sub[sbox] == j
            abs_box = tuple(
                slice(b.start + s.start, b.start + s.stop) for b, s in zip(box, sbox, strict=True)
            )
            if passes_rules(features(piece, abs_box, volume), p, min_ml):
                kept[abs_box] |= piece

    if not kept.any():
        return []
    # From here on, work on the kept parts' bounding box plus what growing, merging and the
    # rim can reach (in-plane growth and merging never change k): the same result as on the
    # full grid, without full-grid passes per lesion.
    grow = int(round(p.grow_mm / min(pixel)))
    merge = max(int(round(p.merge_mm / min(pixel))), 1)
    reach = (1, grow + merge + 2, grow + merge + 2)
    (found,) = ndimage.find_objects(kept.astype(np.uint8))
    region = tuple(
        slice(max(b.start - r, 0), min(b.stop + r, n))
        for b, r, n in zip(found, reach, volume.shape, strict=True)
    )
    hu = volume.array[region]
    kept = kept[region]
    solid = solid[region]
    lung = lung[region]
    body = lungs.body[region]
    env_l = env_left[region]
    env_r = env_right[region]
    if grow > 0:
        kept = (
            ndimage.binary_dilation(
                kept, structure=IN_PLANE, iterations=grow, mask=solid & body & ~lung
            )
            | kept
        )
    groups, _ = ndimage.label(ndimage.binary_dilation(kept, structure=IN_PLANE, iterations=merge))
    groups[~kept] = 0

    # Partial-volume band: more than half lesion by the half-way rule, yet under solid_hu.
    band = (hu >= p.lung_hu) & ~solid & body
    outside = solid & ~(env_l | env_r)
    superior = 1 if volume.direction[2, 2] > 0 else -1  # +1: k grows towards the head
    taken = groups > 0  # a rim voxel goes to one lesion only
    out: list[Candidate] = []
    for index, box in enumerate(ndimage.find_objects(groups), start=1):
        if box is None:
            continue
        # Judged and scored on the solid part; measured with its partial-volume rim.
        f = features(groups[box] == index, _shift(box, region), volume)
        box = tuple(
            slice(max(b.start - 1, 0), min(b.stop + 1, n))
            for b, n in zip(box, groups.shape, strict=True)
        )
        solid_part = groups[box] == index
        rim = ndimage.binary_dilation(solid_part, structure=FACES) & band[box] & ~taken[box]
        volume_ml = float((solid_part | rim).sum()) * volume.voxel_volume_mm3 / 1000.0
        if volume_ml < min_ml:
            continue
        if is_diaphragm_dome(solid_part, outside[box], superior, p):
            continue
        mask = solid_part | rim
        taken[box] |= rim
        on_left = int((mask & env_l[box]).sum()) >= int((mask & env_r[box]).sum())
        out.append(
            Candidate(
                box=_shift(box, region),  # type: ignore[arg-type]
                local=mask,
                shape=volume.shape,
                volume_ml=volume_ml,
                slices=int(f["slices"]),
                mean_hu=f["mean_hu"],
                z_elongation=f["z_elongation"],
                bbox_fill=f["bbox_fill"],
                confidence=confidence(f),
                left=on_left,
            )
        )
    out.sort(key=lambda c: -c.volume_ml)
    return out


def _shift(box: tuple[slice, ...], region: tuple[slice, ...]) -> tuple[slice, ...]:
    """``box`` on a crop starting at ``region`` as a box on the full grid."""
    return tuple(
        slice(b.start + r.start, b.stop + r.start) for b, r in zip(box, region, strict=True)
    )


def lung_envelopes(
    volume: Volume, lungs: LungMasks, p: LungParams
) -> tuple[np.ndarray, np.ndarray]:
    """Each lung closed slice by slice with a disk of ``envelope_close_mm``, holes filled."""
    pixel = (volume.spacing[1], volume.spacing[0])
    return (
        close_fill_2d(lungs.left, p.envelope_close_mm, pixel),
        close_fill_2d(lungs.right, p.envelope_close_mm, pixel),
    )


def features(part: np.ndarray, box: tuple[slice, ...], volume: Volume) -> dict[str, float]:
    """Size, HU and shape of a component given as a mask cropped to its bounding box."""
    si, sj, sk = volume.spacing
    voxels = int(part.sum())
    per_slice = part.sum(axis=(1, 2))
    slices = int((per_slice > 0).sum())
    diameter = 2.0 * math.sqrt(float(per_slice.max()) * si * sj / math.pi)
    return {
        "volume_ml": voxels * si * sj * sk / 1000.0,
        "slices": float(slices),
        "mean_hu": float(volume.array[box][part].mean()),
        "z_elongation": slices * sk / max(diameter, 1e-6),
        "bbox_fill": voxels / float(part.size),
    }


def passes_rules(f: dict[str, float], p: LungParams, min_ml: float) -> bool:
    """Shape and size rules that separate nodules and masses from vessels, bone and noise.

    ``min_ml`` is :meth:`LungParams.min_lesion_ml` for the series' slice spacing.
    """
    return (
        f["volume_ml"] >= min_ml
        and f["slices"] >= p.min_lesion_slices
        and p.lesion_min_mean_hu <= f["mean_hu"] <= p.lesion_max_mean_hu
        and f["z_elongation"] <= p.max_z_elongation
        and f["bbox_fill"] >= p.min_bbox_fill
    )


def is_diaphragm_dome(mask: np.ndarray, outside: np.ndarray, superior: int, p: LungParams) -> bool:
    """True for the top of the liver or spleen seen through the lung base.

    Where the lung wraps over a diaphragm dome, the top of the organ below shows on a few
    slices as a solid island ringed by lung, and the envelope's hole filling takes it in.
    Unlike a nodule, which narrows towards both ends and has lung beyond them, the dome is
    widest on its most caudal slice and continues straight down into solid tissue outside
    the lung envelope. ``outside`` is that tissue; ``superior`` is +1 when the slice index
    grows towards the head, -1 otherwise. ``mask`` and ``outside`` may be crops of the
    same box, with one slice beyond the mask on each side in k unless the box meets the end
    of the volume (the slice below the dome must be in the crop when it is in the volume).
    """
    per_slice = mask.sum(axis=(1, 2))
    occupied = np.flatnonzero(per_slice)
    caudal = int(occupied[0] if superior > 0 else occupied[-1])
    below = caudal - superior
    if per_slice[caudal] < per_slice.max() or not 0 <= below < mask.shape[0]:
        return False
    continued = int((outside[below] & mask[caudal]).sum())
    return continued >= p.max_dome_continuation * int(per_slice[caudal])


def confidence(f: dict[str, float]) -> float:
    """A score in (0, 1) from the candidate's features (see :data:`CONFIDENCE_METHOD`).

    Compact, soft-tissue-dense, larger and round-in-z candidates score higher. The weights
    are set by hand from what separates nodules from vessels; they are not fitted and the
    result is a ranking aid, not a probability of malignancy.
    """
    z = (
        -0.5
        + 6.0 * (f["bbox_fill"] - 0.25)
        + 0.8 * math.log(max(f["volume_ml"], 1e-3) / 2.0)
        - 1.0 * max(f["z_elongation"] - 1.0, 0.0)
        - abs(f["mean_hu"] - 30.0) / 100.0
    )
    return round(1.0 / (1.0 + math.exp(-z)), 4)


__all__ = [
    "CONFIDENCE_METHOD",
    "Candidate",
    "confidence",
    "features",
    "find_lesions",
    "is_diaphragm_dome",
    "lung_envelopes",
    "passes_rules",
]
