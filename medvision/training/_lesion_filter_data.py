"""Training candidates for the lesion filter: real ones, and synthetic lesions in real lung.

Per patient (one of the three real chest CTs), a fixed list of *variants* (seeded) is made,
and the sensitive candidate generator (:func:`find_candidates`) runs on each, exactly as it
will at inference; every candidate it returns becomes one training example:

* variant 0 is the scan as acquired: real candidates only. Positive: a candidate on a
  nodule outlined by >= 2 readers or on a radiologists' box; ignored: on a nodule by one
  reader or a reader's point mark (sub-3 mm nodule, non-nodule); negative: every other
  candidate (vessels, hilum, scars, diaphragm, atelectasis).
* variants 1.. paste 6-10 synthetic lesions (5-40 mm, solid, part-solid or ground glass,
  lobulated, half spiculated; :func:`medvision.training._data.add_lesions`) into the
  patient's *real* lung parenchyma, away from the real nodules, and then change the scan
  as another scanner would: IV contrast (soft tissue and vessels +0-150 HU), a linear HU
  gain/offset, the reconstruction kernel (Gaussian blur or unsharp-mask sharpening in the
  slice plane), the slice thickness (slab-averaged and resampled to 1-10 mm) and noise.
  Each copy also gets 1-2 large masses (25-60 mm) centred in the medial lung
  (:func:`medial_lung`), against the mediastinum and hilum, as central lung cancers are.
  Candidates on a synthetic lesion are positive, on a real nodule positive, and the rest
  negative.

The patches (:func:`candidate_patches`, float16) and labels of each variant are cached in
``<work>/candidates/<patient>/v<NN>-<key>.npz`` (key: the variant's parameters and
``DATA_VERSION``), with variant 0's candidate masks for leave-one-patient-out evaluation.
Nothing here is written into the repository.
"""

from __future__ import annotations

import hashlib
import json
import pickle
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage

from medvision.dicom import Volume
from medvision.training._lesion_cases import RealCase, load_reference, load_volume
from medvision.training._lesion_score import BoxReference, ReaderReference

#: Bumped when the way a variant is made changes, so that stale caches are rebuilt.
#: 2: central masses (:func:`medial_lung`); the generator's ground-glass halo rule.
DATA_VERSION = 2
#: Augmented copies of a thinner scan are resampled to slabs of at least this (mm): a
#: 1.25 mm copy cost twice a 2.5 mm one to make (lungs, candidates) for little: the
#: classifier sees 1 mm and 2 mm patches, and the scan's thin slices stay in its
#: as-acquired copy (variant 0).
MIN_COPY_MM = 2.5
#: Large synthetic masses centred in the medial lung, per augmented copy (inclusive range),
#: and their diameters (mm, log-uniform). Why: central lung cancers (squamous and small
#: cell carcinoma above all) are large masses against the mediastinum and hilum, where the
#: generator cuts them at the lung border and the classifier sees a mass half in soft
#: tissue; the 5-40 mm lesions drawn anywhere in the lung rarely look like that.
CENTRAL_MASSES = (1, 2)
CENTRAL_DIAMETERS_MM = (25.0, 60.0)
#: Fraction of each slice's lung voxels, nearest the midline, that :func:`medial_lung` keeps.
MEDIAL_FRACTION = 0.25
#: Variants per patient (variant 0 = as acquired).
DEFAULT_VARIANTS = 5


@dataclass(frozen=True)
class Variant:
    """How one training copy of a scan is made (all drawn from ``seed``)."""

    patient: str
    index: int
    seed: int
    synthetic: int = 0
    contrast_hu: float = 0.0
    gain: float = 1.0
    offset_hu: float = 0.0
    kernel: str = "native"  # native | smooth | sharp
    kernel_strength: float = 0.0
    thickness_mm: float | None = None  # None: as acquired
    noise_hu: float = 0.0

    @property
    def key(self) -> str:
        text = json.dumps(asdict(self) | {"data_version": DATA_VERSION}, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:12]


