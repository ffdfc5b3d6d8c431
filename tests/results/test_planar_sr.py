"""The planar SR as a user checks it: valid, readable by highdicom and dcmqi, each lesion's
axes drawn on its key slice with the lengths findings.json and the volumetric SR give."""

from __future__ import annotations

import dataclasses
import json
import subprocess

import highdicom as hd
import numpy as np
import pydicom
import pytest

from medvision.findings import Findings, measure
from medvision.results import build_planar_sr, write_results
from medvision.results._planar_sr import OHIF_BIDIRECTIONAL
from tests.results.conftest import (
    LESION_LABEL,
    ORGAN_LABEL,
    dciodvfy,
    make_finding,
    make_findings,
    sphere,
    tool,
)

LONG_AXIS, SHORT_AXIS = "103339001", "103340004"


@pytest.fixture(scope="module")
def measured(chest_volume) -> Findings:
    """Two lesions (an ellipsoid lying obliquely and a sphere) and an organ, measured by
    measure() as the pipelines do, so axes and endpoints come from the same code."""
    v = chest_volume
    k, j, i = np.indices(v.shape)
    di, dj = (i - 180) * v.spacing[0], (j - 220) * v.spacing[1]
    u, w = di * 0.8 + dj * 0.6, -di * 0.6 + dj * 0.8
    oblique = (u / 16.0) ** 2 + (w / 7.0) ** 2 + ((k - 30) * v.spacing[2] / 9.0) ** 2 <= 1.0
    box = np.zeros(v.shape, dtype=bool)
    box[20:44, 150:330, 280:430] = True
    items = []
    for number, (label, mask, name) in enumerate(
        [
            (LESION_LABEL, oblique, "Lesion 1"),
            (LESION_LABEL, sphere(v.shape, (40, 300, 350), 7.0, v.spacing), "Lesion 2"),
            (ORGAN_LABEL, box, "Left lung"),
        ],
        start=1,
    ):
        finding = make_finding(v, number, label, mask, name)
        real = measure(mask, v, lesion=label is LESION_LABEL)
        items.append(dataclasses.replace(finding, measurements=real))
    return make_findings(v, tuple(items))


@pytest.fixture(scope="module")
def written(measured, tmp_path_factory):
    return write_results(measured, tmp_path_factory.mktemp("planar"), planar_sr=True)


def _groups(ds: pydicom.Dataset) -> list[pydicom.Dataset]:
    (measurements,) = [
        i for i in ds.ContentSequence if i.ConceptNameCodeSequence[0].CodeValue == "126010"
    ]
    return list(measurements.ContentSequence)


def _item(group: pydicom.Dataset, code: str) -> pydicom.Dataset:
    (item,) = [i for i in group.ContentSequence if i.ConceptNameCodeSequence[0].CodeValue == code]
    return item


def test_written_next_to_the_volumetric_sr_and_named_in_findings_json(written) -> None:
    assert written.planar_sr_path is not None and written.planar_sr_path.name == "sr-planar.dcm"
    doc = json.loads(written.json_path.read_text())
    assert doc["planar_sr"]["sop_instance_uid"] == written.planar_sr_sop_instance_uid
    assert doc["planar_sr"]["file"] == "sr-planar.dcm"
    assert doc["sr"]["sop_instance_uid"] != written.planar_sr_sop_instance_uid


def test_dciodvfy_reports_no_error(written) -> None:
    errors, _ = dciodvfy(written.planar_sr_path)
    assert errors == []


def test_highdicom_reads_a_tid_1500_report_of_the_lesions(written, measured) -> None:
    sr = hd.sr.srread(written.planar_sr_path)
    assert sr.SOPClassUID == "1.2.840.10008.5.1.4.1.1.88.34"
    assert sr.VerificationFlag == "UNVERIFIED"
    assert sr.StudyInstanceUID == measured.volume.study_instance_uid
    assert sr.ContentTemplateSequence[0].TemplateIdentifier == "1500"
    groups = sr.content.get_image_measurement_groups()
    assert [g.tracking_uid for g in groups] == [f.tracking_uid for f in measured.lesions]
    assert {g.tracking_identifier for g in groups} == {OHIF_BIDIRECTIONAL}


