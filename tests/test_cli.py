"""`medvision run` as a user runs it: real files in, DICOM out, clear errors otherwise."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.uid import generate_uid

from tests.conftest import REPO_ROOT
from tests.tools import dciodvfy_errors


def medvision(*args: str, models: Path | None = None) -> subprocess.CompletedProcess[str]:
    """``python -m medvision ARGS``; ``models`` is the user's model folder it sees."""
    env = dict(os.environ)
    if models is not None:
        env["MEDVISION_MODELS_DIR"] = str(models)
    return subprocess.run(
        [sys.executable, "-m", "medvision", *args],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        timeout=600,
        env=env,
    )


@pytest.fixture(scope="module")
def mr_models(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A user's model folder holding the real brainchop MR models, imported as docs/models.md
    tells a user to: MR pipelines that do not apply to a CT."""
    from medvision.pipelines.brainchop import import_brainchop

    models = tmp_path_factory.mktemp("models")
    assert import_brainchop(shared_data / "models" / "brainchop", models)
    return models


@pytest.fixture(scope="module")
def chest_run(chest_ct_dir: Path, mr_models: Path, tmp_path_factory: pytest.TempPathFactory):
    out = tmp_path_factory.mktemp("run")
    result = medvision("run", str(chest_ct_dir), "--out", str(out), models=mr_models)
    return result, out


def test_run_on_real_chest_ct_writes_valid_seg_sr_json_and_audit(chest_run) -> None:
    result, out = chest_run
    assert result.returncode == 0, result.stderr
    # The imported MR pipelines do not apply to a CT: one quiet note, no error, no folder.
    assert not [line for line in result.stderr.splitlines() if line.startswith("error:")]
    notes = [line for line in result.stderr.splitlines() if line.startswith("note:")]
    assert len(notes) == 1 and "not applicable: brainchop" in notes[0], result.stderr
    assert [p.name for p in out.glob("*/*")] == ["lung-ct"]
    [run_dir] = list(out.glob("*/lung-ct"))
    for name in ("seg.dcm", "sr.dcm", "sr-planar.dcm", "findings.json", "audit.jsonl"):
        assert (run_dir / name).is_file(), name
    assert dciodvfy_errors(run_dir / "seg.dcm") == []
    assert dciodvfy_errors(run_dir / "sr.dcm") == []
    assert dciodvfy_errors(run_dir / "sr-planar.dcm") == []
    findings = json.loads((run_dir / "findings.json").read_text())
    labels = [f["label"] for f in findings["findings"]]
    assert "Left lung" in labels and "Right lung" in labels
    seg = dcmread(run_dir / "seg.dcm")
    assert seg.StudyInstanceUID == run_dir.parent.name
    assert len(seg.SegmentSequence) == len(findings["findings"])
    # The table a user reads names every finding.
    assert "Left lung" in result.stdout and "Right lung" in result.stdout


def test_audit_record_says_what_was_read_run_and_written(chest_run, chest_ct_dir: Path) -> None:
    _, out = chest_run
    [audit] = list(out.glob("*/lung-ct/audit.jsonl"))
    events = [json.loads(line) for line in audit.read_text().splitlines()]
    types = [e["type"] for e in events]
    assert types[0] == "run.started" and types[-1] == "run.done"
    read = next(e for e in events if e["type"] == "series.read")
    assert len(read["instances"]) == len(list(chest_ct_dir.glob("*.dcm")))
    assert all(len(i["sha256"]) == 64 for i in read["instances"])
    model = next(e for e in events if e["type"] == "model.ran")
    assert model["algorithm"]["name"] and len(model["algorithm"]["weights_sha256"]) == 64
    written = next(e for e in events if e["type"] == "results.written")
    assert {f["file"] for f in written["files"]} == {
        "seg.dcm",
        "sr.dcm",
        "sr-planar.dcm",
        "findings.json",
    }

    verify = medvision("audit", "verify", str(audit))
    assert verify.returncode == 0 and "chain intact" in verify.stdout


def test_tampered_audit_record_fails_verification(chest_run, tmp_path: Path) -> None:
    _, out = chest_run
    [audit] = list(out.glob("*/lung-ct/audit.jsonl"))
    copy = tmp_path / "audit.jsonl"
    copy.write_text(audit.read_text().replace('"run.started"', '"run.startet"', 1))
    verify = medvision("audit", "verify", str(copy))
    assert verify.returncode == 1
    assert "event 0" in verify.stderr


def test_folder_without_dicom_exits_2_with_one_line(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("not DICOM")
    result = medvision("run", str(tmp_path), "--out", str(tmp_path / "out"), "--quiet")
    assert result.returncode == 2
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in result.stderr


def test_chest_ct_with_a_duplicated_slice_exits_1_naming_the_problem(
    chest_ct_dir: Path, tmp_path: Path
) -> None:
    """A real chest CT with one slice sent twice under a new UID must be refused clearly."""
    study = tmp_path / "study"
    shutil.copytree(chest_ct_dir, study)
    ds = dcmread(study / "1-30.dcm")
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.save_as(study / "extra.dcm")
    result = medvision("run", str(study), "--out", str(tmp_path / "out"), "--quiet")
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.stderr
    assert (
        "refused: lung-ct refused the study: series 2 (CT): duplicate slice positions"
        in (errors[0])
    )
    # The refusal is in the audit trail too, and nothing was written for the study.
    [audit] = list((tmp_path / "out").glob("*/lung-ct/audit.jsonl"))
    last = json.loads(audit.read_text().splitlines()[-1])
    assert last["type"] == "run.refused" and "duplicate slice positions" in last["reason"]
    assert not list((tmp_path / "out").glob("*/lung-ct/seg.dcm"))


def test_unknown_pipeline_is_a_usage_error(chest_ct_dir: Path, tmp_path: Path) -> None:
    result = medvision("run", str(chest_ct_dir), "--pipeline", "nope", "--out", str(tmp_path))
    assert result.returncode == 2
    assert "Unknown pipeline 'nope'" in result.stderr


def test_serve_stops_cleanly_on_sigterm(tmp_path: Path) -> None:
    """systemd, Kubernetes and docker stop a service with SIGTERM: the node must close its
    listener, exit 0 and leave `application.stop` as the last event of its audit trail,
    anchored by the checkpoint written at stop (docs/audit.md)."""
    import signal

    from medvision.audit import DbAuditLog
    from medvision.db import Database
    from tests.node.peers import NodeProcess

    node = NodeProcess(tmp_path / "node").start()
    assert node.proc is not None
    proc = node.proc
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 0
    node.log.close()
    db = Database(f"sqlite:///{node.data_dir / 'medvision.db'}")
    try:
        audit = DbAuditLog(db)
        events = audit.events()
        types = [e["type"] for e in events]
        assert types[-2:] == ["application.stop", "audit.checkpoint"], types
        assert audit.verify().ok
        anchors = (node.data_dir / "audit-anchors.jsonl").read_text().splitlines()
        last_anchor = json.loads(anchors[-1])
        assert (last_anchor["seq"], last_anchor["hash"]) == (
            events[-1]["seq"],
            events[-1]["hash"],
        )
    finally:
        db.dispose()
