"""The SR as a user checks it: valid, readable by highdicom and dcmqi, equal to findings.json."""

from __future__ import annotations

import json
import subprocess

import highdicom as hd
import pydicom
import pytest
from pydicom.sr.codedict import codes

from medvision.results import algorithm_device_uid, build_sr, write_results
from medvision.results._codes import CONFIDENCE, UNIT_FRACTION
from tests.results.conftest import (
    ALGORITHM,
    ORGAN_LABEL,
    dciodvfy,
    make_finding,
    make_findings,
    tool,
)

#: (concept value, derivation value or None) -> key in findings.json "measurements".
JSON_KEYS = {
    ("118565006", None): "volume_ml",
    ("112031", "373098007"): "mean_hu",
    ("112031", "56851009"): "max_hu",
    ("103339001", None): "long_axis_mm",
    ("103340004", None): "short_axis_mm",
}
JSON_UNITS = {
    "volume_ml": "mL",
    "mean_hu": "[hnsf'U]",
    "max_hu": "[hnsf'U]",
    "long_axis_mm": "mm",
    "short_axis_mm": "mm",
}


@pytest.fixture(scope="module")
def sr(written):
    return hd.sr.srread(written.sr_path)


def _derivation(measurement: hd.sr.Measurement) -> str | None:
    return measurement.derivation.value if measurement.derivation is not None else None


def test_dciodvfy_reports_no_error(written):
    errors, _ = dciodvfy(written.sr_path)
    assert errors == []


def test_document_level(sr, chest_volume):
    assert sr.SOPClassUID == "1.2.840.10008.5.1.4.1.1.88.34"
    assert sr.VerificationFlag == "UNVERIFIED" and sr.CompletionFlag == "COMPLETE"
    assert sr.StudyInstanceUID == chest_volume.study_instance_uid
    assert sr.PatientID == chest_volume.source_headers[0].PatientID
    assert "ReferencedStudySequence" not in sr
    assert sr.ContentTemplateSequence[0].TemplateIdentifier == "1500"
    procedures = [
        i for i in sr.ContentSequence if i.ConceptNameCodeSequence[0].CodeValue == "121058"
    ]
    assert procedures[0].ConceptCodeSequence[0].CodeValue == "77477000"
    observer_uid = [
        i.UID for i in sr.ContentSequence if i.ConceptNameCodeSequence[0].CodeValue == "121012"
    ]
    assert observer_uid == [algorithm_device_uid(ALGORITHM)]


def test_evidence_holds_every_referenced_instance(sr, written, chest_volume):
    evidence = {
        inst.ReferencedSOPInstanceUID
        for study in sr.CurrentRequestedProcedureEvidenceSequence
        for series in study.ReferencedSeriesSequence
        for inst in series.ReferencedSOPSequence
    }
    assert set(chest_volume.sop_instance_uids) <= evidence
    assert written.seg_sop_instance_uid in evidence


def test_one_group_per_finding_equal_to_findings_json(sr, written, written_json):
    groups = sr.content.get_volumetric_roi_measurement_groups()
    by_uid = {f["tracking_uid"]: f for f in written_json["findings"]}
    assert len(groups) == len(by_uid)
    for group in groups:
        item = by_uid[str(group.tracking_uid)]
        assert group.tracking_identifier == item["tracking_id"]
        segment = group.referenced_segment
        assert segment.referenced_sop_instance_uid == written.seg_sop_instance_uid
        assert segment.referenced_segment_numbers == [item["seg_segment_number"]]
        assert group.finding_type.value == item["type"]["value"]
        assert group.finding_category.value == item["category"]["value"]
        assert [s.value.value for s in group.finding_sites] == [item["site"]["value"]]
        seen = {}
        for m in group.get_measurements():
            if m.name == CONFIDENCE:
                assert m.unit == UNIT_FRACTION
                assert m.value == item["confidence"]
                continue
            key = JSON_KEYS[(m.name.value, _derivation(m))]
            assert (
                m.unit.value
                == JSON_UNITS[key]
                == written_json["units"].get(
                    {"volume_ml": "volume", "mean_hu": "attenuation", "max_hu": "attenuation"}.get(
                        key, "lengths"
                    )
                )
            )
            seen[key] = m.value
        expected = {
            k: v for k, v in item["measurements"].items() if k in JSON_UNITS and v is not None
        }
        assert seen == expected
        algo = [
            i
            for i in group[0].ContentSequence
            if i.ConceptNameCodeSequence[0].CodeValue == "111001"
        ]
        assert algo and algo[0].TextValue == ALGORITHM.name


