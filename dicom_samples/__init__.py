"""The repository's synthetic sample study, and the generator's documented entry point.

The generator itself is :mod:`medvision.synthetic` (installed with the package, so that
``medvision train`` works without a checkout); this folder holds the committed sample made by
it (``chest-ct/``, see README.md) and keeps ``python -m dicom_samples.generate`` and
``from dicom_samples import generate_study`` working. Everything here is synthetic: no
patient data.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from medvision.synthetic import (
    GroundTruth,
    NoduleSpec,
    NoduleTruth,
    TransferSyntax,
    default_nodules,
)

#: The committed sample: 80 slices of 256 x 256, 3 mm, JPEG 2000 lossless, with ground_truth.json.
SAMPLE_DIR = Path(__file__).resolve().parent / "chest-ct"


def __getattr__(name: str) -> Any:
    # Lazily, as in medvision.synthetic: ``python -m dicom_samples.generate`` must not find
    # its module already imported by the package.
    if name == "generate_study":
        from medvision.synthetic.generate import generate_study

        return generate_study
    raise AttributeError(f"module 'dicom_samples' has no attribute {name!r}")


__all__ = [
    "SAMPLE_DIR",
    "GroundTruth",
    "NoduleSpec",
    "NoduleTruth",
    "TransferSyntax",
    "default_nodules",
    "generate_study",
]
