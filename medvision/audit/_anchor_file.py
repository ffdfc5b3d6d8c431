"""The checkpoint file itself: the site key, one signed JSON line per checkpoint, and
reading and appending lines (O_APPEND, fsync). See ``_anchor`` for why checkpoints exist."""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import secrets
import stat
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from medvision.audit._chain import canonical

LOG = logging.getLogger("medvision.audit")

#: The chain event that declares checkpoint ``n`` (and is the event line ``n`` anchors).
CHECKPOINT_EVENT = "audit.checkpoint"
#: Syslog MSGID of a checkpoint message (the audit messages use ``IHE+RFC-3881``).
ANCHOR_MSGID = "MEDVISION-ANCHOR"
FORMAT_VERSION = 1


class AnchorKeyError(RuntimeError):
    """The site key cannot be read (or is not a key)."""


def load_or_create_key(path: Path) -> bytes:
    """The site key from ``path``; made (32 random bytes, hex, mode 0600) if absent.

    The file is created with ``O_EXCL`` so that two processes starting at once cannot each
    write their own key; a key readable by others is used but warned about.
    """
    path = Path(path)
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            return load_key(path)
        with os.fdopen(fd, "w") as fh:
            fh.write(secrets.token_hex(32) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        LOG.warning("created the audit checkpoint key %s (mode 0600); back it up", path)
    return load_key(path)


def load_key(path: Path) -> bytes:
    """Read an existing key file (hex); refuses an empty or non-hex file."""
    path = Path(path)
    try:
        text = path.read_text().strip()
    except OSError as err:
        raise AnchorKeyError(f"cannot read the audit checkpoint key {path}: {err}") from err
    try:
        key = bytes.fromhex(text)
    except ValueError:
        key = b""
    if len(key) < 16:
        raise AnchorKeyError(f"{path} is not an audit checkpoint key (64 hex digits)")
    if path.stat().st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        LOG.warning("the audit checkpoint key %s is readable by others: chmod 600 it", path)
    return key


def key_id(key: bytes) -> str:
    """A short public name of the key (not the key): the first 16 hex of its SHA-256."""
    return hashlib.sha256(key).hexdigest()[:16]


def sign(key: bytes, body: Mapping[str, Any]) -> str:
    unsigned = {k: v for k, v in body.items() if k != "mac"}
    return hmac.new(key, canonical(unsigned), "sha256").hexdigest()


def make_line(
    key: bytes, n: int, node: str, seq: int, head: str, time: str, prev: str
) -> dict[str, Any]:
    """Checkpoint ``n``: event ``seq`` has hash ``head``; ``prev`` is line ``n-1``'s MAC."""
    body: dict[str, Any] = {
        "v": FORMAT_VERSION,
        "n": n,
        "node": node,
        "key_id": key_id(key),
        "seq": seq,
        "hash": head,
        "time": time,
        "prev": prev,
    }
    body["mac"] = sign(key, body)
    return body


def line_text(line: Mapping[str, Any]) -> str:
    """The one-line JSON form written to the file and sent over syslog."""
    return json.dumps(dict(line), sort_keys=True, separators=(",", ":"))


def read_lines(path: Path) -> list[dict[str, Any] | str]:
    """Each line parsed, or the raw text where it is not a JSON object (reported later)."""
    out: list[dict[str, Any] | str] = []
    with open(path, encoding="utf-8", errors="replace") as fh:
        for raw in fh:
            if not raw.strip():
                continue
            try:
                value = json.loads(raw)
            except ValueError:
                value = None
            out.append(value if isinstance(value, dict) else raw.rstrip("\n"))
    return out


def file_tail(path: Path, window: int = 64 * 1024) -> dict[str, Any] | None:
    """The last checkpoint line, read from the end (the file grows by a line a minute for
    years; the node must not read it all each time)."""
    try:
        fh = open(path, "rb")
    except FileNotFoundError:
        return None
    with fh:
        size = fh.seek(0, os.SEEK_END)
        fh.seek(max(0, size - window))
        chunk = fh.read()
    for raw in reversed(chunk.splitlines()):
        try:
            value = json.loads(raw)
        except ValueError:
            continue
        if isinstance(value, dict) and "mac" in value:
            return value
    return None


def append_line(path: Path, line: Mapping[str, Any]) -> None:
    """One line, appended with O_APPEND (never over what is there) and fsync'ed."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o640)
    try:
        data = (line_text(line) + "\n").encode()
        size = os.fstat(fd).st_size
        if size and os.pread(fd, 1, size - 1) != b"\n":
            data = b"\n" + data  # a torn last line stays visible, but never swallows this one
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)


def read_anchor_node(path: Path) -> str:
    """The node named by the file's first checkpoint (for a check without the config)."""
    if not Path(path).exists():
        return ""
    first = next((x for x in read_lines(path) if isinstance(x, dict)), None)
    return str(first.get("node", "")) if first else ""
