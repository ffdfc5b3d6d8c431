"""``medvision evaluate lungs --bundle DIR``: the accuracy figures of the lung model cards.

(``evaluate lesions`` takes any pipeline: :mod:`medvision.training._lesion_eval`.)

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


def evaluate(task: str, bundle: Path) -> dict[str, Any]:
    if task == "lungs":
        return evaluate_lungs(bundle)
    if task == "lesions":
        raise NotImplementedError("evaluate lesions: see medvision.training._lesion_eval")
    raise NotImplementedError(f"evaluate {task}: not implemented yet (see docs/accuracy.md)")
