"""Findings + their SEG -> TID 1500 Measurement Report (Comprehensive 3D SR).

The SR carries the same findings as the SEG, as numbers a PACS or a reporting tool can read
(STANDARDS SR-01..16): one TID 1411 volumetric group per finding, tied to its SEG segment
by ReferencedSegment and to the SEG's TrackingUID; measurements as TID 300 NUMs with UCUM
units; the algorithm named (TID 4019) in every group; a Device observer whose UID changes
with the weights; VerificationFlag UNVERIFIED. It also says explicitly whether the
algorithm found a lesion, so "ran, found nothing" differs from "not processed" (SR-15).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import highdicom as hd
from pydicom import Dataset
from pydicom.sr.codedict import codes

from medvision.errors import ResultError
from medvision.findings import Code, Finding, FindingKind, Findings, Label, key_slice
from medvision.results import _codes as c
from medvision.results._device import DeviceInfo, algorithm_device_uid, algorithm_equipment
from medvision.results._inherit import check_same_study, no_phi_warnings, sanitize_headers

logger = logging.getLogger(__name__)

DEFAULT_SR_SERIES_NUMBER = 902


def _algorithm_id(findings: Findings) -> hd.sr.AlgorithmIdentification:
    algorithm = findings.algorithm
    return hd.sr.AlgorithmIdentification(
        name=algorithm.name,
        version=algorithm.version,
        parameters=[f"{k}={v}" for k, v in c.algorithm_parameters(algorithm).items()],
        family=c.family_code(algorithm),
        manufacturer=algorithm.manufacturer,
    )


def _observation_context(findings: Findings) -> hd.sr.ObservationContext:
    algorithm = findings.algorithm
    device = hd.sr.DeviceObserverIdentifyingAttributes(
        uid=algorithm_device_uid(algorithm),
        name=c.truncate(f"{algorithm.name} {algorithm.version}", 64),
        manufacturer_name=c.truncate(algorithm.manufacturer, 64),
        model_name=c.truncate(algorithm.name, 64),
    )
    return hd.sr.ObservationContext(
        observer_device_context=hd.sr.ObserverContext(
            observer_type=codes.cid270.Device,
            observer_identifying_attributes=device,
        )
    )


def _source_image(findings: Findings, headers: dict[str, Dataset], k: int) -> Dataset:
    return headers[findings.volume.sop_instance_uids[k]]


def _measurements(
    finding: Finding, findings: Findings, headers: dict[str, Dataset]
) -> list[hd.sr.Measurement]:
    m = finding.measurements
    out = [hd.sr.Measurement(name=c.VOLUME, value=float(m.volume_ml), unit=c.UNIT_ML)]
    modality = findings.volume.modality
    # Only CT values are Hounsfield units. MR values are the scanner's signal in arbitrary
    # units: "MR signal intensity" (CID 7469) without a physical unit ("1", CID 7181), so
    # a reader compares them within the series, never across scanners.
    name, unit = {"CT": (c.ATTENUATION, c.UNIT_HU), "MR": (c.MR_SIGNAL, c.UNIT_NONE)}.get(
        modality, (None, None)
    )
    if name is not None and unit is not None:
        out += [
            hd.sr.Measurement(name=name, value=float(m.mean_hu), unit=unit, derivation=c.MEAN),
            hd.sr.Measurement(name=name, value=float(m.max_hu), unit=unit, derivation=c.MAXIMUM),
        ]
    if finding.label.kind is FindingKind.LESION:
        # The axes are measured on one slice: name it as the source of the measurement. It
        # is the finding's key slice, the one every table numbers and the viewer opens.
        images = None
        k = key_slice(m)
        if m.long_axis_slice is not None and k is not None:
            image = _source_image(findings, headers, k)
            frames = [findings.volume.frame_numbers[k]] if "NumberOfFrames" in image else None
            images = [hd.sr.SourceImageForMeasurement.from_source_image(image, frames)]
        for name, value in ((c.LONG_AXIS, m.long_axis_mm), (c.SHORT_AXIS, m.short_axis_mm)):
            if value is not None:
                out.append(
                    hd.sr.Measurement(
                        name=name, value=float(value), unit=c.UNIT_MM, referenced_images=images
                    )
                )
    algorithm = findings.algorithm
    out.append(
        hd.sr.Measurement(
            name=c.CONFIDENCE,
            value=float(finding.confidence),
            unit=c.UNIT_FRACTION,
            algorithm_id=hd.sr.AlgorithmIdentification(
                name=algorithm.name,
                version=algorithm.version,
                parameters=[f"confidence_method={finding.confidence_method}"],
            ),
        )
    )
    return out


def _finding_sites(label: Label, site: Code | None) -> list[hd.sr.FindingSite] | None:
    """TID 1419 Finding Site, with its Laterality (CID 244) for a sided structure.

    Laterality is a modifier of a site in TID 1500, so a sided organ without a separate site
    (Kidney, left) names itself as the site it lies in.
    """
    if label.laterality is not None:
        return [
            hd.sr.FindingSite(c.coded(site or label.type), laterality=c.coded(label.laterality))
        ]
    return [hd.sr.FindingSite(c.coded(site))] if site is not None else None


def _group(
    finding: Finding, findings: Findings, seg: Dataset, headers: dict[str, Dataset]
) -> hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations:
    label = finding.label
    site = finding.site or label.site
    return hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(
            uid=finding.tracking_uid, identifier=finding.tracking_id
        ),
        referenced_segment=hd.sr.ReferencedSegment(
            sop_class_uid=seg.SOPClassUID,
            sop_instance_uid=seg.SOPInstanceUID,
            segment_number=finding.number,
            source_series=hd.sr.SourceSeriesForSegmentation(findings.volume.series_instance_uid),
        ),
        finding_type=c.coded(label.type),
        finding_category=c.coded(label.category),
        finding_sites=_finding_sites(label, site),
        algorithm_id=_algorithm_id(findings),
        measurements=_measurements(finding, findings, headers),
        qualitative_evaluations=[
            hd.sr.QualitativeEvaluation(name=c.IMAGE_QUALITY, value=c.QUALITY_FLAGS[str(flag)])
            for flag in finding.flags
        ]
        or None,
    )


def _searched_for(findings: Findings, labels: Sequence[Label] | None) -> list[tuple]:
    """(concept, present?) for each kind of lesion the algorithm looks for."""
    if labels is None:
        return [(c.LESION, bool(findings.lesions))]
    found = {(f.label.type.value, f.label.type.scheme) for f in findings.lesions}
    result, seen = [], set()
    for label in labels:
        key = (label.type.value, label.type.scheme)
        if label.kind is FindingKind.LESION and key not in seen:
            seen.add(key)
            result.append((c.coded(label.type), key in found))
    return result


def _presence_items(statements: list[tuple]) -> list[hd.sr.CodeContentItem]:
    return [
        hd.sr.CodeContentItem(
            name=concept,
            value=c.PRESENT if present else c.ABSENT,
            relationship_type=hd.sr.RelationshipTypeValues.CONTAINS,
        )
        for concept, present in statements
    ]


def _no_finding_group(
    findings: Findings, statements: list[tuple], ordered: list[Dataset]
) -> hd.sr.MeasurementsAndQualitativeEvaluations:
    """A TID 1501 image-level group stating absence: TID 1500 needs one group at least."""
    return hd.sr.MeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(uid=hd.UID(), identifier="No finding"),
        algorithm_id=_algorithm_id(findings),
        qualitative_evaluations=[
            hd.sr.QualitativeEvaluation(name=concept, value=c.PRESENT if p else c.ABSENT)
            for concept, p in statements
        ]
        or [hd.sr.QualitativeEvaluation(name=c.LESION, value=c.ABSENT)],
        source_images=[hd.sr.SourceImageForMeasurementGroup.from_source_image(h) for h in ordered],
    )


def _library_images(headers: list[Dataset]) -> list[Dataset]:
    """Image Library entries (TID 1600, SR-13): single-frame images only.

    highdicom describes an entry from single-frame attributes (PixelSpacing, ...), which an
    Enhanced multi-frame image keeps in functional groups; such a source is still in the
    evidence sequences, so only the optional library entry is left out.
    """
    return [h for h in headers if int(h.get("NumberOfFrames", 1) or 1) == 1]


#: The header attributes behind highdicom's TID 1602-1604 descriptors other than the image
#: position: images that agree on all of them share one Image Library Group.
_GROUP_KEYS = (
    "SOPClassUID",
    "Modality",
    "FrameOfReferenceUID",
    "Rows",
    "Columns",
    "PixelSpacing",
    "SliceThickness",
    "SpacingBetweenSlices",
    "ImageOrientationPatient",
    "ImagerPixelSpacing",
    "PatientOrientation",
)
_POSITION = frozenset(
    code.value
    for code in (
        codes.DCM.ImagePositionPatientX,
        codes.DCM.ImagePositionPatientY,
        codes.DCM.ImagePositionPatientZ,
    )
)
#: The concept highdicom's ImageLibrary gives each entry.
_LIBRARY_ENTRY = hd.sr.CodedConcept("260753009", "SCT", "Source")


def _image_library(headers: list[Dataset]) -> hd.sr.ContainerContentItem:
    """TID 1600 with the descriptors said once per Image Library Group (TID 1600 row 3).

    highdicom's ``ImageLibrary`` repeats all of TID 1602/1604 (modality, frame of reference,
    rows, columns, spacing, thickness, orientation, position: 17 items) in every entry. On a
    64-slice CT that is ~1,100 content items, and ``Comprehensive3DSR`` copies, re-parses and
    searches its whole content tree, so the library alone cost ~3 s of CPU. Here, as in
    dcmqi's own TID 1500 writer and example SR, the images that share those descriptors form
    one group that carries them (highdicom's descriptors of the group's first image), and
    each entry is the IMAGE reference alone (TID 1601 row 2, the entry's own descriptors, is
    optional). Per-slice positions are left out: the SEG's frames and the source images carry
    them, and they would add three NUMs per slice (~1.2 s of CPU on this CT).
    """
    groups: dict[tuple[str, ...], list[Dataset]] = {}
    for header in headers:
        key = tuple(str(header.get(keyword, "")) for keyword in _GROUP_KEYS)
        groups.setdefault(key, []).append(header)
    library = hd.sr.ContainerContentItem(
        name=codes.DCM.ImageLibrary, relationship_type=hd.sr.RelationshipTypeValues.CONTAINS
    )
    library.ContentSequence = hd.sr.ContentSequence()
    for members in groups.values():
        group = hd.sr.ContainerContentItem(
            name=codes.DCM.ImageLibraryGroup,
            relationship_type=hd.sr.RelationshipTypeValues.CONTAINS,
        )
        group.ContentSequence = hd.sr.ContentSequence(
            [
                item
                for item in hd.sr.ImageLibraryEntryDescriptors(members[0])
                if item.name.value not in _POSITION
            ]
        )
        for header in members:
            group.ContentSequence.append(
                hd.sr.ImageContentItem(
                    name=_LIBRARY_ENTRY,
                    referenced_sop_class_uid=header.SOPClassUID,
                    referenced_sop_instance_uid=header.SOPInstanceUID,
                    relationship_type=hd.sr.RelationshipTypeValues.CONTAINS,
                )
            )
        library.ContentSequence.append(group)
    return library


def _insert_before_measurements(report: hd.sr.MeasurementReport, item: Dataset) -> None:
    """Put ``item`` where TID 1500 row 5 (Image Library) goes: before Imaging Measurements."""
    content = report[0].ContentSequence
    for index, existing in enumerate(content):
        if existing.ConceptNameCodeSequence[0].CodeValue == codes.DCM.ImagingMeasurements.value:
            content.insert(index, item)
            return
    raise ResultError("The measurement report has no Imaging Measurements container.")


def _declare_private_scheme(sr: Dataset) -> None:
    """Coding Scheme Identification (SOP Common, Type 1C): a private designator used."""
    item = Dataset()
    item.CodingSchemeDesignator = c.PRIVATE_SCHEME
    item.CodingSchemeName = c.PRIVATE_SCHEME_NAME
    item.CodingSchemeResponsibleOrganization = "medvision"
    sr.CodingSchemeIdentificationSequence = [
        *sr.get("CodingSchemeIdentificationSequence", []),
        item,
    ]


def _measurement_report(
    findings: Findings, groups: list, images: list[Dataset]
) -> hd.sr.MeasurementReport:
    """TID 1500 around ``groups``, with the Image Library of ``images`` before them; shared
    by the full and the planar SR."""
    report = hd.sr.MeasurementReport(
        observation_context=_observation_context(findings),
        procedure_reported=c.procedure_code(findings.volume.modality),
        imaging_measurements=groups,
    )
    library_images = _library_images(images)
    if library_images:
        _insert_before_measurements(report, _image_library(library_images))
    return report


def _comprehensive_sr(
    evidence: list[Dataset],
    report: hd.sr.MeasurementReport,
    findings: Findings,
    series_number: int,
    device: DeviceInfo,
    kind: str,
) -> hd.sr.Comprehensive3DSR:
    """The SR document around ``report``; shared by the full and the planar (OHIF) SR so
    both carry the same status, equipment and description rules."""
    algorithm = findings.algorithm
    note = c.generated_by(algorithm)
    return hd.sr.Comprehensive3DSR(
        evidence=evidence,
        content=report[0],
        series_instance_uid=hd.UID(),
        series_number=series_number,
        sop_instance_uid=hd.UID(),
        instance_number=1,
        manufacturer=device.manufacturer,
        is_complete=True,
        is_final=False,
        is_verified=False,
        institution_name=device.institution_name,
        contributing_equipment=[algorithm_equipment(algorithm)],
        series_description=c.truncate(f"{algorithm.name} {kind} ({note})", 64),
    )


def _stamp_device(sr: Dataset, device: DeviceInfo) -> None:
    """The device attributes highdicom's constructor does not take."""
    sr.ManufacturerModelName = device.model_name
    sr.SoftwareVersions = device.software_version
    sr.DeviceSerialNumber = device.serial_number


