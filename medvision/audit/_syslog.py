"""Forwarding audit messages to an Audit Record Repository over syslog (AUD-03, AUD-05).

Transport is PS3.15 A.6 / IHE ITI-20: RFC 5424 messages over TCP, normally inside TLS
(RFC 5425, mutual authentication when a client certificate is given), each framed by
octet counting: ``MSG-LEN SP SYSLOG-MSG``. The header is fixed by the profile: PRI
``<85>`` (facility 10 authpriv, severity 5 notice), APP-NAME ``medvision``, MSGID
``IHE+RFC-3881``, no structured data; MSG is the UTF-8 XML, preceded by the BOM that
RFC 5424 section 6.4 asks for.

The forwarder keeps a durable watermark (the ``seq`` and ``hash`` of the last event it
handed to the collector), written atomically after each message. A restart resumes after
it, so messages arrive in chain order and none is sent twice, except the one message in
flight if the process dies between the socket write and the watermark write (syslog has no
application-level acknowledgement, so "exactly once" cannot be promised beyond that). The
watermark's hash is also an anchor: if the events before it no longer match, the log was
rewritten and forwarding stops instead of shipping a forged history.
"""

from __future__ import annotations

import json
import os
import socket
import ssl
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from medvision.audit._anchor import ANCHOR_MSGID, CHECKPOINT_EVENT, line_text
from medvision.audit._chain import GENESIS, chain_hash
from medvision.audit._export import to_message
from medvision.audit._messages import ExportContext
from medvision.audit._select import with_study_context
from medvision.audit._xml import to_xml

#: Facility 10 (security/authorization, "authpriv") * 8 + severity 5 (notice).
PRI = 10 * 8 + 5
APP_NAME = "medvision"
MSGID = "IHE+RFC-3881"
BOM = b"\xef\xbb\xbf"


def syslog_message(
    xml: bytes,
    timestamp: str,
    hostname: str | None = None,
    procid: str | None = None,
    msgid: str = MSGID,
) -> bytes:
    """One RFC 5424 SYSLOG-MSG carrying an audit message.

    ``timestamp`` is the event's own time (RFC 3339), so the collector sees when the event
    happened, not when it was forwarded.
    """
    host = _printable(hostname or socket.gethostname(), 255)
    pid = _printable(procid or str(os.getpid()), 128)
    header = f"<{PRI}>1 {timestamp} {host} {APP_NAME} {pid} {msgid} -"
    return header.encode("ascii") + b" " + BOM + xml


def frame(message: bytes) -> bytes:
    """RFC 5425 octet-counting framing: the byte length, a space, the message."""
    return str(len(message)).encode("ascii") + b" " + message


def _printable(value: str, limit: int) -> str:
    """RFC 5424 header fields are PRINTUSASCII without spaces; '-' when empty."""
    cleaned = "".join(c for c in value if 33 <= ord(c) <= 126)[:limit]
    return cleaned or "-"


@dataclass(frozen=True)
class SyslogTarget:
    """Where the collector listens and how to authenticate to it."""

    host: str
    port: int = 6514
    tls: bool = True
    #: CA bundle that signed the collector's certificate (default: the system store).
    ca_file: Path | None = None
    #: Our certificate and key, for the mutual authentication that ATNA requires.
    cert_file: Path | None = None
    key_file: Path | None = None
    #: The name to check the collector's certificate against (default: ``host``).
    server_name: str | None = None
    timeout_s: float = 10.0


class SyslogSender:
    """One TCP (or TLS) connection to a collector; use as a context manager."""

    def __init__(self, target: SyslogTarget) -> None:
        self.target = target
        self._sock: socket.socket | None = None

    def connect(self) -> None:
        t = self.target
        raw = socket.create_connection((t.host, t.port), timeout=t.timeout_s)
        if not t.tls:
            self._sock = raw
            return
        context = ssl.create_default_context(
            ssl.Purpose.SERVER_AUTH, cafile=str(t.ca_file) if t.ca_file else None
        )
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        if t.cert_file:
            context.load_cert_chain(str(t.cert_file), str(t.key_file) if t.key_file else None)
        try:
            self._sock = context.wrap_socket(raw, server_hostname=t.server_name or t.host)
        except BaseException:
            raw.close()
            raise

    def send(self, message: bytes) -> None:
        if self._sock is None:
            self.connect()
        assert self._sock is not None
        self._sock.sendall(frame(message))

    def close(self) -> None:
        if self._sock is not None:
            try:
                if isinstance(self._sock, ssl.SSLSocket):
                    self._sock.unwrap()
            except (OSError, ssl.SSLError):
                pass
            self._sock.close()
            self._sock = None

    def __enter__(self) -> SyslogSender:
        self.connect()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class ChainMismatch(RuntimeError):
    """The events do not continue the chain the watermark remembers: refuse to forward."""


