"""Alembic migrations: an old database with data moves to head intact, upgrading is
idempotent, pre-Alembic databases are recognised, and the migrations agree with the models
(the equivalent of ``alembic check``)."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import func, insert, inspect, select, text

from medvision.audit import DbAuditLog
from medvision.cli import main
from medvision.db import (
    AuditEvent,
    Base,
    Database,
    Feedback,
    Instance,
    Job,
    JobState,
    Outbox,
    Study,
    StudyState,
    User,
)
from medvision.db._migrate import current_revision, head_revision, upgrade

STUDY = "1.2.826.0.1.3680043.8.498.1"


def _fill_0001(db: Database) -> None:
    """A study with two instances, a done job with outbox rows, a queued job, audit events.

    Only tables (and columns) that exist at revision 0001 are touched."""
    with db.session() as s:
        s.add(Study(study_instance_uid=STUDY, state=StudyState.DONE, instance_count=2))
        for n in (1, 2):
            s.add(
                Instance(
                    sop_instance_uid=f"{STUDY}.1.{n}",
                    study_instance_uid=STUDY,
                    series_instance_uid=f"{STUDY}.1",
                    sop_class_uid="1.2.840.10008.5.1.4.1.1.2",
                    path=f"{STUDY}/{STUDY}.1/{n}.dcm",
                    size=1000 + n,
                    sha256=f"{n}" * 64,
                )
            )
        # Core inserts name only 0001's columns (the model has more since).
        s.execute(
            insert(Job.__table__).values(
                study_instance_uid=STUDY,
                study_version=1,
                pipeline="lung-ct",
                state=JobState.DONE,
                attempts=1,
                timings={"total": 1.5},
                worker="",
                reason="",
            )
        )
        s.execute(
            insert(Job.__table__).values(
                study_instance_uid=STUDY,
                study_version=1,
                pipeline="other",
                state=JobState.QUEUED,
                attempts=0,
                timings={},
                worker="",
                reason="",
            )
        )
        for n, cls in ((1, "1.2.840.10008.5.1.4.1.1.66.4"), (2, "1.2.840.10008.5.1.4.1.1.88.34")):
            s.add(
                Outbox(
                    job_id=1,
                    study_instance_uid=STUDY,
                    destination="pacs",
                    ae_title="PACS",
                    host="127.0.0.1",
                    port=104,
                    path=f"/results/{n}.dcm",
                    sop_instance_uid=f"{STUDY}.9.{n}",
                    sop_class_uid=cls,
                )
            )
    audit = DbAuditLog(db)
    audit.record("application.start", medvision_version="0.1.0")
    audit.record("study.complete", study_instance_uid=STUDY, instances=2, pipelines=["lung-ct"])
    audit.record("job.finished", study_instance_uid=STUDY, job_id=1, results=["a", "b"])


def _counts(db: Database) -> dict[str, int]:
    with db.session() as s:
        return {
            m.__tablename__: s.scalar(select(func.count()).select_from(m))
            for m in (Study, Instance, Job, Outbox, AuditEvent)
        }


def _diff(db: Database) -> list:
    with db.engine.connect() as conn:
        return compare_metadata(MigrationContext.configure(conn), Base.metadata)


def test_upgrade_from_0001_keeps_data_and_audit_chain(db_url: str) -> None:
    db = Database(db_url)
    upgrade(db, "0001")
    assert current_revision(db) == "0001"
    assert "users" not in inspect(db.engine).get_table_names()
    _fill_0001(db)
    before = _counts(db)
    with db.session() as s:
        events_before = [
            e.as_event() for e in s.scalars(select(AuditEvent).order_by(AuditEvent.seq))
        ]

    db.create_schema()  # what Node() does at start

    assert current_revision(db) == head_revision()
    assert (
        _counts(db)
        == before
        == {
            "studies": 1,
            "instances": 2,
            "jobs": 2,
            "outbox": 2,
            "audit_events": 3,
        }
    )
    with db.session() as s:
        assert [e.as_event() for e in s.scalars(select(AuditEvent).order_by(AuditEvent.seq))] == (
            events_before
        )
        job = s.scalars(select(Job).where(Job.pipeline == "lung-ct")).one()
        assert (job.state, job.timings) == ("done", {"total": 1.5})
        # The new tables work.
        s.add(User(name="alice", roles=["admin"]))
        s.add(Feedback(kind="decision", study_instance_uid=STUDY, user="alice", decision="accept"))
    audit = DbAuditLog(db)
    assert audit.verify().ok
    audit.record("application.start", medvision_version="0.2.0")
    result = audit.verify()
    assert result.ok and result.count == 4
    assert _diff(db) == []
    db.dispose()


def test_upgrade_is_idempotent(db_url: str) -> None:
    db = Database(db_url)
    upgrade(db, "0001")
    _fill_0001(db)
    first = upgrade(db)
    assert first.startswith("upgraded from 0001")
    tables = sorted(inspect(db.engine).get_table_names())
    again = upgrade(db)
    assert again == f"at {head_revision()}"
    db.create_schema()
    assert sorted(inspect(db.engine).get_table_names()) == tables
    assert _counts(db)["audit_events"] == 3
    db.dispose()


def test_new_database_is_created_and_stamped(db_url: str) -> None:
    db = Database(db_url)
    assert upgrade(db).startswith("created the schema")
    assert current_revision(db) == head_revision()
    assert _diff(db) == []
    db.dispose()


def test_migrations_alone_agree_with_the_models(db_url: str) -> None:
    """`alembic check`: replaying every revision gives exactly the models' schema."""
    db = Database(db_url)
    upgrade(db, "0001")  # forces the revision-by-revision route, not create_all
    upgrade(db, "head")
    assert current_revision(db) == head_revision()
    assert _diff(db) == []
    db.dispose()