def plan_variants(patient: str, count: int, seed: int, native_mm: float) -> list[Variant]:
    """Variant 0 as acquired, then ``count - 1`` augmented copies with synthetic lesions
    (at least :data:`MIN_COPY_MM` thick)."""
    digest = int(hashlib.sha256(f"{patient}:{seed}".encode()).hexdigest()[:8], 16)
    rng = np.random.default_rng(digest)
    out = [Variant(patient, 0, seed)]
    for n in range(1, count):
        thick = None
        if rng.random() < 0.7:
            thick = float(np.round(rng.uniform(max(native_mm, 1.0), 10.0), 2))
        if native_mm < MIN_COPY_MM:
            thick = max(thick or 0.0, MIN_COPY_MM)
        kernel = str(rng.choice(["native", "smooth", "sharp"]))
        out.append(
            Variant(
                patient,
                n,
                int(rng.integers(2**31)),
                synthetic=int(rng.integers(6, 11)),
                contrast_hu=float(np.round(rng.uniform(0, 150), 1)) if rng.random() < 0.5 else 0.0,
                gain=float(np.round(rng.uniform(0.92, 1.08), 3)),
                offset_hu=float(np.round(rng.uniform(-25, 25), 1)),
                kernel=kernel,
                kernel_strength=float(np.round(rng.uniform(0.5, 1.5), 2)),
                thickness_mm=thick,
                noise_hu=float(np.round(rng.uniform(0, 30), 1)),
            )
        )
    return out


