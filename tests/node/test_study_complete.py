"""``complete`` is a real study state: receiving → complete → queued, each step committed.

The real assembler on a real database and a real spool holding the repository's sample
chest CT (which the lung-ct pipeline accepts); no workers run, so the states stay put
between the calls.
"""

from __future__ import annotations

import shutil
from datetime import timedelta
from pathlib import Path

from pydicom import dcmread
from sqlalchemy import select

from medvision.audit import DbAuditLog
from medvision.config import Settings
from medvision.db import Database, Instance, Job, Study, StudyState, utcnow
from medvision.node._assembler import _mark_complete, complete_quiet_studies
from medvision.node._ingest import Received, index_instances
from medvision.node._spool import StoredFile


def _setup(tmp_path: Path, sample_dir: Path) -> tuple[Settings, Database, DbAuditLog, str]:
    settings = Settings(data_dir=tmp_path, quiet_period_s=60, pipelines=["lung-ct"])
    db = Database(settings.db_url)
    db.create_schema()
    items = []
    uid = ""
    for src in sorted(sample_dir.glob("*.dcm")):
        ds = dcmread(src, stop_before_pixels=True)
        uid = str(ds.StudyInstanceUID)
        series, sop = str(ds.SeriesInstanceUID), str(ds.SOPInstanceUID)
        rel = f"{uid}/{series}/{sop}.dcm"
        (settings.spool_dir / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, settings.spool_dir / rel)
        item = Received(uid, series, sop, str(ds.SOPClassUID), "PACS1", "127.0.0.1")
        items.append((item, StoredFile(rel, src.stat().st_size, "0" * 64, created=True)))
    index_instances(db, items)
    _end_quiet_period(db)
    return settings, db, DbAuditLog(db), uid


def _end_quiet_period(db: Database) -> None:
    """As if the last instance had arrived two minutes ago (the quiet period is 60 s)."""
    with db.session() as session:
        study = session.scalars(select(Study)).one()
        study.last_received_at = utcnow() - timedelta(seconds=120)


def _state(db: Database, uid: str) -> tuple[str, int, int]:
    with db.session() as session:
        study = session.scalars(select(Study).where(Study.study_instance_uid == uid)).one()
        jobs = len(list(session.scalars(select(Job))))
        return study.state, study.version, jobs


def test_complete_is_a_committed_state_before_queued(tmp_path: Path, sample_dir: Path) -> None:
    settings, db, audit, uid = _setup(tmp_path, sample_dir)
    try:
        # Step 1 alone (what a crash right after it leaves behind): complete, no job yet.
        assert _mark_complete(uid, 1, settings, db)
        assert _state(db, uid) == (StudyState.COMPLETE, 1, 0)
        # The next pass (in this process or after a restart) queues it, exactly once.
        assert complete_quiet_studies(settings, db, audit) == [uid]
        assert _state(db, uid) == (StudyState.QUEUED, 1, 1)
        assert complete_quiet_studies(settings, db, audit) == []
        assert _state(db, uid) == (StudyState.QUEUED, 1, 1)
        events = [e for e in audit.events() if e["type"] == "study.complete"]
        assert len(events) == 1 and events[0]["pipelines"] == ["lung-ct"]
    finally:
        db.dispose()


def test_new_images_reopen_a_complete_study(tmp_path: Path, sample_dir: Path) -> None:
    settings, db, audit, uid = _setup(tmp_path, sample_dir)
    try:
        assert _mark_complete(uid, 1, settings, db)
        with db.session() as session:
            series = session.scalars(select(Study)).one().study_instance_uid + ".77"
        extra = Received(uid, series, f"{uid}.77.1", "1.2.840.10008.5.1.4.1.1.2", "PACS1", "")
        index_instances(db, [(extra, StoredFile(f"{uid}/{series}/x.dcm", 1, "0" * 64, True))])
        assert _state(db, uid) == (StudyState.RECEIVING, 2, 0)
        # Version 1 never gets jobs; version 2 waits for its own quiet period.
        assert complete_quiet_studies(settings, db, audit) == []
        assert _state(db, uid) == (StudyState.RECEIVING, 2, 0)
    finally:
        db.dispose()


def test_a_second_copy_restarts_the_quiet_period_but_does_not_reopen(
    tmp_path: Path, sample_dir: Path
) -> None:
    """A PACS retrying an association resends what it had sent before the instances it had
    not: while it resends, the study is still arriving and must not be completed."""
    settings, db, audit, uid = _setup(tmp_path, sample_dir)
    try:
        with db.session() as session:
            first = session.scalars(select(Instance)).first()
            assert first is not None
            copy = Received(uid, first.series_instance_uid, first.sop_instance_uid,
                            first.sop_class_uid, "PACS1", "127.0.0.1")  # fmt: skip
            stored = StoredFile(first.path, first.size, first.sha256, created=False)
        assert index_instances(db, [(copy, stored)]) == 0  # not a new instance ...
        assert complete_quiet_studies(settings, db, audit) == []  # ... but the study waits
        assert _state(db, uid) == (StudyState.RECEIVING, 1, 0)
        # Once complete, a copy changes nothing: no new version, no second job.
        _end_quiet_period(db)
        assert _mark_complete(uid, 1, settings, db)
        assert index_instances(db, [(copy, stored)]) == 0
        assert _state(db, uid) == (StudyState.COMPLETE, 1, 0)
        assert complete_quiet_studies(settings, db, audit) == [uid]
        assert _state(db, uid) == (StudyState.QUEUED, 1, 1)
    finally:
        db.dispose()
