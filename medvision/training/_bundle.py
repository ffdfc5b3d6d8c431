"""Write a trained network as a MONAI bundle the bundle runtime loads unchanged.

Why the configs are generated from one :class:`TaskSpec`: the pre-processing the network was
trained with (orientation, spacing, intensity window) must be the one ``inference.json``
lists, so both are written from the same numbers rather than kept in sync by hand.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml


@dataclass(frozen=True)
class TaskSpec:
    """Everything that defines one trainable task, its network and its bundle."""

    task: str  #: lungs | lesions
    bundle: str  #: folder name under models/
    pipeline: str  #: pipeline.yaml name
    version: str
    description: str
    pixdim: tuple[float, float, float]
    hu_window: tuple[float, float]
    channels: tuple[int, ...]
    strides: tuple[int, ...]
    num_res_units: int
    out_channels: int
    patch: tuple[int, int, int]
    labels: dict[int, dict[str, Any]]
    post: list[dict[str, Any]] = field(default_factory=list)
    #: transforms between the activation and the inversion (on the model grid)
    pre_invert: list[dict[str, Any]] = field(default_factory=list)
    min_volume_ml: float = 5.0

    def network_def(self) -> dict[str, Any]:
        return {
            "_target_": "UNet",
            "spatial_dims": 3,
            "in_channels": 1,
            "out_channels": self.out_channels,
            "channels": list(self.channels),
            "strides": list(self.strides),
            "num_res_units": self.num_res_units,
            "norm": "instance",
        }

    def build_network(self) -> Any:
        from monai.networks.nets import UNet

        d = self.network_def()
        d.pop("_target_")
        return UNet(**d)


def _preprocessing(spec: TaskSpec) -> list[dict[str, Any]]:
    lo, hi = spec.hu_window
    return [
        {"_target_": "LoadImaged", "keys": "@image_key"},
        {"_target_": "EnsureChannelFirstd", "keys": "@image_key"},
        {"_target_": "Orientationd", "keys": "@image_key", "axcodes": "RAS"},
        {
            "_target_": "Spacingd",
            "keys": "@image_key",
            "pixdim": list(spec.pixdim),
            "mode": "bilinear",
        },
        {
            "_target_": "ScaleIntensityRanged",
            "keys": "@image_key",
            "a_min": lo,
            "a_max": hi,
            "b_min": 0.0,
            "b_max": 1.0,
            "clip": True,
        },
        {"_target_": "EnsureTyped", "keys": "@image_key"},
    ]


def inference_config(spec: TaskSpec) -> dict[str, Any]:
    """``configs/inference.json`` in the Model Zoo's layout (it also runs with MONAI's
    ``python -m monai.bundle run`` given a ``datalist``)."""
    return {
        "imports": ["$import glob", "$import os"],
        "bundle_root": ".",
        "image_key": "image",
        "output_dir": "$@bundle_root + '/eval'",
        "dataset_dir": "/workspace/data",
        "datalist": "$list(sorted(glob.glob(@dataset_dir + '/*.nii.gz')))",
        "device": "$torch.device('cuda:0' if torch.cuda.is_available() else 'cpu')",
        "network_def": spec.network_def(),
        "network": "$@network_def.to(@device)",
        "preprocessing": {"_target_": "Compose", "transforms": _preprocessing(spec)},
        "dataset": {
            "_target_": "Dataset",
            "data": "$[{'image': i} for i in @datalist]",
            "transform": "@preprocessing",
        },
        "dataloader": {
            "_target_": "DataLoader",
            "dataset": "@dataset",
            "batch_size": 1,
            "shuffle": False,
            "num_workers": 0,
        },
        "inferer": {
            "_target_": "SlidingWindowInferer",
            "roi_size": list(spec.patch),
            "sw_batch_size": 2,
            "overlap": 0.25,
            "mode": "gaussian",
        },
        "postprocessing": {
            "_target_": "Compose",
            "transforms": [
                {"_target_": "Activationsd", "keys": "pred", "softmax": True},
                *spec.pre_invert,
                {
                    "_target_": "Invertd",
                    "keys": "pred",
                    "transform": "@preprocessing",
                    "orig_keys": "@image_key",
                    "nearest_interp": False,
                    "to_tensor": True,
                },
                {"_target_": "AsDiscreted", "keys": "pred", "argmax": True},
                *spec.post,
                {
                    "_target_": "SaveImaged",
                    "keys": "pred",
                    "output_dir": "@output_dir",
                    "output_postfix": "seg",
                    "separate_folder": False,
                },
            ],
        },
        "evaluator": {
            "_target_": "SupervisedEvaluator",
            "device": "@device",
            "val_data_loader": "@dataloader",
            "network": "@network",
            "inferer": "@inferer",
            "postprocessing": "@postprocessing",
            "amp": True,
        },
        "checkpointloader": {
            "_target_": "CheckpointLoader",
            "load_path": "$@bundle_root + '/models/model.pt'",
            "load_dict": {"model": "@network"},
        },
        "initialize": ["$monai.utils.set_determinism(seed=0)", "$@checkpointloader(@evaluator)"],
        "run": ["$@evaluator.run()"],
    }


def metadata(spec: TaskSpec, train_info: dict[str, Any]) -> dict[str, Any]:
    import monai
    import numpy
    import torch

    return {
        "schema": "https://github.com/Project-MONAI/MONAI-extra-test-data/releases/download/"
        "0.8.1/meta_schema_20220324.json",
        "version": spec.version,
        "changelog": {spec.version: "trained by `medvision train " + spec.task + "`"},
        "monai_version": monai.__version__,
        "pytorch_version": torch.__version__.split("+")[0],
        "numpy_version": numpy.__version__,
        "name": spec.bundle,
        "task": spec.description,
        "description": spec.description,
        "authors": "medvision project",
        "copyright": "medvision project, Apache-2.0",
        "data_source": "see docs/README.md (model card) and the training data list",
        "network_data_format": {
            "inputs": {
                "image": {
                    "type": "image",
                    "format": "hounsfield",
                    "modality": "CT",
                    "num_channels": 1,
                    "spatial_shape": list(spec.patch),
                    "dtype": "float32",
                    "value_range": list(spec.hu_window),
                    "is_patch_data": True,
                    "channel_def": {"0": "image"},
                }
            },
            "outputs": {
                "pred": {
                    "type": "image",
                    "format": "segmentation",
                    "num_channels": spec.out_channels,
                    "spatial_shape": list(spec.patch),
                    "dtype": "float32",
                    "value_range": [0, 1],
                    "is_patch_data": True,
                    "channel_def": {"0": "background"}
                    | {str(k): v["name"] for k, v in spec.labels.items()},
                }
            },
        },
        "medvision_training": train_info,
    }


def pipeline_yaml(spec: TaskSpec) -> dict[str, Any]:
    return {
        "name": spec.pipeline,
        "version": spec.version,
        "description": spec.description,
        "model_card": "docs/README.md",
        "inputs": [
            {
                "key": "image",
                "modality": "CT",
                "orientations": ["AXIAL"],
                "min_slices": 16,
                "max_slice_thickness_mm": 5.0,
            }
        ],
        "intended_use": {"intensity_range": [-1100, 3100], "fov_mm": [150, 600]},
        "labels": spec.labels,
        "thresholds": {"min_volume_ml": spec.min_volume_ml},
        "explain": {"tta_passes": 0},
    }


def write_bundle(
    out: Path,
    spec: TaskSpec,
    state_dict: dict[str, Any],
    train_info: dict[str, Any],
    card: str,
) -> Path:
    """Write the bundle folder ``out`` (configs, weights as a plain state dict, card)."""
    from medvision.pipelines.bundle._write import write_bundle_folder

    return write_bundle_folder(
        out,
        inference=inference_config(spec),
        metadata=metadata(spec, train_info),
        pipeline_yaml=f"# pipeline.yaml of the bundle written by `medvision train {spec.task}`.\n"
        + yaml.safe_dump(pipeline_yaml(spec), sort_keys=False),
        state_dict={k: v.detach().cpu().float().contiguous() for k, v in state_dict.items()},
        card=card,
    )
