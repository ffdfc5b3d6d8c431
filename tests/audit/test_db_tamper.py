"""The node's audit trail lives in the database: each kind of tampering done there with
plain SQL (what an administrator or an attacker with file access could do) must be found,
and ``medvision audit verify`` must name the first broken event and exit non-zero."""

from __future__ import annotations

import json
import sqlite3
import subprocess
from pathlib import Path

import pytest

from medvision.audit import DbAuditLog, read_jsonl, verify_database, verify_file
from medvision.audit._chain import chain_hash
from medvision.db import Database
from tests.test_cli import medvision

N = 6


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    """A real SQLite database written by DbAuditLog, as the node writes it."""
    path = tmp_path / "medvision.db"
    db = Database(f"sqlite:///{path}")
    db.create_schema()
    log = DbAuditLog(db)
    log.record("application.start", ae_title="MEDVISION", dicom_port=11112)
    for i in range(1, N - 1):
        log.record(
            "instances.received",
            study_instance_uid=f"1.2.3.{i}",
            calling_aet="ORTHANC",
            calling_host="10.0.0.5",
            instances=10 + i,
        )
    log.record("application.stop")
    db.dispose()
    return path


def _sql(path: Path, *statements: str, params: tuple = ()) -> None:
    con = sqlite3.connect(path)
    with con:
        for statement in statements:
            con.execute(statement, params if "?" in statement else ())
    con.close()


def _verify(path: Path):
    db = Database(f"sqlite:///{path}")
    try:
        return verify_database(db)
    finally:
        db.dispose()


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return medvision("audit", *args)


def test_intact_database_verifies_and_the_cli_says_ok(db_path: Path) -> None:
    assert _verify(db_path).ok and _verify(db_path).count == N
    result = _cli("verify", "--db", f"sqlite:///{db_path}")
    assert result.returncode == 0, result.stderr
    assert f"OK, {N} events, chain intact" in result.stdout
    assert "head " in result.stdout


def test_verify_reads_the_database_named_by_the_config(db_path: Path, tmp_path: Path) -> None:
    config = tmp_path / "medvision.toml"
    config.write_text(f'database_url = "sqlite:///{db_path}"\n')
    result = _cli("verify", "--config", str(config))
    assert result.returncode == 0, result.stderr
    assert "chain intact" in result.stdout


def test_verifying_is_itself_audited_and_the_chain_stays_intact(db_path: Path) -> None:
    assert _cli("verify", "--db", f"sqlite:///{db_path}").returncode == 0
    db = Database(f"sqlite:///{db_path}")
    events = DbAuditLog(db).events()
    db.dispose()
    assert events[-1]["type"] == "audit.log_used" and events[-1]["action"] == "verify"
    assert _verify(db_path).ok and _verify(db_path).count == N + 1


def test_edited_field_is_found(db_path: Path) -> None:
    con = sqlite3.connect(db_path)
    data = json.loads(con.execute("SELECT data FROM audit_events WHERE seq = 2").fetchone()[0])
    con.close()
    data["calling_aet"] = "SOMEONE_ELSE"
    _sql(db_path, "UPDATE audit_events SET data = ? WHERE seq = 2", params=(json.dumps(data),))
    result = _verify(db_path)
    assert not result.ok and result.first_bad_index == 2 and "altered" in result.reason
    cli = _cli("verify", "--db", f"sqlite:///{db_path}")
    assert cli.returncode == 1
    assert "BROKEN at event 2" in cli.stderr


def test_edited_column_is_found(db_path: Path) -> None:
    _sql(db_path, "UPDATE audit_events SET outcome = 'failure' WHERE seq = 3")
    result = _verify(db_path)
    assert not result.ok and result.first_bad_index == 3 and "altered" in result.reason


def test_deleted_row_is_found(db_path: Path) -> None:
    _sql(db_path, "DELETE FROM audit_events WHERE seq = 2")
    result = _verify(db_path)
    assert not result.ok and result.first_bad_index == 2
    assert "deleted or inserted" in result.reason


def test_deleted_row_with_renumbered_successors_is_found(db_path: Path) -> None:
    """Closing the gap in ``seq`` does not help: the next event's link is broken."""
    _sql(
        db_path,
        "DELETE FROM audit_events WHERE seq = 2",
        "UPDATE audit_events SET seq = seq + 1000 WHERE seq > 2",
        "UPDATE audit_events SET seq = seq - 1001 WHERE seq > 1000",
    )
    result = _verify(db_path)
    assert not result.ok and result.first_bad_index == 2
    assert "prev_hash" in result.reason


