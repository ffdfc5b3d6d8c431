"""MONAI bundles as pipelines: ``pipeline.yaml`` + the bundle's own configs and weights.

See docs/models.md. Importing this package does not import torch or MONAI; running a
bundle does.
"""

from medvision.pipelines.bundle._cli import add_models_parser
from medvision.pipelines.bundle._discover import (
    bundled_models_dir,
    find_bundles,
    model_dirs,
    user_models_dir,
)
from medvision.pipelines.bundle._pipeline import BundlePipeline, resample_to
from medvision.pipelines.bundle._quality import (
    UNTRAINED_FLAG,
    check_series,
    match_series,
    quality_flags,
)
from medvision.pipelines.bundle._spec import (
    InputSpec,
    LabelSpec,
    PipelineSpec,
    SpecError,
    parse_spec,
    read_spec,
)

__all__ = [
    "UNTRAINED_FLAG",
    "BundlePipeline",
    "add_models_parser",
    "InputSpec",
    "LabelSpec",
    "PipelineSpec",
    "SpecError",
    "bundled_models_dir",
    "find_bundles",
    "check_series",
    "match_series",
    "model_dirs",
    "parse_spec",
    "quality_flags",
    "read_spec",
    "resample_to",
    "user_models_dir",
]
