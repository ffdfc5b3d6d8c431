"""brainchop's MeshNet brain-MR models: a PyTorch MeshNet and a TF.js -> MONAI bundle importer."""

from medvision.pipelines.brainchop._conform import Conformd, conform_affine, robust_range
from medvision.pipelines.brainchop._import import (
    KNOWN,
    available_models,
    default_out_dir,
    import_brainchop,
)
from medvision.pipelines.brainchop._meshnet import MeshNet
from medvision.pipelines.brainchop._tfjs import TfjsModel, read_tfjs_meshnet

__all__ = [
    "KNOWN",
    "Conformd",
    "MeshNet",
    "TfjsModel",
    "available_models",
    "conform_affine",
    "default_out_dir",
    "import_brainchop",
    "read_tfjs_meshnet",
    "robust_range",
]
