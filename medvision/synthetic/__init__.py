"""Synthetic DICOM studies with known ground truth, for tests, demos, benchmarks and training.

``generate_study`` draws a chest CT phantom (lungs, mediastinum, bones, solid nodules) in
Hounsfield units and writes it as a realistic CT series plus ``ground_truth.json``; the
phantom itself (:mod:`medvision.synthetic.anatomy`) is what ``medvision train`` draws its
synthetic training cases from. It lives in the package (not only beside it in the
repository's ``dicom_samples/``) so that an installed medvision can train without a source
checkout. Everything here is synthetic: no patient data.
"""

from __future__ import annotations

from typing import Any

from medvision.synthetic.nodules import NoduleSpec, default_nodules
from medvision.synthetic.truth import GroundTruth, NoduleTruth
from medvision.synthetic.writer import TransferSyntax


def __getattr__(name: str) -> Any:
    # Imported lazily so that ``python -m medvision.synthetic.generate`` does not find its
    # own module already imported by the package (runpy warns about that).
    if name == "generate_study":
        from medvision.synthetic.generate import generate_study

        return generate_study
    raise AttributeError(f"module 'medvision.synthetic' has no attribute {name!r}")


__all__ = [
    "GroundTruth",
    "NoduleSpec",
    "NoduleTruth",
    "TransferSyntax",
    "default_nodules",
    "generate_study",
]
