"""Training cases for the project's own CT models, made reproducibly and cached outside the repo.

Why this module exists: the repository may hold no patient data and nothing derived from
the shared real data (converted images, labels), so every training case is *re-made* from
its recipe (a seed, or a path in ``../shared/data`` plus the classical pipeline) and cached
in ``~/.cache/medvision/train/<task>/data/``. The recipe list (``datalist.json``) is the
record of what a model saw.

Every case is brought onto the model's grid exactly as the bundle's own pre-processing
does at inference (``Orientationd("RAS")`` + ``Spacingd``), starting from the same
channel-first ``MetaTensor`` with the LPS->RAS affine that the bundle runtime builds from a
DICOM volume. Training and inference therefore see the same geometry by construction.

Case kinds (see :func:`lung_recipes`):

* ``synthetic``: the chest phantom of :mod:`medvision.synthetic` drawn in memory (no DICOM
  written), varied by seed, matrix, slice thickness, scan position, noise, lung density, plus
  synthesised vessels inside the lungs (labelled lung, as TotalSegmentator's lobes include
  them) and bowel-gas pockets below and beside them (labelled background: the test CTs are
  abdominal scans with only the lung bases in view).
* ``real-classical``: a real chest CT with the classical ``lung-ct`` pipeline's left/right
  masks, closed and hole-filled so that vessels count as lung.
* ``real-negative``: a real CT without lungs (head phantom): every voxel background.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage

logger = logging.getLogger(__name__)

#: LPS (DICOM) -> RAS (NIfTI, MONAI); the bundle runtime uses the same matrix.
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])
#: Bumped when the way a case is made changes, so that stale caches are rebuilt.
DATA_VERSION = 4


def cache_root() -> Path:
    """``~/.cache/medvision/train``: training data and checkpoints never go into the repo."""
    return Path.home() / ".cache" / "medvision" / "train"


def shared_data() -> Path:
    """``$MEDVISION_SHARED_DATA``, else ``../shared/data`` from the working folder (a source
    checkout run from its root, as the docs' commands are). Never derived from where the
    package lies: an installed medvision has no ``../shared`` beside it."""
    return Path(os.environ.get("MEDVISION_SHARED_DATA") or "../shared/data")


@dataclass(frozen=True)
class Recipe:
    """How to (re)make one training case; the list of recipes is the data record."""

    name: str
    kind: str  #: synthetic | real-classical | real-negative
    params: dict[str, Any] = field(default_factory=dict)

    def key(self) -> str:
        blob = json.dumps([DATA_VERSION, self.kind, self.params], sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:12]


@dataclass
class Case:
    """One case on the model grid: HU image and label map in RAS ``[x, y, z]`` order."""

    name: str
    image: np.ndarray  #: float32 HU
    label: np.ndarray  #: uint8
    spacing: tuple[float, float, float]
    kind: str = "synthetic"  #: the recipe's kind


# --------------------------------------------------------------------------- geometry


def to_model_grid(
    image_kji: np.ndarray,
    label_kji: np.ndarray,
    affine_lps: np.ndarray,
    pixdim: tuple[float, float, float],
) -> tuple[np.ndarray, np.ndarray]:
    """Resample an LPS ``(k, j, i)`` volume and its labels the way the bundle does.

    The image goes through the same ``Orientationd`` + ``Spacingd`` (bilinear) that
    ``configs/inference.json`` lists; labels are resampled with nearest neighbour.
    """
    import torch
    from monai.data import MetaTensor
    from monai.transforms import Compose, Orientationd, Spacingd

    affine = torch.from_numpy(LPS_TO_RAS @ affine_lps)
    img = MetaTensor(
        torch.from_numpy(image_kji.transpose(2, 1, 0)[None].astype(np.float32)), affine=affine
    )
    lab = MetaTensor(
        torch.from_numpy(label_kji.transpose(2, 1, 0)[None].astype(np.float32)),
        affine=affine.clone(),
    )
    tf = Compose(
        [
            Orientationd(keys=["image", "label"], axcodes="RAS"),
            Spacingd(keys=["image", "label"], pixdim=pixdim, mode=("bilinear", "nearest")),
        ]
    )
    out = tf({"image": img, "label": lab})
    image = np.asarray(out["image"].numpy()[0], dtype=np.float32)
    label = np.rint(np.asarray(out["label"].numpy()[0])).astype(np.uint8)
    return image, label


# --------------------------------------------------------------------------- synthetic


def _soft_ellipsoid(
    shape: tuple[int, int, int],
    center_kji: np.ndarray,
    radii_vox: np.ndarray,
) -> tuple[tuple[slice, ...], np.ndarray]:
    """Coverage (0..1, one-voxel ramp) of an axis-aligned ellipsoid, on its bounding box."""
    lo = np.maximum(np.floor(center_kji - radii_vox - 1).astype(int), 0)
    hi = np.minimum(np.ceil(center_kji + radii_vox + 2).astype(int), shape)
    box = tuple(slice(int(a), int(b)) for a, b in zip(lo, hi, strict=True))
    grids = np.ogrid[box]
    r2 = sum(((g - c) / r) ** 2 for g, c, r in zip(grids, center_kji, radii_vox, strict=True))
    dist = (np.sqrt(r2) - 1.0) * float(np.min(radii_vox))
    return box, np.clip(0.5 - dist, 0.0, 1.0).astype(np.float32)


def _capsule(
    shape: tuple[int, int, int], p0: np.ndarray, p1: np.ndarray, r_mm: float, sp: np.ndarray
) -> tuple[tuple[slice, ...], np.ndarray]:
    """Coverage of a 3-D capsule (a vessel segment) between two points given in mm."""
    lo = np.maximum(np.floor((np.minimum(p0, p1) - r_mm) / sp).astype(int) - 1, 0)
    hi = np.minimum(np.ceil((np.maximum(p0, p1) + r_mm) / sp).astype(int) + 2, shape)
    if np.any(hi <= lo):
        return tuple(slice(0, 0) for _ in range(3)), np.zeros((0, 0, 0), np.float32)
    box = tuple(slice(int(a), int(b)) for a, b in zip(lo, hi, strict=True))
    k, j, i = np.ogrid[box]
    pts = (k * sp[0], j * sp[1], i * sp[2])
    d = p1 - p0
    t = sum((pts[n] - p0[n]) * d[n] for n in range(3)) / max(float(d @ d), 1e-9)
    t = np.clip(t, 0.0, 1.0)
    dist = np.sqrt(sum((pts[n] - p0[n] - t * d[n]) ** 2 for n in range(3))) - r_mm
    return box, np.clip(0.5 - dist / float(sp.min()), 0.0, 1.0).astype(np.float32)


def _max_into(
    cover: np.ndarray, box: tuple[slice, ...], sub: tuple[slice, ...], cov: np.ndarray
) -> None:
    """``cover`` (on ``box``) = max(cover, ``cov`` on ``sub``) where the two boxes meet."""
    inter = [(max(s.start, b.start), min(s.stop, b.stop)) for s, b in zip(sub, box, strict=True)]
    if any(a >= c for a, c in inter):
        return
    dst = tuple(slice(a - b.start, c - b.start) for (a, c), b in zip(inter, box, strict=True))
    src = tuple(slice(a - s.start, c - s.start) for (a, c), s in zip(inter, sub, strict=True))
    np.maximum(cover[dst], cov[src], out=cover[dst])


#: Label value of synthesised lesions in :func:`synthetic_chest` (1, 2 are the lungs).
LESION_VALUE = 3


def add_lesions(
    hu: np.ndarray,
    lung: np.ndarray,
    sp: np.ndarray,
    rng: np.random.Generator,
    count: int,
    diameters_mm: tuple[float, float] = (5.0, 70.0),
    centres: np.ndarray | None = None,
) -> np.ndarray:
    """Paint ``count`` lung lesions into ``hu`` (before noise) and return their mask.

    Why these shapes and densities: lung cancers and nodules are 5-70 mm, lobulated rather
    than spherical, often spiculated, solid (-20..70 HU), part-solid (solid core in a
    ground-glass halo) or pure ground glass (-650..-350 HU), and often touch the pleura, a
    vessel or the mediastinum. Each lesion is a union of 1-5 ellipsoids plus 0-8 spicules,
    with a one-voxel partial-volume ramp, a smooth internal texture, and is kept inside the
    lung dilated by 2 mm (a juxta-pleural lesion abuts the wall; beyond it, it would be
    invisible against muscle and must not be labelled). The mask is coverage >= 1/2.
    ``sp`` is the spacing in array order (k, j, i); ``diameters_mm`` the log-uniform range;
    ``centres``, when given, the part of ``lung`` the lesions' centres are drawn from (the
    lesions still extend into all of ``lung``).
    """
    shape = np.array(hu.shape)
    idx = np.argwhere(lung if centres is None else centres & lung)
    mask = np.zeros(hu.shape, bool)
    if not len(idx) or count <= 0:
        return mask
    grow = max(1, int(round(2.0 / float(sp.min()))))
    allowed = ndimage.binary_dilation(lung, iterations=grow)
    for _ in range(count):
        diameter = float(np.exp(rng.uniform(*np.log(diameters_mm))))
        centre = idx[rng.integers(len(idx))].astype(float)
        r = diameter / 2.0
        lo = np.maximum(((centre * sp - 1.6 * r) / sp).astype(int) - 2, 0)
        hi = np.minimum(((centre * sp + 1.6 * r) / sp).astype(int) + 3, shape)
        box = tuple(slice(int(a), int(b)) for a, b in zip(lo, hi, strict=True))
        # Coverage on the lesion's box only (what falls outside it is not painted).
        cover = np.zeros([b.stop - b.start for b in box], np.float32)
        for _ in range(int(rng.integers(1, 6))):
            offset = rng.normal(size=3) * r * 0.3
            radii = r * rng.uniform(0.5, 1.0, size=3)
            sub, cov = _soft_ellipsoid(hu.shape, centre + offset / sp, radii / sp)
            _max_into(cover, box, sub, cov)
        if rng.random() < 0.5:
            for _ in range(int(rng.integers(2, 9))):
                direction = rng.normal(size=3)
                direction /= np.linalg.norm(direction)
                a = centre * sp + direction * r * 0.6
                b = a + direction * r * rng.uniform(0.3, 1.0)
                sub, cov = _capsule(hu.shape, a, b, float(rng.uniform(0.5, 1.5)), sp)
                if cov.size:
                    _max_into(cover, box, sub, cov)
        cov = cover * allowed[box]
        kind = rng.choice(["solid", "part-solid", "ground-glass"], p=[0.6, 0.25, 0.15])
        texture = ndimage.gaussian_filter(rng.normal(size=cov.shape), 1.0).astype(np.float32)
        if kind == "solid":
            value = np.float32(rng.uniform(-20, 70)) + 15.0 * texture
        elif kind == "ground-glass":
            value = np.float32(rng.uniform(-650, -350)) + 40.0 * texture
        else:
            core = ndimage.binary_erosion(cov >= 0.5, iterations=max(1, int(0.25 * r / sp.min())))
            value = (
                np.where(
                    core, np.float32(rng.uniform(-20, 60)), np.float32(rng.uniform(-600, -350))
                )
                + 25.0 * texture
            )
        hu[box] = hu[box] * (1 - cov) + value.astype(np.float32) * cov
        # One lesion is one object: spicule tips cut off by the slice grid would otherwise
        # become specks labelled lesion.
        parts, n_parts = ndimage.label(cov >= 0.5, structure=np.ones((3, 3, 3), bool))
        if n_parts:
            biggest = 1 + int(np.argmax(np.bincount(parts.ravel())[1:]))
            mask[box] |= parts == biggest
    return mask


def synthetic_chest(params: dict[str, Any]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Draw one varied phantom: HU ``(k, j, i)``, labels (1 right lung, 2 left), LPS affine.

    Uses :mod:`medvision.synthetic`'s anatomy directly (slice by slice, as its generator
    does) so that no DICOM needs writing; its ground-truth rule is kept (a voxel is lung when
    the lung covers at least half of it).
    """
    from medvision.synthetic.anatomy import SCAN_CENTER_Z_MM, ChestPhantom, Grid
    from medvision.synthetic.texture import add_noise

    seed = int(params["seed"])
    rng = np.random.default_rng([seed, 7])
    rows, n, thick = int(params["rows"]), int(params["n_slices"]), float(params["slice_mm"])
    grid = Grid.make(rows, n, thick, SCAN_CENTER_Z_MM + float(params["shift_mm"]))
    phantom = ChestPhantom(grid, SCAN_CENTER_Z_MM, seed)
    hu = np.empty((n, rows, rows), np.float32)
    right = np.empty((n, rows, rows), np.float32)
    left = np.empty((n, rows, rows), np.float32)
    for k in range(n):
        img, lungs = phantom.draw(k)
        hu[k], right[k], left[k] = img, lungs["right"], lungs["left"]
    lung = right + left
    # Lung density varies between patients and inspirations.
    hu += np.float32(params["lung_offset_hu"]) * lung
    sp = np.array([thick, grid.pixel_mm, grid.pixel_mm])
    shape = hu.shape
    lung_core = ndimage.binary_erosion(lung >= 0.5, iterations=1)
    # Vessels: bright tubes inside the lungs, still lung for the label (as in TotalSegmentator).
    idx = np.argwhere(lung_core)
    if len(idx):
        for _ in range(int(params["vessels"])):
            a = idx[rng.integers(len(idx))] * sp
            direction = rng.normal(size=3)
            direction /= np.linalg.norm(direction)
            b = a + direction * rng.uniform(15.0, 60.0)
            box, cov = _capsule(shape, a, b, float(rng.uniform(0.8, 3.0)), sp)
            if cov.size == 0:
                continue
            cov = cov * lung_core[box]
            hu[box] = hu[box] * (1 - cov) + np.float32(rng.uniform(-50, 60)) * cov
    # Bowel gas: air pockets in soft tissue away from the lungs, labelled background.
    # v0.2: gas also right under the diaphragm (stomach fundus, colonic flexures), as in
    # every abdominal CT; v0.1 kept it 12 mm away and learnt "air under the dome = lung".
    gap = float(params.get("gas_gap_mm", 12.0))
    far = ndimage.distance_transform_edt(~(lung >= 0.5), sampling=sp) > gap
    soft = far & (hu > -200) & (hu < 150)
    cand = np.argwhere(soft)
    if len(cand):
        for _ in range(int(params["gas_pockets"])):
            c = cand[rng.integers(len(cand))].astype(float)
            radii = rng.uniform(4.0, float(params.get("gas_max_mm", 22.0)), size=3) / sp
            box, cov = _soft_ellipsoid(shape, c, radii)
            cov = cov * soft[box]
            hu[box] = hu[box] * (1 - cov) + np.float32(rng.uniform(-1000, -750)) * cov
    lesion = np.zeros(shape, bool)
    if int(params.get("lesions", 0)) > 0:
        lesion = add_lesions(hu, lung >= 0.5, sp, rng, int(params["lesions"]))
    noise = float(params["noise_hu"])
    for k in range(n):
        hu[k] = add_noise(hu[k], seed, k, noise)
    label = np.zeros(shape, np.uint8)
    label[right >= 0.5] = 1
    label[left >= 0.5] = 2
    label[lesion] = LESION_VALUE
    affine = np.eye(4)
    affine[:3, :3] = np.diag([grid.pixel_mm, grid.pixel_mm, -thick])
    affine[:3, 3] = (grid.x0, grid.y0, grid.z_top)
    return hu, label, affine


