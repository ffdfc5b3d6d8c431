"""Hash-chained audit events.

Each event carries the hash of the one before it, ``hash_n = sha256(hash_{n-1} || canonical
JSON of event_n without its hash)``, so that altering, deleting or inserting any event
breaks every hash after it and :func:`verify_events` can say where. The canonical form is
JSON with sorted keys and no whitespace, which any language can recompute.

This module is storage-neutral: the offline ``medvision run`` writes the events as JSON
lines (:class:`JsonlAuditLog`); the node keeps the same events in its database.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

#: The hash that the first event of a chain points back to.
GENESIS = "0" * 64


def canonical(event: Mapping[str, Any]) -> bytes:
    """The bytes that are hashed: sorted keys, compact separators, UTF-8."""
    return json.dumps(event, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def chain_hash(prev_hash: str, event: Mapping[str, Any]) -> str:
    body = {k: v for k, v in event.items() if k != "hash"}
    return hashlib.sha256(prev_hash.encode() + canonical(body)).hexdigest()


def utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


@dataclass(frozen=True)
class Verification:
    """Outcome of checking a chain: ``ok``, or the first broken event and why."""

    ok: bool
    count: int
    first_bad_index: int | None = None
    reason: str = ""


def verify_events(events: Iterable[Mapping[str, Any]]) -> Verification:
    """Recompute the chain; report the first event whose hash or link does not match."""
    prev = GENESIS
    count = 0
    for n, event in enumerate(events):
        count = n + 1
        if event.get("seq") != n:
            return Verification(
                False,
                count,
                n,
                f"event {n}: sequence number is {event.get('seq')!r}, expected {n} "
                "(an event was deleted or inserted)",
            )
        if event.get("prev_hash") != prev:
            return Verification(
                False,
                count,
                n,
                f"event {n}: prev_hash does not match the hash of the event before it "
                "(an event was deleted, inserted or reordered)",
            )
        expected = chain_hash(prev, event)
        if event.get("hash") != expected:
            return Verification(
                False, count, n, f"event {n}: content does not match its hash (it was altered)"
            )
        prev = expected
    return Verification(True, count)


class JsonlAuditLog:
    """An append-only JSON-lines audit file; each line is one chained event.

    Lines are flushed and fsync'ed as they are written, so that a crash loses at most the
    event being written, never the ones before it.
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._seq = 0
        self._prev = GENESIS
        if self.path.exists():
            for event in read_jsonl(self.path):
                self._seq = int(event["seq"]) + 1
                self._prev = str(event["hash"])

    def record(self, event_type: str, outcome: str = "success", **fields: Any) -> dict[str, Any]:
        """Append one event; ``fields`` must be JSON-serialisable and hold no PHI."""
        event: dict[str, Any] = {
            "seq": self._seq,
            "time": utc_now(),
            "type": event_type,
            "outcome": outcome,
            **fields,
            "prev_hash": self._prev,
        }
        event["hash"] = chain_hash(self._prev, event)
        line = json.dumps(event, sort_keys=True, ensure_ascii=False) + "\n"
        with open(self.path, "a", encoding="utf-8") as fh:
            fh.write(line)
            fh.flush()
            os.fsync(fh.fileno())
        self._seq += 1
        self._prev = event["hash"]
        return event


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    with open(path, encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


def verify_file(path: Path) -> Verification:
    return verify_events(read_jsonl(Path(path)))


__all__ = [
    "GENESIS",
    "JsonlAuditLog",
    "Verification",
    "canonical",
    "chain_hash",
    "read_jsonl",
    "utc_now",
    "verify_events",
    "verify_file",
]