def test_each_lesion_has_its_axes_on_its_key_slice(written, measured) -> None:
    """The drawn ends measure the reported lengths (the long axis exactly as measured), on
    the slice the volumetric SR and findings.json name, labelled with the lesion's name."""
    ds = pydicom.dcmread(written.planar_sr_path)
    volume = measured.volume
    lesions = {f.tracking_uid: f for f in measured.lesions}
    spacing = np.asarray(volume.spacing[:2])
    groups = _groups(ds)
    assert len(groups) == len(lesions)
    for group in groups:
        finding = lesions[_item(group, "112040").UID]
        assert _item(group, "121106").TextValue == finding.tracking_id
        key_sop = volume.sop_instance_uids[finding.measurements.long_axis_slice]
        for code, value in (
            (LONG_AXIS, finding.measurements.long_axis_mm),
            (SHORT_AXIS, finding.measurements.short_axis_mm),
        ):
            num = _item(group, code)
            assert float(num.MeasuredValueSequence[0].NumericValue) == pytest.approx(value)
            (scoord,) = num.ContentSequence
            assert scoord.ValueType == "SCOORD" and scoord.GraphicType == "POLYLINE"
            assert scoord.RelationshipType == "INFERRED FROM"
            (image,) = scoord.ContentSequence
            assert image.ReferencedSOPSequence[0].ReferencedSOPInstanceUID == key_sop
            ends = np.asarray(scoord.GraphicData, dtype=float).reshape(2, 2)
            # an axial slice with identity in-plane direction: mm = pixels * spacing
            assert np.linalg.norm((ends[1] - ends[0]) * spacing) == pytest.approx(value, 1e-5)
        assert len(ds.CurrentRequestedProcedureEvidenceSequence[0].ReferencedSeriesSequence) == 1


def test_dcmqi_tid1500reader(written, measured, tmp_path) -> None:
    out = tmp_path / "planar.json"
    subprocess.run(
        [
            tool("tid1500reader"),
            "--inputDICOM",
            str(written.planar_sr_path),
            "--outputMetadata",
            str(out),
        ],
        check=True,
        capture_output=True,
    )
    meta = json.loads(out.read_text())
    groups = {g["TrackingUniqueIdentifier"]: g for g in meta["Measurements"]}
    assert set(groups) == {f.tracking_uid for f in measured.lesions}
    for finding in measured.lesions:
        items = {
            i["quantity"]["CodeValue"]: float(i["value"])
            for i in groups[finding.tracking_uid]["measurementItems"]
        }
        assert items == pytest.approx(
            {
                LONG_AXIS: finding.measurements.long_axis_mm,
                SHORT_AXIS: finding.measurements.short_axis_mm,
            }
        )


def test_only_when_asked_and_only_with_a_lesion(measured, chest_volume, tmp_path) -> None:
    plain = write_results(measured, tmp_path / "plain")
    assert plain.planar_sr_path is None
    assert not (tmp_path / "plain" / "sr-planar.dcm").exists()
    assert "planar_sr" not in json.loads(plain.json_path.read_text())
    organ = dataclasses.replace(measured.organs[0], number=1)
    organ_only = make_findings(chest_volume, (organ,))
    assert build_planar_sr(organ_only) is None
    files = write_results(organ_only, tmp_path / "organ", planar_sr=True)
    assert files.planar_sr_path is None


def _long_axis_images(ds: pydicom.Dataset) -> dict[str, str]:
    """Tracking UID -> the SOP Instance UID each group's Long Axis refers to (directly, or
    through its SCOORD)."""
    found = {}
    for group in _groups(ds):
        nums = [
            i for i in group.ContentSequence if i.ConceptNameCodeSequence[0].CodeValue == LONG_AXIS
        ]
        if not nums:  # an organ
            continue
        (ref,) = nums[0].ContentSequence
        image = ref.ContentSequence[0] if ref.ValueType == "SCOORD" else ref
        found[_item(group, "112040").UID] = str(
            image.ReferencedSOPSequence[0].ReferencedSOPInstanceUID
        )
    return found


def test_the_key_slice_is_the_one_the_volumetric_sr_names(written) -> None:
    """Both SRs say the same image for each lesion's long axis, and tie it to the lesion by
    the same Tracking UID (the SEG segment's)."""
    planar = _long_axis_images(pydicom.dcmread(written.planar_sr_path))
    volumetric = _long_axis_images(pydicom.dcmread(written.sr_path))
    assert planar and planar == {uid: volumetric[uid] for uid in planar}
    seg = pydicom.dcmread(written.seg_path)
    assert set(planar) <= {str(s.TrackingUID) for s in seg.SegmentSequence}
