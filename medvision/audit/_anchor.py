"""Anchoring the head of the audit chain outside the database (checkpoints).

The hash chain shows that the trail is consistent, not that it is complete at its end:
whoever can delete rows can delete the newest events and the chain that remains still
verifies. So the node writes, every ``audit_anchor_interval_s`` and at stop, a
*checkpoint*: the ``seq`` and ``hash`` of the newest event, with a time, signed with
HMAC-SHA256 under a site key that is not in the database, appended (``O_APPEND``, fsync)
to a separate file, one JSON line each. Each line also carries the MAC of the line before
it, its number ``n`` and the node's identity (AE title and key id), so lines cannot be
edited, reordered or taken out of the middle, and a file from another node does not fit.

To make truncating the *file* visible, the database says how many checkpoints there are:
checkpoint ``n`` is first recorded as the chain event ``audit.checkpoint`` (field
``checkpoint: n``) and that very event is what line ``n`` anchors. The database and the file
therefore vouch for each other: cutting events from the chain leaves a line pointing past
its end; cutting lines from the file leaves a ``audit.checkpoint`` event with no line. The
same line is also forwarded as a syslog message (:mod:`medvision.audit._syslog`), which is
the copy that an attacker with full control of this host cannot reach (docs/audit.md,
"Limits").

No new dependency: HMAC from the standard library (``cryptography`` is not a dependency of
medvision, so Ed25519 signatures would add one for no gain against the threat here, where
the verifier is the same site that holds the key).
"""

from __future__ import annotations

import contextlib
import fcntl
import hmac
import json
import logging
import os
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from medvision.audit._anchor_file import (
    ANCHOR_MSGID,
    CHECKPOINT_EVENT,
    AnchorKeyError,
    append_line,
    file_tail,
    key_id,
    line_text,
    load_key,
    load_or_create_key,
    make_line,
    read_anchor_node,
    read_lines,
    sign,
)
from medvision.audit._chain import GENESIS, Verification, verify_events

if TYPE_CHECKING:  # the database parts import it when they run: `medvision run` has none
    from medvision.db import Database

LOG = logging.getLogger("medvision.audit")


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o640)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def last_declared(db: Database) -> tuple[int, dict[str, Any]] | None:
    """The newest ``audit.checkpoint`` event in the chain: (its ``n``, the event)."""
    from sqlalchemy import select

    from medvision.db import AuditEvent

    with db.session() as session:
        row = session.scalars(
            select(AuditEvent)
            .where(AuditEvent.type == CHECKPOINT_EVENT)
            .order_by(AuditEvent.seq.desc())
            .limit(1)
        ).first()
        event = row.as_event() if row is not None else None
    if event is None:
        return None
    return int(event["checkpoint"]), event