def synthetic_recipes(
    count: int, seed0: int, smoke: bool = False, lesions: tuple[int, int] | None = None
) -> list[Recipe]:
    """``count`` varied phantom recipes from a fixed seed: the variation is the record.

    ``lesions`` = (least, most) lesions per case adds synthesised lesions (lesion model)."""
    rng = np.random.default_rng(seed0)
    out = []
    for n in range(count):
        if smoke:
            rows, thick, slices = 64, 8.0, 24
        else:
            rows = int(rng.choice([128, 192, 256]))
            thick = float(rng.choice([1.5, 2.5, 3.0, 5.0]))
            slices = int(round(float(rng.uniform(220, 340)) / thick))
        extra = (
            {} if lesions is None else {"lesions": int(rng.integers(lesions[0], lesions[1] + 1))}
        )
        out.append(
            Recipe(
                name=("lesion-" if lesions else "") + f"synthetic-{n:03d}",
                kind="synthetic",
                params={
                    "seed": int(seed0 * 1000 + n),
                    "rows": rows,
                    "n_slices": slices,
                    "slice_mm": thick,
                    "shift_mm": round(float(rng.uniform(-150.0, 10.0)), 1),
                    "noise_hu": round(float(rng.uniform(5.0, 45.0)), 1),
                    "lung_offset_hu": round(float(rng.uniform(-80.0, 110.0)), 1),
                    "vessels": int(rng.integers(20, 80)) if not smoke else 4,
                    "gas_pockets": int(rng.integers(2, 14)),
                    "gas_gap_mm": 3.0,
                    "gas_max_mm": 35.0,
                }
                | extra,
            )
        )
    return out


