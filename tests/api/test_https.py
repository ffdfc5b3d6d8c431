"""With a certificate configured, `medvision serve` answers over HTTPS only."""

from __future__ import annotations

import json
import ssl
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.node.peers import NodeProcess, wait_for


def _self_signed(tmp_path: Path) -> tuple[Path, Path]:
    cert, key = tmp_path / "node.crt", tmp_path / "node.key"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
    )
    return cert, key


def test_serve_with_a_certificate_speaks_https(tmp_path: Path) -> None:
    cert, key = _self_signed(tmp_path)
    node = NodeProcess(tmp_path / "data", tls_cert=str(cert), tls_key=str(key))
    node._ensure_user()
    https = f"https://127.0.0.1:{node.http_port}"
    trusted = ssl.create_default_context(cafile=str(cert))
    node.data_dir.mkdir(parents=True, exist_ok=True)
    node.log = open(tmp_path / "node.log", "ab")  # noqa: SIM115
    node.proc = subprocess.Popen(
        [sys.executable, "-m", "medvision.cli", "serve"],
        stdout=node.log,
        stderr=subprocess.STDOUT,
        env=node.env,
        cwd=tmp_path,
    )

    def health() -> dict | None:
        try:
            with urllib.request.urlopen(f"{https}/health", context=trusted, timeout=5) as r:
                return json.loads(r.read())
        except (urllib.error.URLError, ConnectionError):
            return None

    try:
        assert wait_for("HTTPS /health", health, 90)["status"] == "ok"
        # The API still wants credentials over TLS...
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(f"{https}/studies", context=trusted, timeout=5)
        assert err.value.code == 401
        req = urllib.request.Request(
            f"{https}/studies", headers={"Authorization": f"Bearer {node.token}"}
        )
        with urllib.request.urlopen(req, context=trusted, timeout=5) as r:
            assert r.status == 200
        # ...a client that does not trust the certificate is refused by TLS itself...
        with pytest.raises(urllib.error.URLError):
            urllib.request.urlopen(
                f"{https}/health", context=ssl.create_default_context(), timeout=5
            )
        # ...and plain HTTP on the same port gets no answer from the API.
        with pytest.raises((urllib.error.URLError, ConnectionError, OSError)):
            urllib.request.urlopen(f"http://127.0.0.1:{node.http_port}/health", timeout=5).read()
    finally:
        node.stop()
