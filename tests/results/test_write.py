"""write_results: three files, written whole, readable by 3D Slicer's SEG reader."""

from __future__ import annotations

import json
import subprocess

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk

from medvision.errors import ResultError
from medvision.results import write_results
from tests.results.conftest import tool


def test_files_and_uids(written, written_json):
    assert {p.name for p in written.json_path.parent.iterdir()} == {
        "seg.dcm",
        "sr.dcm",
        "findings.json",
    }  # no temporary file left behind
    seg = pydicom.dcmread(written.seg_path, stop_before_pixels=True)
    sr = pydicom.dcmread(written.sr_path, stop_before_pixels=True)
    assert (
        written.seg_sop_instance_uid
        == seg.SOPInstanceUID
        == written_json["seg"]["sop_instance_uid"]
    )
    assert (
        written.sr_sop_instance_uid == sr.SOPInstanceUID == written_json["sr"]["sop_instance_uid"]
    )
    assert written_json["seg"]["file"] == "seg.dcm" and written_json["sr"]["file"] == "sr.dcm"
    assert written_json["verified"] is False


def test_json_is_findings_to_json_plus_references(written_json, chest_findings):
    base = json.loads(json.dumps(chest_findings.to_json()))
    for key, value in base.items():
        if key != "findings":
            assert written_json[key] == value
    for ours, theirs in zip(written_json["findings"], base["findings"], strict=True):
        assert {k: v for k, v in ours.items() if k != "seg_segment_number"} == theirs
        assert ours["seg_segment_number"] == ours["number"]


def test_dcmqi_segimage2itkimage_reads_one_image_per_segment(written, chest_findings, tmp_path):
    subprocess.run(
        [
            tool("segimage2itkimage"),
            "--inputDICOM",
            str(written.seg_path),
            "--outputDirectory",
            str(tmp_path),
            "-t",
            "nii",
        ],
        check=True,
        capture_output=True,
    )
    images = sorted(tmp_path.glob("*.nii.gz"), key=lambda p: int(p.name.split(".")[0]))
    assert len(images) == len(chest_findings.items)
    for path, finding in zip(images, chest_findings.items, strict=True):
        array = sitk.GetArrayFromImage(sitk.ReadImage(str(path)))
        assert int(np.count_nonzero(array)) == int(finding.mask.sum()), path.name


def test_unwritable_destination_is_a_result_error(chest_findings, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(ResultError, match="Could not write"):
        write_results(chest_findings, blocker)
