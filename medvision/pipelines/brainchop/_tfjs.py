"""Read a TF.js "layers-model" (model.json + .bin shards) into MeshNet layers and weights.

Why a reader of our own instead of TensorFlow: the node must not carry TensorFlow, and a
MeshNet's graph is a plain chain of Conv3D / activation (/ batch norm) layers that is fully
described by ``modelTopology``. The weights are the shards of ``weightsManifest``
concatenated in order, each tensor stored C-order with the shape the manifest gives.

Axis conventions (checked against brainchop's runtime, see docs/models.md):

* Keras Conv3D kernels are ``(D, H, W, in, out)``; PyTorch wants ``(out, in, D, H, W)``:
  ``kernel.transpose(4, 3, 0, 1, 2)`` keeps the spatial axes in the same order.
* The models are channels-last (``[batch, D, H, W, C]``); in PyTorch the channel moves to
  axis 1 and the spatial axes stay D, H, W, so a volume fed as ``[1, 1, D, H, W]`` sees
  the same voxels as brainchop's ``[1, D, H, W, 1]``.
* Layer names ending in ``_gn`` get a per-channel volume normalisation after the
  convolution (brainchop's own runtime does this; the layer itself carries no weights).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

_DTYPES = {
    "float32": np.float32,
    "int32": np.int32,
    "uint8": np.uint8,
    "uint16": np.uint16,
    "float16": np.float16,
}
_SKIPPED = {"InputLayer", "Dropout", "SpatialDropout3D"}


@dataclass(frozen=True)
class TfjsModel:
    """What a MeshNet needs from a TF.js model: its layers, weights and input shape."""

    in_channels: int
    #: MeshNet layer dicts (see ``_meshnet.MeshNet``).
    layers: tuple[dict[str, Any], ...]
    #: PyTorch state dict for ``MeshNet(in_channels, layers)``.
    state_dict: dict[str, torch.Tensor]
    #: Spatial input shape the model was exported with, e.g. (256, 256, 256).
    input_shape: tuple[int, ...]
    generated_by: str


def _layer_list(model_json: dict[str, Any]) -> list[dict[str, Any]]:
    topology = model_json.get("modelTopology")
    if not isinstance(topology, dict):
        raise ValueError("model.json has no 'modelTopology' object; is it a TF.js layers model?")
    config = topology.get("model_config", topology)
    layers = config.get("config", {})
    layers = layers.get("layers") if isinstance(layers, dict) else layers
    if not isinstance(layers, list) or not layers:
        raise ValueError("model.json's modelTopology lists no layers.")
    return layers


def _check_chain(layers: list[dict[str, Any]]) -> None:
    """MeshNet is a chain: each layer must take the previous layer's output, and only it."""
    for prev, layer in zip(layers, layers[1:], strict=False):
        nodes = layer.get("inbound_nodes") or []
        if not nodes:
            continue
        inbound = [entry[0] for entry in nodes[0]]
        if inbound != [prev.get("name", prev["config"].get("name"))]:
            raise ValueError(
                f"Layer '{layer.get('name')}' takes {inbound}, not the previous layer: "
                "only chain models (MeshNet) can be imported."
            )


def _read_weights(model_dir: Path, manifest: list[dict[str, Any]]) -> dict[str, np.ndarray]:
    weights: dict[str, np.ndarray] = {}
    for group in manifest:
        blob = b"".join((model_dir / p).read_bytes() for p in group["paths"])
        offset = 0
        for entry in group["weights"]:
            shape = tuple(int(s) for s in entry["shape"])
            count = int(np.prod(shape)) if shape else 1
            quant = entry.get("quantization")
            stored = np.dtype(_DTYPES[quant["dtype"] if quant else entry["dtype"]])
            size = count * stored.itemsize
            if offset + size > len(blob):
                raise ValueError(
                    f"Weight '{entry['name']}' runs past the end of shard(s) {group['paths']}."
                )
            raw = np.frombuffer(blob, dtype=stored, count=count, offset=offset)
            offset += size
            if quant and quant["dtype"] in ("uint8", "uint16"):
                raw = raw.astype(np.float32) * float(quant["scale"]) + float(quant["min"])
            weights[entry["name"]] = raw.astype(np.float32).reshape(shape)
        if offset != len(blob):
            raise ValueError(
                f"Shard(s) {group['paths']} hold {len(blob)} bytes, the manifest describes "
                f"{offset}."
            )
    return weights


