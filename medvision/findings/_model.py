"""The one result type that crosses from the pipelines into ``medvision.results``.

A pipeline returns :class:`Findings`: its segments (each a boolean mask on the source
volume's grid, with SNOMED CT codes and a tracking identity), the measured findings for
each segment, and the identity of the algorithm that made them. ``results`` turns the very
same object into a DICOM SEG, a TID 1500 SR and ``findings.json``, so the three always
agree.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import numpy as np

from medvision.dicom import Volume
from medvision.findings._slices import key_slice_number


@dataclass(frozen=True)
class Code:
    """A coded concept, e.g. ``Code("39607008", "SCT", "Lung")``."""

    value: str
    scheme: str
    meaning: str

    def to_json(self) -> dict[str, str]:
        return {"value": self.value, "scheme": self.scheme, "meaning": self.meaning}


class FindingKind(StrEnum):
    ORGAN = "organ"
    LESION = "lesion"


class QualityFlag(StrEnum):
    """A known limit of one finding, carried into findings.json, the SR, viewer and report.

    Flags are codes, not prose, so a reader (or a script) can filter on them; the pipeline
    explains each in ``Findings.quality_flags`` and lowers the finding's confidence.
    """

    #: Found on slices thicker than the pipeline's full-confidence limit: partial volume
    #: blurs the edge and HU, small lesions may be missed, diameters are less exact.
    THICK_SLICES = "thick-slices"


@dataclass(frozen=True)
class AlgorithmInfo:
    """Who made a result: written into the SEG, the SR and the audit record."""

    name: str
    version: str
    #: sha256 of the weights file, or of the parameter set for an algorithm without weights.
    weights_sha256: str
    parameters: dict[str, str] = field(default_factory=dict)
    manufacturer: str = "medvision"
    #: "AI" for a trained model, "classical" for image processing without learned weights.
    family: str = "AI"

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "version": self.version,
            "weights_sha256": self.weights_sha256,
            "parameters": dict(self.parameters),
            "manufacturer": self.manufacturer,
            "family": self.family,
        }


@dataclass(frozen=True)
class Label:
    """A label a pipeline can produce: what a segment of this label means."""

    name: str
    category: Code
    type: Code
    kind: FindingKind
    #: Where in the body (SNOMED CT), used as SR Finding Site and SEG anatomic region.
    site: Code | None = None
    #: CIELab colour recommended to viewers (DICOM scaled 0..65535 values).
    cielab: tuple[int, int, int] | None = None
    #: Side of a paired structure (SCT 7771000 Left / 24028007 Right, DICOM CID 244) where
    #: the type itself does not say it (``Kidney`` + Left, not ``Left lung``): the SEG's
    #: type or anatomic-region modifier and the SR finding site's laterality.
    laterality: Code | None = None


@dataclass(frozen=True)
class Measurements:
    """Measured from a mask on the source grid; every length in mm, volume in mL."""

    volume_ml: float
    mean_hu: float
    max_hu: float
    #: Centre of mass in patient LPS coordinates (mm).
    centroid_lps: tuple[float, float, float]
    #: Index k of the slice that holds the centroid, and that slice's SOP Instance UID.
    centroid_slice: int
    centroid_sop_instance_uid: str
    #: Longest in-plane diameter over all slices, and the longest diameter perpendicular to
    #: it on the same slice (RECIST-style). None for organs, where they mean nothing.
    long_axis_mm: float | None = None
    short_axis_mm: float | None = None
    #: Slice index on which the long axis was measured.
    long_axis_slice: int | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "volume_ml": self.volume_ml,
            "mean_hu": self.mean_hu,
            "max_hu": self.max_hu,
            "centroid_lps_mm": list(self.centroid_lps),
            "centroid_slice": self.centroid_slice,
            "centroid_sop_instance_uid": self.centroid_sop_instance_uid,
            "long_axis_mm": self.long_axis_mm,
            "short_axis_mm": self.short_axis_mm,
            "long_axis_slice": self.long_axis_slice,
            # 1-based, the number every page shows (medvision.findings._slices).
            "key_slice_number": key_slice_number(self),
        }


@dataclass(frozen=True, eq=False)
class Finding:
    """One segment: its mask, what it is, where it is, how sure the algorithm is."""

    #: SEG segment number (1-based, consecutive in a Findings).
    number: int
    label: Label
    #: Boolean mask on the source volume's grid, shape == volume.shape.
    mask: np.ndarray
    #: Short human identifier, e.g. "Lesion 1" / "Left lung"; SR Tracking Identifier.
    tracking_id: str
    #: DICOM UID shared by the SEG segment and the SR measurement group.
    tracking_uid: str
    measurements: Measurements
    #: Probability-like confidence in [0, 1] and how it was computed.
    confidence: float
    confidence_method: str
    #: Laterality or lobe of a lesion, e.g. Code("39607008", "SCT", "Lung") + "Right".
    site: Code | None = None
    #: Optional spread of the model's answer inside the segment (e.g. the mean standard
    #: deviation of its probability over test-time augmentations), in [0, 1]; None when
    #: the pipeline does not estimate it.
    uncertainty: float | None = None
    uncertainty_method: str = ""
    #: Known limits of this finding (e.g. ``thick-slices``), as :class:`QualityFlag` values.
    flags: tuple[QualityFlag, ...] = ()

    def __post_init__(self) -> None:
        # "thick-slices" or QualityFlag.THICK_SLICES; an unknown flag fails here, early.
        object.__setattr__(self, "flags", tuple(QualityFlag(f) for f in self.flags))
        if self.number < 1:
            raise ValueError(f"Finding number must be 1 or more, got {self.number}.")
        if not 0.0 <= self.confidence <= 1.0:
            raise ValueError(f"Finding confidence must be in [0, 1], got {self.confidence}.")
        if self.uncertainty is not None and not 0.0 <= self.uncertainty <= 1.0:
            raise ValueError(f"Finding uncertainty must be in [0, 1], got {self.uncertainty}.")
        if self.mask.dtype != bool:
            raise ValueError(f"Finding mask must be boolean, got {self.mask.dtype}.")

    def to_json(self) -> dict[str, Any]:
        site = self.site or self.label.site
        return {
            "number": self.number,
            "label": self.label.name,
            "kind": str(self.label.kind),
            "category": self.label.category.to_json(),
            "type": self.label.type.to_json(),
            "site": site.to_json() if site else None,
            "laterality": self.label.laterality.to_json() if self.label.laterality else None,
            "tracking_id": self.tracking_id,
            "tracking_uid": self.tracking_uid,
            "confidence": self.confidence,
            "confidence_method": self.confidence_method,
            "uncertainty": self.uncertainty,
            "uncertainty_method": self.uncertainty_method or None,
            "flags": [str(f) for f in self.flags],
            "measurements": self.measurements.to_json(),
        }


@dataclass(frozen=True, eq=False)
class Findings:
    """Everything one pipeline found in one series."""

    pipeline: str
    pipeline_version: str
    algorithm: AlgorithmInfo
    volume: Volume
    items: tuple[Finding, ...]
    #: Human-readable warnings about the input or the result (e.g. "slice thickness 5 mm").
    quality_flags: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        numbers = [f.number for f in self.items]
        if numbers != list(range(1, len(numbers) + 1)):
            raise ValueError(f"Finding numbers must be 1..N in order, got {numbers}.")
        for f in self.items:
            if f.mask.shape != self.volume.shape:
                raise ValueError(
                    f"Mask of finding {f.number} has shape {f.mask.shape}, "
                    f"volume has {self.volume.shape}."
                )

    @property
    def intensity_unit(self) -> str:
        """What ``mean_hu``/``max_hu`` are in: Hounsfield units for CT only; any other
        modality's values are the scanner's signal in arbitrary units."""
        return "HU" if self.volume.modality == "CT" else "signal"

    @property
    def lesions(self) -> tuple[Finding, ...]:
        return tuple(f for f in self.items if f.label.kind is FindingKind.LESION)

    @property
    def organs(self) -> tuple[Finding, ...]:
        return tuple(f for f in self.items if f.label.kind is FindingKind.ORGAN)

    def to_json(self) -> dict[str, Any]:
        v = self.volume
        return {
            "pipeline": self.pipeline,
            "pipeline_version": self.pipeline_version,
            "algorithm": self.algorithm.to_json(),
            "study_instance_uid": v.study_instance_uid,
            "series_instance_uid": v.series_instance_uid,
            "frame_of_reference_uid": v.frame_of_reference_uid,
            "source_sop_instance_uids": sorted(set(v.sop_instance_uids)),
            "quality_flags": list(self.quality_flags),
            "findings": [f.to_json() for f in self.items],
        }


__all__ = [
    "AlgorithmInfo",
    "Code",
    "Finding",
    "FindingKind",
    "Findings",
    "Label",
    "Measurements",
    "QualityFlag",
]
