"""No PHI in the plain application log nor in the audit trail.

The audit trail and the logs are read by QA staff, support and developers and are
forwarded to collectors; patient identity stays in the DICOM files (and the PACS) under
their own access control. This runs ``medvision run`` on the real chest CT with every
logger at DEBUG, and looks for the patient's name, ID and birth date - read from the files
themselves - in everything the run wrote besides its DICOM output.

The public test data has no birth date, so a distinctive one is written into a copy of the
series first (PHI fields that are present are left exactly as published): otherwise that
part of the test could never fail.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from pydicom import dcmread

from medvision.audit import export_messages, read_jsonl, validation_errors, verify_file
from tests.conftest import REPO_ROOT

PLANTED = {
    "PatientName": "Planted^Phiname",
    "PatientID": "PLANTED-PID-4711",
    "PatientBirthDate": "19450317",
}

RUN = """
import logging, sys
logging.basicConfig(level=logging.DEBUG, filename=sys.argv[1], force=True,
                    format="%(asctime)s %(levelname)s %(name)s %(message)s")
from medvision.cli import main
sys.exit(main(["run", sys.argv[2], "--out", sys.argv[3], "--quiet"]))
"""


@pytest.fixture(scope="module")
def phi_run(chest_ct_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    work = tmp_path_factory.mktemp("phi")
    series = work / "series"
    shutil.copytree(chest_ct_dir, series)
    files = sorted(series.glob("*.dcm"))
    first = dcmread(files[0], stop_before_pixels=True)
    missing = [k for k in PLANTED if not str(first.get(k, "") or "").strip()]
    for path in files if missing else []:
        ds = dcmread(path)
        for keyword in missing:
            setattr(ds, keyword, PLANTED[keyword])
        ds.save_as(path)
    ds = dcmread(files[0], stop_before_pixels=True)
    phi = {k: str(ds.get(k)) for k in PLANTED}
    log, out = work / "debug.log", work / "out"
    result = subprocess.run(
        [sys.executable, "-c", RUN, str(log), str(series), str(out)],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        timeout=600,
    )
    return result, phi, log, out


def _needles(phi: dict[str, str]) -> list[str]:
    """Each value, and the forms it could take in text (name parts, ISO date)."""
    needles = []
    for key, value in phi.items():
        assert value.strip(), f"{key} is empty: the test would prove nothing"
        needles.append(value)
        if key == "PatientName":
            needles += [p for p in value.split("^") if len(p) >= 4]
        if key == "PatientBirthDate" and len(value) == 8:
            needles.append(f"{value[:4]}-{value[4:6]}-{value[6:]}")
    return needles


def test_debug_log_and_console_carry_no_phi(phi_run) -> None:
    result, phi, log, _ = phi_run
    assert result.returncode == 0, result.stderr[-2000:]
    text = log.read_text()
    assert " DEBUG " in text, "the DEBUG log was not captured"
    for needle in _needles(phi):
        assert needle not in text, f"{needle!r} found in the debug log"
        assert needle not in result.stdout and needle not in result.stderr, needle


def test_audit_trail_and_its_dicom_export_carry_no_phi(phi_run) -> None:
    result, phi, _, out = phi_run
    [audit] = list(out.glob("*/*/audit.jsonl"))
    assert verify_file(audit).ok
    text = audit.read_text()
    exported = [xml for _, xml in export_messages(read_jsonl(audit))]
    assert len(exported) == 4  # run start/stop, series read, results written
    assert all(validation_errors(x) == [] for x in exported)
    for needle in _needles(phi):
        assert needle not in text, f"{needle!r} found in audit.jsonl"
        assert all(needle.encode() not in x for x in exported), f"{needle!r} in the export"
