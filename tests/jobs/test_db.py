"""Queue, ingest and audit on a real database (SQLite, and PostgreSQL in CI)."""

from __future__ import annotations

import threading
from datetime import timedelta
from pathlib import Path

from sqlalchemy import select

from medvision.audit import DbAuditLog
from medvision.config import Modality, Settings
from medvision.db import Database, Instance, Job, JobState, Outbox, OutboxState, Study, utcnow
from medvision.jobs import MAX_ATTEMPTS, claim_next, recover_orphans
from medvision.jobs._worker import _finish
from medvision.lifecycle import refresh_study_state
from medvision.node._assembler import complete_quiet_studies
from medvision.node._ingest import Indexer, Received, index_instance, index_instances
from medvision.node._spool import StoredFile
from medvision.results import ResultFiles
from medvision.runner import PipelineRun

CT = "1.2.840.10008.5.1.4.1.1.2"
SEG = "1.2.840.10008.5.1.4.1.1.66.4"
PACS = {"pacs": Modality(ae_title="PACS1", host="127.0.0.1", port=1)}


def _item(study: str, sop: str, cls: str = CT, aet: str = "PACS1") -> tuple[Received, StoredFile]:
    return (
        Received(study, f"{study}.1", sop, cls, aet, "127.0.0.1"),
        StoredFile(f"{study}/{study}.1/{sop}.dcm", 10, "0" * 64, created=True),
    )


def _study(db: Database, uid: str) -> Study:
    with db.session() as session:
        return session.scalars(select(Study).where(Study.study_instance_uid == uid)).one()


def _jobs(db: Database) -> list[Job]:
    with db.session() as session:
        return list(session.scalars(select(Job).order_by(Job.id)))


def test_index_counts_each_instance_once(db: Database) -> None:
    assert index_instances(db, [_item("1.2.3", "1.2.3.1.1"), _item("1.2.3", "1.2.3.1.2")]) == 2
    # A second copy, in the same batch and in a later one: stored once.
    assert index_instances(db, [_item("1.2.3", "1.2.3.1.3"), _item("1.2.3", "1.2.3.1.3")]) == 1
    assert not index_instance(db, *_item("1.2.3", "1.2.3.1.1"))
    study = _study(db, "1.2.3")
    assert (study.state, study.version, study.instance_count) == ("receiving", 1, 3)
    with db.session() as session:
        assert len(list(session.scalars(select(Instance)))) == 3


def test_indexer_thread_batches_and_reports_pending(db: Database) -> None:
    indexer = Indexer(db, batch_size=7)
    indexer.start()
    try:
        for n in range(50):
            indexer.put(*_item("1.2.4", f"1.2.4.1.{n}"))
        assert indexer.flush(30)
        assert indexer.pending() == set()
    finally:
        indexer.stop()
    assert _study(db, "1.2.4").instance_count == 50


def _settings(tmp_path: Path, **kw: object) -> Settings:
    return Settings(data_dir=tmp_path, quiet_period_s=0.01, pipelines=["lung-ct"], **kw)


def _make_job(db: Database, uid: str, version: int = 1, state: str = JobState.QUEUED) -> int:
    with db.session() as session:
        job = Job(study_instance_uid=uid, study_version=version, pipeline="lung-ct", state=state)
        session.add(job)
        session.flush()
        study = session.scalars(select(Study).where(Study.study_instance_uid == uid)).one()
        study.state = "queued"
        return job.id


