"""The audit trail cannot be cut short unseen: the node anchors the head of its chain in a
signed, append-only checkpoint file (and over syslog), and ``medvision audit verify``
compares the chain with it. Each test tampers with a real node's database or checkpoint
file as an attacker would (plain SQL, plain file edits) and reads what the CLI says."""

from __future__ import annotations

import json
import logging
import shutil
import sqlite3
import stat
import subprocess
import threading
from pathlib import Path

import pytest

from medvision.audit import (
    ANCHOR_MSGID,
    CHECKPOINT_EVENT,
    Anchorer,
    DbAuditLog,
    db_events,
    load_key,
    verify_with_anchors,
)
from medvision.config import Settings
from medvision.db import Database
from medvision.node import Node
from tests.audit.test_syslog import Collector
from tests.edge_studies import build_edge_studies
from tests.node.peers import free_port
from tests.test_cli import medvision

EVENTS = 600


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return medvision("audit", *args)


def _settings(data: Path) -> Settings:
    return Settings(
        data_dir=data,
        dicom_port=free_port(),
        bind_address="127.0.0.1",
        ae_title="ANCHORNODE",
        audit_anchor_interval_s=0,  # checkpoints at start and stop only: no timing in tests
    )


@pytest.fixture(scope="module")
def node_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real node started and stopped twice, with 600 received-instances events between:
    its database, key and checkpoint file as they are on disk afterwards."""
    settings = _settings(tmp_path_factory.mktemp("anchored") / "data")
    for run in range(2):
        node = Node(settings)
        node.start()
        for i in range(EVENTS // 2):
            node.audit.record(
                "instances.received",
                study_instance_uid=f"1.2.826.0.1.{run}.{i}",
                calling_aet="ORTHANC",
                calling_host="10.0.0.5",
                instances=1,
            )
        node.stop()
    return settings.data_dir


@pytest.fixture
def node_data(node_template: Path, tmp_path: Path) -> tuple[Settings, Path]:
    """A copy of that node's data for one test to tamper with, and a config naming it."""
    settings = _settings(tmp_path / "data")
    shutil.copytree(node_template, settings.data_dir)
    config = tmp_path / "medvision.toml"
    config.write_text(f'data_dir = "{settings.data_dir}"\nae_title = "ANCHORNODE"\n')
    return settings, config


def _verify(settings: Settings) -> str:
    """The library's verdict (the same text the CLI prints after ``BROKEN:``)."""
    db = Database(settings.db_url)
    try:
        report = verify_with_anchors(
            db_events(db), settings.anchor_file, load_key(settings.anchor_key_file), "ANCHORNODE"
        )
    finally:
        db.dispose()
    assert report.chain.ok
    return report.problem


def _sql(db_path: Path, statement: str) -> None:
    con = sqlite3.connect(db_path)
    with con:
        con.execute(statement)
    con.close()


def _last_seq(db_path: Path) -> int:
    con = sqlite3.connect(db_path)
    (seq,) = con.execute("SELECT max(seq) FROM audit_events").fetchone()
    con.close()
    return int(seq)


def _lines(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()]


def test_the_node_writes_signed_checkpoints_and_an_untouched_trail_passes(
    node_data: tuple[Settings, Path],
) -> None:
    settings, config = node_data
    key_file = settings.anchor_key_file
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    lines = _lines(settings.anchor_file)
    # start and stop of two runs: four checkpoints, numbered, linked, of this node
    assert [x["n"] for x in lines] == [0, 1, 2, 3]
    assert {x["node"] for x in lines} == {"ANCHORNODE"}
    assert lines[-1]["seq"] == _last_seq(settings.data_dir / "medvision.db")
    assert lines[1]["prev"] == lines[0]["mac"]
    result = _cli("verify", "--config", str(config))
    assert result.returncode == 0, result.stderr
    assert "chain intact" in result.stdout
    assert "4 checkpoints, the last (n 3," in result.stdout


@pytest.mark.parametrize("deleted", [1, 5, 500])
def test_deleting_the_last_events_is_found(node_data: tuple[Settings, Path], deleted: int) -> None:
    settings, config = node_data
    db_path = settings.data_dir / "medvision.db"
    last = _last_seq(db_path)
    _sql(db_path, f"DELETE FROM audit_events WHERE seq > {last - deleted}")
    result = _cli("verify", "--config", str(config))
    assert result.returncode == 1, result.stdout
    assert (
        f"the chain ends at event {last - deleted} but checkpoint 3" in result.stderr
        and f"anchored event {last}: {deleted} event(s) at the end were deleted" in result.stderr
    ), result.stderr


