"""``medvision models import brainchop``: brainchop's MeshNet models as MONAI bundles.

The conversion writes a complete bundle (configs, ``models/model.pt``, ``pipeline.yaml``,
model card, licence) into a folder OUTSIDE the repository: the weights are derived from
third-party files and must never be committed. The bundle's pre-processing reproduces
brainchop's input conventions with MONAI transforms (stock ones and one of ours, invertible),
so the generic bundle runtime runs it like any zoo bundle:

* brainchop's conform step (:class:`~medvision.pipelines.brainchop.Conformd`, FreeSurfer's
  ``mri_convert --conform``): a 256^3 1 mm grid with axes exactly Left, Inferior, Anterior
  ("LIA") centred on the input, one trilinear resampling, and intensities mapped from
  FreeSurfer's robust range to 0..255 levels; what the models were trained on;
* brainchop's per-model normalisation (min-max, or 5th..95th quantile for mindgrab);
* brainchop's crop to the head before inference (a threshold on the normalised intensity
  plus a margin), undone by ``Invertd`` afterwards together with the conform step.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from medvision._hashing import sha256_file
from medvision.pipelines._model_folder import replacing
from medvision.pipelines.brainchop._tfjs import TfjsModel, read_tfjs_meshnet
from medvision.pipelines.bundle._write import write_bundle_folder

BRAIN = {
    "name": "Brain",
    "kind": "organ",
    "category": {"value": "91723000", "scheme": "SCT", "meaning": "Anatomical Structure"},
    "type": {"value": "12738006", "scheme": "SCT", "meaning": "Brain"},
    "cielab": [42631, 18841, 44020],  # green, RGB (60, 180, 75)
}
TISSUE = {"value": "85756007", "scheme": "SCT", "meaning": "Tissue"}
WHITE = {
    "name": "White matter",
    "kind": "organ",
    "category": TISSUE,
    "type": {"value": "389080008", "scheme": "SCT", "meaning": "White Matter"},
    "site": {"value": "12738006", "scheme": "SCT", "meaning": "Brain"},
    "cielab": [41707, 32764, 18350],  # azure, RGB (0, 160, 255)
}
GREY = {
    "name": "Grey matter",
    "kind": "organ",
    "category": TISSUE,
    "type": {"value": "389081007", "scheme": "SCT", "meaning": "Gray Matter"},
    "site": {"value": "12738006", "scheme": "SCT", "meaning": "Brain"},
    "cielab": [35000, 50000, 40000],  # red, RGB (234, 60, 84)
}


@dataclass(frozen=True)
class Known:
    """What brainchop's model list says about one model (labels, normalisation, crop)."""

    pipeline: str
    title: str
    labels: dict[int, dict[str, Any]]
    quantile_norm: bool
    crop_threshold: float
    crop_margin: int


#: From brainchop's model list (brainchop-parameters.js): label names (colormap.json),
#: enableQuantileNorm, autoThreshold and cropPadding of each model.
KNOWN: dict[str, Known] = {
    "model5_gw_ae": Known(
        "brainchop-gwm-light", "Tissue GWM (light)", {1: WHITE, 2: GREY}, False, 0.0, 18
    ),
    "model20chan3cls": Known(
        "brainchop-gwm", "Tissue GWM (high accuracy)", {1: WHITE, 2: GREY}, True, 0.2, 0
    ),
    "mindgrab": Known(
        "brainchop-mindgrab", "Omnimodal skull stripping (mindgrab)", {1: BRAIN}, True, 0.5, 20
    ),
}


#: Version of the bundles this importer writes (before ``+brainchop.<commit>``); re-import
#: bundles of an older version to get the current pre-processing.
BUNDLE_VERSION = "1.1.0"


def default_out_dir() -> Path:
    """Where imported bundles go unless ``--out`` says otherwise (the user models folder)."""
    from medvision.pipelines.bundle import user_models_dir

    return user_models_dir()


def _models_root(src: Path) -> Path:
    for candidate in (src / "public" / "models", src / "models", src):
        if candidate.is_dir() and any(candidate.glob("*/model.json")):
            return candidate
    raise FileNotFoundError(f"No brainchop models (*/model.json) under {src}.")