# -- reference regions on the scan's grid ---------------------------------------------------
def reference_regions(
    ref: ReaderReference | BoxReference, shape: tuple[int, int, int], spacing_kji: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """(positive, ignore) masks: nodules by >= 2 readers or boxes; 1-reader nodules and
    readers' point marks (a 4 mm ball around each)."""
    pos = np.zeros(shape, bool)
    ign = np.zeros(shape, bool)
    if isinstance(ref, BoxReference):
        for k, boxes in ref.boxes.items():
            for x0, y0, x1, y1 in boxes:
                pos[k, y0 : y1 + 1, x0 : x1 + 1] = True
        return pos, ign
    for nodule in ref.nodules:
        (pos if nodule.readers >= 2 else ign)[nodule.reader_count > 0] = True
    # A 4 mm ball around each point mark, drawn on its own box (a distance transform of
    # the whole scan took half a minute on the 261-slice scan).
    reach = np.ceil(4.0 / np.asarray(spacing_kji, float)).astype(int)
    for p in ref.points:
        lo = np.maximum(np.asarray(p) - reach, 0)
        hi = np.minimum(np.asarray(p) + reach + 1, shape)
        grids = np.ogrid[tuple(slice(a, b) for a, b in zip(lo, hi, strict=True))]
        d2 = sum(((g - c) * s) ** 2 for g, c, s in zip(grids, p, spacing_kji, strict=True))
        ign[tuple(slice(a, b) for a, b in zip(lo, hi, strict=True))] |= d2 <= 16.0
    return pos, ign


def medial_lung(lung: np.ndarray) -> np.ndarray:
    """The lung voxels nearest the midline, :data:`MEDIAL_FRACTION` of each slice's: the
    lung along the mediastinum and at the hilum (the midline is the slice's mean lung
    column, between the two lungs)."""
    out = np.zeros(lung.shape, bool)
    for k in np.flatnonzero(lung.any(axis=(1, 2))):
        j, i = np.nonzero(lung[k])
        d = np.abs(i - i.mean())
        near = d <= np.quantile(d, MEDIAL_FRACTION)
        out[k, j[near], i[near]] = True
    return out


# -- the scanner changes --------------------------------------------------------------------
def resample_thickness(array: np.ndarray, spacing_z: float, thickness: float) -> np.ndarray:
    """Slabs of ``thickness`` mm averaged and sampled every ``thickness`` mm along k."""
    factor = thickness / spacing_z
    if factor <= 1.0:
        return array
    size = max(1, int(round(factor)))
    slab = ndimage.uniform_filter1d(array.astype(np.float32), size=size, axis=0, mode="nearest")
    positions = np.arange(0, array.shape[0] - 1 + 1e-6, factor)
    lo = np.floor(positions).astype(int)
    hi = np.minimum(lo + 1, array.shape[0] - 1)
    w = (positions - lo)[:, None, None].astype(np.float32)
    return slab[lo] * (1 - w) + slab[hi] * w


def resample_mask(mask: np.ndarray, spacing_z: float, thickness: float) -> np.ndarray:
    factor = thickness / spacing_z
    if factor <= 1.0:
        return mask
    size = max(1, int(round(factor)))
    grown = ndimage.maximum_filter1d(mask.astype(np.uint8), size=size, axis=0)
    positions = np.round(np.arange(0, mask.shape[0] - 1 + 1e-6, factor)).astype(int)
    return grown[positions].astype(bool)


def apply_scanner(hu: np.ndarray, v: Variant, spacing_kji: np.ndarray) -> np.ndarray:
    """Contrast, gain/offset and kernel on the native grid (before thickness and noise)."""
    rng = np.random.default_rng(v.seed + 1)
    if v.contrast_hu:
        # Blood and soft tissue enhance, air and fat do not: weight by how soft-tissue-like.
        w = np.clip((hu + 100.0) / 100.0, 0.0, 1.0) * (hu < 250)
        hu = hu + v.contrast_hu * w * float(rng.uniform(0.7, 1.0))
    hu = hu * v.gain + v.offset_hu
    if v.kernel != "native":
        sigma_px = 1.0 / float(spacing_kji[1]) * 0.7 * v.kernel_strength
        blurred = ndimage.gaussian_filter(hu, sigma=(0, sigma_px, sigma_px))
        hu = blurred if v.kernel == "smooth" else hu + v.kernel_strength * (hu - blurred)
    return hu.astype(np.float32)


def add_noise(hu: np.ndarray, v: Variant) -> np.ndarray:
    if not v.noise_hu:
        return hu
    rng = np.random.default_rng(v.seed + 2)
    noise = rng.normal(0.0, v.noise_hu, size=hu.shape).astype(np.float32)
    return hu + ndimage.gaussian_filter(noise, sigma=(0, 0.6, 0.6)) * 1.6


def away_from(pos: np.ndarray, ign: np.ndarray, spacing_kji: np.ndarray) -> np.ndarray:
    """Voxels more than 25 mm from every real nodule and mark: where synthetic lesions go."""
    return ndimage.distance_transform_edt(~(pos | ign), sampling=spacing_kji) > 25.0


def make_variant(
    volume: Volume,
    lung: np.ndarray,
    pos: np.ndarray,
    ign: np.ndarray,
    v: Variant,
    away: np.ndarray | None = None,
) -> tuple[Volume, np.ndarray, np.ndarray]:
    """The variant's volume and its (positive, ignore) masks on the variant's grid.

    ``away``: where synthetic lesions may go (more than 25 mm from ``pos | ign``), when the
    caller has it (it is the same for every variant of a patient; :func:`away_from`)."""
    from dataclasses import replace

    from medvision.training._data import add_lesions

    if v.index == 0:
        return volume, pos, ign
    sp = np.array([volume.spacing[2], volume.spacing[1], volume.spacing[0]])
    hu = volume.array.copy()
    rng = np.random.default_rng(v.seed)
    if away is None:
        away = away_from(pos, ign, sp)
    synthetic = add_lesions(hu, lung & away, sp, rng, v.synthetic, diameters_mm=(5.0, 40.0))
    central_rng = np.random.default_rng(v.seed + 3)
    synthetic |= add_lesions(
        hu,
        lung & away,
        sp,
        central_rng,
        int(central_rng.integers(CENTRAL_MASSES[0], CENTRAL_MASSES[1] + 1)),
        diameters_mm=CENTRAL_DIAMETERS_MM,
        centres=medial_lung(lung),
    )
    pos = pos | synthetic
    hu = apply_scanner(hu, v, sp)
    spacing = volume.spacing
    if v.thickness_mm and v.thickness_mm > volume.spacing[2] * 1.05:
        hu = resample_thickness(hu, volume.spacing[2], v.thickness_mm)
        pos = resample_mask(pos, volume.spacing[2], v.thickness_mm)
        ign = resample_mask(ign, volume.spacing[2], v.thickness_mm)
        factor = v.thickness_mm / volume.spacing[2]
        spacing = (volume.spacing[0], volume.spacing[1], volume.spacing[2] * factor)
    hu = add_noise(hu, v)
    n = hu.shape[0]
    out = replace(
        volume,
        array=np.ascontiguousarray(hu, dtype=np.float32),
        spacing=spacing,
        sop_instance_uids=tuple(f"variant-{k}" for k in range(n)),
        frame_numbers=(1,) * n,
        source_headers=(),
    )
    return out, pos, ign


# -- building the cache ---------------------------------------------------------------------
def label_candidates(crops: list[Any], pos: np.ndarray, ign: np.ndarray) -> np.ndarray:
    """1 on a positive region, -1 on an ignored one (and no positive), else 0."""
    out = np.zeros(len(crops), np.int8)
    for n, c in enumerate(crops):
        if (pos[c.box] & c.mask).any():
            out[n] = 1
        elif (ign[c.box] & c.mask).any():
            out[n] = -1
    return out


def variant_path(work: Path, v: Variant) -> Path:
    return work / "candidates" / v.patient / f"v{v.index:02d}-{v.key}.npz"


def build_patient(
    case: RealCase,
    work: Path,
    variants: int = DEFAULT_VARIANTS,
    seed: int = 12,
    log: Callable[[str], None] = print,
) -> list[Path]:
    """Make (or reuse) every variant's cached candidates of one patient."""
    from medvision.pipelines.lung_ct import LungParams
    from medvision.pipelines.lung_ct._candidates import find_candidates
    from medvision.pipelines.lung_ct._lungs import segment_lungs
    from medvision.pipelines.lung_ct._patches import candidate_patches

    volume = None
    plan: list[Variant] = []
    paths = []
    params = LungParams()
    native: tuple[Volume, Any, np.ndarray, np.ndarray, np.ndarray] | None = None
    for v in plan_variants(case.name, variants, seed, native_mm=_native_mm(case)):
        path = variant_path(work, v)
        paths.append(path)
        plan.append(v)
        if path.is_file():
            continue
        if native is None:
            volume = load_volume(case)
            ref = load_reference(case, volume)
            sp = np.array([volume.spacing[2], volume.spacing[1], volume.spacing[0]])
            pos, ign = reference_regions(ref, volume.shape, sp)
            native = (volume, segment_lungs(volume, params), pos, ign, away_from(pos, ign, sp))
        volume, lungs, pos, ign, away = native
        vol, vpos, vign = make_variant(volume, lungs.left | lungs.right, pos, ign, v, away)
        vlungs = lungs if v.index == 0 else segment_lungs(vol, params)
        crops = find_candidates(vol, vlungs, params)
        labels = label_candidates(crops, vpos, vign)
        patches = candidate_patches(vol, crops).astype(np.float16)
        meta = [
            {
                "source": c.source,
                "volume_ml": round(c.volume_ml, 3),
                "mean_hu": round(c.mean_hu, 1),
                "heuristic": c.heuristic,
            }
            for c in crops
        ]
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp.npz")
        np.savez_compressed(
            tmp,
            patches=patches,
            labels=labels,
            meta=json.dumps({"variant": asdict(v), "candidates": meta}),
        )
        tmp.replace(path)
        if v.index == 0:
            with open(path.with_suffix(".crops.pkl"), "wb") as fh:
                pickle.dump(crops, fh)
        log(
            f"{case.name} variant {v.index}: {len(crops)} candidates, "
            f"{int((labels == 1).sum())} positive, {int((labels == -1).sum())} ignored "
            f"(slices {vol.shape[0]} x {vol.spacing[2]:.2f} mm, {v.kernel}, "
            f"{v.synthetic} synthetic)"
        )
    return paths


def _native_mm(case: RealCase) -> float:
    from medvision.training._lesion_cases import find_series

    series = find_series(case)
    return float(series.slice_thickness_mm or 2.5)


def load_variants(paths: list[Path]) -> tuple[np.ndarray, np.ndarray, list[dict[str, Any]]]:
    """Concatenated patches (float16), labels and per-candidate meta of cached variants."""
    xs, ys, metas = [], [], []
    for path in paths:
        with np.load(path) as z:
            xs.append(z["patches"])
            ys.append(z["labels"])
            meta = json.loads(str(z["meta"]))
        v = meta["variant"]
        metas += [m | {"patient": v["patient"], "variant": v["index"]} for m in meta["candidates"]]
    if not xs:
        return np.zeros((0,)), np.zeros((0,), np.int8), []
    return np.concatenate(xs), np.concatenate(ys), metas


def load_native_crops(work: Path, case: RealCase, seed: int) -> list[Any]:
    v = plan_variants(case.name, 1, seed, native_mm=_native_mm(case))[0]
    with open(variant_path(work, v).with_suffix(".crops.pkl"), "rb") as fh:
        return pickle.load(fh)


__all__ = [
    "DATA_VERSION",
    "DEFAULT_VARIANTS",
    "MIN_COPY_MM",
    "Variant",
    "add_noise",
    "away_from",
    "apply_scanner",
    "build_patient",
    "label_candidates",
    "load_native_crops",
    "load_variants",
    "make_variant",
    "medial_lung",
    "plan_variants",
    "reference_regions",
    "resample_mask",
    "resample_thickness",
    "variant_path",
]
