"""Helpers for the bundle tests: a network with a known answer, slice subsets, dciodvfy.

``ThresholdNet`` stands in for a bundle's network through a ConfigParser override: it
labels every voxel brighter than 0.5 (after the bundle's own intensity scaling) as class 1,
so where the output lands on the source grid is known exactly.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch
from torch import nn

from medvision.dicom import Volume
from tests.tools import dciodvfy_errors  # noqa: F401 - re-exported for the tests


class ThresholdNet(nn.Module):
    """Two-class logits: background below 0.5, foreground above (one channel in, any size)."""

    def __init__(self, out_channels: int = 2) -> None:
        super().__init__()
        self.out_channels = out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        fg = 20.0 * (x[:, :1] - 0.5)
        return torch.cat([-fg] + [fg] * (self.out_channels - 1), dim=1)


def slab(volume: Volume, k0: int, k1: int) -> Volume:
    """Slices ``k0:k1`` of ``volume`` as a volume that still references its source images."""
    return dataclasses.replace(
        volume,
        array=np.ascontiguousarray(volume.array[k0:k1]),
        origin=tuple(float(v) for v in volume.index_to_lps(np.array([k0, 0, 0]))),
        sop_instance_uids=volume.sop_instance_uids[k0:k1],
        frame_numbers=volume.frame_numbers[k0:k1],
        source_headers=volume.source_headers[k0:k1],
    )
