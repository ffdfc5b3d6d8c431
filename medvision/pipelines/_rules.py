"""Header rules every pipeline applies the same way, so a series gets one reason everywhere.

Two kinds, on purpose (see :class:`~medvision.pipelines.Acceptance`):

* :func:`not_a_volume` names a planning image or a screen capture. Every CT study carries
  a scout and often a dose summary; they are outside any volume pipeline's scope, so they
  make it *not applicable*, never *refused*, or each study would report them as errors.
* :func:`volume_problem` names what keeps a series a pipeline is for from being read as a
  volume: the scanner's problems (no pixel data, duplicate or missing slice positions,
  tilt; the same words :func:`~medvision.dicom.load_series` would raise) and a single slice.
  These are refusals.
"""

from __future__ import annotations

from medvision.dicom import SeriesInfo

SECONDARY_CAPTURE_PREFIX = "1.2.840.10008.5.1.4.1.1.7"
#: ImageType values that mark a planning image rather than a volume.
NOT_A_VOLUME = ("LOCALIZER", "SCOUT", "SURVIEW", "REF_SURVIEW", "TOPOGRAM")


def not_a_volume(series: SeriesInfo) -> str:
    """Why ``series`` is a scout or a screen capture ("" when it is neither)."""
    image_type = tuple(v.upper() for v in series.image_type)
    if any(t in image_type for t in NOT_A_VOLUME):
        return f"localizer/scout image (ImageType {'/'.join(series.image_type)})"
    # The SOP class, not ImageType: value 2 "SECONDARY" only says the image was made after the
    # examination (reformats, and LIDC-IDRI's ORIGINAL/SECONDARY/AXIAL chest CTs): still a volume.
    if series.sop_class_uid.startswith(SECONDARY_CAPTURE_PREFIX):
        return "secondary capture (a picture of a screen, not a volume)"
    return ""


def volume_problem(series: SeriesInfo) -> str:
    """Why ``series`` cannot be read as a volume ("" when it can, as far as headers tell)."""
    if series.problems:
        return "; ".join(series.problems)
    if not series.is_image:
        return "not an image"
    if series.num_frames == 1:
        return "a single slice, not a volume"
    return ""


__all__ = ["NOT_A_VOLUME", "SECONDARY_CAPTURE_PREFIX", "not_a_volume", "volume_problem"]
