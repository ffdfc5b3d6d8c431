"""The SEG as a user checks it: valid, readable, in the right place, in the right study."""

from __future__ import annotations

import copy
import re
import warnings

import highdicom as hd
import numpy as np
import pydicom
import pytest

from medvision.errors import ResultError
from medvision.results import DeviceInfo, build_seg
from medvision.results._inherit import _sanitize, sanitize_headers
from tests.results.conftest import (
    ALGORITHM,
    LESION_LABEL,
    dciodvfy,
    make_finding,
    make_findings,
    sphere,
)

STUDY_KEYWORDS = (
    "StudyInstanceUID",
    "PatientID",
    "PatientName",
    "PatientBirthDate",
    "PatientSex",
    "AccessionNumber",
    "StudyID",
    "StudyDate",
    "StudyTime",
)


@pytest.fixture(scope="module")
def seg(written):
    return hd.seg.segread(written.seg_path)


def test_dciodvfy_reports_no_error(written):
    errors, _ = dciodvfy(written.seg_path)
    assert errors == []


def test_is_binary_segmentation_in_a_new_series_of_the_source_study(seg, chest_volume):
    src = chest_volume.source_headers[0]
    assert seg.SOPClassUID == "1.2.840.10008.5.1.4.1.1.66.4"
    assert seg.SegmentationType == "BINARY" and seg.Modality == "SEG"
    for keyword in STUDY_KEYWORDS:
        assert str(seg.get(keyword, "")) == str(src.get(keyword, "")), keyword
    assert seg.SeriesInstanceUID != chest_volume.series_instance_uid
    assert seg.FrameOfReferenceUID == chest_volume.frame_of_reference_uid


def test_references_every_source_instance(seg, chest_volume):
    (series,) = seg.ReferencedSeriesSequence
    assert series.SeriesInstanceUID == chest_volume.series_instance_uid
    referenced = {i.ReferencedSOPInstanceUID for i in series.ReferencedInstanceSequence}
    assert referenced == set(chest_volume.sop_instance_uids)
    derived = {
        src.ReferencedSOPInstanceUID
        for frame in seg.PerFrameFunctionalGroupsSequence
        for der in frame.DerivationImageSequence
        for src in der.SourceImageSequence
    }
    assert derived <= referenced


def test_inherited_study_defect_is_dropped_not_copied(seg, chest_volume):
    # A0001's ReferencedStudySequence item lacks ReferencedSOPClassUID (dciodvfy error).
    assert "ReferencedSOPClassUID" not in chest_volume.source_headers[0].ReferencedStudySequence[0]
    assert "ReferencedStudySequence" not in seg
    # ...and the Volume's own headers are left as they were.
    assert "ReferencedStudySequence" in chest_volume.source_headers[0]


def test_segment_descriptions(seg, chest_findings):
    assert len(seg.SegmentSequence) == len(chest_findings.items)
    for item, finding in zip(seg.SegmentSequence, chest_findings.items, strict=True):
        assert item.SegmentNumber == finding.number
        assert item.SegmentAlgorithmType == "AUTOMATIC"
        assert item.SegmentAlgorithmName == ALGORITHM.name
        assert item.TrackingID == finding.tracking_id
        assert item.TrackingUID == finding.tracking_uid
        assert "AI-generated, not verified" in item.SegmentDescription
        assert len(item.RecommendedDisplayCIELabValue) == 3
        category = item.SegmentedPropertyCategoryCodeSequence[0]
        kind = item.SegmentedPropertyTypeCodeSequence[0]
        assert (category.CodeValue, category.CodingSchemeDesignator) == (
            finding.label.category.value,
            "SCT",
        )
        assert (kind.CodeValue, kind.CodingSchemeDesignator) == (finding.label.type.value, "SCT")
        assert item.AnatomicRegionSequence[0].CodeValue == "39607008"
        (algo,) = item.SegmentationAlgorithmIdentificationSequence
        assert algo.AlgorithmFamilyCodeSequence[0].CodeValue == "123110"
        assert algo.AlgorithmName == ALGORITHM.name and algo.AlgorithmVersion == ALGORITHM.version
        assert f"weights_sha256={ALGORITHM.weights_sha256}" in algo.AlgorithmParameters


