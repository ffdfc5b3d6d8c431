"""The learned false-positive filter: a small 3-D MONAI classifier that scores candidates.

Why a classifier after a sensitive generator rather than a segmentation network: with
three real chest CTs with expert marks there is far too little data to learn where
lesions are voxel by voxel, but the classical generator already finds them (and much else);
what it cannot tell is a nodule from a vessel, the hilum, a scar or the diaphragm. That is a
yes/no question per candidate, which a small network can learn from a few hundred real
candidates plus synthetic lesions pasted into real lung.

The bundle is a plain folder (``models/lung_lesion_filter/``, or the user's model folder,
found through :func:`medvision.pipelines.bundle.model_dirs`):

* ``configs/metadata.json``: MONAI bundle metadata plus ``medvision_filter``: the
  network's arguments, the patch scales, the score threshold and the calibration;
* ``models/model.pt``: the network's ``state_dict``;
* ``docs/README.md``: the model card.

It has no ``configs/inference.json``, so the bundle discovery does not take it for a
segmentation pipeline of its own: it is a stage of ``lung-ct``.

The score shown as a finding's confidence is **calibrated**: Platt scaling fitted on the
scores of held-out patients' candidates in leave-one-patient-out training, so that among
candidates scored 0.7, about 70 % were on a reader-marked nodule or a boxed tumour (see the
reliability tables in docs/accuracy.md). It is not a probability of malignancy.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage

from medvision.dicom import Volume
from medvision.pipelines.lung_ct._candidates import Crop
from medvision.pipelines.lung_ct._patches import CHANNELS, PATCH, candidate_patches

BUNDLE_NAME = "lung_lesion_filter"
#: Findings closer than this (mm, after the filter) are one lesion: a tumour split by the
#: generator's opening is reported once.
MERGE_MM = 5.0
NETWORK = {
    "in_shape": [CHANNELS, PATCH, PATCH, PATCH],
    "classes": 1,
    "channels": [16, 32, 64, 64],
    "strides": [2, 2, 2, 2],
    "num_res_units": 1,
    "dropout": 0.2,
}
CONFIDENCE_METHOD = (
    "learned false-positive filter (lung_lesion_filter {version}, MONAI Classifier on "
    "multi-scale patches): calibrated probability that the candidate lies on a "
    "reader-marked nodule or radiologist-boxed tumour, Platt-scaled on held-out patients "
    "(leave-one-patient-out); not a probability of malignancy (docs/accuracy.md)"
)


def build_network(args: dict[str, Any] | None = None) -> Any:
    from monai.networks.nets import Classifier

    a = dict(NETWORK if args is None else args)
    return Classifier(
        in_shape=tuple(a["in_shape"]),
        classes=a["classes"],
        channels=tuple(a["channels"]),
        strides=tuple(a["strides"]),
        num_res_units=a["num_res_units"],
        dropout=a["dropout"],
    )


@dataclass(frozen=True)
class Calibration:
    """Platt scaling of the network's logit: ``p = sigmoid(a * logit + b)``."""

    a: float = 1.0
    b: float = 0.0

    def __call__(self, logits: np.ndarray) -> np.ndarray:
        return 1.0 / (1.0 + np.exp(-(self.a * np.asarray(logits) + self.b)))


class LesionFilter:
    """A loaded filter: network, threshold, calibration."""

    def __init__(
        self,
        network: Any,
        threshold: float = 0.5,
        calibration: Calibration | None = None,
        version: str = "0",
        device: str | None = None,
        sha256: str = "",
    ) -> None:
        import torch

        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.network = network.to(self.device).eval()
        self.threshold = threshold
        self.calibration = calibration or Calibration()
        self.version = version
        self.sha256 = sha256

    @classmethod
    def load(cls, root: Path, device: str | None = None) -> LesionFilter:
        import torch

        from medvision._hashing import sha256_file

        meta = json.loads((root / "configs" / "metadata.json").read_text())
        info = meta["medvision_filter"]
        network = build_network(info["network"])
        weights = root / "models" / "model.pt"
        network.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
        cal = info.get("calibration") or {}
        return cls(
            network,
            threshold=float(info["threshold"]),
            calibration=Calibration(float(cal.get("a", 1.0)), float(cal.get("b", 0.0))),
            version=str(meta.get("version", "0")),
            device=device,
            sha256=sha256_file(weights),
        )

    def logits(self, patches: np.ndarray, batch: int = 64) -> np.ndarray:
        """The network's logit per patch (CUDA with AMP where present)."""
        import torch

        out = []
        amp = self.device.type == "cuda"
        with torch.no_grad(), torch.autocast(self.device.type, enabled=amp):
            for start in range(0, len(patches), batch):
                x = torch.from_numpy(np.ascontiguousarray(patches[start : start + batch]))
                out.append(self.network(x.to(self.device)).float().cpu().numpy()[:, 0])
        return np.concatenate(out) if out else np.zeros(0, np.float32)

    def score(self, volume: Volume, crops: Sequence[Crop]) -> np.ndarray:
        """The raw score (sigmoid of the logit) of each candidate."""
        if not crops:
            return np.zeros(0, np.float32)
        logits = self.logits(candidate_patches(volume, crops))
        return 1.0 / (1.0 + np.exp(-logits))

    def select(self, volume: Volume, crops: Sequence[Crop]) -> list[tuple[Crop, float]]:
        """Candidates scored at or above the threshold, merged, with calibrated scores."""
        raw = self.score(volume, crops)
        logit = np.log(np.clip(raw, 1e-6, 1 - 1e-6) / np.clip(1 - raw, 1e-6, 1))
        calibrated = self.calibration(logit)
        kept = [
            (c, float(p))
            for c, r, p in zip(crops, raw, calibrated, strict=True)
            if r >= self.threshold
        ]
        return merge_close(kept, volume)


