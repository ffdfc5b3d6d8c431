"""OHIF, the radiologists' web viewer, served locally for tests: fetch, configure, serve.

OHIF is not installed into the repository or the venv. The prebuilt static viewer comes from
``npm pack @ohif/app@<pinned>`` (the package's ``dist/`` is a complete build) into a cache
folder outside the repository, checked against a pinned SHA-256, and served by a small
stdlib HTTP server that also proxies ``/dicom-web/`` to Orthanc. The proxy exists because
Orthanc's DICOMweb plugin sends no CORS headers and builds its BulkDataURIs from the ``Host``
header: served from the page's own origin with the browser's ``Host`` kept, every URL that
OHIF follows points back at this server.
"""

from __future__ import annotations

import getpass
import hashlib
import http.client
import http.server
import json
import os
import shutil
import subprocess
import tarfile
import tempfile
import threading
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

OHIF_VERSION = "3.12.10"
#: sha256 of ``npm pack @ohif/app@3.12.10`` (the registry's tarball, 48 MB, MIT licence).
OHIF_TGZ_SHA256 = "fbabd410be33e5b9898931b725229b9da9553aac339914b5c29796d3aa5d4b2d"


def ohif_cache_dir() -> Path:
    """``MEDVISION_OHIF_CACHE``, default ``<temp dir>/medvision-tests-<user>/ohif``.

    Outside the user's home as well as the repository: the tests never touch ``~/.cache``,
    yet a 48 MB download should not be repeated on every run of the same machine, so the
    default lives in the system's temporary folder, one per user.
    """
    default = Path(tempfile.gettempdir()) / f"medvision-tests-{getpass.getuser()}" / "ohif"
    return Path(os.environ.get("MEDVISION_OHIF_CACHE", default))


def _own_folder(path: Path) -> None:
    """Create ``path`` private, or refuse one that another user made (a shared temp dir)."""
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    if hasattr(os, "getuid") and path.stat().st_uid != os.getuid():
        raise RuntimeError(
            f"The OHIF cache {path} belongs to another user; set MEDVISION_OHIF_CACHE to a "
            "folder of yours."
        )


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def fetch_ohif(cache: Path | None = None) -> Path:
    """The pinned OHIF build's ``dist`` folder, fetched with ``npm pack`` on first use.

    The tarball is verified against :data:`OHIF_TGZ_SHA256` before it is unpacked, so a
    changed or truncated download fails here instead of as an odd viewer bug later.
    """
    cache = cache or ohif_cache_dir()
    dist = cache / f"ohif-app-{OHIF_VERSION}" / "dist"
    _own_folder(cache)
    if (dist / "index.html").is_file():
        return dist
    tgz = cache / f"ohif-app-{OHIF_VERSION}.tgz"
    if not tgz.is_file():
        npm = shutil.which("npm")
        if npm is None:
            raise RuntimeError("npm is needed to fetch OHIF (npm pack @ohif/app); see .ci/run")
        subprocess.run(
            [npm, "pack", f"@ohif/app@{OHIF_VERSION}", "--pack-destination", str(cache)],
            check=True,
            capture_output=True,
            timeout=600,
        )
    if (digest := _sha256(tgz)) != OHIF_TGZ_SHA256:
        raise RuntimeError(f"{tgz}: sha256 {digest}, expected {OHIF_TGZ_SHA256}")
    unpack = cache / f"ohif-app-{OHIF_VERSION}.partial"
    shutil.rmtree(unpack, ignore_errors=True)
    with tarfile.open(tgz) as tar:
        tar.extractall(unpack, filter="data")
    shutil.rmtree(dist.parent, ignore_errors=True)
    (unpack / "package").rename(dist.parent)
    unpack.rmdir()
    return dist


