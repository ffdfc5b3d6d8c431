"""The viewer in headless Chromium on the real chest CT, as a radiologist uses it: sign in,
open the study, scroll, change the window, see the SEG overlay on a lesion's slice, accept a
finding and mark a missed lesion; and the role checks around it."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
from PIL import Image
from sqlalchemy import select

from medvision.audit import DbAuditLog
from medvision.db import Feedback, Job
from tests.web.conftest import WebNode, fetch, save_small

#: Count the overlay's opaque pixels of one colour, in the page, through a canvas: this is
#: what the browser really decoded and drew, not what the server meant to send.
OVERLAY_PIXELS = """([r, g, b]) => {
  const img = document.getElementById('overlay');
  const c = document.createElement('canvas');
  c.width = img.naturalWidth; c.height = img.naturalHeight;
  const ctx = c.getContext('2d');
  ctx.drawImage(img, 0, 0);
  const d = ctx.getImageData(0, 0, c.width, c.height).data;
  let n = 0, any = 0;
  for (let i = 0; i < d.length; i += 4) {
    if (d[i + 3] > 0) any++;
    const near = Math.abs(d[i] - r) < 3 && Math.abs(d[i + 1] - g) < 3 && Math.abs(d[i + 2] - b) < 3;
    if (d[i + 3] > 0 && near) n++;
  }
  return [n, any, c.width];
}"""


def _findings(web_node: WebNode) -> dict:
    with web_node.db.session() as session:
        job = session.get(Job, web_node.job_id)
        return json.loads((Path(job.result_dir) / "findings.json").read_text())


def _loaded(page) -> None:  # noqa: ANN001
    page.wait_for_function(
        "() => ['slice', 'overlay'].every(id => { const i = document.getElementById(id);"
        " return i.complete && i.naturalWidth > 0; })"
    )


def test_viewer_overlay_scroll_and_feedback(web_node: WebNode, page_for, shots: Path) -> None:
    page = page_for("rad")
    page.click(f"tr[data-study='{web_node.study_uid}'] a.open")
    page.wait_for_url(f"**/viewer/{web_node.study_uid}")
    _loaded(page)
    assert "not verified" in page.inner_text("#not-verified")

    doc = _findings(web_node)
    lesion = next(f for f in doc["findings"] if f["kind"] == "lesion")
    item = page.locator(f".finding[data-number='{lesion['number']}']")
    item.locator(".goto").click()
    k = int(item.get_attribute("data-slice"))
    page.wait_for_function(f"() => document.getElementById('stage').dataset.slice === '{k}'")
    _loaded(page)
    assert page.inner_text("#slice-label") == f"slice {k + 1} / 64"

    # The lesion's colour, as the SEG recommends it (read back from the overlay legend).
    swatch = item.locator(".swatch").evaluate("e => getComputedStyle(e).backgroundColor")
    rgb = [int(v) for v in swatch[swatch.index("(") + 1 : -1].split(",")]
    same_colour, opaque, width = page.evaluate(OVERLAY_PIXELS, rgb)
    assert width == 512 and same_colour > 20 and opaque >= same_colour, (rgb, same_colour, opaque)

    # Scrolling: the wheel and the arrow keys move one slice; presets change the window.
    page.locator("#stage").hover()
    page.mouse.wheel(0, 120)
    page.wait_for_function(f"() => document.getElementById('stage').dataset.slice === '{k + 1}'")
    page.keyboard.press("ArrowUp")
    page.keyboard.press("ArrowUp")
    page.wait_for_function(f"() => document.getElementById('stage').dataset.slice === '{k - 1}'")
    page.click("button[data-preset=mediastinum]")
    page.wait_for_function("() => document.getElementById('wl').textContent === 'W 400 / L 40'")
    assert page.inner_text("#wl") == "W 400 / L 40"
    assert "wc=40&ww=400" in page.get_attribute("#slice", "src")
    _loaded(page)
    page.evaluate("document.getElementById('opacity').value = 30")
    page.dispatch_event("#opacity", "input")
    assert page.eval_on_selector("#overlay", "e => e.style.opacity") == "0.3"
    item.locator(".goto").click()
    _loaded(page)

    # Accept the finding: a feedback row and an audit event.
    item.locator("button.accept").click()
    page.wait_for_function(
        f"() => document.querySelector(\".finding[data-number='{lesion['number']}'] .decision\")"
        ".dataset.decision === 'accept'"
    )
    # Mark a missed lesion at the centre of the image on the current slice.
    page.click("#mark-mode")
    box = page.locator("#stage").bounding_box()
    page.mouse.click(box["x"] + box["width"] * 0.25, box["y"] + box["height"] * 0.5)
    page.wait_for_function("() => document.querySelectorAll('#marks circle').length === 1")
    page.evaluate("document.getElementById('opacity').value = 70")
    page.dispatch_event("#opacity", "input")
    page.click("button[data-preset=lung]")
    _loaded(page)
    page.set_viewport_size({"width": 1200, "height": 760})
    _loaded(page)
    save_small(page.screenshot(), shots / "viewer.png")
    assert web_node.errors == []

    with web_node.db.session() as session:
        rows = list(session.scalars(select(Feedback).where(Feedback.user == "rad")))
    decision = next(r for r in rows if r.kind == "decision")
    assert (decision.job_id, decision.finding_number, decision.decision) == (
        web_node.job_id,
        lesion["number"],
        "accept",
    )
    missed = next(r for r in rows if r.kind == "missed_lesion")
    assert missed.location["slice_index"] == k
    assert abs(missed.location["x"] - 128) < 3 and abs(missed.location["y"] - 256) < 3
    events = DbAuditLog(web_node.db).events(web_node.study_uid)
    types = [e["type"] for e in events]
    assert "review.decision" in types and "review.missed_lesion" in types
    viewed = [e for e in events if e["type"] == "api.read" and e.get("user") == "rad"]
    assert any(e["route"] == "GET /viewer/{study_uid}" for e in viewed)
    assert DbAuditLog(web_node.db).verify().ok


def test_slice_and_overlay_pngs(web_node: WebNode) -> None:
    """The PNG endpoints directly: sizes, window presets, transparent where nothing is."""
    opener = web_node.opener("rad")
    base = f"{web_node.url}/viewer/jobs/{web_node.job_id}"
    status, headers, body = fetch(opener, base + "/slices/30.png?wc=40&ww=400")
    assert status == 200 and headers["content-type"] == "image/png"
    grey = np.asarray(Image.open(io.BytesIO(body)))
    assert grey.shape == (512, 512) and grey.min() == 0 and grey.max() == 255
    status, _, body = fetch(opener, base + "/overlay/0.png")
    assert status == 200
    assert np.asarray(Image.open(io.BytesIO(body)))[..., 3].max() == 0  # first slice: none
    assert fetch(opener, base + "/slices/64.png")[0] == 404


def test_roles_are_enforced(web_node: WebNode, page_for) -> None:
    base = f"{web_node.url}/viewer/jobs/{web_node.job_id}/slices/30.png"
    anonymous = web_node.opener(None)
    status, headers, _ = fetch(anonymous, f"{web_node.url}/viewer/{web_node.study_uid}")
    assert status == 303 and headers["location"].startswith("/signin?next=%2Fviewer%2F")
    assert fetch(anonymous, base)[0] == 401
    admin = web_node.opener("adm")
    assert fetch(admin, base)[0] == 403
    assert fetch(admin, f"{web_node.url}/viewer/{web_node.study_uid}")[0] == 403
    assert fetch(admin, f"{web_node.url}/qa")[0] == 403
    radiologist = web_node.opener("rad")
    assert fetch(radiologist, f"{web_node.url}/qa")[0] == 403
    report = f"{web_node.url}/qa/studies/{web_node.study_uid}/report.pdf"
    assert fetch(radiologist, report)[0] == 403

    page = page_for("adm")
    page.goto(f"{web_node.url}/viewer/{web_node.study_uid}")
    assert "radiologist, qa" in page.inner_text("#forbidden")
    # The refused pages themselves are the only failed loads (Chromium logs each 403).
    assert web_node.errors and all("403" in e for e in web_node.errors), web_node.errors
    web_node.errors.clear()
    # A QA user may look but not review: no feedback buttons.
    page = page_for("qa")
    page.goto(f"{web_node.url}/viewer/{web_node.study_uid}")
    _loaded(page)
    assert page.locator("button.accept").count() == 0 and page.locator("#mark-mode").count() == 0
    assert web_node.errors == []