def read_tfjs_meshnet(model_dir: Path) -> TfjsModel:
    """Parse ``model_dir/model.json`` and its shards; raise ValueError saying what is wrong."""
    model_dir = Path(model_dir)
    model_json = json.loads((model_dir / "model.json").read_text())
    layers = _layer_list(model_json)
    _check_chain(layers)
    weights = _read_weights(model_dir, model_json.get("weightsManifest", []))

    first = layers[0]["config"]
    batch_shape = first.get("batch_input_shape") or first.get("batchInputShape")
    if not batch_shape or len(batch_shape) != 5:
        raise ValueError(f"Expected a 5-D channels-last input, got {batch_shape}.")
    in_channels = int(batch_shape[-1])

    specs: list[dict[str, Any]] = []
    state: dict[str, torch.Tensor] = {}
    used: set[str] = set()
    for layer in layers:
        kind, cfg = layer["class_name"], layer["config"]
        name = cfg.get("name", layer.get("name"))
        if kind in _SKIPPED:
            continue
        if kind == "Conv3D":
            _conv(cfg, name, weights, specs, state, used)
        elif kind == "Activation":
            if not specs or specs[-1]["activation"] != "linear":
                raise ValueError(f"Activation '{name}' does not follow a linear Conv3D.")
            specs[-1]["activation"] = str(cfg["activation"]).lower()
        elif kind == "BatchNormalization":
            _fold_batch_norm(cfg, name, weights, specs, state, used)
        else:
            raise ValueError(f"Layer '{name}' of type {kind} is not supported by the importer.")
    unused = sorted(set(weights) - used)
    if unused:
        raise ValueError(f"Weights not used by any layer: {unused[:5]}.")
    return TfjsModel(
        in_channels=in_channels,
        layers=tuple(specs),
        state_dict=state,
        input_shape=tuple(int(s) for s in batch_shape[1:4]),
        generated_by=str(model_json.get("generatedBy", "")),
    )


def _conv(
    cfg: dict[str, Any],
    name: str,
    weights: dict[str, np.ndarray],
    specs: list[dict[str, Any]],
    state: dict[str, torch.Tensor],
    used: set[str],
) -> None:
    if cfg.get("data_format", "channels_last") != "channels_last":
        raise ValueError(f"Conv3D '{name}': only channels_last models are supported.")
    if any(int(s) != 1 for s in cfg.get("strides", [1, 1, 1])) or int(cfg.get("groups", 1)) != 1:
        raise ValueError(f"Conv3D '{name}': strided or grouped convolutions are not MeshNet.")
    if cfg.get("padding", "same") != "same":
        raise ValueError(f"Conv3D '{name}': padding '{cfg.get('padding')}' is not 'same'.")
    kernel_size = {int(k) for k in cfg["kernel_size"]}
    dilation = {int(d) for d in cfg.get("dilation_rate", [1, 1, 1])}
    if len(kernel_size) != 1 or len(dilation) != 1:
        raise ValueError(f"Conv3D '{name}': anisotropic kernels or dilations are not supported.")
    kernel = weights[f"{name}/kernel"]
    n = len(specs)
    state[f"layers.{n}.conv.weight"] = torch.from_numpy(
        np.ascontiguousarray(kernel.transpose(4, 3, 0, 1, 2))
    )
    used.add(f"{name}/kernel")
    use_bias = bool(cfg.get("use_bias", True))
    if use_bias:
        state[f"layers.{n}.conv.bias"] = torch.from_numpy(weights[f"{name}/bias"].copy())
        used.add(f"{name}/bias")
    specs.append(
        {
            "out_channels": int(cfg["filters"]),
            "kernel_size": kernel_size.pop(),
            "dilation": dilation.pop(),
            "bias": use_bias,
            "norm": name.endswith("_gn"),
            "activation": str(cfg.get("activation", "linear")).lower(),
        }
    )


def _fold_batch_norm(
    cfg: dict[str, Any],
    name: str,
    weights: dict[str, np.ndarray],
    specs: list[dict[str, Any]],
    state: dict[str, torch.Tensor],
    used: set[str],
) -> None:
    """Fold an inference-mode batch norm into the convolution before it."""
    if not specs or specs[-1]["activation"] != "linear" or specs[-1]["norm"]:
        raise ValueError(f"BatchNormalization '{name}' does not follow a linear Conv3D.")
    n = len(specs) - 1
    mean = weights[f"{name}/moving_mean"]
    var = weights[f"{name}/moving_variance"]
    gamma = weights.get(f"{name}/gamma", np.ones_like(mean))
    beta = weights.get(f"{name}/beta", np.zeros_like(mean))
    used.update(k for k in weights if k.startswith(f"{name}/"))
    scale = gamma / np.sqrt(var + float(cfg.get("epsilon", 1e-3)))
    w = state[f"layers.{n}.conv.weight"]
    bias = state.get(f"layers.{n}.conv.bias", torch.zeros(w.shape[0]))
    state[f"layers.{n}.conv.weight"] = w * torch.from_numpy(scale)[:, None, None, None, None]
    state[f"layers.{n}.conv.bias"] = torch.from_numpy(
        beta - mean * scale
    ) + bias * torch.from_numpy(scale)
    specs[-1]["bias"] = True


__all__ = ["TfjsModel", "read_tfjs_meshnet"]