def test_forged_row_appended_with_a_made_up_hash_is_found(db_path: Path) -> None:
    _sql(
        db_path,
        "INSERT INTO audit_events (seq, time, type, outcome, study_instance_uid, data, "
        f"prev_hash, hash) VALUES ({N}, '2030-01-01T00:00:00Z', 'results.sent', 'success', "
        f"NULL, '{{}}', '{'a' * 64}', '{'b' * 64}')",
    )
    result = _verify(db_path)
    assert not result.ok and result.first_bad_index == N


def test_forged_row_inserted_in_the_middle_with_a_correct_hash_is_found(db_path: Path) -> None:
    """The forger recomputes the inserted row's own hash; the row after it still breaks."""
    db = Database(f"sqlite:///{db_path}")
    events = DbAuditLog(db).events()
    db.dispose()
    forged = {
        "seq": 3,
        "time": events[2]["time"],
        "type": "instances.received",
        "outcome": "success",
        "study_instance_uid": "9.9.9",
        "calling_aet": "ORTHANC",
        "calling_host": "10.0.0.5",
        "instances": 1,
        "prev_hash": events[2]["hash"],
    }
    digest = chain_hash(events[2]["hash"], forged)
    data = {
        k: v for k, v in forged.items() if k not in ("seq", "time", "type", "outcome", "prev_hash")
    }
    _sql(
        db_path,
        "UPDATE audit_events SET seq = seq + 1000 WHERE seq >= 3",
        "UPDATE audit_events SET seq = seq - 999 WHERE seq >= 1000",
    )
    _sql(
        db_path,
        "INSERT INTO audit_events (seq, time, type, outcome, study_instance_uid, data, "
        "prev_hash, hash) VALUES (3, ?, 'instances.received', 'success', '9.9.9', ?, ?, ?)",
        params=(forged["time"], json.dumps(data), forged["prev_hash"], digest),
    )
    result = _verify(db_path)
    assert not result.ok and result.first_bad_index == 4
    assert "prev_hash" in result.reason


def test_two_rows_swapped_in_order_are_found(db_path: Path) -> None:
    """Exchanging the seq numbers of two rows reorders the history."""
    _sql(
        db_path,
        "UPDATE audit_events SET seq = 1000 WHERE seq = 2",
        "UPDATE audit_events SET seq = 2 WHERE seq = 3",
        "UPDATE audit_events SET seq = 3 WHERE seq = 1000",
    )
    result = _verify(db_path)
    assert not result.ok and result.first_bad_index == 2


def test_two_rows_swapped_in_content_are_found(db_path: Path) -> None:
    """Exchanging everything but seq (contents and their hashes) is found too."""
    cols = "time, type, outcome, study_instance_uid, data, prev_hash, hash"
    con = sqlite3.connect(db_path)
    a = con.execute(f"SELECT {cols} FROM audit_events WHERE seq = 2").fetchone()
    b = con.execute(f"SELECT {cols} FROM audit_events WHERE seq = 3").fetchone()
    sets = ", ".join(f"{c} = ?" for c in cols.split(", "))
    with con:
        con.execute("UPDATE audit_events SET hash = 'x' WHERE seq = 2")  # hash is unique
        con.execute(f"UPDATE audit_events SET {sets} WHERE seq = 3", a)
        con.execute(f"UPDATE audit_events SET {sets} WHERE seq = 2", b)
    con.close()
    result = _verify(db_path)
    assert not result.ok and result.first_bad_index == 2


def test_missing_database_is_an_error_and_is_not_created(tmp_path: Path) -> None:
    path = tmp_path / "nope" / "medvision.db"
    result = _cli("verify", "--db", f"sqlite:///{path}")
    assert result.returncode == 2
    assert "no audit database" in result.stderr
    assert not path.exists()


def test_reordered_jsonl_lines_are_found(tmp_path: Path) -> None:
    """The same holds for the offline run's audit.jsonl (alter/delete/insert: test_chain)."""
    path = tmp_path / "audit.jsonl"
    from medvision.audit import JsonlAuditLog

    log = JsonlAuditLog(path)
    for i in range(4):
        log.record("series.read", series_instance_uid=f"1.2.{i}")
    events = read_jsonl(path)
    events[1], events[2] = events[2], events[1]
    path.write_text("".join(json.dumps(e) + "\n" for e in events))
    result = verify_file(path)
    assert not result.ok and result.first_bad_index == 1
    cli = _cli("verify", str(path))
    assert cli.returncode == 1 and "BROKEN at event 1" in cli.stderr
