"""The known answer for a generated study, measured on the voxel grid of its images.

Volumes are counts of voxels whose coverage is at least one half (what a threshold half-way
between the two tissues recovers from the image), not the analytic volume of the shape, so
that a pipeline is scored against what the images can show. The analytic volume and the
partial-volume sum are kept beside it for reference.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

GROUND_TRUTH_FILE = "ground_truth.json"
FORMAT_VERSION = 1


def _r(value: float, digits: int = 4) -> float:
    """Round for a stable, readable JSON file (0.1 µm, 0.1 µL)."""
    return round(float(value), digits) + 0.0


@dataclass(frozen=True)
class NoduleTruth:
    """One nodule: where it is, how big it was drawn, and what the images hold of it."""

    number: int  #: 1-based, in the order the nodules were given
    lung: str  #: "right" or "left"
    center_lps_mm: tuple[float, float, float]  #: the ellipsoid's true centre
    diameter_mm: float
    semi_axes_mm: tuple[float, float, float]  #: along x (L), y (P), z (S)
    hu: float  #: density inside the nodule, before noise
    threshold_hu: float  #: half-way between nodule and lung: the mask's threshold
    volume_ml: float  #: voxels with coverage >= 1/2, times the voxel volume
    voxel_count: int
    partial_volume_ml: float  #: sum of coverage fractions times the voxel volume
    analytic_volume_ml: float  #: 4/3 pi abc
    mask_centroid_lps_mm: tuple[float, float, float]  #: centroid of the >= 1/2 voxels
    center_instance_number: int  #: the slice nearest the centre (1-based InstanceNumber)


@dataclass(frozen=True)
class GroundTruth:
    """Everything known about a generated study; written as ``ground_truth.json``."""

    seed: int
    rows: int
    columns: int
    n_slices: int
    pixel_spacing_mm: float
    slice_spacing_mm: float  #: also the slice thickness: slices are contiguous
    transfer_syntax: str
    study_instance_uid: str
    series_instance_uid: str
    frame_of_reference_uid: str
    lung_volume_ml: dict[str, float]  #: "right"/"left": voxels with lung coverage >= 1/2,
    #: nodules included (a nodule lies inside its lung)
    nodules: tuple[NoduleTruth, ...]
    lung_hu: float  #: mean parenchyma density before texture, gravity gradient and noise
    noise_hu: float  #: standard deviation of the added noise
    format_version: int = FORMAT_VERSION
    generator: str = "dicom_samples"
    synthetic: bool = True
    notes: str = field(
        default="Synthetic phantom; no patient data. Coordinates are patient LPS mm, "
        "as in ImagePositionPatient. Instance 1 is the most cranial slice."
    )

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2) + "\n"

    def write(self, out_dir: Path) -> Path:
        path = Path(out_dir) / GROUND_TRUTH_FILE
        path.write_text(self.to_json(), encoding="utf-8")
        return path

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> GroundTruth:
        if data.get("format_version") != FORMAT_VERSION:
            raise ValueError(
                f"ground truth format_version {data.get('format_version')!r} is not "
                f"{FORMAT_VERSION}; regenerate the study with this version of dicom_samples."
            )
        nodules = tuple(
            NoduleTruth(**{k: tuple(v) if isinstance(v, list) else v for k, v in n.items()})
            for n in data["nodules"]
        )
        return cls(**{**data, "nodules": nodules})

    @classmethod
    def read(cls, path: Path) -> GroundTruth:
        """Read ``ground_truth.json`` (or the folder holding it)."""
        path = Path(path)
        if path.is_dir():
            path = path / GROUND_TRUTH_FILE
        return cls.from_dict(json.loads(path.read_text(encoding="utf-8")))


__all__ = ["GROUND_TRUTH_FILE", "GroundTruth", "NoduleTruth"]