class Anchorer:
    """Writes checkpoints of one node's chain to its anchor file (one writer per file).

    ``send`` (optional) receives each new line's text, e.g. to put it on a syslog stream
    at once; the ``send-syslog`` forwarder also sends it in chain order.
    """

    def __init__(self, db: Database, path: Path, key: bytes, node: str) -> None:
        self.db = db
        self.path = Path(path)
        self.key = key
        self.node = node
        self._lock = threading.Lock()
        self._warned: set[str] = set()

    def file_tail(self) -> dict[str, Any] | None:
        return file_tail(self.path)

    def checkpoint(self) -> dict[str, Any] | None:
        """Anchor the chain's head if anything was recorded since the last checkpoint.

        Returns the line written, or None when the head is already anchored. First completes
        a checkpoint that a crash left declared in the chain but not yet in the file.
        """
        # Several receivers on one database and data folder share one chain and one anchor
        # file: a file lock beside it makes their checkpoints take turns, so that no two
        # declare the same ``n``.
        with self._lock, _file_lock(self.path.with_name(self.path.name + ".lock")):
            return self._checkpoint()

    def _checkpoint(self) -> dict[str, Any] | None:
        from medvision.audit._db import DbAuditLog
        from medvision.audit._verify import head

        tail = self.file_tail()
        declared = last_declared(self.db)
        file_n = int(tail["n"]) if tail else -1
        prev = str(tail["mac"]) if tail else GENESIS
        self._warn_if_cut(tail, declared, file_n)
        if declared is not None and declared[0] == file_n + 1:
            event = declared[1]  # a crash between the event and the line: finish it
            line = make_line(
                self.key, declared[0], self.node, event["seq"], event["hash"], event["time"], prev
            )
            self.append_line(line)
            file_n, prev = declared[0], line["mac"]
        last = head(self.db)
        if last is None or (last["type"] == CHECKPOINT_EVENT and last["checkpoint"] <= file_n):
            return None
        # After a truncated file, keep counting from the chain so that the gap stays visible.
        n = max(file_n, declared[0] if declared else -1) + 1
        event = DbAuditLog(self.db).record(
            CHECKPOINT_EVENT, checkpoint=n, anchor_file=str(self.path)
        )
        line = make_line(self.key, n, self.node, event["seq"], event["hash"], event["time"], prev)
        self.append_line(line)
        return line

    def append_line(self, line: Mapping[str, Any]) -> None:
        append_line(self.path, line)

    def _warn_if_cut(
        self,
        tail: dict[str, Any] | None,
        declared: tuple[int, dict[str, Any]] | None,
        file_n: int,
    ) -> None:
        """Say in the log (once per finding) when the file and the chain disagree: the
        node goes on anchoring, and ``medvision audit verify`` names the problem."""
        problems = []
        if declared is not None and declared[0] > file_n + 1:
            problems.append(
                f"the audit checkpoint file {self.path} ends at checkpoint {file_n} but the "
                f"chain records checkpoint {declared[0]}: the file was cut"
            )
        if tail is not None:
            from medvision.db import AuditEvent

            with self.db.session() as session:
                row = session.get(AuditEvent, int(tail["seq"]))
                found = row.hash if row is not None else None
            if found != tail["hash"]:
                problems.append(
                    f"the audit chain no longer holds event {tail['seq']} as checkpoint "
                    f"{tail['n']} anchored it: events were deleted or rewritten"
                )
        for problem in problems:
            if problem not in self._warned:
                self._warned.add(problem)
                LOG.error("%s; run `medvision audit verify`", problem)

    def line(self, n: int) -> dict[str, Any] | None:
        """Line ``n`` of the file, if it is there (the syslog forwarder sends it)."""
        return line_reader(self.path)(n)


def log_id(events: list[Mapping[str, Any]]) -> str:
    """The name of one audit.jsonl in a checkpoint file: its first event's hash, which no
    other log shares and which survives moving or renaming the results folder."""
    return "run:" + str(events[0].get("hash", ""))[:32]


def anchor_jsonl(paths: Iterable[Path], anchor_file: Path, key: bytes) -> list[dict[str, Any]]:
    """``medvision run``'s checkpoint at its end: one signed line per audit.jsonl, naming
    the log (:func:`log_id`) and its last event, appended to ``anchor_file``."""
    from medvision.audit._chain import read_jsonl, utc_now

    tail = file_tail(anchor_file)
    n = int(tail["n"]) + 1 if tail else 0
    prev = str(tail["mac"]) if tail else GENESIS
    written = []
    for path in paths:
        events = read_jsonl(path)
        if not events:
            continue
        last = events[-1]
        line = make_line(key, n, log_id(events), last["seq"], last["hash"], utc_now(), prev)
        append_line(anchor_file, line)
        written.append(line)
        n, prev = n + 1, line["mac"]
    return written


def verify_jsonl_anchor(path: Path, anchor_file: Path, key: bytes) -> str:
    """The first problem between one audit.jsonl and the checkpoint file, or ``""``.

    The chain itself is :func:`verify_file`'s business; this says whether the log still
    reaches the last checkpoint that names it, and whether the file is whole.
    """
    from medvision.audit._chain import read_jsonl

    problem, anchors = _check_file(
        read_lines(anchor_file) if anchor_file.exists() else [], key, None, str(anchor_file)
    )
    if problem:
        return problem
    events = read_jsonl(path)
    if not events:
        return "the log is empty, yet a checkpoint file was given"
    mine = [a for a in anchors if a["node"] == log_id(events)]
    if not mine:
        return f"no checkpoint in {anchor_file} names this log"
    last = mine[-1]
    by_seq = {int(e["seq"]): e for e in events if isinstance(e.get("seq"), int)}
    end = int(events[-1].get("seq", -1))
    if int(last["seq"]) > end:
        return (
            f"the log ends at event {end} but checkpoint {last['n']} of {last['time']} "
            f"anchored event {last['seq']}: {int(last['seq']) - end} event(s) at the end "
            "were deleted"
        )
    event = by_seq.get(int(last["seq"]))
    if event is None or event.get("hash") != last["hash"]:
        return (
            f"event {last['seq']} is not the one checkpoint {last['n']} anchored "
            "(its hash differs): the log was rewritten"
        )
    return ""


