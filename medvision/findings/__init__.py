"""Findings: the result type shared by pipelines and result writers."""

from medvision.findings._measure import AxisEndpoints, axial_diameters, axis_endpoints, measure
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
from medvision.findings._slices import key_slice, key_slice_number, slice_number

__all__ = [
    "AlgorithmInfo",
    "AxisEndpoints",
    "Code",
    "Finding",
    "FindingKind",
    "Findings",
    "Label",
    "Measurements",
    "QualityFlag",
    "axial_diameters",
    "axis_endpoints",
    "key_slice",
    "key_slice_number",
    "measure",
    "slice_number",
]
