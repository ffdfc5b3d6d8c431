"""Studies and jobs: what the node received and what it did with it.

Read-only views of the database, which is the single source of truth; the node's threads
write it and the API never changes job state behind their back. A study's detail is
patient data (its results are about one patient), so reading it is an ``api.read`` event;
the lists are operational views (UIDs and states) and are not audited one by one.

No ``from __future__ import annotations``: FastAPI resolves these annotations at runtime.
"""

from typing import Annotated

from fastapi import APIRouter, HTTPException, Query
from sqlalchemy import select

from medvision.api._schemas import DeliveryOut, JobOut, StudyDetail, StudyOut
from medvision.auth import Role
from medvision.db import Job, Outbox, Study
from medvision.http_deps import DbDep, ReaderDep, require_roles

#: Who may see studies and jobs: readers, QA, and the admin who runs the node.
READERS = (Role.RADIOLOGIST, Role.QA, Role.ADMIN)

studies = APIRouter(prefix="/studies", tags=["studies"], dependencies=[require_roles(*READERS)])
jobs = APIRouter(prefix="/jobs", tags=["jobs"], dependencies=[require_roles(*READERS)])


@studies.get("", response_model=list[StudyOut])
def list_studies(db: DbDep, state: Annotated[str | None, Query()] = None) -> list[StudyOut]:
    query = select(Study).order_by(Study.id.desc())
    if state:
        query = query.where(Study.state == state)
    with db.session() as session:
        return [StudyOut.of(s) for s in session.scalars(query)]


@studies.get("/{study_uid}", response_model=StudyDetail)
def read_study(study_uid: str, reader: ReaderDep, db: DbDep) -> StudyDetail:
    with db.session() as session:
        s = session.scalar(select(Study).where(Study.study_instance_uid == study_uid))
        if s is None:
            raise HTTPException(404, f"Study {study_uid} not found.")
        job_rows = session.scalars(select(Job).where(Job.study_instance_uid == study_uid))
        outbox = session.scalars(select(Outbox).where(Outbox.study_instance_uid == study_uid))
        detail = StudyDetail(
            **StudyOut.of(s).model_dump(),
            jobs=[JobOut.of(j) for j in job_rows],
            deliveries=[DeliveryOut.model_validate(o, from_attributes=True) for o in outbox],
        )
    reader.record(study_uid)
    return detail


@jobs.get("", response_model=list[JobOut])
def list_jobs(db: DbDep, state: Annotated[str | None, Query()] = None) -> list[JobOut]:
    query = select(Job).order_by(Job.id.desc())
    if state:
        query = query.where(Job.state == state)
    with db.session() as session:
        return [JobOut.of(j) for j in session.scalars(query)]


@jobs.get("/{job_id}", response_model=JobOut)
def read_job(job_id: int, db: DbDep) -> JobOut:
    with db.session() as session:
        row = session.get(Job, job_id)
        if row is None:
            raise HTTPException(404, f"Job {job_id} not found.")
        return JobOut.of(row)


__all__ = ["READERS", "jobs", "studies"]
