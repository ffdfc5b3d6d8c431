"""Synthetic DICOM studies with known ground truth, for tests, demos and benchmarks.

``generate_study`` draws a chest CT phantom (lungs, mediastinum, bones, solid nodules) in
Hounsfield units and writes it as a realistic CT series plus ``ground_truth.json``. The small
sample in ``dicom_samples/chest-ct/`` was made by it; see README.md for the command.
Everything here is synthetic: no patient data.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from dicom_samples.nodules import NoduleSpec, default_nodules
from dicom_samples.truth import GroundTruth, NoduleTruth
from dicom_samples.writer import TransferSyntax

#: The committed sample: 80 slices of 256 x 256, 3 mm, JPEG 2000 lossless, with ground_truth.json.
SAMPLE_DIR = Path(__file__).resolve().parent / "chest-ct"


def __getattr__(name: str) -> Any:
    # Imported lazily so that ``python -m dicom_samples.generate`` does not find its own
    # module already imported by the package (runpy warns about that).
    if name == "generate_study":
        from dicom_samples.generate import generate_study

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
