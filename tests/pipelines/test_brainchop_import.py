"""brainchop TF.js -> PyTorch MeshNet -> MONAI bundle: structure and numerical identity.

The reference forward pass below follows Keras semantics literally (channels-last input,
kernel indexed [d, h, w, in, out], 'same' zero padding, dilation), reading the weights
straight from the .bin shards, so it shares no code or axis conventions with the importer.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from scipy.special import erf

from medvision.pipelines.brainchop import KNOWN, MeshNet, import_brainchop, read_tfjs_meshnet
from medvision.pipelines.bundle import BundlePipeline, read_spec


@pytest.fixture(scope="module")
def brainchop_dir(shared_data) -> Path:
    return shared_data / "models" / "brainchop"


def _keras_forward(model_dir: Path, x: np.ndarray) -> np.ndarray:
    spec = json.loads((model_dir / "model.json").read_text())
    weights: dict[str, np.ndarray] = {}
    for group in spec["weightsManifest"]:
        blob = b"".join((model_dir / p).read_bytes() for p in group["paths"])
        data = np.frombuffer(blob, dtype="<f4")
        at = 0
        for w in group["weights"]:
            n = int(np.prod(w["shape"]))
            weights[w["name"]] = data[at : at + n].reshape(w["shape"]).astype(np.float64)
            at += n
    x = x.astype(np.float64)  # (D, H, W, C)
    for layer in spec["modelTopology"]["model_config"]["config"]["layers"][1:]:
        cfg = layer["config"]
        if layer["class_name"] == "Conv3D":
            kernel = weights[cfg["name"] + "/kernel"]
            r = cfg["dilation_rate"][0]
            k = kernel.shape[0]
            pad = r * (k - 1) // 2
            xp = np.pad(x, [(pad, pad)] * 3 + [(0, 0)])
            d, h, w = x.shape[:3]
            y = np.zeros((d, h, w, kernel.shape[-1]))
            for a in range(k):
                for b in range(k):
                    for c in range(k):
                        patch = xp[a * r : a * r + d, b * r : b * r + h, c * r : c * r + w]
                        y += patch @ kernel[a, b, c]
            if cfg["use_bias"]:
                y += weights[cfg["name"] + "/bias"]
            if cfg["name"].endswith("_gn"):
                y = (y - y.mean((0, 1, 2))) / np.sqrt(y.var((0, 1, 2)) + 1e-5)
            x = y
        elif cfg["activation"] == "relu":
            x = np.maximum(x, 0)
        elif cfg["activation"] == "gelu":
            x = 0.5 * x * (1 + erf(x / np.sqrt(2)))
    return x


@pytest.mark.parametrize("name", ["model5_gw_ae", "mindgrab"])
def test_meshnet_matches_keras_semantics(brainchop_dir, name):
    model_dir = brainchop_dir / "public" / "models" / name
    model = read_tfjs_meshnet(model_dir)
    net = MeshNet(model.in_channels, model.layers)
    net.load_state_dict(model.state_dict)
    rng = np.random.default_rng(0)
    x = rng.random((12, 14, 10)).astype(np.float32)  # anisotropic: catches swapped axes
    with torch.inference_mode():
        ours = net.eval()(torch.from_numpy(x)[None, None])[0].numpy()
    ref = _keras_forward(model_dir, x[..., None]).transpose(3, 0, 1, 2)
    assert np.allclose(ours, ref, rtol=1e-4, atol=1e-4 * np.abs(ref).max())
    if name == "mindgrab":
        assert sum(layer["norm"] for layer in model.layers) == 25
        assert {layer["activation"] for layer in model.layers} == {"gelu", "linear"}


def test_import_writes_complete_bundles_outside_the_repo(brainchop_dir, tmp_path):
    written = import_brainchop(brainchop_dir, tmp_path)
    assert sorted(p.name for p in written) == sorted(k.pipeline for k in KNOWN.values())
    for bundle in written:
        for part in (
            "configs/inference.json",
            "configs/metadata.json",
            "models/model.pt",
            "pipeline.yaml",
            "docs/README.md",
            "LICENSE",
        ):
            assert (bundle / part).is_file(), part
        card = (bundle / "docs" / "README.md").read_text()
        assert "MIT" in card and "4c87885f" in card
        spec = read_spec(bundle / "pipeline.yaml")
        assert spec.inputs[0].modality == "MR"
        config = json.loads((bundle / "configs" / "inference.json").read_text())
        targets = [t["_target_"] for t in config["preprocessing"]["transforms"]]
        assert targets[:3] == [
            "LoadImaged",
            "EnsureChannelFirstd",
            "medvision.pipelines.brainchop.Conformd",
        ]
        metadata = json.loads((bundle / "configs" / "metadata.json").read_text())
        assert metadata["version"].startswith("1.1.0+brainchop.4c87885f")
    gwm = yaml.safe_load((tmp_path / "brainchop-gwm-light" / "pipeline.yaml").read_text())
    assert {v["name"] for v in gwm["labels"].values()} == {"White matter", "Grey matter"}
    pipe = BundlePipeline(tmp_path / "brainchop-mindgrab")
    assert [label.type.meaning for label in pipe.labels] == ["Brain"]
    assert not pipe.runtime().weights.untrained


def test_import_refuses_the_repository_and_unknown_models(brainchop_dir, tmp_path):
    repo = Path(__file__).resolve().parents[2]
    with pytest.raises(ValueError, match="repository"):
        import_brainchop(brainchop_dir, repo / "models" / "x")
    with pytest.raises(ValueError, match="No label coding"):
        import_brainchop(brainchop_dir, tmp_path, model="model21_104class")
    assert not (repo / "models" / "x").exists()
