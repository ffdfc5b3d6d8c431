"""Oversized request bodies are refused before they are read (413), over real HTTP.

The server is the real app under uvicorn in this process, so the process's resident memory
is the server's: a 300 MiB body, declared or streamed in chunks, must not move it much
(before the limit, an unauthenticated 300 MiB POST to /login cost ~790 MiB).
"""

from __future__ import annotations

import select
import socket
import urllib.parse
from collections.abc import Iterable, Iterator

from tests.api.conftest import Server

MIB = 1 << 20


def _rss() -> int:
    """This process's resident set size in bytes (Linux)."""
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS in /proc/self/status")


def _zeros(total: int, size: int = 64 * 1024) -> Iterator[bytes]:
    chunk = b"0" * size
    for _ in range(total // size):
        yield chunk


def _post(
    server: Server,
    path: str,
    headers: dict[str, str],
    body: Iterable[bytes] = (),
    *,
    chunked: bool = False,
) -> tuple[int, dict[str, str], bytes, int]:
    """POST over a raw socket: (status, headers, body, bytes of the body sent). Stops
    sending as soon as the server answers, as a browser or curl would."""
    host, port = urllib.parse.urlsplit(server.url).netloc.split(":")
    sock = socket.create_connection((host, int(port)), timeout=60)
    sent = 0
    try:
        lines = [f"POST {path} HTTP/1.1", f"Host: {host}:{port}"]
        lines += [f"{k}: {v}" for k, v in headers.items()]
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        finished = True
        for chunk in body:
            if select.select([sock], [], [], 0)[0]:
                finished = False
                break  # the server has answered
            try:
                sock.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk) if chunked else chunk)
            except (BrokenPipeError, ConnectionResetError):
                finished = False
                break
            sent += len(chunk)
        if chunked and finished:
            sock.sendall(b"0\r\n\r\n")
        raw = b""
        while b"\r\n\r\n" not in raw:
            data = sock.recv(65536)
            assert data, f"the server closed without an answer: {raw!r}"
            raw += data
        head, _, rest = raw.partition(b"\r\n\r\n")
        status_line, *header_lines = head.decode("latin-1").split("\r\n")
        answer_headers = {
            k.strip().lower(): v.strip() for k, v in (h.split(":", 1) for h in header_lines)
        }
        length = int(answer_headers.get("content-length", "0"))
        while len(rest) < length:
            data = sock.recv(65536)
            if not data:
                break
            rest += data
        return int(status_line.split()[1]), answer_headers, rest[:length], sent
    finally:
        sock.close()


def test_a_declared_300_mib_body_is_refused_unread(api: Server) -> None:
    before = _rss()
    for path in ("/login", "/studies/1.2.3/feedback", "/no-such-route"):
        status, headers, body, sent = _post(
            api,
            path,
            {"Content-Type": "application/x-www-form-urlencoded", "Content-Length": str(300 * MIB)},
        )
        assert (status, sent) == (413, 0), path  # answered before one byte of the body
        assert headers["connection"] == "close"
        assert str(api.settings.http_max_body_bytes) in body.decode()
    assert _rss() - before < 32 * MIB


def _fields(total: int) -> Iterator[bytes]:
    """A form of 512 KiB fields, within the form parser's own caps (1000 fields of at most
    1 MiB each: alone, they would still let ~1 GiB through)."""
    field = b"a=" + b"0" * (512 * 1024 - 3) + b"&"
    for _ in range(total // len(field)):
        yield field


def _json_array(total: int) -> Iterator[bytes]:
    yield b"["
    chunk = b"0," * (32 * 1024)
    for _ in range(total // len(chunk)):
        yield chunk


def test_a_streamed_300_mib_body_is_cut_off_at_the_limit(api: Server) -> None:
    """Chunked, unauthenticated: a form to /login and JSON to a guarded route (FastAPI
    reads a body before it runs the route's authentication)."""
    limit = api.settings.http_max_body_bytes
    assert limit == 16 * MIB  # the documented default
    before = _rss()
    for path, kind, body in (
        ("/login", "application/x-www-form-urlencoded", _fields(300 * MIB)),
        ("/studies/1.2.3/missed-lesions", "application/json", _json_array(300 * MIB)),
    ):
        status, _, answer, sent = _post(
            api, path, {"Content-Type": kind, "Transfer-Encoding": "chunked"}, body, chunked=True
        )
        assert status == 413, (path, answer)
        assert str(limit) in answer.decode()
        assert sent < 300 * MIB  # the server stopped reading; the rest was never sent
    assert _rss() - before < 64 * MIB
    assert api.events("user.login_failed") == []  # refused before any password check


def test_bodies_within_the_limit_still_work_chunked_or_not(api: Server) -> None:
    form = b"username=qa&password=qa-pw"
    plain = _post(
        api,
        "/login",
        {"Content-Type": "application/x-www-form-urlencoded", "Content-Length": str(len(form))},
        iter([form]),
    )
    assert plain[0] == 200, plain
    chunked = _post(
        api,
        "/login",
        {"Content-Type": "application/x-www-form-urlencoded", "Transfer-Encoding": "chunked"},
        iter([form[:10], form[10:]]),
        chunked=True,
    )
    assert chunked[0] == 200, chunked
    bogus = _post(api, "/login", {"Content-Length": "lots"})
    assert bogus[0] == 400


def test_the_limit_is_a_setting(server_factory) -> None:  # noqa: ANN001
    small = server_factory(http_max_body_bytes=4096)
    status, _, body, _ = _post(
        small,
        "/login",
        {"Content-Type": "application/x-www-form-urlencoded", "Transfer-Encoding": "chunked"},
        _zeros(64 * 1024, 1024),
        chunked=True,
    )
    assert status == 413 and "4096" in body.decode()