def line_reader(path: Path) -> Callable[[int], dict[str, Any] | None]:
    """``n`` -> line ``n`` of the anchor file, or None (for the syslog forwarder).

    The file is read once and then only what was appended since, so that a forwarder
    running for years does not reread it for every checkpoint.
    """
    lines: dict[int, dict[str, Any]] = {}
    offset = 0

    def line(n: int) -> dict[str, Any] | None:
        nonlocal offset
        if n not in lines:
            try:
                with open(path, "rb") as fh:
                    if fh.seek(0, os.SEEK_END) < offset:  # replaced by a shorter file
                        lines.clear()
                        offset = 0
                    fh.seek(offset)
                    data = fh.read()
            except FileNotFoundError:
                return None
            complete = data[: data.rfind(b"\n") + 1]
            offset += len(complete)
            for raw in complete.splitlines():
                try:
                    value = json.loads(raw)
                except ValueError:
                    continue
                if isinstance(value, dict) and isinstance(value.get("n"), int):
                    lines[value["n"]] = value
        return lines.get(n)

    return line


def parse_syslog_copy(path: Path) -> list[dict[str, Any]]:
    """The checkpoint lines found in a collector's saved copy, in the order found.

    Any one-message-per-line format works (rsyslog's files, a raw capture of RFC 5424
    messages): a line counts when it names ``MEDVISION-ANCHOR`` and holds a JSON object.
    """
    found: list[dict[str, Any]] = []
    decoder = json.JSONDecoder()
    with open(path, encoding="utf-8", errors="replace") as fh:
        for raw in fh:
            if ANCHOR_MSGID not in raw:
                continue
            start = raw.find("{", raw.find(ANCHOR_MSGID))
            if start < 0:
                continue
            try:
                value, _ = decoder.raw_decode(raw[start:])
            except ValueError:
                continue
            if isinstance(value, dict) and "mac" in value:
                found.append(value)
    return found


@dataclass
class AnchorReport:
    """Outcome of checking the chain against its checkpoints: the first problem or none."""

    chain: Verification
    problem: str = ""
    anchors: int = 0
    last_anchor: dict[str, Any] | None = None
    syslog_anchors: int = 0
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.chain.ok and not self.problem


def _check_file(
    lines: list[dict[str, Any] | str], key: bytes, node: str | None, where: str
) -> tuple[str, list[dict[str, Any]]]:
    """Signatures, numbering, links and identity (unless ``node`` is None: a ``run``
    checkpoint file, whose lines each name their log) of the anchor file's lines."""
    good: list[dict[str, Any]] = []
    prev = GENESIS
    for i, line in enumerate(lines):
        if not isinstance(line, dict):
            return f"{where} line {i + 1} is not a checkpoint (edited or damaged)", good
        n = line.get("n")
        if line.get("key_id") != key_id(key):
            return (
                f"{where} line {i + 1} was signed with another key ({line.get('key_id')}, "
                f"this site's is {key_id(key)})",
                good,
            )
        if not hmac.compare_digest(str(line.get("mac", "")), sign(key, line)):
            return f"{where} checkpoint {n}: signature does not match (the line was edited)", good
        if node is not None and line.get("node") != node:
            return (
                f"{where} checkpoint {n} belongs to node {line.get('node')!r}, not {node!r}",
                good,
            )
        if n != i:
            what = f"checkpoints {i}..{n - 1} are missing" if i else "the first lines are missing"
            if not isinstance(n, int) or n < i:
                what = "a checkpoint was inserted, repeated or reordered"
            return f"{where} line {i + 1} is checkpoint {n}, expected {i}: {what}", good
        if line.get("prev") != prev:
            return f"{where} checkpoint {n} does not follow checkpoint {n - 1} (file edited)", good
        prev = str(line["mac"])
        good.append(line)
    return "", good


