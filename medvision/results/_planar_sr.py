"""Findings -> a planar TID 1500 SR: each lesion's long and short axis drawn on its key slice.

Why a second SR: the volumetric SR (``_sr.py``, one TID 1411 group per finding referencing
its SEG segment) is the complete record, but web viewers draw only measurements that carry
image coordinates. OHIF 3.x lists a measurement group only when it has a SCOORD and a
Tracking Identifier naming one of its own tools; it then restores it as that tool (here its
"Bidirectional" length-and-width tool). Mixing such groups into the volumetric SR would put
two groups with one Tracking UID into one document (OHIF merges them) or give a lesion two
UIDs. So this is a document of its own, sent where a destination asks for it.

Per lesion with axes, one TID 1501 group (the layout OHIF and dcmjs write themselves):

* Tracking Identifier ``Cornerstone3DTools@^0.1.0:Bidirectional`` (the tool OHIF restores)
  and the lesion's own Tracking UID: the same UID as its SEG segment and its volumetric
  group (STANDARDS SR-06), which is what ties this measurement to the finding;
* Finding, Finding Site and the algorithm (TID 4019), as in the volumetric SR;
* a Comment (DCM 121106) TEXT with the lesion's name ("Lesion 3"), which OHIF shows as the
  measurement's label;
* Long Axis and Short Axis (TID 300 NUM, mm, the same values as findings.json), each
  INFERRED FROM a two-point SCOORD POLYLINE on the key slice (the slice the axes were
  measured on), SELECTED FROM that image.

The endpoints come from :func:`medvision.findings.axis_endpoints`, the very contour and
choice the measurement made, so the drawn long axis measures what the report says.
"""

from __future__ import annotations

import logging

import highdicom as hd
import numpy as np
from pydicom import Dataset

from medvision.errors import ResultError
from medvision.findings import Finding, FindingKind, Findings, axis_endpoints
from medvision.results import _codes as c
from medvision.results._device import DeviceInfo
from medvision.results._inherit import check_same_study, no_phi_warnings, sanitize_headers
from medvision.results._sr import (
    _algorithm_id,
    _comprehensive_sr,
    _measurement_report,
    _stamp_device,
)

logger = logging.getLogger(__name__)

DEFAULT_PLANAR_SR_SERIES_NUMBER = 905
#: The Tracking Identifier OHIF (Cornerstone3D's SR adapters) restores as its Bidirectional
#: tool: a long axis and a short axis on one image.
OHIF_BIDIRECTIONAL = "Cornerstone3DTools@^0.1.0:Bidirectional"
#: (121106, DCM, "Comment"): the item OHIF reads a measurement's label from.
COMMENT = hd.sr.CodedConcept("121106", "DCM", "Comment")


def drawable(finding: Finding) -> bool:
    """Whether a finding has axes to draw: a lesion with both axes and their slice."""
    m = finding.measurements
    return (
        finding.label.kind is FindingKind.LESION
        and m.long_axis_slice is not None
        and m.long_axis_mm is not None
        and m.short_axis_mm is not None
    )


def _scoord(
    points: tuple[tuple[float, float], tuple[float, float]],
    image: Dataset,
    frames: list[int] | None,
) -> hd.sr.CoordinatesForMeasurement:
    """A two-point POLYLINE in DICOM image coordinates: (column, row), the top left corner
    of the top left pixel at (0, 0), so a pixel centre at index (i, j) is (i + 0.5, j + 0.5)."""
    data = np.asarray(points, dtype=np.float64) + 0.5
    data[:, 0] = np.clip(data[:, 0], 0.0, float(image.Columns))
    data[:, 1] = np.clip(data[:, 1], 0.0, float(image.Rows))
    return hd.sr.CoordinatesForMeasurement(
        graphic_type=hd.sr.GraphicTypeValues.POLYLINE,
        graphic_data=data,
        source_image=hd.sr.SourceImageForRegion(
            referenced_sop_class_uid=image.SOPClassUID,
            referenced_sop_instance_uid=image.SOPInstanceUID,
            referenced_frame_numbers=frames,
        ),
    )


def _group(
    finding: Finding, findings: Findings, headers: dict[str, Dataset]
) -> tuple[hd.sr.MeasurementsAndQualitativeEvaluations, Dataset]:
    m = finding.measurements
    volume = findings.volume
    k = int(m.long_axis_slice)  # type: ignore[arg-type] - drawable() checked it
    image = headers[volume.sop_instance_uids[k]]
    frames = [volume.frame_numbers[k]] if "NumberOfFrames" in image else None
    ends = axis_endpoints(np.asarray(finding.mask[k], dtype=bool), volume)
    axes = [
        hd.sr.Measurement(
            name=name,
            value=float(value),
            unit=c.UNIT_MM,
            referenced_coordinates=[_scoord(points, image, frames)],
        )
        for name, value, points in (
            (c.LONG_AXIS, m.long_axis_mm, ends.long),
            (c.SHORT_AXIS, m.short_axis_mm, ends.short),
        )
    ]
    site = finding.site or finding.label.site
    group = hd.sr.MeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(
            uid=finding.tracking_uid, identifier=OHIF_BIDIRECTIONAL
        ),
        finding_type=c.coded(finding.label.type),
        finding_category=c.coded(finding.label.category),
        finding_sites=[hd.sr.FindingSite(c.coded(site))] if site is not None else None,
        algorithm_id=_algorithm_id(findings),
        measurements=axes,
        source_images=[hd.sr.SourceImageForMeasurementGroup.from_source_image(image, frames)],
    )
    group[0].ContentSequence.append(
        hd.sr.TextContentItem(
            name=COMMENT,
            value=c.truncate(finding.tracking_id, 1024),
            relationship_type=hd.sr.RelationshipTypeValues.CONTAINS,
        )
    )
    return group, image


@no_phi_warnings()
def build_planar_sr(
    findings: Findings,
    *,
    series_number: int = DEFAULT_PLANAR_SR_SERIES_NUMBER,
    device: DeviceInfo | None = None,
) -> hd.sr.Comprehensive3DSR | None:
    """The planar TID 1500 report of ``findings``' lesion axes, or None when no lesion has
    axes to draw (organs and "nothing found" are said by the volumetric SR)."""
    device = device or DeviceInfo()
    lesions = [f for f in findings.items if drawable(f)]
    if not lesions:
        return None
    cleaned, _ = sanitize_headers(findings.volume.source_headers)
    if not cleaned:
        raise ResultError("The volume carries no source headers; cannot reference the source.")
    check_same_study(cleaned)
    headers = {str(h.SOPInstanceUID): h for h in cleaned}
    try:
        built = [_group(f, findings, headers) for f in lesions]
        groups = [group for group, _ in built]
        images = list({str(image.SOPInstanceUID): image for _, image in built}.values())
        report = _measurement_report(findings, groups, images)
        sr = _comprehensive_sr(images, report, findings, series_number, device, "axes SR")
    except (ValueError, TypeError, AttributeError, KeyError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ResultError(f"Could not build the planar SR: {reason}") from exc
    _stamp_device(sr, device)
    logger.info("Built planar SR with %d lesion(s)", len(groups))
    return sr


__all__ = [
    "DEFAULT_PLANAR_SR_SERIES_NUMBER",
    "OHIF_BIDIRECTIONAL",
    "build_planar_sr",
    "drawable",
]