def test_image_library_lists_every_source_image_in_one_group(sr, chest_volume):
    """TID 1600: the series' shared descriptors once, then one IMAGE entry per slice."""
    names = [i.ConceptNameCodeSequence[0].CodeValue for i in sr.ContentSequence]
    library = sr.ContentSequence[names.index(codes.DCM.ImageLibrary.value)]
    assert names.index(codes.DCM.ImageLibrary.value) < names.index(
        codes.DCM.ImagingMeasurements.value
    )
    (group,) = library.ContentSequence
    assert group.ConceptNameCodeSequence[0].CodeValue == codes.DCM.ImageLibraryGroup.value
    entries = [i for i in group.ContentSequence if i.ValueType == "IMAGE"]
    assert sorted(e.ReferencedSOPSequence[0].ReferencedSOPInstanceUID for e in entries) == sorted(
        chest_volume.sop_instance_uids
    )
    descriptors = {
        i.ConceptNameCodeSequence[0].CodeMeaning: i
        for i in group.ContentSequence
        if i.ValueType != "IMAGE"
    }
    assert descriptors["Modality"].ConceptCodeSequence[0].CodeValue == "CT"
    assert descriptors["Frame of Reference UID"].UID == chest_volume.frame_of_reference_uid
    spacing = descriptors["Horizontal Pixel Spacing"].MeasuredValueSequence[0].NumericValue
    assert float(spacing) == pytest.approx(chest_volume.spacing[0])


def test_lesion_presence_stated_at_report_level(sr):
    (container,) = [
        i for i in sr.ContentSequence if i.ConceptNameCodeSequence[0].CodeValue == "C0034375"
    ]
    (item,) = container.ContentSequence
    assert item.ConceptCodeSequence[0].CodeMeaning == "Present"


def test_dcmqi_tid1500reader(written, written_json, tmp_path):
    out = tmp_path / "sr.json"
    subprocess.run(
        [tool("tid1500reader"), "--inputDICOM", str(written.sr_path), "--outputMetadata", str(out)],
        check=True,
        capture_output=True,
    )
    meta = json.loads(out.read_text())
    assert meta["VerificationFlag"] == "UNVERIFIED"
    groups = {g["TrackingUniqueIdentifier"]: g for g in meta["Measurements"]}
    assert set(groups) == {f["tracking_uid"] for f in written_json["findings"]}
    for finding in written_json["findings"]:
        group = groups[finding["tracking_uid"]]
        assert int(group["ReferencedSegment"]) == finding["seg_segment_number"]
        assert group["segmentationSOPInstanceUID"] == written.seg_sop_instance_uid
        volume = [
            float(i["value"])
            for i in group["measurementItems"]
            if i["quantity"]["CodeValue"] == "118565006"
        ]
        assert volume == pytest.approx([finding["measurements"]["volume_ml"]], rel=1e-9)


def test_structure_matches_dcmqi_reference(written, shared_data, tmp_path):
    """Every key dcmqi's own example SR yields per group, ours yields too."""
    keys = []
    for name, path in (
        ("ours", written.sr_path),
        ("ref", shared_data / "seg-sr/dcmqi/data/sr-example/sr.dcm"),
    ):
        out = tmp_path / f"{name}.json"
        subprocess.run(
            [tool("tid1500reader"), "--inputDICOM", str(path), "--outputMetadata", str(out)],
            check=True,
            capture_output=True,
        )
        meta = json.loads(out.read_text())
        keys.append((set(meta), set(meta["Measurements"][0])))
    (ours_top, ours_group), (ref_top, ref_group) = keys
    assert ref_top <= ours_top
    assert ref_group - {"activitySession", "timePoint"} <= ours_group


def _zero_lesion_sr(volume, tmp_path, items):
    return write_results(make_findings(volume, items), tmp_path)


def test_no_finding_at_all_gives_valid_sr_stating_absence(chest_volume, tmp_path):
    files = _zero_lesion_sr(chest_volume, tmp_path, ())
    assert files.seg_path is None and not (tmp_path / "seg.dcm").exists()
    errors, _ = dciodvfy(files.sr_path)
    assert errors == []
    sr = hd.sr.srread(files.sr_path)
    (container,) = [
        i for i in sr.ContentSequence if i.ConceptNameCodeSequence[0].CodeValue == "C0034375"
    ]
    (item,) = container.ContentSequence
    assert item.ConceptNameCodeSequence[0].CodeMeaning == "Lesion"
    assert item.ConceptCodeSequence[0].CodeMeaning == "Absent"
    (group,) = sr.content.get_image_measurement_groups()
    assert group.tracking_identifier == "No finding"
    assert [e.value for e in group.get_qualitative_evaluations() if e.name == codes.SCT.Lesion] == [
        codes.SCT.Absent
    ]
    doc = json.loads(files.json_path.read_text())
    assert doc["findings"] == [] and doc["seg"] is None and doc["lesion_count"] == 0


def test_organ_only_states_no_lesion(chest_volume, tmp_path):
    import numpy as np

    box = np.zeros(chest_volume.shape, dtype=bool)
    box[30:34, 200:260, 200:260] = True
    files = _zero_lesion_sr(
        chest_volume, tmp_path, (make_finding(chest_volume, 1, ORGAN_LABEL, box, "Lung"),)
    )
    assert dciodvfy(files.sr_path)[0] == []
    ds = pydicom.dcmread(files.sr_path)
    (container,) = [
        i for i in ds.ContentSequence if i.ConceptNameCodeSequence[0].CodeValue == "C0034375"
    ]
    assert container.ContentSequence[0].ConceptCodeSequence[0].CodeMeaning == "Absent"


def test_sr_without_seg_is_refused_when_there_are_findings(chest_findings):
    from medvision.errors import ResultError

    with pytest.raises(ResultError, match="SEG"):
        build_sr(chest_findings, None)
