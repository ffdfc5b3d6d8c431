"""The database side of scale-out (no broker needed): claiming one job by id, publishing
due jobs, requeueing the jobs of dead workers, and the claim fence that keeps a run whose
claim was taken away from delivering its results."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import select, update

from medvision.config import Modality, Settings
from medvision.db import Database, Job, JobState, Outbox, Worker, utcnow
from medvision.jobs._queue import claim_job, requeue_stale, take_due_for_publish
from medvision.jobs._worker import _finish
from medvision.node._ingest import index_instance
from tests.jobs.test_db import _item, _jobs, _make_job, _run_done, _settings


def test_claim_job_by_id_only_when_queued(db: Database) -> None:
    index_instance(db, *_item("2.1", "2.1.1.1"))
    a, b = _make_job(db, "2.1", 1), _make_job(db, "2.1", 2)
    job = claim_job(db, b, "w1:1")
    assert job is not None and (job.id, job.state, job.worker, job.attempts) == (
        b,
        JobState.RUNNING,
        "w1:1",
        1,
    )
    # A duplicate message for the same job, from any worker: nothing to do.
    assert claim_job(db, b, "w2:1") is None
    assert claim_job(db, 999, "w2:1") is None
    assert {j.id: j.state for j in _jobs(db)} == {a: JobState.QUEUED, b: JobState.RUNNING}


def test_publish_due_once_then_after_the_delay(db: Database) -> None:
    index_instance(db, *_item("2.2", "2.2.1.1"))
    a = _make_job(db, "2.2", 1)
    assert take_due_for_publish(db, 60) == [a]
    assert take_due_for_publish(db, 60) == []  # published just now
    with db.session() as s:
        s.execute(update(Job).values(published_at=utcnow() - timedelta(seconds=61)))
    assert take_due_for_publish(db, 60) == [a]  # lost message: published again
    claim_job(db, a, "w:1")
    with db.session() as s:
        s.execute(update(Job).values(published_at=utcnow() - timedelta(seconds=61)))
    assert take_due_for_publish(db, 60) == []  # claimed: never again


def test_no_republish_while_the_broker_holds_a_message_per_queued_job(db: Database) -> None:
    index_instance(db, *_item("2.5", "2.5.1.1"))
    a, b = _make_job(db, "2.5", 1), _make_job(db, "2.5", 2)
    assert take_due_for_publish(db, 60, messages_waiting=0) == [a, b]
    with db.session() as s:
        s.execute(update(Job).values(published_at=utcnow() - timedelta(seconds=61)))
    assert take_due_for_publish(db, 60, messages_waiting=2) == []  # both still waiting
    assert take_due_for_publish(db, 60, messages_waiting=1) == [a, b]  # one was lost


def test_receiver_role_needs_a_broker() -> None:
    with pytest.raises(ValueError, match="broker_url"):
        Settings(role="receiver")
    assert Settings(role="receiver", broker_url="amqp://localhost//").role == "receiver"


def test_requeue_stale_only_for_silent_workers(db: Database) -> None:
    index_instance(db, *_item("2.3", "2.3.1.1"))
    a, b = _make_job(db, "2.3", 1), _make_job(db, "2.3", 2)
    with db.session() as s:
        s.add(Worker(name="alive:1", host="h", pid=1))
        s.add(Worker(name="dead:2", host="h", pid=2, heartbeat_at=utcnow() - timedelta(hours=1)))
    claim_job(db, a, "alive:1")
    claim_job(db, b, "dead:2")
    assert requeue_stale(db, 30) == [b]
    jobs = {j.id: j for j in _jobs(db)}
    assert jobs[a].state == JobState.RUNNING
    assert jobs[b].state == JobState.QUEUED and "dead:2" in jobs[b].reason
    assert jobs[b].published_at is None  # the next sweep publishes it at once


def test_a_run_that_lost_its_claim_delivers_nothing(db: Database, tmp_path: Path) -> None:
    uid = "2.4"
    settings = _settings(
        tmp_path, modalities={"pacs": Modality(ae_title="PACS1", host="h", port=1)}
    )
    index_instance(db, *_item(uid, "2.4.1.1"))
    job_id = _make_job(db, uid)
    first = claim_job(db, job_id, "dead:2")
    with db.session() as s:  # taken for dead, requeued and claimed by another worker
        s.execute(update(Job).values(state=JobState.QUEUED))
    second = claim_job(db, job_id, "other:3")
    assert first is not None and second is not None
    _finish(first, _run_done(tmp_path, uid, "r1"), settings, db)  # the zombie finishes late
    with db.session() as s:
        assert list(s.scalars(select(Outbox))) == []
        assert s.get(Job, job_id).state == JobState.RUNNING
    _finish(second, _run_done(tmp_path, uid, "r2"), settings, db)
    with db.session() as s:
        assert len(list(s.scalars(select(Outbox)))) == 2
        assert s.get(Job, job_id).state == JobState.DONE
