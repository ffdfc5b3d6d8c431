"""What is known about a series before its pixels are read.

Pipelines choose series from these headers alone (modality, body part, orientation,
slice thickness...), so choosing is cheap even for a study with many series.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class SeriesInfo:
    """One series of one study, as found on disk (headers only)."""

    study_instance_uid: str
    series_instance_uid: str
    modality: str
    sop_class_uid: str
    files: tuple[Path, ...]
    series_number: int | None = None
    series_description: str = ""
    body_part_examined: str = ""
    #: ImageType values of the first instance, e.g. ("ORIGINAL", "PRIMARY", "AXIAL").
    image_type: tuple[str, ...] = ()
    #: "AXIAL", "CORONAL", "SAGITTAL", "OBLIQUE" or "" when there is no orientation.
    orientation: str = ""
    slice_thickness_mm: float | None = None
    #: Distance between slice centres from the positions (None for one slice or when the
    #: slices do not form a volume).
    slice_spacing_mm: float | None = None
    #: Number of image frames in the series (instances, or frames of a multi-frame object).
    num_frames: int = 0
    rows: int | None = None
    columns: int | None = None
    is_image: bool = True
    #: Why this series cannot be loaded as a volume, found while scanning (e.g. non-image).
    problems: tuple[str, ...] = field(default=())


@dataclass(frozen=True)
class StudyInfo:
    """One study found on disk: its series, in series-number order."""

    study_instance_uid: str
    series: tuple[SeriesInfo, ...]
    patient_id: str = ""
    study_date: str = ""
    study_description: str = ""
    accession_number: str = ""


__all__ = ["SeriesInfo", "StudyInfo"]