def test_claim_is_exclusive_across_threads(db: Database) -> None:
    index_instance(db, *_item("1.2.5", "1.2.5.1.1"))
    ids = [_make_job(db, "1.2.5", v) for v in (1, 2, 3)]
    # The study's current version is 1; only the claim matters here.
    claimed: list[int] = []
    lock = threading.Lock()

    def worker(name: str) -> None:
        while (job := claim_next(db, name)) is not None:
            with lock:
                claimed.append(job.id)

    threads = [threading.Thread(target=worker, args=(f"w{n}",)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(claimed) == ids  # each job claimed by exactly one worker
    assert {j.state for j in _jobs(db)} == {JobState.RUNNING}
    assert {j.attempts for j in _jobs(db)} == {1}


def test_recover_orphans_requeues_then_gives_up(db: Database) -> None:
    index_instance(db, *_item("1.2.6", "1.2.6.1.1"))
    _make_job(db, "1.2.6")
    for attempt in range(1, MAX_ATTEMPTS + 1):
        job = claim_next(db, "dead:1")
        assert job is not None and job.attempts == attempt
        assert _study(db, "1.2.6").state == "running"
        assert recover_orphans(db) == 1
    (job,) = _jobs(db)
    assert job.state == JobState.FAILED and "interrupted" in job.reason
    study = _study(db, "1.2.6")
    assert study.state == "failed" and "interrupted" in study.reason


def _run_done(tmp_path: Path, uid: str, name: str) -> PipelineRun:
    out = tmp_path / name
    out.mkdir()
    files = ResultFiles(
        seg_path=out / "seg.dcm",
        sr_path=out / "sr.dcm",
        json_path=out / "findings.json",
        seg_sop_instance_uid=f"{uid}.99.1",
        sr_sop_instance_uid=f"{uid}.99.2",
        seg_series_instance_uid=f"{uid}.98.1",
        sr_series_instance_uid=f"{uid}.98.2",
    )
    return PipelineRun("lung-ct", uid, "done", series_instance_uid=f"{uid}.1", files=files)


def test_state_machine_done_sent_send_failed(db: Database, tmp_path: Path) -> None:
    uid = "1.2.7"
    settings = _settings(
        tmp_path, modalities={"pacs": Modality(ae_title="PACS1", host="h", port=1)}
    )
    index_instance(db, *_item(uid, "1.2.7.1.1"))
    _make_job(db, uid)
    job = claim_next(db, "w")
    assert job is not None and _study(db, uid).state == "running"
    _finish(job, _run_done(tmp_path, uid, "r1"), settings, db)
    assert _study(db, uid).state == "done"  # results queued, not yet tried
    with db.session() as session:
        rows = list(session.scalars(select(Outbox)))
        assert {(r.destination, r.ae_title, r.state) for r in rows} == {
            ("pacs", "PACS1", "pending")
        }
        assert len(rows) == 2
        rows[0].attempts, rows[0].last_error = 1, "cannot associate"
    assert refresh_study_state(db, uid) == "send-failed"
    assert _study(db, uid).reason == "cannot associate"
    with db.session() as session:
        for r in session.scalars(select(Outbox)):
            r.state = OutboxState.SENT
    assert refresh_study_state(db, uid) == "sent"


def test_late_instances_start_a_new_version(db: Database, tmp_path: Path) -> None:
    """A study re-opened by new images: queued jobs superseded, old results not sent."""
    uid = "1.2.8"
    settings = _settings(
        tmp_path, modalities={"pacs": Modality(ae_title="PACS1", host="h", port=1)}
    )
    index_instance(db, *_item(uid, "1.2.8.1.1"))
    _make_job(db, uid)
    running = claim_next(db, "w")
    assert running is not None
    # A new image arrives while v1 runs: version 2, receiving again.
    assert index_instance(db, *_item(uid, "1.2.8.1.2"))
    study = _study(db, uid)
    assert (study.state, study.version, study.instance_count) == ("receiving", 2, 2)
    # Our own SEG coming back from the PACS does not re-open anything.
    assert index_instance(db, *_item(uid, "1.2.8.1.3", cls=SEG))
    assert _study(db, uid).version == 2
    # v1 finishes after the change: superseded, and nothing goes to the outbox.
    _finish(running, _run_done(tmp_path, uid, "r1"), settings, db)
    (old,) = _jobs(db)
    assert old.state == JobState.SUPERSEDED and "version 2" in old.reason
    with db.session() as session:
        assert list(session.scalars(select(Outbox))) == []
    # v2's job, once done, is the only delivery.
    v2 = _make_job(db, uid, version=2)
    job = claim_next(db, "w")
    assert job is not None and job.id == v2
    _finish(job, _run_done(tmp_path, uid, "r2"), settings, db)
    with db.session() as session:
        assert {r.job_id for r in session.scalars(select(Outbox))} == {v2}
    assert _study(db, uid).state == "done"


def test_new_version_supersedes_undelivered_results(db: Database, tmp_path: Path) -> None:
    uid = "1.2.9"
    settings = _settings(
        tmp_path, modalities={"pacs": Modality(ae_title="PACS1", host="h", port=1)}
    )
    index_instance(db, *_item(uid, "1.2.9.1.1"))
    _make_job(db, uid)
    job = claim_next(db, "w")
    assert job is not None
    _finish(job, _run_done(tmp_path, uid, "r1"), settings, db)  # v1 results pending
    index_instance(db, *_item(uid, "1.2.9.1.2"))  # re-opened as v2
    _make_job(db, uid, version=2)
    job2 = claim_next(db, "w")
    assert job2 is not None
    _finish(job2, _run_done(tmp_path, uid, "r2"), settings, db)
    with db.session() as session:
        states = {(r.job_id, r.state) for r in session.scalars(select(Outbox))}
    assert states == {(job.id, "superseded"), (job2.id, "pending")}


def test_assembler_waits_for_quiet_period_and_indexer(db: Database, tmp_path: Path) -> None:
    """Completion needs the quiet period, and no instance of the study still being indexed."""
    audit = DbAuditLog(db)
    uid = "1.2.10"
    settings = Settings(data_dir=tmp_path, quiet_period_s=60, pipelines=["lung-ct"])
    index_instance(db, *_item(uid, "1.2.10.1.1"))
    assert complete_quiet_studies(settings, db, audit) == []
    with db.session() as session:
        study = session.scalars(select(Study)).one()
        study.last_received_at = utcnow() - timedelta(seconds=120)
    assert complete_quiet_studies(settings, db, audit, busy={uid}) == []
    # Quiet now; the spool folder holds no image, so no pipeline accepts it: failed, with why.
    assert complete_quiet_studies(settings, db, audit) == [uid]
    study = _study(db, uid)
    assert study.state == "failed" and study.reason.startswith("No DICOM found")
    types = [e["type"] for e in audit.events()]
    assert types == ["study.complete", "study.refused"]
    assert audit.verify().ok


def test_audit_chain_from_threads(db: Database) -> None:
    """Many writers at once (threads here; acceptor processes and receivers in a node):
    every event is appended, none is lost to contention for the next seq."""
    audit = DbAuditLog(db)
    errors: list[BaseException] = []

    def write(n: int) -> None:
        try:
            for k in range(20):
                audit.record("test.event", study_instance_uid=f"1.2.{n}", n=k)
        except BaseException as err:  # a lost event: reported below, not only on stderr
            errors.append(err)

    threads = [threading.Thread(target=write, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    events = audit.events()
    assert [e["seq"] for e in events] == list(range(160))
    assert audit.verify().ok
    assert len(audit.events("1.2.0")) == 20
