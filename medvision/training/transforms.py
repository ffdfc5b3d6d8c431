"""Post-processing transforms that the project's bundles name in ``inference.json``.

Why a body mask: lungs lie inside the body. A network that has seen few real scans can
take air outside the patient (or at the edge of the reconstruction field of view) for
lung, and ``KeepLargestConnectedComponentd`` then keeps that instead of the real lung.
This transform zeroes the lung probabilities outside the body before the inversion, on
the model grid, where the pre-processed image lies beside the prediction.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from monai.transforms import MapTransform
from scipy import ndimage


def body_mask(image: np.ndarray, threshold: float) -> np.ndarray:
    """Largest 3-D component above ``threshold``, holes filled in each axial slice
    (the last axis: RAS ``z``)."""
    above = image > threshold
    labels, n = ndimage.label(above)
    if n == 0:
        return above
    body = labels == 1 + int(np.argmax(np.bincount(labels.ravel())[1:]))
    for k in range(body.shape[2]):
        body[:, :, k] = ndimage.binary_fill_holes(body[:, :, k])
    return body


class KeepInsideBodyd(MapTransform):
    """Zero the probabilities of ``channels`` outside the body; background takes the rest.

    ``threshold`` is in the network's input units (after the bundle's intensity scaling).
    """

    def __init__(
        self,
        keys: Sequence[Hashable] | Hashable,
        image_key: str = "image",
        threshold: float = 0.3125,
        channels: Sequence[int] = (1, 2),
    ) -> None:
        super().__init__(keys)
        self.image_key, self.threshold, self.channels = image_key, threshold, list(channels)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        image = np.asarray(torch.as_tensor(d[self.image_key]).detach().cpu())[0]
        inside = torch.from_numpy(body_mask(image, self.threshold))
        for key in self.key_iterator(d):
            pred = d[key].clone()
            mask = inside.to(pred.device, pred.dtype)
            for c in self.channels:
                pred[c] = pred[c] * mask
            others = [c for c in range(pred.shape[0]) if c != 0]
            pred[0] = 1.0 - pred[others].sum(0)
            d[key] = pred
        return d