def test_pre_alembic_database_is_stamped_then_upgraded(db_url: str) -> None:
    """A database made by create_all before Alembic: tables, data, no alembic_version."""
    db = Database(db_url)
    upgrade(db, "0001")
    _fill_0001(db)
    with db.engine.begin() as conn:
        conn.execute(text("DROP TABLE alembic_version"))
    assert current_revision(db) is None
    db.create_schema()
    assert current_revision(db) == head_revision()
    assert _counts(db)["jobs"] == 2
    assert DbAuditLog(db).verify().ok
    assert _diff(db) == []
    db.dispose()


def test_pre_alembic_database_at_0002_is_stamped_0002(db_url: str) -> None:
    db = Database(db_url)
    upgrade(db, "0002")  # what create_all made between the API and Alembic...
    with db.engine.begin() as conn:
        conn.execute(text("DROP TABLE alembic_version"))  # ...without Alembic's table
        conn.execute(
            insert(User.__table__).values(
                name="bob",
                password_hash="",
                roles=["viewer"],
                disabled=False,
                created_at=datetime.now(UTC),
            )
        )
    db.create_schema()
    assert current_revision(db) == head_revision()
    with db.session() as s:
        assert s.scalars(select(User.name)).all() == ["bob"]
    db.dispose()


def test_cli_db_upgrade(db_url: str, capsys) -> None:
    db = Database(db_url)
    upgrade(db, "0001")
    _fill_0001(db)
    db.dispose()
    assert main(["db", "upgrade", "--db", db_url]) == 0
    assert "upgraded from 0001" in capsys.readouterr().out
    assert main(["db", "current", "--db", db_url]) == 0
    assert main(["db", "upgrade", "--db", db_url]) == 0
    assert capsys.readouterr().out.strip().endswith(f"at {head_revision()}")


def test_processes_creating_one_sqlite_schema_at_once_all_succeed(tmp_path: Path) -> None:
    """The prefork children of `medvision worker --concurrency N` on a SQLite file each bring
    the schema up at their first task, at the same moment: none may fail on "table already
    exists" or "duplicate column" (that child's first job would be lost)."""
    import subprocess
    import sys

    url = f"sqlite:///{tmp_path / 'medvision.db'}"
    go = tmp_path / "go"
    code = (
        "import os, sys, time\n"
        "from medvision.db import Database\n"
        f"while not os.path.exists({str(go)!r}): time.sleep(0.005)\n"
        f"Database({url!r}).create_schema()\n"
    )
    procs = [
        subprocess.Popen([sys.executable, "-c", code], stderr=subprocess.PIPE, text=True)
        for _ in range(6)
    ]
    time.sleep(3)  # all six imported and waiting
    go.touch()
    errors = [p.communicate(timeout=120)[1] for p in procs]
    assert [p.returncode for p in procs] == [0] * 6, "\n".join(errors)
    assert current_revision(Database(url)) == head_revision()
