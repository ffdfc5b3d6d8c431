"""MeshNet: a stack of dilated 3-D convolutions with no down-sampling (Fedorov et al. 2017).

brainchop's models are MeshNets. This module holds the network in PyTorch, built from a
plain list of layer descriptions so that a MONAI bundle's ``inference.json`` can
instantiate it with ``"_target_": "medvision.pipelines.brainchop.MeshNet"`` and the layer
list as an argument: the bundle stays data, not code.

Each layer is a dict: ``out_channels``, ``kernel_size``, ``dilation``, ``bias``,
``activation`` ("relu", "gelu", "elu", "sigmoid", "tanh" or "linear") and ``norm``
(True for brainchop's ``*_gn`` layers: a per-channel normalisation over the whole volume
without learned scale or shift, applied before the activation, as brainchop does).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

_ACTIVATIONS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU,
    "gelu": nn.GELU,
    "elu": nn.ELU,
    "sigmoid": nn.Sigmoid,
    "tanh": nn.Tanh,
    "linear": nn.Identity,
}


class _VolumeNorm(nn.Module):
    """Normalise each channel to zero mean, unit variance over all voxels (eps 1e-5).

    The same as ``GroupNorm(C, C, affine=False)``; written out so it runs channel by
    channel, which halves peak memory on a 256^3 volume.
    """

    def __init__(self, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dims = tuple(range(2, x.ndim))
        var, mean = torch.var_mean(x, dim=dims, keepdim=True, correction=0)
        return (x - mean) * torch.rsqrt(var + self.eps)


class MeshNet(nn.Module):
    """Dilated-convolution segmentation network; output has one channel per class."""

    def __init__(self, in_channels: int, layers: Sequence[dict[str, Any]]) -> None:
        super().__init__()
        if not layers:
            raise ValueError("MeshNet needs at least one layer.")
        blocks: list[nn.Module] = []
        channels = in_channels
        for n, spec in enumerate(layers):
            activation = str(spec.get("activation", "linear"))
            if activation not in _ACTIVATIONS:
                raise ValueError(
                    f"MeshNet layer {n}: activation '{activation}' is not one of "
                    f"{sorted(_ACTIVATIONS)}."
                )
            kernel = int(spec["kernel_size"])
            dilation = int(spec.get("dilation", 1))
            if kernel % 2 != 1:
                raise ValueError(f"MeshNet layer {n}: kernel size must be odd, got {kernel}.")
            out = int(spec["out_channels"])
            block = nn.Sequential()
            block.add_module(
                "conv",
                nn.Conv3d(
                    channels,
                    out,
                    kernel_size=kernel,
                    dilation=dilation,
                    padding=dilation * (kernel - 1) // 2,
                    bias=bool(spec.get("bias", True)),
                ),
            )
            if spec.get("norm", False):
                block.add_module("norm", _VolumeNorm())
            block.add_module("act", _ACTIVATIONS[activation]())
            blocks.append(block)
            channels = out
        self.layers = nn.Sequential(*blocks)
        self.out_channels = channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.device.type == "cpu":
            # oneDNN's channels-last 3-D convolution is 2-4x faster for dilated kernels.
            x = x.contiguous(memory_format=torch.channels_last_3d)
        return self.layers(x).contiguous()


__all__ = ["MeshNet"]
