"""Findings -> DICOM Segmentation (BINARY, one segment per finding).

The SEG is what a radiologist sees as the overlay, so it must open in every viewer we
target (OHIF, 3D Slicer via dcmqi, highdicom). The choices below follow STANDARDS SEG-01..24:
BINARY (not LABELMAP, few readers handle it), empty frames omitted but never an empty
segment, both geometry and source-image references present, study attributes inherited
from repaired copies of the source headers, and the algorithm named in each segment and in
a Contributing Equipment item.
"""

from __future__ import annotations

import logging

import highdicom as hd
import numpy as np
from pydicom import Dataset

from medvision.errors import ResultError
from medvision.findings import Finding, Findings
from medvision.results._codes import (
    algorithm_parameters,
    coded,
    content_label,
    display_color,
    family_code,
    generated_by,
    truncate,
)
from medvision.results._device import DeviceInfo, algorithm_equipment
from medvision.results._inherit import check_same_study, no_phi_warnings, sanitize_headers

logger = logging.getLogger(__name__)

DEFAULT_SEG_SERIES_NUMBER = 901


def _algorithm_identification(findings: Findings) -> hd.AlgorithmIdentificationSequence:
    algorithm = findings.algorithm
    params = algorithm_parameters(algorithm)
    params.setdefault("pipeline", f"{findings.pipeline} {findings.pipeline_version}")
    return hd.AlgorithmIdentificationSequence(
        name=truncate(algorithm.name, 64),
        family=family_code(algorithm),
        version=truncate(algorithm.version, 64),
        source=truncate(algorithm.manufacturer, 64),
        parameters=params,
    )


def _segment_description(finding: Finding, findings: Findings) -> hd.seg.SegmentDescription:
    label = finding.label
    site = finding.site or label.site
    description = hd.seg.SegmentDescription(
        segment_number=finding.number,
        segment_label=truncate(finding.tracking_id or label.name, 64),
        segmented_property_category=coded(label.category),
        segmented_property_type=coded(label.type),
        algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
        algorithm_identification=_algorithm_identification(findings),
        tracking_uid=finding.tracking_uid,
        tracking_id=truncate(finding.tracking_id, 64),
        anatomic_regions=[coded(site)] if site is not None else None,
        display_color=display_color(label.cielab, finding.number),
    )
    description.SegmentDescription = truncate(
        f"{label.name}; {generated_by(findings.algorithm)}", 64
    )
    if label.laterality is not None:
        # The side qualifies the anatomic region where there is one (a left kidney's cyst:
        # type Cyst, region Kidney + Left), else the segmented structure itself (Kidney +
        # Left), as TotalSegmentator's own SNOMED CT mapping for its DICOM SEG does.
        side = [coded(label.laterality)]
        if site is not None:
            description.AnatomicRegionSequence[0].AnatomicRegionModifierSequence = side
        else:
            description.SegmentedPropertyTypeModifierCodeSequence = side
    return description


def _check_masks(findings: Findings) -> None:
    if not findings.items:
        raise ResultError(
            "No findings to segment: a SEG needs at least one segment "
            "(the SR states 'no finding' instead)."
        )
    for finding in findings.items:
        if not finding.mask.any():
            raise ResultError(
                f"Finding {finding.number} ('{finding.tracking_id}') has an empty mask; "
                "a SEG segment without frames is dropped by viewers."
            )


