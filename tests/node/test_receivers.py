"""What several receivers of one database decide together (``_receivers``, the sender's
claim, the journals' names), on SQLite and, when ``MEDVISION_TEST_POSTGRES_URL`` is set, on
PostgreSQL. ``test_two_receivers`` runs two real receivers end to end."""

from __future__ import annotations

import threading
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import select, update

from medvision.audit import Anchorer, DbAuditLog, load_or_create_key, verify_with_anchors
from medvision.config import ConfigError, Settings
from medvision.db import (
    Database,
    Job,
    JobState,
    Outbox,
    Receiver,
    Study,
    StudyState,
    utcnow,
)
from medvision.jobs import recover_orphans
from medvision.node._assembler import complete_quiet_studies
from medvision.node._receivers import ReceiverRow, claim_prefix, requeue_lost
from medvision.node._sender import Sender
from medvision.node._spool import Spool, journal_names, replay_journals, replay_unnamed

UID = "1.2.3.4"


def _quiet_study(db: Database) -> None:
    """A study whose last instance was indexed a minute ago."""
    old = utcnow() - timedelta(seconds=60)
    with db.session() as session:
        session.add(
            Study(
                study_instance_uid=UID,
                state=StudyState.RECEIVING,
                version=1,
                calling_aet="CT",
                calling_host="127.0.0.1",
                instance_count=1,
                first_received_at=old,
                last_received_at=old,
            )
        )


def _state(db: Database) -> str:
    with db.session() as session:
        return str(session.scalar(select(Study.state).where(Study.study_instance_uid == UID)))


def test_a_study_another_receiver_is_still_indexing_is_not_completed(
    db: Database, tmp_path: Path
) -> None:
    settings = Settings(data_dir=tmp_path, quiet_period_s=5, pipelines=["lung-ct"])
    _quiet_study(db)
    a, b = ReceiverRow(db, "rx-a"), ReceiverRow(db, "rx-b")
    b.beat({UID})  # b has acknowledged instances of it, not yet indexed
    a.beat(set())
    busy = a.others_busy(stale_s=60)
    assert busy == {UID}
    assert complete_quiet_studies(settings, db, DbAuditLog(db), busy=busy) == []
    assert _state(db) == "receiving"
    # b indexed them (its busy set is empty again): now the quiet period decides.
    b.beat(set())
    busy = a.others_busy(stale_s=60)
    assert busy == set()
    complete_quiet_studies(settings, db, DbAuditLog(db), busy=busy)
    assert _state(db) != "receiving"


def test_a_dead_receivers_busy_studies_stop_counting(db: Database) -> None:
    a, b = ReceiverRow(db, "rx-a"), ReceiverRow(db, "rx-b")
    b.beat({UID})
    with db.session() as session:
        session.execute(
            update(Receiver)
            .where(Receiver.name == "rx-b")
            .values(heartbeat_at=utcnow() - timedelta(seconds=120))
        )
    assert a.others_busy(stale_s=60) == set()
    b.beat({UID}, state="stopped")
    assert a.others_busy(stale_s=60) == set()


def _running(db: Database, worker: str) -> int:
    with db.session() as session:
        job = Job(
            study_instance_uid=UID,
            study_version=1,
            pipeline=f"pipeline-of-{worker}",  # one job per (study, version, pipeline)
            state=JobState.RUNNING,
            attempts=1,
            started_at=utcnow(),
            worker=worker,
        )
        session.add(job)
        session.flush()
        return job.id


def _job_states(db: Database) -> dict[int, str]:
    with db.session() as session:
        return {j.id: str(j.state) for j in session.scalars(select(Job))}


def test_only_a_dead_receivers_jobs_are_queued_again(db: Database) -> None:
    _quiet_study(db)
    ReceiverRow(db, "rx-a").beat(set())
    ReceiverRow(db, "rx-b").beat(set())
    ReceiverRow(db, "rx-a1").beat(set())
    on_a, on_b, on_a1 = _running(db, "rx-a:100"), _running(db, "rx-b:200"), _running(db, "rx-a1:9")
    assert requeue_lost(db, "rx-b", stale_s=60) == []  # every receiver is alive
    with db.session() as session:
        session.execute(
            update(Receiver)
            .where(Receiver.name == "rx-a")
            .values(heartbeat_at=utcnow() - timedelta(seconds=120))
        )
    assert requeue_lost(db, "rx-b", stale_s=60) == [on_a]
    assert _job_states(db) == {on_a: "queued", on_b: "running", on_a1: "running"}
    # A second sweep (another receiver's) finds nothing left to take back.
    assert requeue_lost(db, "rx-a1", stale_s=60) == []


