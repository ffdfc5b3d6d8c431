"""nnU-Net v2 models (and TotalSegmentator's) as medvision pipelines.

``medvision models import nnunet RESULTS_DIR`` copies a trained model into the user's model
folder with a ``pipeline.yaml``; :class:`NnunetPipeline` runs it with nnU-Net's own
predictor (the optional extra ``medvision[nnunet]``). Importing this package imports neither
torch nor nnU-Net. See docs/models.md.
"""

from medvision.pipelines.nnunet._import import available_folds, default_out_dir, import_nnunet
from medvision.pipelines.nnunet._labels import NO_CODE_SCHEME, label_entry, shipped_mapping
from medvision.pipelines.nnunet._orient import Reorientation, reorientation
from medvision.pipelines.nnunet._pipeline import (
    NnunetPipeline,
    find_nnunet_pipelines,
    is_nnunet_folder,
)

__all__ = [
    "NO_CODE_SCHEME",
    "NnunetPipeline",
    "Reorientation",
    "available_folds",
    "default_out_dir",
    "find_nnunet_pipelines",
    "import_nnunet",
    "is_nnunet_folder",
    "label_entry",
    "reorientation",
    "shipped_mapping",
]
