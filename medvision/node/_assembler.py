"""Study assembly: a study is complete when no instance has arrived for a quiet period.

Two steps, each its own transaction, so that ``complete`` is a state one can see (in
``GET /studies`` and ``medvision status``) and not only an audit event:

1. ``receiving → complete``: the quiet period is over and none of its instances is still
   on its way into the index.
2. ``complete → queued``: one job per pipeline that accepts one of its series (decided from
   the spooled headers, which can take a while for a large study); a study no pipeline
   accepts goes to ``failed`` with the reason of each pipeline that refused it (or, when
   none applies, each rule that ruled it out: the same :class:`~medvision.pipelines.Selection`
   words as ``medvision run``), so that a user sees why nothing came back. Pipelines made
   for another modality or body part stay out of the reason.

Jobs are created only in the transaction that moves the study out of ``complete``, and only
if it is still ``complete`` at the version that was examined, so a study gets its jobs
exactly once per version. A crash between the steps leaves it ``complete``; the next pass
(after a restart too) takes it on from there. New images for a ``complete`` study re-open
it (version + 1, ``receiving``) like any finished study, and step 2 then leaves it alone.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection
from datetime import timedelta

from sqlalchemy import select, update

from medvision import pipelines
from medvision.audit import DbAuditLog
from medvision.config import Settings
from medvision.db import Database, Job, Study, StudyState, as_utc, utcnow
from medvision.dicom import scan
from medvision.errors import MedvisionError
from medvision.lifecycle import lock_study, new_job, transition_study

LOG = logging.getLogger("medvision.assembler")


def complete_quiet_studies(
    settings: Settings,
    db: Database,
    audit: DbAuditLog,
    busy: Collection[str] = frozenset(),
    publish: Callable[[list[int]], None] | None = None,
) -> list[str]:
    """Mark quiet studies complete, then queue the jobs of every complete study.

    Returns the UIDs that changed state in this pass (completed, queued or failed); a study
    left ``complete`` by an earlier pass or process is queued here too.

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
    done: list[str] = []
    for uid, version in candidates:
        if _mark_complete(uid, version, settings, db):
            done.append(uid)
    with db.session() as session:
        complete = [
            (s.study_instance_uid, s.version)
            for s in session.scalars(select(Study).where(Study.state == StudyState.COMPLETE))
        ]
    for uid, version in complete:
        try:
            queued = _queue_jobs(uid, version, settings, db, audit, publish)
        except Exception as err:  # one study's failure must not hold up the ones after it
            LOG.error("cannot queue the jobs of study %s: %s: %s", uid, type(err).__name__, err)
            continue
        if queued and uid not in done:
            done.append(uid)
    return done


def _mark_complete(uid: str, version: int, settings: Settings, db: Database) -> bool:
    """``receiving → complete`` if nothing arrived meanwhile (same version, still quiet)."""
    # Locked (immediate, FOR UPDATE) against an acceptor process indexing into the study at
    # the same moment: it either commits first, and the study is not quiet any more, or
    # waits and re-opens the study as a new version.
    with db.session(immediate=True) as session:
        study = lock_study(session, uid)
        if study is None or study.state != StudyState.RECEIVING or study.version != version:
            return False
        if as_utc(study.last_received_at) > utcnow() - timedelta(seconds=settings.quiet_period_s):
            return False
        return transition_study(
            session, study, StudyState.COMPLETE, completed_at=utcnow(), reason=""
        )


def _queue_jobs(
    uid: str,
    version: int,
    settings: Settings,
    db: Database,
    audit: DbAuditLog,
    publish: Callable[[list[int]], None] | None = None,
) -> bool:
    """``complete → queued`` (or ``failed``), creating the jobs in the same transaction."""
    names = settings.pipelines or pipelines.available()
    accepted: list[str] = []
    refused: list[str] = []  # applicable pipelines that cannot analyse the study
    not_applicable: list[str] = []
    try:
        studies = [s for s in scan(settings.spool_dir / uid) if s.study_instance_uid == uid]
    except MedvisionError as err:
        studies, refused = [], [str(err)]
    for name in names:
        pipeline = pipelines.get(name)
        for study in studies:
            selection = pipeline.select(study.series)
            if selection.chosen is not None:
                accepted.append(name)
            elif selection.applicable:
                refused.append(selection.reason)
            else:
                not_applicable.append(selection.reason)
    with db.session(immediate=True) as session:
        study = lock_study(session, uid)
        # New instances may have re-opened it while we looked: then its jobs wait for the
        # new version's quiet period.
        if study is None or study.state != StudyState.COMPLETE or study.version != version:
            return False
        new_jobs = [
            new_job(
                study_instance_uid=uid,
                study_version=version,
                pipeline=name,
                published_at=utcnow() if publish is not None else None,
            )
            for name in accepted
        ]
        session.add_all(new_jobs)
        session.flush()
        job_ids = [j.id for j in new_jobs]
        if accepted:
            study_reason = ""
        else:
            study_reason = "; ".join(refused) if refused else _none_applies(not_applicable)
        transition_study(
            session,
            study,
            StudyState.QUEUED if accepted else StudyState.FAILED,
            narrow=[StudyState.COMPLETE],
            reason=study_reason,
        )
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
            reason=study_reason,
        )
    return True


def _none_applies(reasons: list[str]) -> str:
    return "no pipeline applies: " + "; ".join(reasons) if reasons else "no pipeline applies"


__all__ = ["complete_quiet_studies"]
