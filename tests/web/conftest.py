"""One running node for all the web tests (the pipeline run is the slow part): the real
chest CT pushed with dcmtk's ``storescu``, processed by the real lung-ct pipeline, the API
and pages served by uvicorn.

The node (SCP, assembler, worker, sender) and uvicorn run in this process, in threads, so
a test can read the same database the pages write. Users for each role are made with the
API's own ``add_user``. The browser is Debian's Chromium driven by Playwright; every request
that does not go to this node is aborted and recorded, so a CDN dependency fails a test.
"""

from __future__ import annotations

import http.cookiejar
import io
import os
import threading
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from PIL import Image
from pydicom import dcmread
from sqlalchemy import select

from medvision.auth import add_user
from medvision.config import Settings
from medvision.db import Job
from medvision.node import Node
from medvision.server import create_app
from tests.node.peers import dcmtk, free_port, http_json, wait_for

CHROMIUM = Path(os.environ.get("MEDVISION_CHROMIUM", "/usr/lib/chromium/chromium"))
PASSWORD = "correct horse battery staple"
USERS = {"rad": ["radiologist"], "qa": ["qa"], "adm": ["admin"], "both": ["radiologist", "qa"]}


@dataclass
class WebNode:
    url: str
    node: Node
    settings: Settings
    study_uid: str
    job_id: int
    errors: list[str] = field(default_factory=list)

    @property
    def db(self):  # noqa: ANN201 - Database
        return self.node.db

    def opener(self, user: str | None) -> urllib.request.OpenerDirector:
        """A urllib opener signed in as ``user`` (cookie session), or anonymous."""
        jar = http.cookiejar.CookieJar()
        opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar), _NoRedirect())
        if user is not None:
            body = urllib.parse.urlencode({"username": user, "password": PASSWORD}).encode()
            opener.open(self.url + "/login", data=body, timeout=30).read()
        return opener


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


DOCS_IMAGES = Path(__file__).resolve().parents[2] / "docs" / "images"


@pytest.fixture(scope="session")
def shots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where screenshots go: docs/images with MEDVISION_UPDATE_SCREENSHOTS=1 (to refresh the
    docs), else a temporary folder, so a test run leaves the working tree clean."""
    if os.environ.get("MEDVISION_UPDATE_SCREENSHOTS") == "1":
        DOCS_IMAGES.mkdir(parents=True, exist_ok=True)
        return DOCS_IMAGES
    return tmp_path_factory.mktemp("screenshots")


def save_small(png: bytes, path: Path, colours: int = 256) -> None:
    """Screenshots for the docs as palette PNGs (a third of the size, same legibility)."""
    image = Image.open(io.BytesIO(png)).convert("RGB")
    image.quantize(colors=colours, method=Image.Quantize.FASTOCTREE).save(path, optimize=True)


def fetch(opener: urllib.request.OpenerDirector, url: str) -> tuple[int, dict[str, str], bytes]:
    """Status, headers and body, without raising for 3xx/4xx."""
    try:
        with opener.open(url, timeout=120) as resp:
            return resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as err:
        return err.code, dict(err.headers), err.read()


@pytest.fixture(scope="session")
def web_node(tmp_path_factory: pytest.TempPathFactory, chest_ct_dir: Path) -> Iterator[WebNode]:
    data = tmp_path_factory.mktemp("web-node")
    settings = Settings(
        data_dir=data / "medvision-data",
        dicom_port=free_port(),
        http_port=free_port(),
        bind_address="127.0.0.1",
        accept_unknown_calling_ae=True,  # storescu's default AE title, no peers configured
        quiet_period_s=1.5,
        poll_interval_s=0.2,
        pipelines=["lung-ct"],
    )
    node = Node(settings)
    node.start()
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(node.db, settings),
            host="127.0.0.1",
            port=settings.http_port,
            log_level="warning",
        )
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{settings.http_port}"
    try:
        wait_for("the API", lambda: http_json(url + "/health"), 30)
        for name, roles in USERS.items():
            add_user(node.db, name, roles, PASSWORD)
        files = sorted(chest_ct_dir.glob("*.dcm"))
        uid = str(dcmread(files[0], stop_before_pixels=True).StudyInstanceUID)
        sent = dcmtk(
            "storescu",
            "-aec",
            settings.ae_title,
            "127.0.0.1",
            str(settings.dicom_port),
            *files,
            timeout=300,
        )
        assert sent.returncode == 0, sent.stderr

        def done() -> int | None:
            with node.db.session() as session:
                job = session.scalar(select(Job).where(Job.study_instance_uid == uid))
                if job is not None and job.state in ("failed", "refused"):
                    raise AssertionError(f"job {job.state}: {job.reason}")
                return job.id if job is not None and job.state == "done" else None

        job_id = wait_for("the lung-ct job", done, 300, 0.2)
        yield WebNode(url, node, settings, uid, job_id)
    finally:
        server.should_exit = True
        thread.join(10)
        node.stop()


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    """Headless Debian Chromium under Playwright (pinned; ``playwright install`` is never
    needed). Missing pieces fail the test: CI installs both (.ci/run)."""
    from playwright.sync_api import sync_playwright

    if not CHROMIUM.is_file():
        pytest.fail(f"{CHROMIUM} not found: apt-get install chromium fonts-dejavu-core")
    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=str(CHROMIUM),
            headless=True,
            args=["--no-sandbox", "--disable-background-networking", "--disable-gpu"],
        )
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture
def page_for(browser: Any, web_node: WebNode) -> Iterator[Any]:
    """``page_for(user)``: a fresh browser context signed in through the sign-in page, with
    non-local requests aborted and JavaScript errors collected in ``web_node.errors``."""
    contexts = []
    web_node.errors.clear()
    local = urllib.parse.urlsplit(web_node.url).netloc

    def make(user: str | None) -> Any:
        context = browser.new_context(
            viewport={"width": 1360, "height": 900}, service_workers="block"
        )
        contexts.append(context)

        def gate(route: Any) -> None:
            parts = urllib.parse.urlsplit(route.request.url)
            if parts.scheme in ("data", "blob") or parts.netloc == local:
                route.continue_()
            else:
                web_node.errors.append(f"non-local request: {route.request.url}")
                route.abort()

        context.route("**/*", gate)
        page = context.new_page()
        page.on("pageerror", lambda err: web_node.errors.append(f"pageerror: {err}"))
        page.on(
            "console",
            lambda msg: (
                web_node.errors.append(f"console {msg.type}: {msg.text}")
                if msg.type == "error"
                else None
            ),
        )
        if user is not None:
            page.goto(web_node.url + "/signin")
            page.fill("input[name=username]", user)
            page.fill("input[name=password]", PASSWORD)
            page.click("button[type=submit]")
            page.wait_for_url(web_node.url + "/")
        return page

    yield make
    for context in contexts:
        context.close()