def app_config(data_source_name: str = "orthanc") -> str:
    """OHIF's ``app-config.js`` with one DICOMweb source at the page's own origin.

    The packaged config points at a cloud server; this one keeps every request local and
    turns off what would get in the way of a test (the investigational-use dialog, the
    service worker, the study list's cross-origin warning).
    """
    config = {
        "routerBasename": "/",
        "extensions": [],
        "modes": [],
        "showStudyList": True,
        "maxNumberOfWebWorkers": 2,
        "showWarningMessageForCrossOrigin": False,
        "showCPUFallbackMessage": False,
        "showLoadingIndicator": True,
        "strictZSpacingForVolumeViewport": True,
        "investigationalUseDialog": {"option": "never"},
        "defaultDataSourceName": data_source_name,
        "dataSources": [
            {
                "namespace": "@ohif/extension-default.dataSourcesModule.dicomweb",
                "sourceName": data_source_name,
                "configuration": {
                    "friendlyName": "Orthanc (test)",
                    "name": data_source_name,
                    "qidoSupportsIncludeField": False,
                    "imageRendering": "wadors",
                    "thumbnailRendering": "wadors",
                    "enableStudyLazyLoad": True,
                    "supportsFuzzyMatching": False,
                    "supportsWildcard": True,
                    "omitQuotationForMultipartRequest": True,
                    "bulkDataURI": {"enabled": True},
                },
            }
        ],
    }
    # The roots are set in JavaScript from the page's origin, so the config does not depend
    # on the port the server happened to get.
    return (
        f"window.config = {json.dumps(config, indent=2)};\n"
        "(function () {\n"
        "  const root = window.location.origin + '/dicom-web';\n"
        "  const c = window.config.dataSources[0].configuration;\n"
        "  c.qidoRoot = root; c.wadoRoot = root; c.wadoUriRoot = root;\n"
        "})();\n"
    )