def available_models(src: Path) -> list[str]:
    """Known brainchop models present under ``src``."""
    root = _models_root(Path(src))
    return sorted(name for name in KNOWN if (root / name / "model.json").is_file())


def import_brainchop(src: Path, out_dir: Path, model: str | None = None) -> list[Path]:
    """Convert ``model`` (default: every known model found) into bundles under ``out_dir``."""
    src, out_dir = Path(src), Path(out_dir)
    root = _models_root(src)
    from medvision.pipelines.bundle import bundled_models_dir

    if out_dir.resolve().is_relative_to(bundled_models_dir().resolve()):
        raise ValueError(
            f"Refusing to write converted weights into the bundled models ({out_dir}: the "
            "repository's models/, which ships with medvision; derived weights are never "
            "committed); choose a folder outside it (default ~/.cache/medvision/models)."
        )
    names = [model] if model else available_models(src)
    unknown = [n for n in names if n not in KNOWN]
    if unknown:
        raise ValueError(f"No label coding known for {unknown}; importable: {sorted(KNOWN)}.")
    written = []
    for name in names:
        if not (root / name / "model.json").is_file():
            raise FileNotFoundError(f"{root / name / 'model.json'} not found.")
        written.append(_write_bundle(root / name, src, out_dir / KNOWN[name].pipeline, name))
    return written


def _inference_config(model: TfjsModel, known: Known) -> dict[str, Any]:
    key = "@image_key"
    norm = (
        {
            "_target_": "ScaleIntensityRangePercentilesd",
            "keys": key,
            "lower": 5,
            "upper": 95,
            "b_min": 0.0,
            "b_max": 1.0,
            "clip": False,
        }
        if known.quantile_norm
        else {"_target_": "ScaleIntensityd", "keys": key, "minv": 0.0, "maxv": 1.0}
    )
    threshold = f"$lambda x: x > {known.crop_threshold} * x.max()"
    return {
        "imports": ["$import torch", "$import medvision.pipelines.brainchop"],
        "bundle_root": ".",
        "image_key": "image",
        "output_dir": "$@bundle_root + '/eval'",
        "device": "$torch.device('cuda' if torch.cuda.is_available() else 'cpu')",
        "network_def": {
            "_target_": "medvision.pipelines.brainchop.MeshNet",
            "in_channels": model.in_channels,
            "layers": list(model.layers),
        },
        "network": "$@network_def.to(@device)",
        "preprocessing": {
            "_target_": "Compose",
            "transforms": [
                {"_target_": "LoadImaged", "keys": key},
                {"_target_": "EnsureChannelFirstd", "keys": key},
                {"_target_": "medvision.pipelines.brainchop.Conformd", "keys": key},
                norm,
                {
                    "_target_": "CropForegroundd",
                    "keys": key,
                    "source_key": key,
                    "select_fn": threshold,
                    "margin": known.crop_margin,
                    "allow_smaller": True,
                },
                {"_target_": "EnsureTyped", "keys": key, "dtype": "$torch.float32"},
            ],
        },
        "inferer": {"_target_": "SimpleInferer"},
        "postprocessing": {
            "_target_": "Compose",
            "transforms": [
                {"_target_": "Activationsd", "keys": "pred", "softmax": True},
                {
                    "_target_": "Invertd",
                    "keys": "pred",
                    "transform": "@preprocessing",
                    "orig_keys": key,
                    "nearest_interp": False,
                    "to_tensor": True,
                },
                {"_target_": "AsDiscreted", "keys": "pred", "argmax": True},
                {
                    "_target_": "SaveImaged",
                    "keys": "pred",
                    "output_dir": "@output_dir",
                    "output_postfix": "seg",
                    "separate_folder": False,
                },
            ],
        },
    }