# --------------------------------------------------------------------------- real data


def _load_dicom(folder: Path) -> Any:
    from medvision.dicom import load_series, scan

    studies = scan(folder)
    series = max((s for st in studies for s in st.series), key=lambda s: len(s.files))
    return load_series(series)


def real_classical(params: dict[str, Any]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A real chest CT with the classical pipeline's lungs (1 right, 2 left).

    The classical masks stop at the HU threshold, so vessels make holes; each side is
    closed (one voxel) and hole-filled per axial slice, which is how reference
    segmentations (TotalSegmentator's lobes) treat vessels.
    """
    from medvision.pipelines.lung_ct import LungParams
    from medvision.pipelines.lung_ct._lungs import segment_lungs

    vol = _load_dicom(shared_data() / params["path"])
    masks = segment_lungs(vol, LungParams())
    label = np.zeros(vol.shape, np.uint8)
    for value, side in ((1, masks.right), (2, masks.left)):
        m = ndimage.binary_closing(side, iterations=1) | side
        m = np.stack([ndimage.binary_fill_holes(s) for s in m])
        label[m & (label == 0)] = value
    return np.asarray(vol.array, np.float32), label, vol.affine


def real_negative(params: dict[str, Any]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A real CT without lungs: all background."""
    vol = _load_dicom(shared_data() / params["path"])
    return np.asarray(vol.array, np.float32), np.zeros(vol.shape, np.uint8), vol.affine


MAKERS: dict[str, Callable[[dict[str, Any]], tuple[np.ndarray, np.ndarray, np.ndarray]]] = {
    "synthetic": synthetic_chest,
    "real-classical": real_classical,
    "real-negative": real_negative,
}


def lung_recipes(smoke: bool = False, synthetic: int = 24) -> list[Recipe]:
    """The lung model's training list (the test CTs of TotalSegmentator are never in it)."""
    if smoke:
        return synthetic_recipes(2, seed0=11, smoke=True)
    recipes = synthetic_recipes(synthetic, seed0=11)
    real = shared_data() / "ct" / "lung-pet-ct-dx-A0001" / "series-5mm"
    if real.is_dir():
        recipes.append(
            Recipe(
                "A0001-classical", "real-classical", {"path": "ct/lung-pet-ct-dx-A0001/series-5mm"}
            )
        )
    head = shared_data() / "ct" / "edge" / "philips-head-phantom-study" / "S2010"
    if head.is_dir():
        recipes.append(
            Recipe(
                "philips-head-phantom",
                "real-negative",
                {"path": "ct/edge/philips-head-phantom-study/S2010"},
            )
        )
    return recipes


def lesion_recipes(smoke: bool = False, synthetic: int = 24) -> list[Recipe]:
    """The lesion model's training list: synthetic chests with synthesised lesions, and a
    real CT without lungs. A0001, the only real chest CT here, is the lesion test set and is
    not in it."""
    if smoke:
        return synthetic_recipes(2, seed0=23, smoke=True, lesions=(1, 2))
    recipes = synthetic_recipes(synthetic, seed0=23, lesions=(1, 5))
    head = shared_data() / "ct" / "edge" / "philips-head-phantom-study" / "S2010"
    if head.is_dir():
        recipes.append(
            Recipe(
                "philips-head-phantom",
                "real-negative",
                {"path": "ct/edge/philips-head-phantom-study/S2010"},
            )
        )
    return recipes


def _make_case(item: tuple[Recipe, Path], pixdim: tuple[float, float, float]) -> None:
    """Make one case from its recipe into the cache file ``path`` (int16 HU, uint8 labels)."""
    r, path = item
    hu, lab, affine = MAKERS[r.kind](r.params)
    image, label = to_model_grid(hu, lab, affine, pixdim)
    tmp = path.with_suffix(f".{os.getpid()}.tmp.npz")
    np.savez_compressed(tmp, image=np.clip(image, -1024, 3071).astype(np.int16), label=label)
    tmp.replace(path)


def build_cases(
    recipes: list[Recipe],
    data_dir: Path,
    pixdim: tuple[float, float, float],
    log: Callable[[str], None] = print,
    label_map: Callable[[np.ndarray], np.ndarray] | None = None,
) -> list[Case]:
    """Make (or read from the cache) every case on the model grid.

    The cache holds the full label map (1 right lung, 2 left, 3 lesion); ``label_map``
    turns it into the task's classes."""
    data_dir.mkdir(parents=True, exist_ok=True)
    paths = [
        data_dir / f"{r.name}-{r.key()}-{'x'.join(f'{p:g}' for p in pixdim)}.npz" for r in recipes
    ]
    workers = int(os.environ.get("MEDVISION_TRAIN_WORKERS", "1"))
    todo = [(r, path) for r, path in zip(recipes, paths, strict=True) if not path.is_file()]
    if workers > 1 and len(todo) > 1:
        # Cases are independent: make the missing ones in parallel (fork: before any CUDA
        # use), each into the cache; the loop below reads them back in recipe order.
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        ctx = multiprocessing.get_context("fork")
        with ProcessPoolExecutor(min(workers, len(todo)), mp_context=ctx) as pool:
            list(pool.map(_make_case, todo, [pixdim] * len(todo)))
    cases = []
    for r, path in zip(recipes, paths, strict=True):
        if not path.is_file():
            _make_case((r, path), pixdim)
        z = np.load(path)
        image, label = z["image"].astype(np.float32), z["label"]
        if label_map is not None:
            label = label_map(label).astype(np.uint8)
        counts = np.bincount(label.ravel(), minlength=3)
        log(f"case {r.name} ({r.kind}) shape {image.shape} labels {counts.tolist()}")
        cases.append(Case(r.name, image, label, pixdim, r.kind))
    return cases


def datalist_record(recipes: list[Recipe]) -> list[dict[str, Any]]:
    return [asdict(r) | {"key": r.key()} for r in recipes]