def test_equipment_and_content_identification(seg):
    for keyword in (
        "Manufacturer",
        "ManufacturerModelName",
        "DeviceSerialNumber",
        "SoftwareVersions",
    ):
        assert str(seg.get(keyword, "")).strip(), keyword
    assert re.fullmatch(r"[A-Z0-9 _]{1,16}", seg.ContentLabel)
    assert str(seg.ContentCreatorName)
    algorithm_items = [
        e
        for e in seg.ContributingEquipmentSequence
        if e.PurposeOfReferenceCodeSequence[0].CodeValue == "109102"
        and e.get("ManufacturerModelName") == ALGORITHM.name
    ]
    assert len(algorithm_items) == 1 and algorithm_items[0].DeviceUID


def test_every_segment_has_frames_and_no_frame_is_empty(seg, chest_findings):
    numbers = [
        f.SegmentIdentificationSequence[0].ReferencedSegmentNumber
        for f in seg.PerFrameFunctionalGroupsSequence
    ]
    assert set(numbers) == {f.number for f in chest_findings.items}
    pixels = seg.pixel_array.reshape(len(numbers), -1)
    assert pixels.any(axis=1).all()


def test_voxels_sit_at_the_same_patient_coordinates(seg, chest_findings, chest_volume):
    """Place each frame by its own ImagePositionPatient, as a viewer does."""
    v = chest_volume
    rebuilt = {f.number: np.zeros(v.shape, dtype=bool) for f in chest_findings.items}
    pixels = seg.pixel_array.astype(bool)
    orientation = seg.SharedFunctionalGroupsSequence[0].PlaneOrientationSequence[0]
    assert np.allclose(orientation.ImageOrientationPatient, v.direction[:, :2].T.ravel())
    for frame, item in zip(pixels, seg.PerFrameFunctionalGroupsSequence, strict=True):
        number = item.SegmentIdentificationSequence[0].ReferencedSegmentNumber
        ipp = np.array(item.PlanePositionSequence[0].ImagePositionPatient, dtype=float)
        k, j, i = v.lps_to_index(ipp)
        assert abs(j) < 1e-3 and abs(i) < 1e-3
        assert abs(k - round(k)) < 1e-3
        rebuilt[number][int(round(k))] |= frame
    for finding in chest_findings.items:
        assert np.array_equal(rebuilt[finding.number], finding.mask), finding.tracking_id


def test_highdicom_volume_round_trip(seg, chest_findings, chest_volume):
    """highdicom's own geometry puts every segment voxel back where our mask had it."""
    volume = seg.get_volume(combine_segments=False)
    for finding in chest_findings.items:
        voxels = np.argwhere(volume.array[..., finding.number - 1])
        lps = volume.map_indices_to_reference(voxels)
        kji = np.rint(chest_volume.lps_to_index(lps)).astype(int)
        rebuilt = np.zeros(chest_volume.shape, dtype=bool)
        rebuilt[tuple(kji.T)] = True
        assert np.array_equal(rebuilt, finding.mask), finding.tracking_id


def test_empty_mask_is_refused(chest_volume):
    empty = np.zeros(chest_volume.shape, dtype=bool)
    finding = make_finding(
        chest_volume,
        1,
        LESION_LABEL,
        sphere(chest_volume.shape, (30, 200, 150), 6.0, chest_volume.spacing),
        "Lesion 1",
    )
    bad = make_findings(
        chest_volume,
        (
            finding,
            type(finding)(
                2, LESION_LABEL, empty, "Lesion 2", hd.UID(), finding.measurements, 0.5, "x"
            ),
        ),
    )
    with pytest.raises(ResultError, match="empty mask"):
        build_seg(bad)


def test_no_findings_is_refused(chest_volume):
    with pytest.raises(ResultError, match="at least one segment"):
        build_seg(make_findings(chest_volume, ()))