def merge_close(
    kept: Sequence[tuple[Crop, float]], volume: Volume, merge_mm: float = MERGE_MM
) -> list[tuple[Crop, float]]:
    """Kept candidates within ``merge_mm`` of each other become one (highest score)."""
    if len(kept) < 2:
        return list(kept)
    spacing = np.array([volume.spacing[2], volume.spacing[1], volume.spacing[0]])
    reach = np.maximum(np.ceil(merge_mm / spacing).astype(int), 1)
    n = len(kept)
    parent = list(range(n))

    def find(a: int) -> int:
        while parent[a] != a:
            parent[a] = parent[parent[a]]
            a = parent[a]
        return a

    grown = []
    for c, _ in kept:
        lo = [max(b.start - r, 0) for b, r in zip(c.box, reach, strict=True)]
        hi = [min(b.stop + r, s) for b, r, s in zip(c.box, reach, volume.shape, strict=True)]
        local = np.zeros([h - o for o, h in zip(lo, hi, strict=True)], bool)
        local[tuple(slice(b.start - o, b.stop - o) for b, o in zip(c.box, lo, strict=True))] = (
            c.mask
        )
        dist = ndimage.distance_transform_edt(~local, sampling=spacing)
        grown.append((tuple(slice(a, b) for a, b in zip(lo, hi, strict=True)), dist <= merge_mm))
    for a in range(n):
        for b in range(a + 1, n):
            box_a, near_a = grown[a]
            cb = kept[b][0]
            inter = [
                (max(x.start, y.start), min(x.stop, y.stop))
                for x, y in zip(box_a, cb.box, strict=True)
            ]
            if any(lo >= hi for lo, hi in inter):
                continue
            sa = tuple(
                slice(lo - x.start, hi - x.start) for (lo, hi), x in zip(inter, box_a, strict=True)
            )
            sb = tuple(
                slice(lo - x.start, hi - x.start) for (lo, hi), x in zip(inter, cb.box, strict=True)
            )
            if (near_a[sa] & cb.mask[sb]).any():
                parent[find(b)] = find(a)
    groups: dict[int, list[int]] = {}
    for a in range(n):
        groups.setdefault(find(a), []).append(a)
    out = []
    for members in groups.values():
        if len(members) == 1:
            out.append(kept[members[0]])
            continue
        crops = [kept[m][0] for m in members]
        lo = [min(c.box[d].start for c in crops) for d in range(3)]
        hi = [max(c.box[d].stop for c in crops) for d in range(3)]
        box = tuple(slice(a, b) for a, b in zip(lo, hi, strict=True))
        mask = np.zeros([b - a for a, b in zip(lo, hi, strict=True)], bool)
        for c in crops:
            mask[tuple(slice(b.start - o, b.stop - o) for b, o in zip(c.box, lo, strict=True))] |= (
                c.mask
            )
        best = max(members, key=lambda m: kept[m][1])
        first = kept[best][0]
        voxels = int(mask.sum())
        mean_hu = float(volume.array[box][mask].mean())
        out.append(
            (
                Crop(
                    box,  # type: ignore[arg-type]
                    mask,
                    voxels * volume.voxel_volume_mm3 / 1000.0,
                    mean_hu,
                    first.source,
                    first.heuristic,
                    first.left,
                ),
                kept[best][1],
            )
        )
    out.sort(key=lambda t: -t[0].volume_ml)
    return out


def find_filter(name: str = BUNDLE_NAME) -> Path | None:
    """The filter bundle's folder in the model folders, or None when there is none."""
    from medvision.pipelines.bundle import model_dirs

    for base in model_dirs():
        root = base / name
        if (root / "configs" / "metadata.json").is_file() and (
            root / "models" / "model.pt"
        ).is_file():
            return root
    return None


def logit(p: float) -> float:
    p = min(max(p, 1e-6), 1 - 1e-6)
    return math.log(p / (1 - p))


__all__ = [
    "BUNDLE_NAME",
    "CONFIDENCE_METHOD",
    "MERGE_MM",
    "NETWORK",
    "Calibration",
    "LesionFilter",
    "build_network",
    "find_filter",
    "merge_close",
]