def test_a_rewritten_history_with_recomputed_hashes_is_found(
    node_data: tuple[Settings, Path],
) -> None:
    """The attacker deletes one event and recomputes every hash after it (so the chain on
    its own verifies); the checkpoints still hold the old hashes."""
    settings, config = node_data
    db = Database(settings.db_url)
    events = list(db_events(db))
    db.dispose()
    db_path = settings.data_dir / "medvision.db"
    _sql(db_path, "DELETE FROM audit_events")
    forged = Database(settings.db_url)
    log = DbAuditLog(forged)
    for event in events:
        if event["seq"] == 10:
            continue
        body = {k: v for k, v in event.items() if k not in ("seq", "time", "prev_hash", "hash")}
        log.record(body.pop("type"), body.pop("outcome"), **body)
    forged.dispose()
    result = _cli("verify", "--config", str(config))
    assert result.returncode == 1
    assert "its hash differs): the history was rewritten" in result.stderr, result.stderr


@pytest.mark.parametrize(
    ("cut", "expected"),
    [
        ("empty", "the chain records checkpoint 3"),
        ("removed", "the chain records checkpoint 3"),
        ("last line", "ends at checkpoint 2: the checkpoint file was truncated"),
        ("first line", "line 1 is checkpoint 1, expected 0: the first lines are missing"),
        ("middle line", "line 2 is checkpoint 2, expected 1: checkpoints 1..1 are missing"),
        ("half a line", "line 4 is not a checkpoint"),
    ],
)
def test_truncating_the_checkpoint_file_is_found(
    node_data: tuple[Settings, Path], cut: str, expected: str
) -> None:
    settings, _ = node_data
    path = settings.anchor_file
    text = path.read_text()
    lines = text.splitlines(keepends=True)
    if cut == "empty":
        path.write_text("")
    elif cut == "removed":
        path.unlink()
    elif cut == "last line":
        path.write_text("".join(lines[:-1]))
    elif cut == "first line":
        path.write_text("".join(lines[1:]))
    elif cut == "middle line":
        path.write_text("".join(lines[:1] + lines[2:]))
    else:
        path.write_text(text[: len(text) - len(lines[-1]) // 2])
    assert expected in _verify(settings)


def test_the_cli_reports_a_truncated_checkpoint_file(node_data: tuple[Settings, Path]) -> None:
    settings, config = node_data
    settings.anchor_file.write_text("")
    result = _cli("verify", "--config", str(config))
    assert result.returncode == 1, result.stdout
    assert "BROKEN: the chain records checkpoint 3" in result.stderr
    assert "the checkpoint file was truncated or replaced" in result.stderr


def test_an_edited_checkpoint_line_is_found(node_data: tuple[Settings, Path]) -> None:
    """Moving the last checkpoint back to hide deleted events needs the key."""
    settings, config = node_data
    lines = _lines(settings.anchor_file)
    lines[-1]["seq"] -= 5
    settings.anchor_file.write_text("".join(json.dumps(x) + "\n" for x in lines))
    result = _cli("verify", "--config", str(config))
    assert result.returncode == 1
    assert "checkpoint 3: signature does not match (the line was edited)" in result.stderr


def test_another_nodes_checkpoint_file_does_not_fit(
    node_data: tuple[Settings, Path], tmp_path: Path
) -> None:
    settings, _ = node_data
    other = _settings(tmp_path / "other")
    node = Node(other)
    node.start()
    node.stop()
    settings.anchor_file.write_bytes(other.anchor_file.read_bytes())
    assert "was signed with another key" in _verify(settings)


def test_a_crash_between_the_checkpoint_event_and_its_line_is_completed_at_start(
    node_data: tuple[Settings, Path],
) -> None:
    """The event is written first: a crash before the line looks like a cut file until the
    node starts again and writes the missing line (the same line, from the event)."""
    settings, config = node_data
    db = Database(settings.db_url)
    DbAuditLog(db).record(CHECKPOINT_EVENT, checkpoint=4, anchor_file=str(settings.anchor_file))
    db.dispose()
    broken = _cli("verify", "--config", str(config))
    assert broken.returncode == 1
    assert "ends at checkpoint 3" in broken.stderr and "starting the node" in broken.stderr
    node = Node(settings)
    node.start()
    node.stop()
    assert [x["n"] for x in _lines(settings.anchor_file)] == [0, 1, 2, 3, 4, 5, 6]
    fixed = _cli("verify", "--config", str(config))
    assert fixed.returncode == 0, fixed.stderr


def test_a_quiet_node_writes_no_new_checkpoint(node_data: tuple[Settings, Path]) -> None:
    """A checkpoint is its own event; anchoring it again would never end."""
    settings, _ = node_data
    db = Database(settings.db_url)
    anchorer = Anchorer(db, settings.anchor_file, load_key(settings.anchor_key_file), "ANCHORNODE")
    assert anchorer.checkpoint() is None
    DbAuditLog(db).record("user.login", user="qa", method="password", client_ip="127.0.0.1")
    line = anchorer.checkpoint()
    assert line is not None and line["n"] == 4
    assert anchorer.checkpoint() is None
    report = verify_with_anchors(
        db_events(db), settings.anchor_file, load_key(settings.anchor_key_file), "ANCHORNODE"
    )
    db.dispose()
    assert report.ok and report.anchors == 5


def test_a_chain_never_anchored_verifies_with_a_note(tmp_path: Path) -> None:
    """A database from before checkpoints existed: no key, no file, no checkpoint event."""
    data = tmp_path / "data"
    data.mkdir()
    db = Database(f"sqlite:///{data / 'medvision.db'}")
    db.create_schema()
    DbAuditLog(db).record("application.start", ae_title="OLD", dicom_port=104)
    db.dispose()
    config = tmp_path / "medvision.toml"
    config.write_text(f'data_dir = "{data}"\n')
    result = _cli("verify", "--config", str(config))
    assert result.returncode == 0, result.stderr
    assert "no checkpoint yet (the end of the chain is not anchored)" in result.stdout


def test_checkpoints_go_over_syslog_and_the_saved_copy_reveals_a_consistent_cut(
    node_data: tuple[Settings, Path], tmp_path: Path
) -> None:
    """An attacker who controls this host but not the collector cuts the database and the
    checkpoint file back to the same point: the two agree, so only the collector's copy of
    the checkpoints can show it, and verify with --syslog-copy does."""
    settings, config = node_data
    collector = Collector()
    try:
        sent = _cli(
            "send-syslog", "--config", str(config), "--host", "127.0.0.1",
            "--port", str(collector.port),
        )  # fmt: skip
        assert sent.returncode == 0, sent.stderr
        assert "and 4 checkpoints" in sent.stdout
        for _ in range(200):
            if sum(ANCHOR_MSGID.encode() in f for f in collector.frames) == 4:
                break
            threading.Event().wait(0.05)
    finally:
        collector.close()
    anchors = [f for f in collector.frames if b" MEDVISION-ANCHOR - " in f]
    assert [json.loads(f.split(b" - ", 1)[1])["n"] for f in anchors] == [0, 1, 2, 3]
    assert all(f.startswith(b"<85>1 ") and b" medvision " in f for f in anchors)
    copy = tmp_path / "collector.log"  # one message per line, as a collector's file keeps
    copy.write_bytes(b"".join(f.replace(b"\n", b" ") + b"\n" for f in collector.frames))
    intact = _cli("verify", "--config", str(config), "--syslog-copy", str(copy))
    assert intact.returncode == 0, intact.stderr
    assert "4 in the syslog copy, all in the file" in intact.stdout

    lines = settings.anchor_file.read_text().splitlines(keepends=True)
    settings.anchor_file.write_text("".join(lines[:2]))
    keep = json.loads(lines[1])["seq"]
    _sql(settings.data_dir / "medvision.db", f"DELETE FROM audit_events WHERE seq > {keep}")
    alone = _cli("verify", "--config", str(config))
    assert alone.returncode == 0, alone.stderr  # the documented limit (docs/audit.md)
    found = _cli("verify", "--config", str(config), "--syslog-copy", str(copy))
    assert found.returncode == 1
    assert "the syslog copy has checkpoint 2" in found.stderr
    assert "that the checkpoint file lacks: the file was truncated or replaced" in found.stderr


@pytest.fixture(scope="module")
def run_logs(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``medvision run`` on a real one-slice CT (refused at once: a single slice is not a
    volume), with the key kept outside the results folder as docs/audit.md advises."""
    base = tmp_path_factory.mktemp("run")
    study = build_edge_studies(shared_data, base / "edge")["single-slice"]
    result = medvision(
        "run", str(study), "--out", str(base / "out"), "--quiet",
        "--audit-key", str(base / "keys" / "run.key"), models=base / "models",
    )  # fmt: skip
    assert result.returncode == 1 and "refused" in result.stderr, result.stderr
    assert "audit checkpoint key" in result.stderr  # it says it made one
    return base


@pytest.mark.parametrize("cut", ["none", "last event", "all but the first", "checkpoint file"])
def test_an_offline_runs_log_is_checked_against_its_checkpoint(
    run_logs: Path, tmp_path: Path, cut: str
) -> None:
    base = tmp_path / "copy"
    shutil.copytree(run_logs, base)
    [log] = (base / "out").rglob("audit.jsonl")
    anchors = base / "out" / "audit-anchors.jsonl"
    key = base / "keys" / "run.key"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    [line] = _lines(anchors)
    events = log.read_text().splitlines(keepends=True)
    assert line["seq"] == len(events) - 1 and line["node"].startswith("run:")
    if cut == "last event":
        log.write_text("".join(events[:-1]))
    elif cut == "all but the first":
        log.write_text(events[0])
    elif cut == "checkpoint file":
        anchors.write_text("")
    result = _cli("verify", str(log), "--anchors", str(anchors), "--key", str(key))
    if cut == "none":
        assert result.returncode == 0, result.stderr
        assert "chain intact, reaches its last checkpoint" in result.stdout
        return
    assert result.returncode == 1, result.stdout
    if cut == "checkpoint file":
        assert "no checkpoint in" in result.stderr and "names this log" in result.stderr
    else:
        gone = 1 if cut == "last event" else len(events) - 1
        assert f"{gone} event(s) at the end were deleted" in result.stderr, result.stderr


def test_a_checkpoint_written_while_verify_reads_is_no_false_alarm(
    node_data: tuple[Settings, Path],
) -> None:
    """Verify reads the file, then the chain; a running node may anchor in between (its
    event is then in the chain read, its line not in the file read)."""
    settings, _ = node_data
    db = Database(settings.db_url)
    key = load_key(settings.anchor_key_file)
    anchorer = Anchorer(db, settings.anchor_file, key, "ANCHORNODE")
    DbAuditLog(db).record("user.logout", user="qa", method="session", client_ip="127.0.0.1")

    def chain_read_while_the_node_anchors():  # noqa: ANN202 - a generator of events
        assert anchorer.checkpoint() is not None  # after verify has read the file
        yield from db_events(db)

    report = verify_with_anchors(
        chain_read_while_the_node_anchors(), settings.anchor_file, key, "ANCHORNODE"
    )
    db.dispose()
    assert report.ok, report.problem


def test_the_node_anchors_periodically_and_logs_a_cut_it_finds(
    node_data: tuple[Settings, Path], caplog: pytest.LogCaptureFixture
) -> None:
    """With ``audit_anchor_interval_s`` set the running node anchors new events without
    being stopped; finding events gone since its last checkpoint, it says so in its log."""
    settings, _ = node_data
    db_path = settings.data_dir / "medvision.db"
    last = _last_seq(db_path)
    _sql(db_path, f"DELETE FROM audit_events WHERE seq > {last - 3}")
    settings = settings.model_copy(update={"audit_anchor_interval_s": 0.1})
    node = Node(settings)
    with caplog.at_level(logging.ERROR, logger="medvision.audit"):
        node.start()
    try:
        event = node.audit.record("user.login", user="qa", method="password", client_ip="::1")
        for _ in range(600):  # the thread's next pass; bounded, not a timing assertion
            if any(x["seq"] > event["seq"] for x in _lines(settings.anchor_file)):
                break
            threading.Event().wait(0.05)
        anchored = [x for x in _lines(settings.anchor_file) if x["seq"] > event["seq"]]
    finally:
        node.stop()
    assert anchored, "no checkpoint after the new event while the node ran"
    assert f"no longer holds event {last} as checkpoint 3 anchored it" in caplog.text


def test_a_torn_last_line_is_reported_and_the_next_checkpoint_is_whole(
    node_data: tuple[Settings, Path],
) -> None:
    """Half a line (a crash mid-write, or an edit) never merges with the next checkpoint:
    verify names the damaged line, and the lines after it still parse."""
    settings, _ = node_data
    text = settings.anchor_file.read_text()
    settings.anchor_file.write_text(text + text.splitlines()[-1][:40])
    db = Database(settings.db_url)
    DbAuditLog(db).record("user.logout", user="qa", method="session", client_ip="::1")
    anchorer = Anchorer(db, settings.anchor_file, load_key(settings.anchor_key_file), "ANCHORNODE")
    line = anchorer.checkpoint()
    db.dispose()
    assert line is not None and line["n"] == 4
    assert _lines_raw(settings.anchor_file)[-1] == json.loads(json.dumps(line))
    assert "line 5 is not a checkpoint (edited or damaged)" in _verify(settings)


def _lines_raw(path: Path) -> list:
    out = []
    for raw in path.read_text().splitlines():
        try:
            out.append(json.loads(raw))
        except ValueError:
            out.append(raw)
    return out