@no_phi_warnings()
def build_sr(
    findings: Findings,
    seg: Dataset | None,
    *,
    labels: Sequence[Label] | None = None,
    series_number: int = DEFAULT_SR_SERIES_NUMBER,
    device: DeviceInfo | None = None,
) -> hd.sr.Comprehensive3DSR:
    """A TID 1500 Measurement Report of ``findings``, referencing the segments of ``seg``.

    ``seg`` may be None only when there are no findings. ``labels`` are the labels the
    pipeline can produce (``Pipeline.labels``); for each lesion label the report states
    Present or Absent. Without them it states whether any lesion was found.
    """
    device = device or DeviceInfo()
    if findings.items and seg is None:
        raise ResultError("The SR of findings must reference their SEG; none was given.")
    cleaned, _ = sanitize_headers(findings.volume.source_headers)
    if not cleaned:
        raise ResultError("The volume carries no source headers; cannot reference the source.")
    check_same_study(cleaned)
    headers = {str(h.SOPInstanceUID): h for h in cleaned}
    ordered = list(headers.values())
    statements = _searched_for(findings, labels)
    try:
        groups: list = [_group(f, findings, seg, headers) for f in findings.items]
        if not groups:
            groups = [_no_finding_group(findings, statements, ordered)]
        report = _measurement_report(findings, groups, ordered)
        if statements:  # TID 1500 row 12: report-level qualitative evaluations (SR-15)
            container = hd.sr.ContainerContentItem(
                name=c.QUALITATIVE_EVALUATIONS,
                relationship_type=hd.sr.RelationshipTypeValues.CONTAINS,
            )
            container.ContentSequence = _presence_items(statements)
            report[0].ContentSequence.append(container)
        sr = _comprehensive_sr(
            [*ordered, *([seg] if seg is not None else [])],
            report,
            findings,
            series_number,
            device,
            "SR",
        )
    except (ValueError, TypeError, AttributeError, KeyError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ResultError(f"Could not build the SR: {reason}") from exc
    if any(f.flags for f in findings.items):
        _declare_private_scheme(sr)
    _stamp_device(sr, device)
    logger.info("Built SR with %d measurement group(s)", len(groups))
    return sr


__all__ = ["DEFAULT_SR_SERIES_NUMBER", "build_sr"]
