"""Reviewer feedback: accept, reject or comment on a finding, and report missed lesions.

Radiologists give feedback; QA reads everyone's (a radiologist reads their own). Every
decision is stored (who, when, what, comment) and audited as ``review.decision`` or
``review.missed_lesion``; the audit event carries no comment text (free text may hold
PHI), only whether there was one. With ``resend_sr_on_reject`` a rejection also issues a
new SR version (see ``_review.py``). Reading feedback is an ``api.read`` event.

No ``from __future__ import annotations``: FastAPI resolves these annotations at runtime.
"""

import logging
from typing import Annotated

from fastapi import APIRouter, HTTPException, Query
from sqlalchemy import select

from medvision.api._results import job_results
from medvision.api._review import ReviewError, resend_rejected_sr
from medvision.api._schemas import Decision, DecisionIn, FeedbackOut, MissedLesionIn
from medvision.auth import CurrentUser, Role
from medvision.db import Feedback, Job, Study, utcnow
from medvision.http_deps import AuditDep, DbDep, ReaderDep, SettingsDep, require_roles

LOG = logging.getLogger("medvision.api")

router = APIRouter(tags=["feedback"], dependencies=[require_roles(Role.RADIOLOGIST, Role.QA)])
RadiologistDep = Annotated[CurrentUser, require_roles(Role.RADIOLOGIST)]


def _visible(query, user: CurrentUser):  # noqa: ANN001, ANN202 - sqlalchemy Select
    """QA sees all feedback; a radiologist sees their own."""
    return query if Role.QA in user.roles else query.where(Feedback.user == user.name)


@router.post("/findings/{job_id}/{finding_number}/feedback", status_code=201)
def give_decision(
    job_id: int,
    finding_number: int,
    body: DecisionIn,
    user: RadiologistDep,
    db: DbDep,
    audit: AuditDep,
    settings: SettingsDep,
) -> FeedbackOut:
    res = job_results(db, job_id)
    if finding_number not in res.finding_numbers():
        raise HTTPException(404, f"Job {job_id} has no finding {finding_number}.")
    with db.session() as session:
        row = Feedback(
            kind="decision",
            study_instance_uid=res.study_instance_uid,
            job_id=job_id,
            finding_number=finding_number,
            decision=body.decision.value,
            comment=body.comment,
            user=user.name,
        )
        session.add(row)
    extra: dict[str, object] = {}
    if body.decision is Decision.REJECT and settings.resend_sr_on_reject:
        try:
            reissued = resend_rejected_sr(db, settings, job_id, finding_number, utcnow())
        except (ReviewError, OSError) as err:
            LOG.error("could not re-issue the SR of job %s: %s", job_id, err)
            extra["sr_error"] = str(err)
        else:
            if reissued is not None:
                uid = reissued.sr_uid
                with db.session() as session:
                    stored = session.get(Feedback, row.id)
                    assert stored is not None
                    stored.sr_sop_instance_uid = uid
                row.sr_sop_instance_uid = uid
                extra["sr_sop_instance_uid"] = uid
                if reissued.planar_sr_uid is not None:
                    extra["planar_sr_sop_instance_uid"] = reissued.planar_sr_uid
    audit.record(
        "review.decision",
        study_instance_uid=res.study_instance_uid,
        user=user.name,
        job_id=job_id,
        finding_number=finding_number,
        decision=body.decision.value,
        has_comment=bool(body.comment),
        **extra,
    )
    return FeedbackOut.of(row)


@router.get("/findings/{job_id}/{finding_number}/feedback")
def read_decisions(
    job_id: int,
    finding_number: int,
    reader: ReaderDep,
    db: DbDep,
) -> list[FeedbackOut]:
    res = job_results(db, job_id)
    query = select(Feedback).where(
        Feedback.job_id == job_id, Feedback.finding_number == finding_number
    )
    with db.session() as session:
        rows = [FeedbackOut.of(f) for f in session.scalars(_visible(query, reader.user))]
    reader.record(res.study_instance_uid, job_id=job_id)
    return rows


def _study_exists(db: DbDep, study_uid: str, job_id: int | None) -> None:
    with db.session() as session:
        if session.scalar(select(Study.id).where(Study.study_instance_uid == study_uid)) is None:
            raise HTTPException(404, f"Study {study_uid} not found.")
        if job_id is not None:
            job = session.get(Job, job_id)
            if job is None or job.study_instance_uid != study_uid:
                raise HTTPException(404, f"Job {job_id} not found in study {study_uid}.")


@router.post("/studies/{study_uid}/missed-lesions", status_code=201)
def report_missed_lesion(
    study_uid: str, body: MissedLesionIn, user: RadiologistDep, db: DbDep, audit: AuditDep
) -> FeedbackOut:
    _study_exists(db, study_uid, body.job_id)
    with db.session() as session:
        row = Feedback(
            kind="missed_lesion",
            study_instance_uid=study_uid,
            job_id=body.job_id,
            location=body.location(),
            comment=body.comment,
            user=user.name,
        )
        session.add(row)
    audit.record(
        "review.missed_lesion",
        study_instance_uid=study_uid,
        user=user.name,
        job_id=body.job_id,
        feedback_id=row.id,
        location=body.location(),
        has_comment=bool(body.comment),
    )
    return FeedbackOut.of(row)


@router.get("/studies/{study_uid}/missed-lesions")
def read_missed_lesions(study_uid: str, reader: ReaderDep, db: DbDep) -> list[FeedbackOut]:
    _study_exists(db, study_uid, None)
    query = select(Feedback).where(
        Feedback.study_instance_uid == study_uid, Feedback.kind == "missed_lesion"
    )
    with db.session() as session:
        rows = [FeedbackOut.of(f) for f in session.scalars(_visible(query, reader.user))]
    reader.record(study_uid)
    return rows


@router.get("/feedback", dependencies=[require_roles(Role.QA)])
def all_feedback(
    reader: ReaderDep,
    db: DbDep,
    study: Annotated[str | None, Query()] = None,
    user: Annotated[str | None, Query()] = None,
    kind: Annotated[str | None, Query(pattern="^(decision|missed_lesion)$")] = None,
) -> list[FeedbackOut]:
    """Everyone's feedback, newest first (QA)."""
    query = select(Feedback).order_by(Feedback.id.desc())
    if study:
        query = query.where(Feedback.study_instance_uid == study)
    if user:
        query = query.where(Feedback.user == user)
    if kind:
        query = query.where(Feedback.kind == kind)
    with db.session() as session:
        rows = [FeedbackOut.of(f) for f in session.scalars(query)]
    reader.record(study, count=len(rows))
    return rows


__all__ = ["router"]
