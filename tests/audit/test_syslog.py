"""Forwarding to an Audit Record Repository: RFC 5424 messages, RFC 5425 octet-counting
framing, over TCP and mutually authenticated TLS, checked by a real listener in the test
that parses the framing as a collector would; and a watermark so that a restarted
forwarder resumes after the last delivered event and sends nothing twice."""

from __future__ import annotations

import re
import shutil
import socket
import ssl
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from medvision.audit import (
    ChainMismatch,
    DbAuditLog,
    ExportContext,
    SyslogSender,
    SyslogTarget,
    Watermark,
    db_events,
    forward,
    validation_errors,
)
from medvision.db import Database
from tests.conftest import REPO_ROOT

HEADER = re.compile(
    rb"^<(?P<pri>\d{1,3})>1 (?P<ts>\S+) (?P<host>\S+) (?P<app>\S+) (?P<procid>\S+) "
    rb"(?P<msgid>\S+) (?P<sd>-) (?P<msg>.*)$",
    re.S,
)
CTX = ExportContext(audit_source_id="node1", node_host="node1")


@dataclass
class Collector:
    """A minimal syslog-over-TCP/TLS receiver: it reads ``LEN SP MSG`` frames."""

    context: ssl.SSLContext | None = None
    frames: list[bytes] = field(default_factory=list)
    peer_certs: list[dict] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self._stop = False
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        self.server.settimeout(0.2)
        while not self._stop:
            try:
                conn, _ = self.server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            try:
                if self.context is not None:
                    conn = self.context.wrap_socket(conn, server_side=True)
                    self.peer_certs.append(conn.getpeercert())
                self._read(conn)
            except (OSError, ssl.SSLError, ValueError) as err:
                self.errors.append(repr(err))
            finally:
                conn.close()

    def _read(self, conn: socket.socket) -> None:
        buf = b""
        while True:
            chunk = conn.recv(65536)
            if not chunk:
                if buf:
                    raise ValueError(f"connection closed inside a frame: {buf[:40]!r}")
                return
            buf += chunk
            while b" " in buf:
                length, _, rest = buf.partition(b" ")
                if not length.isdigit():
                    raise ValueError(f"bad frame length {length[:20]!r}")
                if len(rest) < int(length):
                    break
                self.frames.append(rest[: int(length)])
                buf = rest[int(length) :]

    def close(self) -> None:
        self._stop = True
        self.thread.join(5)
        self.server.close()


@pytest.fixture
def collector() -> Iterator[Collector]:
    c = Collector()
    yield c
    c.close()


def _db(tmp_path: Path, n: int = 3) -> Database:
    db = Database(f"sqlite:///{tmp_path / 'medvision.db'}")
    db.create_schema()
    log = DbAuditLog(db)
    log.record("application.start", ae_title="MEDVISION", dicom_port=11112)
    for i in range(n):
        log.record(
            "instances.received",
            study_instance_uid=f"1.2.3.{i}",
            calling_aet="ORTHANC",
            calling_host="10.0.0.5",
            instances=5,
        )
        log.record("study.complete", study_instance_uid=f"1.2.3.{i}", study_version=1)
    return db


def _wait_for(collector: Collector, count: int) -> None:
    for _ in range(100):
        if len(collector.frames) >= count:
            return
        threading.Event().wait(0.05)


def _check_message(frame: bytes) -> bytes:
    m = HEADER.match(frame)
    assert m, frame[:120]
    assert m["pri"] == b"85"  # facility 10 authpriv, severity 5 notice
    assert m["app"] == b"medvision" and m["msgid"] == b"IHE+RFC-3881"
    assert re.fullmatch(rb"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,6})?Z", m["ts"])
    msg = m["msg"]
    assert msg.startswith(b"\xef\xbb\xbf")  # RFC 5424 6.4: UTF-8 MSG starts with the BOM
    xml = msg[3:]
    assert validation_errors(xml) == []
    return xml


def test_forwards_over_tcp_in_order_with_octet_counting(
    tmp_path: Path, collector: Collector
) -> None:
    db = _db(tmp_path)
    state = tmp_path / "syslog.json"
    with SyslogSender(SyslogTarget("127.0.0.1", collector.port, tls=False)) as sender:
        result = forward(db_events(db), sender, state, CTX)
    _wait_for(collector, 4)
    assert (result.sent, result.skipped, result.last_seq) == (4, 3, 6)
    assert not collector.errors
    xmls = [_check_message(f) for f in collector.frames]
    assert [b"110100" in x for x in xmls] == [True, False, False, False]
    assert [x.count(b'csd-code="110104"') for x in xmls[1:]] == [1, 1, 1]
    assert Watermark.load(state) == Watermark(6, DbAuditLog(db).events()[-1]["hash"])
    db.dispose()


def test_restart_resumes_after_the_watermark_and_sends_nothing_twice(
    tmp_path: Path, collector: Collector
) -> None:
    db = _db(tmp_path, n=2)
    state = tmp_path / "syslog.json"
    target = SyslogTarget("127.0.0.1", collector.port, tls=False)
    with SyslogSender(target) as sender:
        assert forward(db_events(db), sender, state, CTX).sent == 3
    # while the forwarder is "down", the node goes on recording
    log = DbAuditLog(db)
    log.record(
        "instances.received",
        study_instance_uid="1.2.3.9",
        calling_aet="X",
        calling_host="h",
        instances=1,
    )
    log.record("application.stop")
    mark = Watermark.load(state)
    with SyslogSender(target) as sender:  # a new process: only the watermark is remembered
        again = forward(db_events(db, after_seq=mark.seq - 1), sender, state, CTX)
    assert (again.sent, again.last_seq) == (2, 6)
    with SyslogSender(target) as sender:  # nothing new: nothing sent
        assert (
            forward(db_events(db, after_seq=Watermark.load(state).seq - 1), sender, state, CTX).sent
            == 0
        )
    _wait_for(collector, 5)
    ids = [re.search(rb'ParticipantObjectID="([^"]+)"', f) for f in collector.frames]
    studies = [m[1] for m in ids if m]
    assert studies == [b"1.2.3.0", b"1.2.3.1", b"1.2.3.9"]  # in order, no duplicate
    assert len(collector.frames) == 5
    db.dispose()


