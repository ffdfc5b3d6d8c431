"""The receiver's sweep when the broker or the database is away, on the real things: a
Celery publisher pointed at a port nobody listens on, and a throw-away PostgreSQL cluster
that is stopped and started again (SQLite where PostgreSQL is not installed and the test
needs no restart).

1. A sweep that cannot publish leaves the job due, so the first sweep after the broker is
   back publishes it, instead of waiting ``republish_after_s`` for a message it never sent.
2. After a database outage, workers are not taken for dead (and their jobs not run a
   second time) until the database has been back for ``worker_stale_s``: they could not
   write their heartbeats either.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import select, update

from medvision.db import Database, Job, JobState, Worker, utcnow
from medvision.jobs._celery import Publisher, Sweeper
from medvision.jobs._queue import claim_job
from medvision.node._ingest import index_instance
from tests.jobs.test_db import _item, _make_job, _settings
from tests.node.peers import free_port
from tests.scale import postgres


@pytest.fixture
def pg() -> Iterator[postgres.PostgreSQL]:
    if not postgres.available():
        pytest.skip("PostgreSQL is not installed")
    cluster = postgres.PostgreSQL().start()
    try:
        yield cluster
    finally:
        cluster.destroy()


def _job(db: Database, uid: str) -> Job:
    with db.session() as s:
        return s.scalars(select(Job).where(Job.study_instance_uid == uid)).one()


def test_a_sweep_without_broker_leaves_the_job_due(tmp_path: Path) -> None:
    db = Database(f"sqlite:///{tmp_path / 'medvision.db'}")
    db.create_schema()
    publisher = Publisher(f"amqp://guest:guest@127.0.0.1:{free_port()}//")
    try:
        index_instance(db, *_item("3.1", "3.1.1.1"))
        _make_job(db, "3.1")
        sweeper = Sweeper(_settings(tmp_path, republish_after_s=3600), db, publisher)
        assert sweeper.sweep() == []  # nothing could be published
        assert _job(db, "3.1").published_at is None  # so the next sweep tries again
    finally:
        publisher.close()
        db.dispose()


def test_no_worker_taken_for_dead_right_after_a_database_outage(
    pg: postgres.PostgreSQL, tmp_path: Path
) -> None:
    db = Database(pg.url)
    db.create_schema()
    # Nothing to publish in this test; the broker is not needed (its depth reads as unknown).
    publisher = Publisher(f"amqp://guest:guest@127.0.0.1:{free_port()}//")
    try:
        index_instance(db, *_item("3.2", "3.2.1.1"))
        job_id = _make_job(db, "3.2")
        assert claim_job(db, job_id, "w:1") is not None
        with db.session() as s:
            s.add(Worker(name="w:1", host="h", pid=1, state="busy", current_job_id=job_id))
        sweeper = Sweeper(_settings(tmp_path, worker_stale_s=2.0), db, publisher)
        sweeper.sweep()
        assert _job(db, "3.2").state == JobState.RUNNING  # its worker reports

        pg.stop()
        with pytest.raises(Exception, match="(?i)connect|terminat|closed"):
            sweeper.sweep()
        pg.start()
        # The outage outlasted worker_stale_s: the heartbeat is as old as a dead worker's.
        with db.session() as s:
            s.execute(update(Worker).values(heartbeat_at=utcnow() - timedelta(seconds=5)))
        sweeper.sweep()
        assert _job(db, "3.2").state == JobState.RUNNING  # not judged on the outage
        time.sleep(2.1)  # silent for worker_stale_s with the database up: dead
        sweeper.sweep()
        job = _job(db, "3.2")
        assert (job.state, job.published_at) == (JobState.QUEUED, None)
    finally:
        publisher.close()
        db.dispose()
