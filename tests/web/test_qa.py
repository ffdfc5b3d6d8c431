"""QA pages on the node that processed the real chest CT: the dashboard's charts and
numbers in headless Chromium, and the per-study report as HTML and as a PDF that opens."""

from __future__ import annotations

import io
import json
import re
import urllib.request
from datetime import UTC, datetime
from pathlib import Path

import pypdf
from pydicom import dcmread
from sqlalchemy import select

from medvision.audit import DbAuditLog
from medvision.db import Job, Study
from medvision.reports import reason_class
from tests.node.peers import dcmtk, wait_for
from tests.web.conftest import WebNode, fetch, save_small
from tests.web.test_viewer import _findings


def _post(opener: urllib.request.OpenerDirector, url: str, body: dict) -> int:
    req = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )
    try:
        with opener.open(req, timeout=60) as resp:
            return resp.status
    except urllib.error.HTTPError as err:
        return err.code


def _reviewed(web_node: WebNode) -> dict:
    """Two decisions by the API as a radiologist would make them: accept one, reject one."""
    doc = _findings(web_node)
    lesions = [f["number"] for f in doc["findings"] if f["kind"] == "lesion"]
    rad = web_node.opener("both")
    base = f"{web_node.url}/findings/{web_node.job_id}"
    assert _post(rad, f"{base}/{lesions[0]}/feedback", {"decision": "accept"}) == 201
    assert (
        _post(rad, f"{base}/{lesions[1]}/feedback", {"decision": "reject", "comment": "vessel"})
        == 201
    )
    mark = {"slice_index": 20, "x": 200.0, "y": 260.0, "job_id": web_node.job_id}
    assert _post(rad, f"{web_node.url}/studies/{web_node.study_uid}/missed-lesions", mark) == 201
    return doc


def _titles(page, chart: str) -> list[str]:  # noqa: ANN001
    return page.eval_on_selector_all(f"{chart} title", "els => els.map(e => e.textContent)")


def test_dashboard_charts(web_node: WebNode, page_for) -> None:
    _reviewed(web_node)
    page = page_for("qa")
    page.click("header nav >> text=QA dashboard")
    page.wait_for_url("**/qa")
    assert page.locator(".charts svg").count() == 7
    assert int(page.inner_text("#n-jobs")) >= 1 and int(page.inner_text("#n-studies")) >= 1
    assert page.inner_text("#acceptance").strip().endswith("%")
    assert int(page.inner_text("#n-missed")) >= 1
    # Each bar names its value in its <title>: the charts show what the database says.
    titles = _titles(page, "#chart-lesions")
    lesions = sum(1 for f in _findings(web_node)["findings"] if f["kind"] == "lesion")
    assert f"lung-ct: {lesions}" in titles, titles
    today = datetime.now(UTC).date().isoformat()
    assert any(t.startswith(f"{today}: ") for t in _titles(page, "#chart-per_day"))
    assert page.locator(f"#jobs td.uid:text('{web_node.study_uid}')").count() >= 1

    # A period without the study: the numbers drop to zero.
    page.fill("input[name=since]", "2001-01-01")
    page.fill("input[name=until]", "2001-01-31")
    page.click("form.qa-form button")
    page.wait_for_url("**/qa?since=2001-01-01&until=2001-01-31")
    assert page.inner_text("#n-jobs") == "0"
    assert web_node.errors == []


def test_study_report_html_and_pdf(web_node: WebNode, page_for, shots) -> None:
    doc = _reviewed(web_node)
    page = page_for("qa")
    page.goto(f"{web_node.url}/qa/studies/{web_node.study_uid}/report.html")
    assert page.inner_text("#study-uid") == web_node.study_uid
    assert page.inner_text("#audit-status").startswith("Chain of the whole node: intact")
    weights = doc["algorithm"]["weights_sha256"]
    assert weights in page.inner_text(".model")
    assert page.locator(".findings tr").count() == len(doc["findings"]) + 1
    assert page.locator("#inputs td", has_text="64").count() >= 1
    feedback = page.inner_text("#feedback")
    assert "accept" in feedback and "reject" in feedback and "missed lesion" in feedback
    # Decisions name their finding as the viewer, the SEG and the SR do ("Lesion 1").
    lesions = [f for f in doc["findings"] if f["kind"] == "lesion"]
    decided = page.eval_on_selector_all(
        "#feedback tr:has(td)", "trs => trs.map(tr => tr.cells[4].textContent)"
    )
    assert lesions[0]["tracking_id"] in decided and lesions[1]["tracking_id"] in decided
    assert all(d.startswith("Lesion ") or d == "—" for d in decided), decided
    assert "job.finished" in page.inner_text("#audit-events")
    save_small(page.screenshot(full_page=False), shots / "qa-report.png")
    assert web_node.errors == []

    qa = web_node.opener("qa")
    status, headers, body = fetch(qa, f"{web_node.url}/qa/studies/{web_node.study_uid}/report.pdf")
    assert status == 200 and headers["content-type"] == "application/pdf"
    assert body.startswith(b"%PDF-")
    reader = pypdf.PdfReader(io.BytesIO(body))
    text = re.sub(r"\s+", " ", " ".join(p.extract_text() for p in reader.pages))
    assert "QA report" in text and "intact" in text and "lung-ct" in text
    assert lesions[0]["tracking_id"] in text
    assert weights[:16] in text.replace(" ", "")
    assert web_node.study_uid in text.replace(" ", "")
    reads = [
        e
        for e in DbAuditLog(web_node.db).events(web_node.study_uid)
        if e["type"] == "api.read" and e.get("user") == "qa"
    ]
    assert {e["route"] for e in reads} >= {
        "GET /qa/studies/{study_uid}/report.html",
        "GET /qa/studies/{study_uid}/report.pdf",
    }


def test_dashboard_counts_a_study_refused_before_any_job(
    web_node: WebNode, page_for, shared_data: Path, shots: Path
) -> None:
    """A real CT that no pipeline accepts (11 slices with duplicate positions) never gets a
    job; QA still sees it counted and listed with the node's reason, and its report."""
    files = sorted((shared_data / "ct" / "edge" / "duplicate-positions").glob("*.dcm"))
    uid = str(dcmread(files[0], stop_before_pixels=True).StudyInstanceUID)
    s = web_node.settings
    sent = dcmtk("storescu", "-aec", s.ae_title, "127.0.0.1", str(s.dicom_port), *files)
    assert sent.returncode == 0, sent.stderr

    def refused() -> str | None:
        with web_node.db.session() as session:
            study = session.scalar(select(Study).where(Study.study_instance_uid == uid))
            return study.reason if study is not None and study.state == "failed" else None

    reason = wait_for("the refusal", refused, 60, 0.2)
    with web_node.db.session() as session:
        assert session.scalar(select(Job).where(Job.study_instance_uid == uid)) is None

    page = page_for("qa")
    page.goto(web_node.url + "/qa")
    assert int(page.inner_text("#n-failed")) >= 1
    row = page.locator("#failures tbody tr", has=page.locator(f"td.uid:text-is('{uid}')"))
    assert row.count() == 1
    assert row.locator(".failure-stage").inner_text() == "study"
    assert row.locator(".failure-reason").inner_text() == reason
    assert f"{reason_class(reason)}: 1" in _titles(page, "#chart-failures")
    save_small(page.screenshot(full_page=True), shots / "qa-dashboard.png")
    row.locator("a", has_text="Report").click()
    page.wait_for_url(f"**/qa/studies/{uid}/report.html")
    assert reason in page.inner_text("#study-state")
    assert web_node.errors == []
