"""One slice number everywhere, on the real chest CT: for every lesion, the terminal table of
``medvision run``, findings.json, the SR's key-slice reference, the viewer's "Go to slice"
(in headless Chromium, after clicking it) and the QA report all name the same slice.

The expected number is computed here from the DICOM files themselves, by the documented
rule (docs/reading.md): 1 + the slice's rank along the slice normal, lowest position first.
The CLI runs the real CT once for this module; the viewer and the QA report show the node's
run of the same CT (the session's ``web_node``).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from pydicom import Dataset, dcmread

from tests.web.conftest import WebNode
from tests.web.test_viewer import _findings, _loaded

REPO = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class CliRun:
    table: str
    findings: dict
    sr: Dataset


@pytest.fixture(scope="module")
def cli_run(tmp_path_factory: pytest.TempPathFactory, chest_ct_dir: Path) -> Iterator[CliRun]:
    """``medvision run`` on the real CT, as a user types it, once for the whole module."""
    work = tmp_path_factory.mktemp("cli-run")
    env = os.environ | {"HOME": str(work), "PYTHONPATH": str(REPO)}
    done = subprocess.run(
        [sys.executable, "-m", "medvision", "run", "--quiet", "--pipeline", "lung-ct",
         "--out", str(work / "out"), str(chest_ct_dir)],
        cwd=work, env=env, capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    (result,) = (work / "out").glob("*/lung-ct")
    yield CliRun(
        table=done.stdout,
        findings=json.loads((result / "findings.json").read_text()),
        sr=dcmread(result / "sr.dcm"),
    )


def _numbering(ct_dir: Path) -> tuple[dict[str, int], dict[int, int]]:
    """By the rule, independently of medvision: SOP Instance UID → slice number, and slice
    number → InstanceNumber (to state in the docs how the two relate)."""
    headers = [dcmread(p, stop_before_pixels=True) for p in sorted(ct_dir.glob("*.dcm"))]
    iop = np.asarray(headers[0].ImageOrientationPatient, dtype=float)
    normal = np.cross(iop[:3], iop[3:])
    ranked = sorted(headers, key=lambda h: float(np.asarray(h.ImagePositionPatient) @ normal))
    by_uid = {str(h.SOPInstanceUID): n for n, h in enumerate(ranked, start=1)}
    instance = {n: int(h.InstanceNumber) for n, h in enumerate(ranked, start=1)}
    return by_uid, instance


def _table_slices(table: str) -> dict[str, int]:
    """Tracking ID → the "slice" column of the terminal table."""
    rows = re.findall(r"^\s*\d+\s+(Lesion \d+)\s.*\s(\d+)\s*$", table, flags=re.MULTILINE)
    return {name: int(n) for name, n in rows}


def _sr_key_images(sr: Dataset) -> dict[str, set[str]]:
    """Tracking ID → SOP Instance UIDs the SR's measurement group names as source images."""
    out: dict[str, set[str]] = {}

    def walk(items: list[Dataset], images: set[str]) -> None:
        for item in items:
            if item.ValueType == "IMAGE":
                images.add(str(item.ReferencedSOPSequence[0].ReferencedSOPInstanceUID))
            walk(list(getattr(item, "ContentSequence", [])), images)

    def groups(items: list[Dataset]) -> None:
        for item in items:
            name = item.get("ConceptNameCodeSequence")
            code = name[0].CodeValue if name else ""
            if item.ValueType == "CONTAINER" and code == "125007":  # Measurement Group
                content = list(item.ContentSequence)
                ids = [i.TextValue for i in content if i.ValueType == "TEXT"
                       and i.ConceptNameCodeSequence[0].CodeValue == "112039"]  # fmt: skip
                images: set[str] = set()
                walk([i for i in content if i.ValueType == "NUM"], images)
                out[str(ids[0])] = images
            else:
                groups(list(getattr(item, "ContentSequence", [])))

    groups(list(sr.ContentSequence))
    return out


def test_every_lesion_has_one_slice_number_everywhere(
    cli_run: CliRun, web_node: WebNode, page_for, chest_ct_dir: Path
) -> None:
    by_uid, instance_number = _numbering(chest_ct_dir)
    node_doc = _findings(web_node)
    lesions = [f for f in node_doc["findings"] if f["kind"] == "lesion"]
    assert len(lesions) >= 3

    # 1. findings.json of the CLI and of the node: the key slice is the long-axis slice.
    cli_json = {f["tracking_id"]: f for f in cli_run.findings["findings"] if f["kind"] == "lesion"}
    node_json = {f["tracking_id"]: f["measurements"]["key_slice_number"] for f in lesions}
    assert {t: f["measurements"]["key_slice_number"] for t, f in cli_json.items()} == node_json
    for f in lesions:
        assert f["measurements"]["key_slice_number"] == f["measurements"]["long_axis_slice"] + 1

    # 2. The terminal table.
    assert _table_slices(cli_run.table) == node_json, cli_run.table

    # 3. The SR: the image its long and short axis were measured on, numbered by the rule.
    sr_images = _sr_key_images(cli_run.sr)
    for tracking_id, number in node_json.items():
        (uid,) = sr_images[tracking_id]
        assert by_uid[uid] == number, (tracking_id, uid)

    # 4. The viewer: the button's number, and the slice it opens.
    page = page_for("rad")
    page.goto(f"{web_node.url}/viewer/{web_node.study_uid}")
    _loaded(page)
    for f in lesions:
        number = node_json[f["tracking_id"]]
        item = page.locator(f".finding[data-number='{f['number']}']")
        assert item.locator(".goto").inner_text() == f"Go to slice {number}"
        item.locator(".goto").click()
        page.wait_for_function(
            "n => document.getElementById('stage').dataset.slice === String(n - 1)", arg=number
        )
        assert page.inner_text("#slice-label") == f"slice {number} / 64"

    # 5. The QA report: the key-slice column of each lesion's row.
    qa = page_for("qa")
    qa.goto(f"{web_node.url}/qa/studies/{web_node.study_uid}/report.html")
    rows = qa.eval_on_selector_all(
        "table.findings tr:has(td)",
        "trs => trs.map(tr => [tr.cells[1].textContent,"
        " tr.querySelector('.key-slice').textContent])",
    )
    reported = {t: int(n) for t, n in rows if t.startswith("Lesion")}
    assert reported == node_json
    assert web_node.errors == []

    # As docs/reading.md says: not the DICOM InstanceNumber, which runs head to foot here.
    for number in node_json.values():
        assert instance_number[number] == 65 - number
