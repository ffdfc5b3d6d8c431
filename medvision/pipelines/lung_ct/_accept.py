"""Which series the lung CT pipeline takes, decided from headers alone.

Not applicable (outside what lung-ct is for; never an error): another modality, a body part
that is not the chest, a scout/localizer or a secondary capture.

Refused (a chest CT that lung-ct cannot analyse; the user must see why): a series the
scanner could not read as a volume (no pixel data, duplicate or missing slice positions,
tilt: the scan's own words), another SOP class, a single slice, not axial, fewer than
``min_slices`` frames, or slices more than ``max_slice_thickness_mm`` thick or apart.

Accepted: the rest, blank body part included (many scanners leave it empty). Slices over
``full_confidence_slice_mm`` are analysed with a ``thick-slices`` quality flag and lower
confidence (see :mod:`._pipeline`). The score prefers thinner slices, then more frames.
"""

from __future__ import annotations

from medvision.dicom import SeriesInfo
from medvision.pipelines._contract import Acceptance
from medvision.pipelines._rules import not_a_volume, volume_problem
from medvision.pipelines.lung_ct._params import LungParams

CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
ENHANCED_CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2.1"
#: BodyPartExamined values that contain the chest (DICOM PS3.16 Annex L, and common
#: scanner spellings of it).
CHEST_WORDS = ("CHEST", "THORAX", "LUNG", "TRUNK", "WHOLEBODY", "WHOLE BODY", "TORSO")


def slice_thickness(series: SeriesInfo) -> float | None:
    """The larger of the header's slice thickness and the slices' spacing, when known."""
    values = [v for v in (series.slice_thickness_mm, series.slice_spacing_mm) if v]
    return max(values) if values else None


def accept_series(series: SeriesInfo, p: LungParams) -> Acceptance:
    """An :class:`Acceptance` with the first rule that rules the series out, or a score."""
    body_part = series.body_part_examined.strip().upper()
    if series.modality.upper() != "CT":
        return Acceptance.not_applicable(f"modality is {series.modality or 'blank'}, not CT")
    if body_part and not any(w in body_part for w in CHEST_WORDS):
        return Acceptance.not_applicable(f"body part is {body_part}, not chest")
    if why := not_a_volume(series):
        return Acceptance.not_applicable(why)
    thickness = slice_thickness(series)
    refusals = [
        (not (why := volume_problem(series)), why),
        (
            series.sop_class_uid in (CT_IMAGE_STORAGE, ENHANCED_CT_IMAGE_STORAGE),
            f"SOP class {series.sop_class_uid} is not a CT image",
        ),
        (
            series.orientation == "AXIAL",
            f"orientation is {series.orientation or 'unknown'}, not axial",
        ),
        (
            series.num_frames >= p.min_slices,
            f"{series.num_frames} slices; at least {p.min_slices} are needed",
        ),
        (
            thickness is None or thickness <= p.max_slice_thickness_mm + 1e-3,
            f"slices {thickness or 0:g} mm thick or apart; at most "
            f"{p.max_slice_thickness_mm:g} mm are analysed (thicker ones hide nodules under 2 cm)",
        ),
    ]
    for ok, reason in refusals:
        if not ok:
            return Acceptance.refused(reason)
    thickness = thickness or p.full_confidence_slice_mm
    score = 10.0 / max(thickness, 0.1) + series.num_frames / 10000.0
    return Acceptance(True, f"CT, axial, {series.num_frames} slices, {thickness:g} mm", score)


__all__ = ["accept_series", "slice_thickness"]
