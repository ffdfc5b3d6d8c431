"""The viewer on a real MR in headless Chromium: MR windows instead of CT presets, and
segment colours that show on the grey image.

The real Philips 3 T T1 goes through ``medvision serve`` (its own process, with brainchop's
grey/white model imported into a temporary models folder) by dcmtk's ``storescu``; a
radiologist signs in and opens the result.
"""

from __future__ import annotations

import io
import math
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from highdicom.color import CIELabColor
from PIL import Image
from pydicom import dcmread
from sqlalchemy import select

from medvision.auth import add_user
from medvision.db import Database, Job
from medvision.dicom import load_series, scan
from medvision.web._imaging import auto_window
from tests.node.models_node import GWM, ModelsNode, import_gwm
from tests.node.peers import dcmtk, wait_for
from tests.web.conftest import PASSWORD, save_small
from tests.web.test_viewer import OVERLAY_PIXELS, _loaded

#: The Philips series stores one window per slice; the viewer's DICOM window is their median.
PHILIPS_MEDIAN_WINDOW = (939, 1632)


def _mr_files(shared_data: Path) -> list[Path]:
    return sorted((shared_data / "mr" / "philips-3t-brain" / "classic-t1").glob("*.dcm"))


@pytest.fixture(scope="module")
def mr_node(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    base = tmp_path_factory.mktemp("mr-web")
    models = import_gwm(shared_data, base / "models")
    node = ModelsNode(
        base / "node", models, pipelines=[GWM], quiet_period_s=1.0, poll_interval_s=0.2
    ).start()
    try:
        db = Database(f"sqlite:///{node.data_dir / 'medvision.db'}")
        add_user(db, "rad", ["radiologist"], PASSWORD)
        files = _mr_files(shared_data)
        node.study_uid = str(dcmread(files[0], stop_before_pixels=True).StudyInstanceUID)
        sent = dcmtk("storescu", "-aec", node.ae_title, "127.0.0.1", str(node.dicom_port), *files)
        assert sent.returncode == 0, sent.stderr

        def done() -> bool:
            with db.session() as session:
                job = session.scalar(select(Job).where(Job.study_instance_uid == node.study_uid))
                if job is not None and job.state in ("failed", "refused"):
                    raise AssertionError(f"job {job.state}: {job.reason}")
                return job is not None and job.state == "done"

        wait_for("the brainchop job", done, 600, 0.5)
        db.dispose()
        yield node
    finally:
        node.stop()


@pytest.fixture
def mr_page(browser: Any, mr_node: Any) -> Iterator[Any]:
    """The viewer of the MR study, signed in as a radiologist; only local requests."""
    local = urllib.parse.urlsplit(mr_node.url).netloc
    errors: list[str] = []
    context = browser.new_context(viewport={"width": 1360, "height": 900})

    def gate(route: Any) -> None:
        if urllib.parse.urlsplit(route.request.url).netloc == local:
            route.continue_()
        else:
            errors.append(route.request.url)
            route.abort()

    context.route("**/*", gate)
    page = context.new_page()
    page.on("pageerror", lambda err: errors.append(f"pageerror: {err}"))
    page.goto(mr_node.url + "/signin")
    page.fill("input[name=username]", "rad")
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(mr_node.url + "/")
    page.goto(f"{mr_node.url}/viewer/{mr_node.study_uid}")
    _loaded(page)
    yield page
    context.close()
    assert errors == []


def _grey(page: Any) -> np.ndarray:
    """The slice as the browser shows it, fetched with the page's session."""
    src = page.get_attribute("#slice", "src")
    body = page.context.request.get(urllib.parse.urljoin(page.url, src)).body()
    return np.asarray(Image.open(io.BytesIO(body)).convert("L"))


def test_mr_offers_dicom_and_auto_windows_not_ct_presets(
    mr_page: Any, shared_data: Path, shots: Path
) -> None:
    page = mr_page
    buttons = page.locator(".preset")
    assert buttons.all_inner_texts() == ["DICOM", "Auto"]
    assert page.get_attribute("button[data-preset=dicom]", "aria-pressed") == "true"
    wc, ww = PHILIPS_MEDIAN_WINDOW
    assert page.inner_text("#wl") == f"W {ww} / L {wc}"
    assert f"wc={wc}&ww={ww}" in page.get_attribute("#slice", "src")
    # The brain is drawn in greys, not burnt out: few white pixels, many grey levels.
    grey = _grey(page)
    head = grey[grey > 10]
    assert (grey == 255).mean() < 0.02 and head.size > 0.2 * grey.size
    assert len(np.unique(head)) > 150 and head.std() > 30

    volume = load_series(scan(_mr_files(shared_data)[0].parent)[0].series[0])
    auto_c, auto_w = (round(v) for v in auto_window(volume.array))
    page.click("button[data-preset=auto]")
    page.wait_for_function(
        f"() => document.getElementById('wl').textContent === 'W {auto_w} / L {auto_c}'"
    )
    assert f"wc={auto_c}&ww={auto_w}" in page.get_attribute("#slice", "src")
    assert page.get_attribute("button[data-preset=auto]", "aria-pressed") == "true"
    assert page.get_attribute("button[data-preset=dicom]", "aria-pressed") == "false"
    _loaded(page)
    assert (_grey(page) == 255).mean() < 0.02
    page.set_viewport_size({"width": 1200, "height": 760})
    _loaded(page)
    save_small(page.screenshot(), shots / "viewer-mr.png")


def test_every_segment_colour_shows_on_the_grey_mr(mr_page: Any) -> None:
    """White matter is not drawn white: each segment's colour is far from any grey
    (CIELab chroma >= 40), and the overlay on the shown slice really has it."""
    page = mr_page
    swatches = page.locator(".finding .swatch").evaluate_all(
        "els => els.map(e => getComputedStyle(e).backgroundColor)"
    )
    labels = page.locator(".finding .muted").all_inner_texts()
    assert labels == ["White matter", "Grey matter"]
    colours = [tuple(int(v) for v in s[s.index("(") + 1 : -1].split(",")) for s in swatches]
    assert len(set(colours)) == 2
    for label, rgb in zip(labels, colours, strict=True):
        lightness, a, b = CIELabColor.from_rgb(*rgb).lab
        assert math.hypot(a, b) >= 40 and 30 <= lightness <= 92, (label, rgb)
        drawn, any_drawn, _ = page.evaluate(OVERLAY_PIXELS, list(rgb))
        assert drawn > 200 and any_drawn > drawn, (label, rgb, drawn, any_drawn)
