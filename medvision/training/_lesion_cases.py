"""The three real chest CTs with expert lesion marks, loaded with their references.

Each case is a DICOM series in ``../shared/data`` read by the same loader the node uses
(``scan`` + ``load_series``), and its reference brought onto that volume's grid:

* ``LIDC-IDRI-0001``, ``LIDC-IDRI-0002``: the readers' count mask
  (``nodules_readercount.nii.gz``, how many of 4 readers' >= 3 mm outlines cover each voxel)
  split into nodules, with readers and diameters from ``annotations.json`` and the readers'
  point marks (nodules < 3 mm, non-nodules) as irrelevant-finding marks.
* ``A0001`` (Lung-PET-CT-Dx): the radiologists' PASCAL VOC boxes, one XML per boxed slice,
  named by that slice's SOPInstanceUID.

The case list is what ``medvision evaluate lesions`` and ``medvision train lesions``
iterate over; a case's name is its patient, the unit of leave-one-patient-out.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage

from medvision.dicom import SeriesInfo, Volume
from medvision.training._data import shared_data
from medvision.training._lesion_score import (
    Box,
    BoxReference,
    Nodule,
    ReaderReference,
)


@dataclass(frozen=True)
class RealCase:
    """A patient: where its series and its reference are, relative to the shared data."""

    name: str
    series_dir: str
    kind: str  # "readers" (LIDC) or "boxes" (A0001)
    about: str

    @property
    def root(self) -> Path:
        return shared_data() / Path(self.series_dir).parent


CASES: tuple[RealCase, ...] = (
    RealCase(
        "LIDC-IDRI-0001",
        "ct/lidc-idri/LIDC-IDRI-0001/dicom",
        "readers",
        "LIDC-IDRI, 133 slices, 2.5 mm, GE",
    ),
    RealCase(
        "LIDC-IDRI-0002",
        "ct/lidc-idri/LIDC-IDRI-0002/dicom",
        "readers",
        "LIDC-IDRI, 261 slices, 1.25 mm",
    ),
    RealCase(
        "A0001",
        "ct/lung-pet-ct-dx-A0001/series-5mm",
        "boxes",
        "Lung-PET-CT-Dx, 64 slices, 5 mm, Philips",
    ),
)


def case_names() -> tuple[str, ...]:
    return tuple(c.name for c in CASES)


def get_case(name: str) -> RealCase:
    for case in CASES:
        if case.name.lower() == name.lower():
            return case
    raise KeyError(f"Unknown case '{name}'; known: {', '.join(case_names())}.")


def find_series(case: RealCase) -> SeriesInfo:
    """The case's series: the largest series in its folder."""
    from medvision.dicom import scan

    return max(
        (s for st in scan(shared_data() / case.series_dir) for s in st.series),
        key=lambda s: len(s.files),
    )


def load_volume(case: RealCase) -> Volume:
    """The case's series, as the node would load it."""
    from medvision.dicom import load_series

    return load_series(find_series(case))


def load_reference(case: RealCase, volume: Volume) -> ReaderReference | BoxReference:
    if case.kind == "boxes":
        return box_reference(case.root / "annotations", volume)
    return reader_reference(case.root, volume)


# -- A0001: boxes ---------------------------------------------------------------------
def read_boxes(annotations: Path) -> dict[str, list[Box]]:
    """Radiologists' boxes per SOPInstanceUID: ``(xmin, ymin, xmax, ymax)`` in pixels."""
    import xml.etree.ElementTree as ET

    boxes: dict[str, list[Box]] = {}
    for xml in sorted(annotations.glob("*.xml")):
        root = ET.parse(xml).getroot()
        for obj in root.iter("bndbox"):
            box = tuple(int(float(obj.findtext(t, "0"))) for t in ("xmin", "ymin", "xmax", "ymax"))
            boxes.setdefault(xml.stem, []).append(box)  # type: ignore[arg-type]
    return boxes


def box_reference(annotations: Path, volume: Volume) -> BoxReference:
    by_uid = read_boxes(annotations)
    return BoxReference(
        {k: tuple(by_uid[uid]) for k, uid in enumerate(volume.sop_instance_uids) if uid in by_uid}
    )