def test_a_receiver_starting_again_takes_back_only_its_own_claims(db: Database) -> None:
    _quiet_study(db)
    mine, theirs = _running(db, "rx-a:100"), _running(db, "rx-b:200")
    assert recover_orphans(db, claim_prefix("rx-a")) == 1
    assert _job_states(db) == {mine: "queued", theirs: "running"}


def test_a_name_in_use_on_another_host_is_refused(db: Database) -> None:
    with db.session() as session:
        session.add(Receiver(name="rx-a", host="elsewhere.example", pid=1, busy=[]))
    with pytest.raises(ConfigError, match="in use by the receiver on elsewhere.example"):
        ReceiverRow(db, "rx-a").check_alone(stale_s=60)
    ReceiverRow(db, "rx-b").check_alone(stale_s=60)


def test_two_senders_never_take_the_same_outbox_row(db: Database, tmp_path: Path) -> None:
    _quiet_study(db)
    job = _running(db, "rx-a:1")
    with db.session() as session:
        for n in range(3):
            session.add(
                Outbox(
                    job_id=job,
                    study_instance_uid=UID,
                    destination="pacs",
                    ae_title="PACS",
                    host="127.0.0.1",
                    port=104,
                    path=str(tmp_path / f"{n}.dcm"),
                    sop_instance_uid=f"1.2.3.4.{n}",
                    sop_class_uid="1.2.840.10008.5.1.4.1.1.88.34",
                )
            )
    with db.session() as session:
        rows = list(session.scalars(select(Outbox)))  # both senders read the same rows
    a = Sender(Settings(data_dir=tmp_path, node_name="rx-a"), db, DbAuditLog(db))
    b = Sender(Settings(data_dir=tmp_path, node_name="rx-b"), db, DbAuditLog(db))
    assert [r.id for r in a._claim(rows)] == [r.id for r in rows]
    assert b._claim(rows) == []
    with db.session() as session:  # claimed: not due for anyone for the lease
        assert all(
            r.next_attempt_at.replace(tzinfo=None) > utcnow().replace(tzinfo=None)
            for r in session.scalars(select(Outbox))
        )


def test_each_receiver_replays_only_its_own_journals(tmp_path: Path) -> None:
    root = tmp_path / "spool"
    for name in ("rx-a", "rx-a/acceptor-1", "rx-a/acceptor-2", "rx-b/acceptor-1"):
        Spool(root, name=name).stop()
    assert journal_names(root, "rx-a") == ["rx-a/acceptor-1", "rx-a/acceptor-2"]
    assert journal_names(root, "rx-b") == ["rx-b/acceptor-1"]
    assert journal_names(root) == []  # the unnamed receiver's are acceptor-N only
    # rx-b's acceptor is alive (holds its journal's lock): rx-a's start leaves it alone.
    live = Spool(root, name="rx-b/acceptor-1")
    part = live.tmp / "in-flight.part"
    part.write_bytes(b"x")
    assert replay_journals(root, node="rx-a") == 0
    assert part.exists()
    live.stop()
    # What the receiver left before it was given a name is written out by the named one.
    unnamed = Spool(root)
    (unnamed.tmp / "never-acknowledged.part").write_bytes(b"x")
    unnamed.stop()
    assert replay_unnamed(root) == 1
    assert part.exists()


def test_two_receivers_checkpoints_take_turns_in_one_anchor_file(
    db: Database, tmp_path: Path
) -> None:
    """Each receiver has its own Anchorer (and its own in-process lock) on the one anchor
    file of the shared data folder; without the file lock both would declare the same
    checkpoint number."""
    anchor, key = tmp_path / "audit-anchors.jsonl", load_or_create_key(tmp_path / "key")
    audit = DbAuditLog(db)

    def receiver() -> None:
        anchorer = Anchorer(db, anchor, key, "MEDVISION")
        for _ in range(15):
            audit.record("user.login", user="qa", method="password", client_ip="127.0.0.1")
            anchorer.checkpoint()

    threads = [threading.Thread(target=receiver) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    report = verify_with_anchors(audit.events(), anchor, key, "MEDVISION")
    assert report.ok, report.problem or report.chain
    assert report.anchors >= 15
