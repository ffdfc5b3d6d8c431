"""brainchop's conform step (FreeSurfer's ``mri_convert --conform``) as a MONAI transform.

brainchop conforms every input before its models see it (niivue's ``conform``, a port of
FastSurfer's ``conform.py``, itself a Python ``mri_convert -c``), and its MeshNets were
trained on such volumes. What that step does, and what :class:`Conformd` reproduces:

* **grid**: 256^3 voxels of 1 mm whose axes point exactly Left, Inferior, Anterior
  ("LIA", FreeSurfer's coronal slice stack), centred on the centre of the input volume
  (FreeSurfer's ``c_ras``: the input affine applied to ``shape / 2``). The grid is aligned
  with the patient axes, not with the acquisition: sagittal, axial and oblique series of
  the same head land on the same grid, and whatever lies outside 256 mm is cut;
* **resampling**: one trilinear interpolation from the input voxels (zeros outside);
* **intensity**: a robust range measured on the *input* voxels (before resampling):
  the minimum, and the upper edge where the top 0.1 % of the non-zero voxels begin, read
  from a 1000-bin histogram; the resampled voxels are mapped linearly from that range to
  0..255, clipped, and truncated to whole numbers (brainchop stores them as uint8).

An earlier version of the bundles approximated this with Orientation (nearest axis codes,
keeping any obliquity), Spacing, a 0..99.9th percentile of all resampled voxels and a
centred pad/crop; docs/models.md records how the two compare on real and rewritten T1s.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import InvertibleTransform, MapTransform, SpatialResample

#: Conformed grid: FreeSurfer's 256^3 at 1 mm.
SIZE = 256
#: Voxel axes of the conformed grid in RAS: i -> Left, j -> Inferior, k -> Anterior.
LIA = np.array([[-1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, -1.0, 0.0]])


def conform_affine(affine: np.ndarray, shape: Sequence[int]) -> np.ndarray:
    """The RAS affine of the conformed 256^3 1 mm LIA grid for an input of ``shape``.

    Centred as FreeSurfer does: the input's centre is ``affine @ (shape / 2)`` and the
    conformed grid's voxel (128, 128, 128) lies on it.
    """
    affine = np.asarray(affine, dtype=np.float64)
    centre = affine[:3, :3] @ (np.asarray(shape[:3], dtype=np.float64) / 2) + affine[:3, 3]
    out = np.eye(4)
    out[:3, :3] = LIA
    out[:3, 3] = centre - LIA @ np.full(3, SIZE / 2)
    return out


def robust_range(data: np.ndarray, f_high: float = 0.999, bins: int = 1000) -> tuple[float, float]:
    """FastSurfer/FreeSurfer's robust intensity range of ``data`` (lower bound not cropped).

    The upper bound is where the brightest ``1 - f_high`` of the *non-zero* voxels begin,
    read from a ``bins``-bin histogram between the minimum and maximum, two bins down (as
    FastSurfer's ``getscale`` and niivue's ``conform`` both place it). Returns (low, high);
    high == low for a constant image.
    """
    values = np.asarray(data).ravel()
    if not np.issubdtype(values.dtype, np.floating):
        values = values.astype(np.float64)  # float32 volumes stay as they are (memory)
    low, high = float(values.min()), float(values.max())
    if high <= low:
        return low, low
    nonzero = int(np.count_nonzero(np.abs(values) >= 1e-15))
    hist, _ = np.histogram(values, bins=bins, range=(low, high))
    cumulative = np.concatenate(([0], np.cumsum(hist)))
    target = values.size - int((1.0 - f_high) * nonzero)
    first = int(np.argmax(cumulative >= target))
    upper = low + max(first - 2, 0) * (high - low) / bins
    return low, upper


def scale_to_uint8_levels(data: torch.Tensor, low: float, high: float) -> torch.Tensor:
    """Map ``low..high`` to 0..255, clip, and truncate to whole levels (brainchop's uint8)."""
    scale = 255.0 / (high - low) if high > low else 1.0
    return torch.floor(((data - low) * scale).clamp(0.0, 255.0))


class Conformd(MapTransform, InvertibleTransform):
    """brainchop's conform step on ``keys`` (channel-first MetaTensors with a RAS affine).

    Invertible: ``Invertd`` maps the network's output back onto the input grid through
    the recorded resampling (the intensity mapping needs no inverse).
    """

    def __init__(self, keys: KeysCollection, allow_missing_keys: bool = False) -> None:
        MapTransform.__init__(self, keys, allow_missing_keys)
        self.resampler = SpatialResample(mode="bilinear", padding_mode="zeros", dtype=torch.float64)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            image = d[key]
            if not isinstance(image, MetaTensor):
                raise TypeError(f"Conformd needs a MetaTensor with an affine for '{key}'.")
            low, high = robust_range(image.detach().cpu().numpy())
            target = conform_affine(image.affine.cpu().numpy(), image.shape[1:])
            conformed = self.resampler(
                image, dst_affine=torch.as_tensor(target), spatial_size=(SIZE, SIZE, SIZE)
            )
            conformed.array = scale_to_uint8_levels(conformed.as_tensor().float(), low, high)
            d[key] = conformed
        return d

    def inverse(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.resampler.inverse(d[key])
        return d


__all__ = ["LIA", "SIZE", "Conformd", "conform_affine", "robust_range", "scale_to_uint8_levels"]