class _Handler(http.server.SimpleHTTPRequestHandler):
    """Static OHIF files, SPA fallback to ``index.html``, and the ``/dicom-web/`` proxy."""

    protocol_version = "HTTP/1.1"
    server: ViewerServer

    extensions_map = {
        **http.server.SimpleHTTPRequestHandler.extensions_map,
        ".wasm": "application/wasm",
        ".js": "application/javascript",
        ".mjs": "application/javascript",
        ".json": "application/json",
    }

    def __init__(self, request, client_address, server: ViewerServer) -> None:  # noqa: ANN001
        super().__init__(request, client_address, server, directory=str(server.dist))

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - stdlib name
        pass  # quiet: the test reports failures itself

    def do_GET(self) -> None:  # noqa: N802 - stdlib name
        path = urlsplit(self.path).path
        if path.startswith("/dicom-web/"):
            self._proxy()
        elif path == "/app-config.js":
            self._send(200, self.server.config_js.encode(), "application/javascript")
        elif path in ("/sw.js", "/init-service-worker.js"):
            # No service worker: it would cache the viewer between tests and hide requests.
            self._send(200, b"", "application/javascript")
        elif path == "/" or not Path(path).suffix:
            self.path = "/index.html"
            super().do_GET()
        else:
            super().do_GET()

    def do_POST(self) -> None:  # noqa: N802 - stdlib name
        if urlsplit(self.path).path.startswith("/dicom-web/"):
            self._proxy()
        else:
            self._send(405, b"", "text/plain")

    def end_headers(self) -> None:
        self.send_header("Cache-Control", "no-store")
        super().end_headers()

    def _send(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _proxy(self) -> None:
        """Forward to Orthanc with the browser's Host header, so BulkDataURIs point here."""
        self.server.dicomweb_requests += 1
        record = ProxiedRequest(self.command, self.path, time.monotonic())
        self.server.proxied.append(record)
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else None
        headers = {
            k: v
            for k, v in self.headers.items()
            if k.lower() not in ("connection", "accept-encoding", "keep-alive")
        }
        conn = http.client.HTTPConnection("127.0.0.1", self.server.orthanc_port, timeout=120)
        try:
            conn.request(self.command, self.path, body=body, headers=headers)
            resp = conn.getresponse()
            data = resp.read()
        except OSError as err:
            record.finish(502, repr(err))
            self._send(502, f"Orthanc: {err!r}".encode(), "text/plain")
            return
        finally:
            conn.close()
        record.finish(resp.status)
        self.send_response(resp.status)
        for key, value in resp.getheaders():
            if key.lower() not in ("connection", "content-length", "transfer-encoding"):
                self.send_header(key, value)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


@dataclass
class ProxiedRequest:
    """One DICOMweb request passed to Orthanc: what a test reports when the viewer stalls."""

    method: str
    path: str
    started: float
    status: int | None = None  # None while Orthanc has not answered
    seconds: float | None = None
    error: str = ""

    def finish(self, status: int, error: str = "") -> None:
        self.status, self.seconds, self.error = status, time.monotonic() - self.started, error

    def __str__(self) -> str:
        if self.status is None:
            took = f"no answer after {time.monotonic() - self.started:.1f} s"
        else:
            took = f"{self.status} in {self.seconds:.2f} s {self.error}".rstrip()
        return f"{self.method} {self.path[:120]} -> {took}"


class ViewerServer(http.server.ThreadingHTTPServer):
    """OHIF at ``http://127.0.0.1:<port>/`` with Orthanc's DICOMweb under ``/dicom-web/``."""

    daemon_threads = True

    def __init__(self, dist: Path, orthanc_port: int) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.dist = dist
        self.orthanc_port = orthanc_port
        self.config_js = app_config()
        self.dicomweb_requests = 0
        #: the most recent DICOMweb requests, oldest first
        self.proxied: deque[ProxiedRequest] = deque(maxlen=200)
        self.url = f"http://127.0.0.1:{self.server_address[1]}"
        self._thread = threading.Thread(target=self.serve_forever, name="ohif-http", daemon=True)

    def start(self) -> ViewerServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.shutdown()
        self.server_close()
        self._thread.join(10)


#: Installed into the page once OHIF is up: how the test drives the viewer and reads pixels.
#: Navigation and visibility go through OHIF's own services (``window.services``) and the
#: Cornerstone viewport (``window.cornerstone``), which OHIF exposes for its own e2e tests;
#: the pixels are read back from the viewport's canvas, i.e. what OHIF actually drew.
PAGE_HELPER_JS = """
() => {
  window.mvTest = {
    viewport() { return window.cornerstone.getEnabledElements()[0].viewport; },
    segmentation() { return window.services.segmentationService.getSegmentations()[0]; },
    currentSop() {
      const m = /\\/instances\\/([0-9.]+)\\//.exec(this.viewport().getCurrentImageId() || '');
      return m ? m[1] : null;
    },
    async go(sop) {
      const vp = this.viewport();
      const i = vp.getImageIds().findIndex(id => id.includes('/instances/' + sop + '/'));
      if (i < 0) throw new Error('no image ' + sop + ' in the viewport');
      await vp.setImageIdIndex(i);
      vp.render();
      return i;
    },
    // Show one slice and read it back: one round trip from the test per slice.
    async show(sop, corners, rows, cols) {
      await this.go(sop);
      const [o, right, down] = this.toCanvas(corners);
      const u = [0, 1].map(k => (right[k] - o[k]) / (cols - 1));
      const v = [0, 1].map(k => (down[k] - o[k]) / (rows - 1));
      const pixels = await this.sample(o, u, v, rows, cols);
      const label = document.querySelector('[data-cy="viewport-overlay-bottom-right"]');
      return {o, u, v, pixels, sop: this.currentSop(), label: label ? label.innerText : ''};
    },
    canvasPixels() {
      const c = this.viewport().canvas;
      const copy = document.createElement('canvas');
      copy.width = c.width; copy.height = c.height;
      const ctx = copy.getContext('2d', {willReadFrequently: true});
      ctx.drawImage(c, 0, 0);
      const d = ctx.getImageData(0, 0, c.width, c.height).data;
      let text = '';
      for (let i = 0; i < d.length; i += 0x8000) {
        text += String.fromCharCode.apply(null, d.subarray(i, i + 0x8000));
      }
      return [c.width, c.height, btoa(text)];
    },
    // Every line the annotation tools drew on the viewport's SVG layer, as world points
    // (LPS mm) through the viewport's own canvas-to-world mapping.
    drawnLines() {
      const vp = this.viewport();
      return [...vp.element.querySelectorAll('svg line')].map(l => {
        const a = ['x1', 'y1'].map(k => Number(l.getAttribute(k)));
        const b = ['x2', 'y2'].map(k => Number(l.getAttribute(k)));
        return {a: vp.canvasToWorld(a), b: vp.canvasToWorld(b),
                dashed: !!l.getAttribute('stroke-dasharray')};
      });
    },
    frames() {
      return new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)));
    },
    // Canvas coordinates (device pixels of the viewport's canvas) of world points (LPS mm).
    toCanvas(points) {
      const vp = this.viewport(); const c = vp.canvas;
      const k = c.width / c.getBoundingClientRect().width;
      return points.map(p => vp.worldToCanvas(p).map(v => v * k));
    },
    // The canvas sampled once per image pixel: origin o = canvas position of pixel (0, 0)'s
    // centre, u and v = canvas steps per column and per row (axis-aligned). Of the canvas
    // pixels whose centres lie in an image pixel's footprint, the most coloured one is
    // taken: OHIF draws segment outlines one canvas pixel wide, which may miss the centre.
    // Reads the canvas once per animation frame until two reads agree: the render settled.
    async sample(o, u, v, rows, cols) {
      const c = this.viewport().canvas;
      const copy = document.createElement('canvas');
      copy.width = c.width; copy.height = c.height;
      const ctx = copy.getContext('2d', {willReadFrequently: true});
      const hx = Math.abs(u[0]) / 2, hy = Math.abs(v[1]) / 2;
      let d = null, settled = false;
      for (let attempt = 0; attempt < 20 && !settled; attempt++) {
        await new Promise(r => requestAnimationFrame(r));
        ctx.clearRect(0, 0, copy.width, copy.height);
        ctx.drawImage(c, 0, 0);
        const now = ctx.getImageData(0, 0, copy.width, copy.height).data;
        if (d !== null) {
          const a = new Uint32Array(d.buffer), b = new Uint32Array(now.buffer);
          settled = true;
          for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) { settled = false; break; }
        }
        d = now;
      }
      if (!settled) throw new Error('the viewport never settled');
      const W = copy.width, H = copy.height;
      const chroma = s => Math.max(d[s], d[s + 1], d[s + 2]) - Math.min(d[s], d[s + 1], d[s + 2]);
      const out = new Uint8Array(rows * cols * 3);
      for (let r = 0; r < rows; r++) {
        for (let q = 0; q < cols; q++) {
          const cx = o[0] + q * u[0] + r * v[0], cy = o[1] + q * u[1] + r * v[1];
          let bx = Math.floor(cx), by = Math.floor(cy), best = -1;
          if (bx >= 0 && by >= 0 && bx < W && by < H) best = chroma((by * W + bx) * 4);
          const x0 = Math.max(0, Math.ceil(cx - hx - 0.5));
          const x1 = Math.min(W - 1, Math.floor(cx + hx - 0.5));
          const y0 = Math.max(0, Math.ceil(cy - hy - 0.5));
          const y1 = Math.min(H - 1, Math.floor(cy + hy - 0.5));
          for (let y = y0; y <= y1; y++) {
            for (let x = x0; x <= x1; x++) {
              const k = chroma((y * W + x) * 4);
              if (k > best) { best = k; bx = x; by = y; }
            }
          }
          if (best < 0) continue;
          const s = (by * W + bx) * 4, t = (r * cols + q) * 3;
          out[t] = d[s]; out[t + 1] = d[s + 1]; out[t + 2] = d[s + 2];
        }
      }
      let text = '';
      for (let i = 0; i < out.length; i += 0x8000) {
        text += String.fromCharCode.apply(null, out.subarray(i, i + 0x8000));
      }
      return btoa(text);
    },
  };
}
"""