# -- LIDC: readers' outlines ---------------------------------------------------------------
def grid_map(volume: Volume, affine: np.ndarray) -> list[tuple[int, int, int]]:
    """For each volume axis (i, j, k): (other grid's axis, sign, offset), such that volume
    index ``n`` on that axis is index ``sign * n + offset`` on the other grid.

    Both grids must be the same voxel lattice up to axis order and flips (true for a mask
    written on the series' own grid); anything else is refused rather than resampled.
    """
    m = np.linalg.inv(affine) @ volume.affine
    out = []
    for a in range(3):
        b = int(np.argmax(np.abs(m[:3, a])))
        sign = float(np.round(m[b, a]))
        if abs(sign) != 1 or not np.allclose(np.abs(m[:3, a]), np.eye(3)[b], atol=1e-3):
            raise ValueError("reference mask is not on the series grid")
        offset = float(m[b, 3])
        if abs(offset - round(offset)) > 1e-2:
            raise ValueError("reference mask is offset from the series grid by a fraction")
        out.append((b, int(sign), int(round(offset))))
    return out


def to_volume_grid(array_ijk: np.ndarray, affine: np.ndarray, volume: Volume) -> np.ndarray:
    """``array_ijk`` (indexed i, j, k on the grid ``affine``) as a ``(k, j, i)`` array on
    the volume's grid; voxels outside the other grid are 0."""
    mapping = grid_map(volume, affine)
    out = array_ijk.transpose([b for b, _, _ in mapping])
    size_ijk = (volume.shape[2], volume.shape[1], volume.shape[0])
    for a, (_, sign, offset) in enumerate(mapping):
        index = sign * np.arange(size_ijk[a]) + offset
        valid = (index >= 0) & (index < out.shape[a])
        out = np.take(out, np.clip(index, 0, out.shape[a] - 1), axis=a)
        if not valid.all():
            shape = [1, 1, 1]
            shape[a] = -1
            out = out * valid.reshape(shape)
    return np.ascontiguousarray(out.transpose(2, 1, 0))


def reader_reference(root: Path, volume: Volume) -> ReaderReference:
    """Nodules (components of the readers' count mask) and point marks of one LIDC case."""
    import SimpleITK as sitk

    img = sitk.ReadImage(str(root / "nodules_readercount.nii.gz"))
    direction = np.array(img.GetDirection()).reshape(3, 3)
    affine = np.eye(4)
    affine[:3, :3] = direction * np.array(img.GetSpacing())[None, :]
    affine[:3, 3] = img.GetOrigin()
    count = to_volume_grid(sitk.GetArrayFromImage(img).transpose(2, 1, 0), affine, volume)
    notes = json.loads((root / "annotations.json").read_text())["annotations"]

    def to_kji(xyz: list[float]) -> tuple[int, int, int]:
        lps = affine @ np.array([*xyz, 1.0])
        i, j, k = np.round(np.linalg.inv(volume.affine) @ lps)[:3].astype(int)
        return int(k), int(j), int(i)

    outlined = [a for a in notes if a.get("ge3mm_with_characteristics")]
    labels, n = ndimage.label(count > 0, structure=np.ones((3, 3, 3), bool))
    nodules = []
    for index, box in enumerate(ndimage.find_objects(labels), start=1):
        part = labels[box] == index
        mine = [a for a in outlined if _overlaps(a, box, part, to_kji)]
        readers = len({a["reader"] for a in mine}) or int(count[box][part].max())
        if mine:
            diameter = float(np.median([a["equiv_diam_mm"] for a in mine]))
        else:
            ml = part.sum() * volume.voxel_volume_mm3
            diameter = float((6.0 * ml / np.pi) ** (1.0 / 3.0))
        nodule_count = np.zeros(volume.shape, dtype=np.uint8)
        nodule_count[box][part] = count[box][part]
        nodules.append(Nodule(nodule_count, readers, diameter))
    points = []
    for a in notes:
        if a.get("ge3mm_with_characteristics"):
            continue
        xyz = a.get("centroid_index_xyz") or a.get("point_index_xyz")
        if xyz is None:
            continue
        kji = to_kji(xyz)
        if all(0 <= v < s for v, s in zip(kji, volume.shape, strict=True)):
            points.append(kji)
    return ReaderReference(tuple(nodules), tuple(points))


def _overlaps(note: dict[str, Any], box: tuple[slice, ...], part: np.ndarray, to_kji: Any) -> bool:
    """Whether a reader's outline (by its bounding box) overlaps this nodule's voxels."""
    lo, hi = to_kji(note["bbox_index_xyz_min"]), to_kji(note["bbox_index_xyz_max"])
    sel = []
    for a, b, s in zip(lo, hi, box, strict=True):
        start, stop = max(min(a, b), s.start) - s.start, min(max(a, b) + 1, s.stop) - s.start
        if stop <= start:
            return False
        sel.append(slice(start, stop))
    return bool(part[tuple(sel)].any())


__all__ = [
    "CASES",
    "RealCase",
    "box_reference",
    "case_names",
    "find_series",
    "get_case",
    "grid_map",
    "load_reference",
    "load_volume",
    "read_boxes",
    "reader_reference",
    "to_volume_grid",
]
