"""Which series the lung CT pipeline takes, decided from headers alone.

Accepted: an original CT image series (not a localizer/scout, not a secondary capture),
axial, at least ``min_slices`` frames, slice thickness at most ``max_slice_thickness_mm``
(thicker slices blur nodules under 10 mm away), and a body part that is a chest, or blank
(many scanners leave it empty). The score prefers thinner slices, then more frames.
"""

from __future__ import annotations

from medvision.dicom import SeriesInfo
from medvision.pipelines._contract import Acceptance
from medvision.pipelines.lung_ct._params import LungParams

CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
ENHANCED_CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2.1"
SECONDARY_CAPTURE_PREFIX = "1.2.840.10008.5.1.4.1.1.7"
#: BodyPartExamined values that contain the chest (DICOM PS3.16 Annex L, and common
#: scanner spellings of it).
CHEST_WORDS = ("CHEST", "THORAX", "LUNG", "TRUNK", "WHOLEBODY", "WHOLE BODY", "TORSO")
#: ImageType values that mark a planning image rather than a volume.
NOT_A_VOLUME = ("LOCALIZER", "SCOUT", "SURVIEW", "REF_SURVIEW", "TOPOGRAM")


def accept_series(series: SeriesInfo, p: LungParams) -> Acceptance:
    """An :class:`Acceptance` with the first reason for refusal, or a score."""
    image_type = tuple(v.upper() for v in series.image_type)
    body_part = series.body_part_examined.strip().upper()
    checks = [
        (series.modality.upper() == "CT", f"modality is {series.modality or 'blank'}, not CT"),
        (
            not series.sop_class_uid.startswith(SECONDARY_CAPTURE_PREFIX)
            and "SECONDARY" not in image_type,
            "secondary capture (a picture of a screen, not a CT volume)",
        ),
        (
            not any(t in image_type for t in NOT_A_VOLUME),
            f"localizer/scout image (ImageType {'/'.join(series.image_type)})",
        ),
        (series.is_image and not series.problems, "; ".join(series.problems) or "not an image"),
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
            series.slice_thickness_mm is None
            or series.slice_thickness_mm <= p.max_slice_thickness_mm,
            f"slice thickness {series.slice_thickness_mm} mm exceeds {p.max_slice_thickness_mm} mm",
        ),
        (
            not body_part or any(w in body_part for w in CHEST_WORDS),
            f"body part is {body_part}, not chest",
        ),
    ]
    for ok, reason in checks:
        if not ok:
            return Acceptance(False, f"lung-ct refuses this series: {reason}.")
    thickness = series.slice_thickness_mm or p.max_slice_thickness_mm
    score = 10.0 / max(thickness, 0.1) + series.num_frames / 10000.0
    return Acceptance(True, f"CT, axial, {series.num_frames} slices, {thickness:g} mm", score)


__all__ = ["accept_series"]
