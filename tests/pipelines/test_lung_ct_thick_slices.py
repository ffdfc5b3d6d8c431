"""Routine thick-slice chest CT is analysed with a flag, not refused (issue 11, item 3).

The real A0001 chest CT resampled to 8 mm slices (as a routine thorax protocol archives it)
must give SEG + SR whose lesions carry the ``thick-slices`` flag with lowered confidence, in
findings.json, the SR (read back by dcmqi's tid1500reader, dciodvfy without errors), the
viewer's finding panel and the QA study report; beyond 10 mm the study is refused, naming
the thickness.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace

import pytest

from medvision.pipelines.lung_ct import LungParams
from medvision.reports import study_report_html
from medvision.reports._study import JobReport, StudyReport
from medvision.runner import PipelineRun, run_study
from tests.thick_ct import write_thick_series
from tests.tools import dciodvfy_errors, tool

PARAMS = LungParams()


@pytest.fixture(scope="module")
def thick_run(chest_ct_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> PipelineRun:
    tmp = tmp_path_factory.mktemp("thick")
    series = write_thick_series(chest_ct_dir, tmp / "thorax-8mm", 8.0)
    [run] = run_study(series, tmp / "out", ["lung-ct"])
    assert run.status == "done", run.reason
    return run


@pytest.fixture(scope="module")
def doc(thick_run: PipelineRun) -> dict:
    assert thick_run.files is not None
    return json.loads(thick_run.files.json_path.read_text())


def test_lesions_carry_the_flag_and_lower_confidence(thick_run: PipelineRun, doc: dict) -> None:
    assert thick_run.findings is not None and thick_run.findings.volume.spacing[2] == (
        pytest.approx(8.0, abs=0.01)
    )
    lesions = [f for f in doc["findings"] if f["kind"] == "lesion"]
    assert lesions, "the real tumour must still be found at 8 mm"
    scale = PARAMS.confidence_scale(8.0)
    assert scale == pytest.approx(0.625)
    for f in lesions:
        assert f["flags"] == ["thick-slices"]
        assert f["confidence"] <= scale + 1e-9
        # The smallest reported lesion rises with the spacing: 16 mm (2.1 mL) at 8 mm.
        assert f["measurements"]["volume_ml"] >= PARAMS.min_lesion_ml(8.0)
    organs = [f for f in doc["findings"] if f["kind"] == "organ"]
    assert organs and all(f["flags"] == [] for f in organs)
    assert doc["quality_flags"][0].startswith("thick-slices: slices 8 mm thick or apart")
    assert "lesions under 16 mm are not reported" in doc["quality_flags"][0]


def test_sr_states_the_flag_per_lesion_and_stays_valid(
    thick_run: PipelineRun, doc: dict, tmp_path: Path
) -> None:
    files = thick_run.files
    assert files is not None and files.seg_path is not None and files.sr_path is not None
    assert dciodvfy_errors(files.seg_path) == []
    assert dciodvfy_errors(files.sr_path) == []
    out = tmp_path / "sr.json"
    subprocess.run(
        [tool("tid1500reader"), "--inputDICOM", str(files.sr_path), "--outputMetadata", str(out)],
        check=True,
        capture_output=True,
    )
    groups = {g["TrackingIdentifier"]: g for g in json.loads(out.read_text())["Measurements"]}
    for f in doc["findings"]:
        quality = [
            q["conceptValue"]["CodeValue"]
            for q in groups[f["tracking_id"]].get("qualitativeEvaluations", [])
            if isinstance(q.get("conceptValue"), dict)
            and q["conceptCode"]["CodeMeaning"] == "Image Quality"
        ]
        assert quality == f["flags"], f["tracking_id"]


def test_viewer_panel_and_qa_report_show_the_flag(thick_run: PipelineRun, doc: dict) -> None:
    from medvision.web._pages import _ENV

    lesion = next(f for f in doc["findings"] if f["kind"] == "lesion")
    viewer = _ENV.get_template("viewer.html").render(
        user=None,
        version="test",
        request_path="/",
        study=SimpleNamespace(study_instance_uid=doc["study_instance_uid"]),
        job={"id": 1, "pipeline": "lung-ct"},
        jobs=[],
        doc=doc,
        findings=doc["findings"],
        segments={},
        decisions={},
        feedback=[],
        config="{}",
        can_review=False,
        generated="Computer-generated, not verified",
    )
    panel = viewer.split(f'data-number="{lesion["number"]}"', 1)[1].split("</li>", 1)[0]
    assert "(thick-slices)" in panel

    now = datetime.now(UTC)
    job = JobReport(
        1, "lung-ct", "done", 1, 1, "", doc["series_instance_uid"], now, now, now, {}, doc, ()
    )
    report = StudyReport(
        doc["study_instance_uid"],
        "done",
        1,
        40,
        "PACS",
        now,
        now,
        "",
        (),
        (job,),
        (),
        SimpleNamespace(ok=True, count=0, reason=""),
        None,
        "",
        (),
    )
    html = study_report_html(report)
    assert "(thick-slices)" in html and "thick-slices: slices 8 mm" in html


def test_beyond_10_mm_is_refused_with_the_thickness(chest_ct_dir: Path, tmp_path: Path) -> None:
    """Every third real slice: 15 mm apart, at their real positions."""
    study = tmp_path / "thorax-15mm"
    study.mkdir()
    for path in sorted(chest_ct_dir.glob("*.dcm"))[::3]:
        shutil.copy(path, study)
    [run] = run_study(study, tmp_path / "out", ["lung-ct"])
    assert run.status == "refused"
    assert run.reason == (
        "lung-ct refused the study: series 2 (CT): slices 15 mm thick or apart; at most 10 mm "
        "are analysed (thicker ones hide nodules under 2 cm)"
    )