@dataclass
class Watermark:
    """The last event handed to the collector (``seq`` -1 before the first)."""

    seq: int = -1
    hash: str = GENESIS

    @classmethod
    def load(cls, path: Path) -> Watermark:
        try:
            data = json.loads(Path(path).read_text())
        except FileNotFoundError:
            return cls()
        return cls(int(data["seq"]), str(data["hash"]))

    def save(self, path: Path) -> None:
        """Write atomically and durably: temp file, fsync, rename, fsync the folder."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        with open(tmp, "w", encoding="utf-8") as fh:
            json.dump({"seq": self.seq, "hash": self.hash}, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
        fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@dataclass
class ForwardResult:
    sent: int = 0
    #: Events that have no DICOM audit message (internal types), passed over.
    skipped: int = 0
    last_seq: int = -1
    #: Signed checkpoint lines sent (MSGID ``MEDVISION-ANCHOR``).
    checkpoints: int = 0
    #: A checkpoint the chain declares but the anchor file does not hold (yet): forwarding
    #: stopped before it, to resume once the node has written the line.
    waiting_for: int | None = None


def forward(
    events: Iterable[Mapping[str, Any]],
    sender: SyslogSender,
    state_path: Path,
    ctx: ExportContext | None = None,
    hostname: str | None = None,
    anchor_line: Callable[[int], Mapping[str, Any] | None] | None = None,
) -> ForwardResult:
    """Send every event after the watermark, in chain order, checking the chain as it goes.

    ``events`` may start anywhere at or before the watermark (e.g. ``db_events(db,
    after_seq=mark.seq - 1)``, so the watermark's own event is re-read and its hash
    compared); each later event must link to the one before it.

    With ``anchor_line`` (``Anchorer.line``), each ``audit.checkpoint`` event is followed
    by its signed checkpoint line as a message of its own, so that the collector keeps a
    copy of every anchor (docs/audit.md, "Checkpoints").
    """
    ctx = ctx or ExportContext()
    mark = Watermark.load(state_path)
    result = ForwardResult(last_seq=mark.seq)
    prev = mark.hash
    for event in with_study_context(events):
        seq = int(event["seq"])
        if seq < mark.seq:
            continue
        if seq == mark.seq:
            if event.get("hash") != mark.hash:
                raise ChainMismatch(
                    f"event {seq} is not the one already forwarded (hash differs): "
                    "the audit log was rewritten; run `medvision audit verify`"
                )
            continue
        if seq != result.last_seq + 1 or event.get("prev_hash") != prev:
            raise ChainMismatch(
                f"event {seq} does not follow event {result.last_seq} in the chain; "
                "run `medvision audit verify`"
            )
        if chain_hash(prev, event) != event.get("hash"):
            raise ChainMismatch(f"event {seq}: content does not match its hash (altered)")
        msg = to_message(event, ctx)
        if anchor_line is not None and event.get("type") == CHECKPOINT_EVENT:
            line = anchor_line(int(event["checkpoint"]))
            if line is None:
                result.waiting_for = int(event["checkpoint"])
                return result
            sender.send(
                syslog_message(
                    line_text(line).encode(),
                    _rfc3339(str(line["time"])),
                    hostname,
                    msgid=ANCHOR_MSGID,
                )
            )
            result.checkpoints += 1
        elif msg is None:
            result.skipped += 1
        else:
            sender.send(syslog_message(to_xml(msg, ctx), _rfc3339(msg.time), hostname))
            result.sent += 1
        prev = str(event["hash"])
        result.last_seq = seq
        Watermark(seq, prev).save(state_path)
    return result


def _rfc3339(value: str) -> str:
    """RFC 5424 TIMESTAMP: RFC 3339 with at most 6 fractional digits and a zone."""
    return value if value.endswith("Z") or "+" in value[10:] else value + "Z"


__all__ = [
    "APP_NAME",
    "MSGID",
    "PRI",
    "ChainMismatch",
    "ForwardResult",
    "SyslogSender",
    "SyslogTarget",
    "Watermark",
    "forward",
    "frame",
    "syslog_message",
]