def _metadata(name: str, known: Known, model: TfjsModel, commit: str) -> dict[str, Any]:
    channels = {"0": "background", **{str(v): d["name"] for v, d in known.labels.items()}}
    return {
        "version": f"{BUNDLE_VERSION}+brainchop.{commit[:8] or 'unknown'}",
        "changelog": {
            "1.1.0": "brainchop's own conform step (Conformd) replaces the approximation",
            "1.0.0": f"converted from brainchop's TF.js model '{name}' by medvision",
        },
        "name": f"brainchop {known.title}",
        "task": "Brain MRI segmentation",
        "description": f"brainchop's MeshNet '{name}' ({known.title}), converted to PyTorch.",
        "authors": "brainchop authors (neuroneural); conversion by medvision",
        "copyright": "brainchop: MIT licence, see LICENSE",
        "network_data_format": {
            "inputs": {
                "image": {
                    "type": "image",
                    "format": "magnitude",
                    "modality": "MR",
                    "num_channels": model.in_channels,
                    "spatial_shape": list(model.input_shape),
                    "dtype": "float32",
                    "value_range": [0, 1],
                    "is_patch_data": False,
                }
            },
            "outputs": {
                "pred": {
                    "type": "image",
                    "format": "segmentation",
                    "num_channels": len(channels),
                    "dtype": "float32",
                    "value_range": [0, 1],
                    "channel_def": channels,
                }
            },
        },
        "intended_use": "Research only; not for diagnostic use.",
    }


def _spec(known: Known, card: str) -> dict[str, Any]:
    return {
        "name": known.pipeline,
        "description": f"brainchop {known.title} on a 3-D T1-weighted brain MR.",
        "model_card": card,
        "inputs": [
            {"key": "image", "modality": "MR", "min_slices": 100, "max_slice_thickness_mm": 1.5}
        ],
        "intended_use": {"fov_mm": [150, 300]},
        "labels": {v: d for v, d in known.labels.items()},
        "thresholds": {"min_volume_ml": 1.0},
        "explain": {"tta_passes": 0, "flip_axes": [0]},
    }


def _write_bundle(model_dir: Path, src: Path, out: Path, name: str) -> Path:
    known = KNOWN[name]
    model = read_tfjs_meshnet(model_dir)
    commit_file = src / "COMMIT"
    commit = commit_file.read_text().split()[0] if commit_file.is_file() else ""
    sources = sorted(p for p in model_dir.iterdir() if p.is_file())
    digests = "\n".join(f"| `{p.name}` | `{sha256_file(p)}` |" for p in sources)
    card = _CARD.format(
        title=known.title,
        name=name,
        commit=commit or "unknown",
        digests=digests,
        layers=len(model.layers),
        params=sum(t.numel() for t in model.state_dict.values()),
        norm="5th-95th percentile" if known.quantile_norm else "min-max",
        threshold=known.crop_threshold,
        margin=known.crop_margin,
    )
    with replacing(out) as staging:  # renamed into place whole (pipelines/_model_folder.py)
        write_bundle_folder(
            staging,
            inference=_inference_config(model, known),
            metadata=_metadata(name, known, model, commit),
            pipeline_yaml=yaml.safe_dump(_spec(known, "docs/README.md"), sort_keys=False),
            state_dict=model.state_dict,
            card=card,
        )
        if (src / "LICENSE").is_file():
            shutil.copyfile(src / "LICENSE", staging / "LICENSE")
    return out


_CARD = """# brainchop {title} (`{name}`), converted by medvision

**Source**: brainchop (https://github.com/neuroneural/brainchop), commit `{commit}`,
TF.js layers model `{name}`. **Licence**: MIT, see `LICENSE` (copied from the source).
These weights are third-party and derived from the source files below; they are not
part of medvision and must not be committed to its repository.

| source file | sha256 |
| --- | --- |
{digests}

**Network**: MeshNet, {layers} convolution layers, {params} parameters, converted from
Keras channels-last Conv3D (kernel D,H,W,in,out -> PyTorch out,in,D,H,W); layers named
`*_gn` get brainchop's per-channel volume normalisation.

**Input**: one 3-D T1-weighted brain MR of any orientation, conformed as brainchop does
(FreeSurfer's conform: 256^3 1 mm LIA grid centred on the input, trilinear, robust
intensity range to 0..255 levels), then {norm} normalisation;
cropped to voxels above {threshold} x max (margin {margin} voxels) before inference.

**Intended use**: research and demonstration; not a medical device, not for diagnosis.
Results on one real Philips 3 T MPRAGE are in medvision's docs/models.md.
"""


__all__ = ["KNOWN", "available_models", "default_out_dir", "import_brainchop"]