def test_srt_code_is_refused(chest_volume):
    old = type(LESION_LABEL)(
        "old",
        LESION_LABEL.category,
        type(LESION_LABEL.type)("M-80003", "SRT", "Neoplasm"),
        LESION_LABEL.kind,
    )
    f = make_finding(
        chest_volume,
        1,
        old,
        sphere(chest_volume.shape, (30, 200, 150), 6.0, chest_volume.spacing),
        "Lesion 1",
    )
    with pytest.raises(ResultError, match="SRT"):
        build_seg(make_findings(chest_volume, (f,)))


def test_sanitize_copies_and_reports_without_values(chest_volume):
    cleaned, repairs = sanitize_headers(chest_volume.source_headers[:2])
    assert cleaned[0] is not chest_volume.source_headers[0]
    assert any(r.startswith("ReferencedStudySequence") for r in repairs)
    assert not any(str(chest_volume.source_headers[0].PatientID) in r for r in repairs)


def test_sanitize_leaves_the_source_headers_unchanged(chest_volume):
    before = [copy.deepcopy(h) for h in chest_volume.source_headers]
    cleaned, _ = _sanitize(chest_volume.source_headers)  # not the cached copies
    assert "ReferencedStudySequence" not in cleaned[0]
    assert "ReferencedStudySequence" in chest_volume.source_headers[0]
    assert list(chest_volume.source_headers) == before


def test_repairs_replace_elements_never_change_the_source(chest_volume):
    """The copies share data elements with the source; a repair must not write through."""
    header = copy.deepcopy(chest_volume.source_headers[0])
    valid = pydicom.Dataset()
    valid.ReferencedSOPClassUID = "1.2.840.10008.3.1.2.3.1"
    valid.ReferencedSOPInstanceUID = "1.2.3.4"
    header.ReferencedStudySequence = [valid, pydicom.Dataset()]  # one item lacks both UIDs
    header.PatientSex = "X"
    before = copy.deepcopy(header)
    (cleaned,), repairs = _sanitize([header])
    assert len(cleaned.ReferencedStudySequence) == 1 and not cleaned.PatientSex
    assert len(repairs) == 2
    assert header == before


def test_device_info_is_written(chest_volume):
    f = make_finding(
        chest_volume,
        1,
        LESION_LABEL,
        sphere(chest_volume.shape, (30, 200, 150), 6.0, chest_volume.spacing),
        "L1",
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        seg = build_seg(
            make_findings(chest_volume, (f,)),
            series_number=77,
            device=DeviceInfo(serial_number="NODE-7"),
        )
    name = str(chest_volume.source_headers[0].PatientName)
    assert not any(name in str(w.message) for w in caught)  # no PHI in warnings/logs
    assert seg.SeriesNumber == 77 and seg.DeviceSerialNumber == "NODE-7"
    assert int(seg.NumberOfFrames) == int(f.mask.any(axis=(1, 2)).sum())


def test_multiframe_enhanced_source(shared_data, tmp_path):
    from medvision.dicom import load_series, scan

    (study,) = scan(shared_data / "mr" / "philips-3t-brain" / "enhanced")
    series = [s for s in study.series if not s.problems and s.num_frames > 1][0]
    volume = load_series(series)
    assert len(volume.source_headers) == 1
    before = copy.deepcopy(volume.source_headers[0])
    mask = sphere(volume.shape, (20, 48, 48), 12.0, volume.spacing)
    findings = make_findings(volume, (make_finding(volume, 1, LESION_LABEL, mask, "Lesion 1"),))
    seg = build_seg(findings)
    seg.save_as(tmp_path / "seg.dcm")
    errors, _ = dciodvfy(tmp_path / "seg.dcm")
    assert errors == []
    back = hd.seg.segread(tmp_path / "seg.dcm")
    frames = [
        f.DerivationImageSequence[0].SourceImageSequence[0].ReferencedFrameNumber
        for f in back.PerFrameFunctionalGroupsSequence
    ]
    expected = [volume.frame_numbers[k] for k in np.flatnonzero(mask.any(axis=(1, 2)))]
    assert sorted(int(x) for x in frames) == sorted(expected)
    assert (
        pydicom.dcmread(tmp_path / "seg.dcm").FrameOfReferenceUID == volume.frame_of_reference_uid
    )
    assert volume.source_headers[0] == before  # geometry was hoisted in a copy only
