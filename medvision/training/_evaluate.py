"""``medvision evaluate lungs|lesions --bundle DIR``: the accuracy figures of the model cards.

Why through the bundle runtime: the number published must be the one a user gets, so the
test volumes go through exactly the code the node runs (``BundleRuntime.predict``: the
bundle's own pre-processing, sliding window, inversion and post-processing).

Lungs: Dice per side against TotalSegmentator's lung lobes, united per side, on its
example CTs (NIfTI, RAS). These CTs are the lung *test* set: never trained or tuned on.
TotalSegmentator v2 ``total`` class ids: 10 upper-left, 11 lower-left lobe; 12 upper-right,
13 middle-right, 14 lower-right lobe.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from medvision.training._data import shared_data

TS_LEFT = (10, 11)
TS_RIGHT = (12, 13, 14)
#: (image, TotalSegmentator output for it) under ct/totalsegmentator/
LUNG_TEST = (
    ("example_ct_sm.nii.gz", "example_seg.nii.gz"),
    ("example_ct.nii.gz", "example_seg_fast_force_split.nii.gz"),
)


def nifti_volume(path: Path) -> Any:
    """A NIfTI image as a medvision ``Volume`` (LPS, ``(k, j, i)``), as DICOM would give it."""
    import nibabel as nib

    from medvision.dicom import Volume

    img = nib.load(str(path))
    data = np.asanyarray(img.dataobj).astype(np.float32)
    lps = np.diag([-1.0, -1.0, 1.0, 1.0]) @ img.affine
    spacing = np.linalg.norm(lps[:3, :3], axis=0)
    n = data.shape[2]
    return Volume(
        array=np.ascontiguousarray(data.transpose(2, 1, 0)),
        origin=tuple(float(v) for v in lps[:3, 3]),
        spacing=tuple(float(v) for v in spacing),
        direction=lps[:3, :3] / spacing[None, :],
        frame_of_reference_uid="",
        study_instance_uid="",
        series_instance_uid="",
        modality="CT",
        sop_instance_uids=tuple(f"nifti-{k}" for k in range(n)),
        frame_numbers=(1,) * n,
        source_headers=(),
    )


def dice(a: np.ndarray, b: np.ndarray) -> float:
    total = int(a.sum()) + int(b.sum())
    return 1.0 if total == 0 else 2.0 * int((a & b).sum()) / total


def evaluate_lungs(bundle: Path) -> dict[str, Any]:
    """Dice per side (label 1 right, 2 left) on each TotalSegmentator example CT."""
    import nibabel as nib

    from medvision.pipelines.bundle._runtime import BundleRuntime

    root = shared_data() / "ct" / "totalsegmentator"
    runtime = BundleRuntime(bundle, device="cpu")
    rows = []
    for image, seg in LUNG_TEST:
        vol = nifti_volume(root / image)
        ref = np.asanyarray(nib.load(str(root / seg)).dataobj).transpose(2, 1, 0)
        pred = runtime.predict([vol]).labels
        row: dict[str, Any] = {"image": image, "reference": seg, "shape_kji": list(vol.shape)}
        for value, name, ids in ((1, "right", TS_RIGHT), (2, "left", TS_LEFT)):
            r, p = np.isin(ref, ids), pred == value
            row[name] = {
                "dice": round(dice(p, r), 4),
                "ref_ml": round(r.sum() * vol.voxel_volume_mm3 / 1000, 1),
                "pred_ml": round(p.sum() * vol.voxel_volume_mm3 / 1000, 1),
            }
        rows.append(row)
    dices = [r[s]["dice"] for r in rows for s in ("right", "left")]
    return {
        "task": "lungs",
        "bundle": str(bundle),
        "cases": rows,
        "mean_dice": round(float(np.mean(dices)), 4),
        "min_dice": round(float(min(dices)), 4),
    }


def read_boxes(annotations: Path) -> dict[str, list[tuple[int, int, int, int]]]:
    """Radiologists' boxes per SOPInstanceUID: ``(xmin, ymin, xmax, ymax)`` in pixels."""
    import xml.etree.ElementTree as ET

    boxes: dict[str, list[tuple[int, int, int, int]]] = {}
    for xml in sorted(annotations.glob("*.xml")):
        root = ET.parse(xml).getroot()
        for obj in root.iter("bndbox"):
            box = tuple(int(float(obj.findtext(t, "0"))) for t in ("xmin", "ymin", "xmax", "ymax"))
            boxes.setdefault(xml.stem, []).append(box)  # type: ignore[arg-type]
    return boxes


def score_lesions(
    mask: np.ndarray, sop_uids: tuple[str, ...], boxes: dict[str, list[tuple[int, int, int, int]]]
) -> dict[str, Any]:
    """Boxed slices hit (the mask overlaps a box on that slice) and false positives (3-D
    26-connected components of the mask that overlap no box on any slice)."""
    from scipy import ndimage

    boxed = [(k, b) for k, uid in enumerate(sop_uids) for b in boxes.get(uid, [])]
    in_box = np.zeros(mask.shape, bool)
    for k, (x0, y0, x1, y1) in boxed:
        in_box[k, y0 : y1 + 1, x0 : x1 + 1] = True
    hit_slices = {k for k, (x0, y0, x1, y1) in boxed if mask[k, y0 : y1 + 1, x0 : x1 + 1].any()}
    labels, n = ndimage.label(mask, structure=np.ones((3, 3, 3), bool))
    touching = set(np.unique(labels[in_box & mask]).tolist()) - {0}
    return {
        "boxed_slices": len({k for k, _ in boxed}),
        "boxed_slices_hit": len(hit_slices),
        "components": int(n),
        "false_positives": int(n - len(touching)),
    }


def evaluate_lesions(bundle: Path) -> dict[str, Any]:
    """Lesion detection on the real chest CT A0001 (the lesion *test* set)."""
    from medvision.dicom import load_series, scan
    from medvision.findings import FindingKind
    from medvision.pipelines.bundle import read_spec
    from medvision.pipelines.bundle._runtime import BundleRuntime

    case = shared_data() / "ct" / "lung-pet-ct-dx-A0001"
    series = max(
        (s for st in scan(case / "series-5mm") for s in st.series), key=lambda s: len(s.files)
    )
    vol = load_series(series)
    spec = read_spec(bundle / "pipeline.yaml")
    values = [ls.value for ls in spec.labels if ls.label.kind == FindingKind.LESION]
    pred = BundleRuntime(bundle, device="cpu").predict([vol]).labels
    result = score_lesions(
        np.isin(pred, values), vol.sop_instance_uids, read_boxes(case / "annotations")
    )
    result["hit_fraction"] = round(result["boxed_slices_hit"] / max(1, result["boxed_slices"]), 3)
    return {
        "task": "lesions",
        "bundle": str(bundle),
        "case": "lung-pet-ct-dx-A0001/series-5mm",
    } | result


def evaluate(task: str, bundle: Path) -> dict[str, Any]:
    if task == "lungs":
        return evaluate_lungs(bundle)
    if task == "lesions":
        return evaluate_lesions(bundle)
    raise NotImplementedError(f"evaluate {task}: not implemented yet (see docs/accuracy.md)")
