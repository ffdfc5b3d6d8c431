"""Findings: the result type shared by pipelines and result writers."""

from medvision.findings._measure import axial_diameters, measure
from medvision.findings._model import (
    AlgorithmInfo,
    Code,
    Finding,
    FindingKind,
    Findings,
    Label,
    Measurements,
    QualityFlag,
)

__all__ = [
    "AlgorithmInfo",
    "Code",
    "Finding",
    "FindingKind",
    "Findings",
    "Label",
    "Measurements",
    "QualityFlag",
    "axial_diameters",
    "measure",
]