def source_images_and_pixels(
    findings: Findings, cleaned: list[Dataset]
) -> tuple[list[Dataset], np.ndarray]:
    """The source images highdicom needs and the mask stack in *their* frame order.

    Single-frame series: one header per slice, in the Volume's slice order. Multi-frame
    (Enhanced) source: one header, and slice k of the volume is frame ``frame_numbers[k]``.
    """
    volume = findings.volume
    # (k, j, i, segments) as a view of a segment-major stack: each segment's frames stay
    # contiguous, so highdicom's per-frame, per-segment slices and its overlap check (a sum
    # over the segment axis) run over whole planes; with the segments as the innermost axis
    # the stack and that sum took ~1 s of CPU on a 64-slice CT with 8 segments.
    masks = np.moveaxis(np.stack([f.mask for f in findings.items]), 0, -1)
    rows, columns = volume.shape[1:]
    for header in cleaned:
        if (int(header.get("Rows", 0)), int(header.get("Columns", 0))) != (rows, columns):
            raise ResultError(
                f"Source instance is {header.get('Rows')}x{header.get('Columns')} pixels, "
                f"the volume's slices are {rows}x{columns}."
            )
    if len(cleaned) == 1 and int(cleaned[0].get("NumberOfFrames", 1) or 1) > 1:
        n_frames = int(cleaned[0].NumberOfFrames)
        if max(volume.frame_numbers) > n_frames or len(set(volume.frame_numbers)) != len(
            volume.frame_numbers
        ):
            raise ResultError("Volume frame numbers do not fit the multi-frame source.")
        pixels = np.zeros((masks.shape[-1], n_frames, rows, columns), dtype=bool)
        pixels[:, np.asarray(volume.frame_numbers) - 1] = np.moveaxis(masks, -1, 0)
        return cleaned, np.moveaxis(pixels, 0, -1)
    by_uid = {str(h.SOPInstanceUID): h for h in cleaned}
    if len(set(volume.sop_instance_uids)) != len(volume.sop_instance_uids):
        raise ResultError("Volume repeats a SOP instance but its source is not multi-frame.")
    try:
        ordered = [by_uid[uid] for uid in volume.sop_instance_uids]
    except KeyError:
        raise ResultError("Volume names a SOP instance that has no source header.") from None
    return ordered, masks


@no_phi_warnings()
def build_seg(
    findings: Findings,
    *,
    series_number: int = DEFAULT_SEG_SERIES_NUMBER,
    device: DeviceInfo | None = None,
) -> hd.seg.Segmentation:
    """A BINARY Segmentation with one segment per finding, in the source study.

    Raises :class:`ResultError` with a one-line reason when the findings cannot be written
    (no findings, an empty mask, source headers that do not fit the volume, or a value
    highdicom refuses).
    """
    device = device or DeviceInfo()
    _check_masks(findings)
    cleaned, _ = sanitize_headers(findings.volume.source_headers)
    if not cleaned:
        raise ResultError("The volume carries no source headers; cannot reference the source.")
    check_same_study(cleaned)
    source_images, pixels = source_images_and_pixels(findings, cleaned)
    algorithm = findings.algorithm
    note = generated_by(algorithm)
    try:
        seg = hd.seg.Segmentation(
            source_images=source_images,
            pixel_array=pixels,
            segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
            segment_descriptions=[_segment_description(f, findings) for f in findings.items],
            series_instance_uid=hd.UID(),
            series_number=series_number,
            sop_instance_uid=hd.UID(),
            instance_number=1,
            manufacturer=device.manufacturer,
            manufacturer_model_name=device.model_name,
            software_versions=device.software_version,
            device_serial_number=device.serial_number,
            content_label=content_label(findings.pipeline),
            content_description=truncate(f"{algorithm.name} {algorithm.version}: {note}", 64),
            content_creator_name=truncate(f"{device.manufacturer}^{algorithm.name}", 64),
            omit_empty_frames=True,
            contributing_equipment=[algorithm_equipment(algorithm)],
        )
    except (ValueError, TypeError, AttributeError, KeyError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ResultError(f"Could not build the SEG: {reason}") from exc
    seg.SeriesDescription = truncate(f"{algorithm.name} SEG ({note})", 64)
    if device.institution_name:
        seg.InstitutionName = truncate(device.institution_name, 64)
    logger.info(
        "Built SEG with %d segment(s) and %d frame(s)",
        len(findings.items),
        int(seg.NumberOfFrames),
    )
    return seg


__all__ = ["DEFAULT_SEG_SERIES_NUMBER", "build_seg"]
