"""Study assembly: a study is complete when no instance has arrived for a quiet period.

On completion the study gets one job per pipeline that accepts one of its series (decided
from the spooled headers); a study no pipeline accepts is marked failed with every
pipeline's reason, so that a user sees why nothing came back.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection
from datetime import timedelta

from sqlalchemy import select, update

from medvision import pipelines
from medvision.audit import DbAuditLog
from medvision.config import Settings
from medvision.db import Database, Job, JobState, Study, StudyState, utcnow
from medvision.dicom import scan
from medvision.errors import MedvisionError
from medvision.jobs._queue import as_utc

LOG = logging.getLogger("medvision.assembler")


def complete_quiet_studies(
    settings: Settings,
    db: Database,
    audit: DbAuditLog,
    busy: Collection[str] = frozenset(),
    publish: Callable[[list[int]], None] | None = None,
) -> list[str]:
    """Mark quiet studies complete and queue their jobs; returns the completed UIDs.

    ``publish`` (scale-out) is handed the new jobs' ids after they are committed, so a
    worker never gets a message for a row it cannot see yet.

    ``busy`` names studies with received instances not yet in the index (see
    :class:`~medvision.node._ingest.Indexer`): they are not quiet, whatever the clock says.
    """
    cutoff = utcnow() - timedelta(seconds=settings.quiet_period_s)
    with db.session() as session:
        candidates = [
            (s.study_instance_uid, s.version)
            for s in session.scalars(select(Study).where(Study.state == StudyState.RECEIVING))
            if as_utc(s.last_received_at) <= cutoff and s.study_instance_uid not in busy
        ]
    done = []
    for uid, version in candidates:
        if _complete(uid, version, settings, db, audit, publish):
            done.append(uid)
    return done


def _complete(
    uid: str,
    version: int,
    settings: Settings,
    db: Database,
    audit: DbAuditLog,
    publish: Callable[[list[int]], None] | None = None,
) -> bool:
    names = settings.pipelines or pipelines.available()
    accepted: list[str] = []
    reasons: list[str] = []
    try:
        studies = [s for s in scan(settings.spool_dir / uid) if s.study_instance_uid == uid]
    except MedvisionError as err:
        studies, reasons = [], [str(err)]
    for name in names:
        pipeline = pipelines.get(name)
        for study in studies:
            if pipeline.choose(list(study.series)) is not None:
                accepted.append(name)
            else:
                why = "; ".join(
                    f"series {s.series_number}: {pipeline.accepts(s).reason}" for s in study.series
                )
                reasons.append(f"{name}: {why}")
    with db.session() as session:
        study = session.scalar(select(Study).where(Study.study_instance_uid == uid))
        # New instances may have arrived while we looked: then it is not complete yet.
        if study is None or study.state != StudyState.RECEIVING or study.version != version:
            return False
        if as_utc(study.last_received_at) > utcnow() - timedelta(seconds=settings.quiet_period_s):
            return False
        study.completed_at = utcnow()
        new_jobs = [
            Job(
                study_instance_uid=uid,
                study_version=version,
                pipeline=name,
                state=JobState.QUEUED,
                published_at=utcnow() if publish is not None else None,
            )
            for name in accepted
        ]
        session.add_all(new_jobs)
        session.flush()
        job_ids = [j.id for j in new_jobs]
        if accepted:
            study.state = StudyState.QUEUED
            study.reason = ""
        else:
            study.state = StudyState.FAILED
            study.reason = "no series accepted: " + " | ".join(reasons)
        count = study.instance_count
    if publish is not None and job_ids:
        try:
            publish(job_ids)
        except Exception as err:  # broker away: the receiver's sweep publishes them later
            LOG.error("cannot publish jobs %s: %s", job_ids, err)
            with db.session() as session:  # due at the next sweep, not after the delay
                session.execute(update(Job).where(Job.id.in_(job_ids)).values(published_at=None))
    audit.record(
        "study.complete",
        study_instance_uid=uid,
        study_version=version,
        instances=count,
        pipelines=accepted,
    )
    if not accepted:
        audit.record(
            "study.refused",
            outcome="failure",
            study_instance_uid=uid,
            study_version=version,
            reason=" | ".join(reasons),
        )
    return True


__all__ = ["complete_quiet_studies"]