def test_a_rewritten_history_stops_the_forwarder(tmp_path: Path, collector: Collector) -> None:
    db = _db(tmp_path, n=1)
    state = tmp_path / "syslog.json"
    target = SyslogTarget("127.0.0.1", collector.port, tls=False)
    with SyslogSender(target) as sender:
        forward(db_events(db), sender, state, CTX)
    import sqlite3

    con = sqlite3.connect(tmp_path / "medvision.db")
    with con:  # replace the last forwarded event: its hash no longer matches the watermark
        con.execute("UPDATE audit_events SET hash = ? WHERE seq = 2", ("f" * 64,))
    con.close()
    with SyslogSender(target) as sender, pytest.raises(ChainMismatch):
        forward(db_events(db, after_seq=Watermark.load(state).seq - 1), sender, state, CTX)
    db.dispose()


def _openssl_cert(folder: Path, name: str, cn: str) -> tuple[Path, Path]:
    cert, key = folder / f"{name}.pem", folder / f"{name}.key"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", f"/CN={cn}", "-addext", f"subjectAltName=DNS:{cn},IP:127.0.0.1",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    return cert, key


@pytest.fixture
def certs(tmp_path: Path) -> dict[str, Path]:
    if shutil.which("openssl") is None:
        pytest.skip("openssl CLI not installed")
    server_cert, server_key = _openssl_cert(tmp_path, "server", "localhost")
    client_cert, client_key = _openssl_cert(tmp_path, "client", "medvision-node")
    other_cert, other_key = _openssl_cert(tmp_path, "other", "impostor")
    return dict(
        server_cert=server_cert, server_key=server_key, client_cert=client_cert,
        client_key=client_key, other_cert=other_cert, other_key=other_key,
    )  # fmt: skip


def _tls_collector(certs: dict[str, Path]) -> Collector:
    """A collector that requires a client certificate (ATNA mutual authentication)."""
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(certs["client_cert"]))
    ctx.load_cert_chain(str(certs["server_cert"]), str(certs["server_key"]))
    ctx.verify_mode = ssl.CERT_REQUIRED
    return Collector(context=ctx)


def test_forwards_over_mutually_authenticated_tls(tmp_path: Path, certs: dict[str, Path]) -> None:
    collector = _tls_collector(certs)
    try:
        db = _db(tmp_path, n=1)
        target = SyslogTarget(
            "127.0.0.1", collector.port, tls=True, ca_file=certs["server_cert"],
            cert_file=certs["client_cert"], key_file=certs["client_key"], server_name="localhost",
        )  # fmt: skip
        with SyslogSender(target) as sender:
            result = forward(db_events(db), sender, tmp_path / "state.json", CTX)
        _wait_for(collector, 2)
        assert result.sent == 2 and len(collector.frames) == 2, collector.errors
        for f in collector.frames:
            _check_message(f)
        subject = dict(x[0] for x in collector.peer_certs[0]["subject"])
        assert subject["commonName"] == "medvision-node"
        db.dispose()
    finally:
        collector.close()


def test_tls_refuses_a_collector_we_do_not_trust(tmp_path: Path, certs: dict[str, Path]) -> None:
    collector = _tls_collector(certs)
    try:
        target = SyslogTarget(
            "127.0.0.1", collector.port, tls=True, ca_file=certs["other_cert"],
            cert_file=certs["client_cert"], key_file=certs["client_key"], server_name="localhost",
        )  # fmt: skip
        with pytest.raises(ssl.SSLCertVerificationError):
            SyslogSender(target).connect()
    finally:
        collector.close()


def test_cli_send_syslog_forwards_and_then_sends_nothing_new(
    tmp_path: Path, collector: Collector
) -> None:
    db = _db(tmp_path, n=1)
    url = db.url
    db.dispose()
    state = tmp_path / "state.json"
    cmd = [sys.executable, "-m", "medvision", "audit", "send-syslog", "--db", url,
           "--host", "127.0.0.1", "--port", str(collector.port), "--state", str(state)]  # fmt: skip
    first = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO_ROOT, timeout=120)
    assert first.returncode == 0, first.stderr
    assert "forwarded 2 messages" in first.stdout
    second = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO_ROOT, timeout=120)
    assert second.returncode == 0 and "forwarded 0 messages" in second.stdout
    _wait_for(collector, 2)
    assert len(collector.frames) == 2


def test_cli_send_syslog_reports_an_unreachable_collector(tmp_path: Path) -> None:
    db = _db(tmp_path, n=1)
    url = db.url
    db.dispose()
    with socket.create_server(("127.0.0.1", 0)) as s:
        port = s.getsockname()[1]  # closed when the block ends: nothing listens there
    result = subprocess.run(
        [sys.executable, "-m", "medvision", "audit", "send-syslog", "--db", url,
         "--host", "127.0.0.1", "--port", str(port), "--state", str(tmp_path / "s.json")],
        capture_output=True, text=True, cwd=REPO_ROOT, timeout=120,
    )  # fmt: skip
    assert result.returncode == 1 and "127.0.0.1" in result.stderr
    assert not (tmp_path / "s.json").exists()
