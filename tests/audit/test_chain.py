"""A QA reviewer must be able to tell an intact audit file from a tampered one."""

from __future__ import annotations

import json
from pathlib import Path

from medvision.audit import JsonlAuditLog, read_jsonl, verify_file


def _write_log(path: Path, n: int = 5) -> None:
    log = JsonlAuditLog(path)
    for i in range(n):
        log.record("instance.read", sop_instance_uid=f"1.2.3.{i}")


def _rewrite(path: Path, events: list[dict]) -> None:
    path.write_text("".join(json.dumps(e, sort_keys=True) + "\n" for e in events))


def test_intact_chain_verifies(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    _write_log(path)
    result = verify_file(path)
    assert result.ok and result.count == 5


def test_reopened_log_continues_the_chain(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    _write_log(path, 2)
    JsonlAuditLog(path).record("run.finished")
    events = read_jsonl(path)
    assert [e["seq"] for e in events] == [0, 1, 2]
    assert verify_file(path).ok


def test_altered_event_is_found(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    _write_log(path)
    events = read_jsonl(path)
    events[2]["sop_instance_uid"] = "9.9.9"
    _rewrite(path, events)
    result = verify_file(path)
    assert not result.ok
    assert result.first_bad_index == 2
    assert "altered" in result.reason


def test_deleted_event_is_found(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    _write_log(path)
    events = read_jsonl(path)
    del events[1]
    _rewrite(path, events)
    result = verify_file(path)
    assert not result.ok and result.first_bad_index == 1


def test_rehashed_insertion_is_found(tmp_path: Path) -> None:
    """Even an inserted event with a valid-looking hash breaks the link after it."""
    path = tmp_path / "audit.jsonl"
    _write_log(path)
    events = read_jsonl(path)
    forged = dict(events[2], seq=3)
    events.insert(3, forged)
    _rewrite(path, events)
    result = verify_file(path)
    assert not result.ok and result.first_bad_index == 3