def verify_with_anchors(
    events: Iterable[Mapping[str, Any]],
    anchor_file: Path,
    key: bytes,
    node: str,
    syslog_copy: Path | None = None,
) -> AnchorReport:
    """Check the chain, then that it reaches every checkpoint and the file every declared one.

    The problems, in the order they are looked for: the chain itself broken; an anchor file
    line unsigned, renumbered, unlinked or of another node; a syslog checkpoint that the
    file lacks or that differs; a checkpoint pointing at an event whose hash differs (the
    history was rewritten) or past the chain's end (events were deleted at the end); an
    ``audit.checkpoint`` event with no line (the file was truncated).
    """
    if anchor_file.exists():
        lines = read_lines(anchor_file)
    else:
        lines = []
    problem, anchors = _check_file(lines, key, node, str(anchor_file))
    by_seq = {int(a["seq"]): a for a in anchors}
    max_declared: dict[str, Any] | None = None
    seen_end = -1
    mismatch = ""

    def tap(stream: Iterable[Mapping[str, Any]]) -> Iterator[Mapping[str, Any]]:
        nonlocal max_declared, seen_end, mismatch
        for event in stream:
            seq = event.get("seq")
            if isinstance(seq, int):
                seen_end = seq
                a = by_seq.get(seq)
                if a is not None and not mismatch and a["hash"] != event.get("hash"):
                    mismatch = (
                        f"event {seq} is not the one checkpoint {a['n']} anchored at "
                        f"{a['time']} (its hash differs): the history was rewritten"
                    )
            if event.get("type") == CHECKPOINT_EVENT and isinstance(event.get("checkpoint"), int):
                if max_declared is None or event["checkpoint"] > max_declared["checkpoint"]:
                    max_declared = dict(event)
            yield event

    chain = verify_events(tap(events))
    report = AnchorReport(chain, anchors=len(anchors), last_anchor=anchors[-1] if anchors else None)
    if not chain.ok:
        return report
    if syslog_copy is not None and not problem:
        problem = _compare_syslog(parse_syslog_copy(syslog_copy), anchors, key, node, report)
    if problem:
        report.problem = problem
        return report
    if mismatch:
        report.problem = mismatch
        return report
    last = report.last_anchor
    if last is not None and int(last["seq"]) > seen_end:
        missing = int(last["seq"]) - seen_end
        report.problem = (
            f"the chain ends at event {seen_end} but checkpoint {last['n']} of {last['time']} "
            f"anchored event {last['seq']}: {missing} event(s) at the end were deleted"
        )
        return report
    file_n = int(last["n"]) if last else -1
    if max_declared is not None and max_declared["checkpoint"] > file_n and anchor_file.exists():
        # The file was read before the chain: a running node may have added a checkpoint
        # (event, then line) meanwhile. Lines only ever follow their event, so a second
        # read now holds every line whose event was in the chain just read.
        again, later = _check_file(read_lines(anchor_file), key, node, str(anchor_file))
        if not again and later:
            file_n = max(file_n, int(later[-1]["n"]))
    if max_declared is not None and max_declared["checkpoint"] > file_n:
        report.problem = (
            f"the chain records checkpoint {max_declared['checkpoint']} (event "
            f"{max_declared['seq']}, {max_declared['time']}) but {anchor_file} "
            + (f"ends at checkpoint {file_n}" if file_n >= 0 else "has none")
            + ": the checkpoint file was truncated or replaced (if the node crashed while "
            "writing it, starting the node completes it)"
        )
    return report


def _compare_syslog(
    copies: list[dict[str, Any]],
    anchors: list[dict[str, Any]],
    key: bytes,
    node: str,
    report: AnchorReport,
) -> str:
    """Every checkpoint in the collector's copy must be in the file, identical."""
    report.syslog_anchors = len(copies)
    by_n = {int(a["n"]): a for a in anchors}
    for copy in copies:
        n = copy.get("n")
        if not hmac.compare_digest(str(copy.get("mac", "")), sign(key, copy)):
            # Not ours (another node, another key) or damaged in transit: not evidence.
            report.notes.append(f"syslog copy: checkpoint {n} not signed with this key, ignored")
            continue
        if copy.get("node") != node:
            continue
        mine = by_n.get(int(n)) if isinstance(n, int) else None
        if mine is None:
            return (
                f"the syslog copy has checkpoint {n} (event {copy.get('seq')}, "
                f"{copy.get('time')}) that the checkpoint file lacks: the file was truncated "
                "or replaced"
            )
        if line_text(mine) != line_text(copy):
            return f"checkpoint {n} differs between the file and the syslog copy"
    return ""


__all__ = [
    "ANCHOR_MSGID",
    "CHECKPOINT_EVENT",
    "AnchorKeyError",
    "AnchorReport",
    "Anchorer",
    "anchor_jsonl",
    "key_id",
    "last_declared",
    "line_reader",
    "line_text",
    "load_key",
    "load_or_create_key",
    "log_id",
    "make_line",
    "parse_syslog_copy",
    "read_anchor_node",
    "read_lines",
    "verify_jsonl_anchor",
    "verify_with_anchors",
]
