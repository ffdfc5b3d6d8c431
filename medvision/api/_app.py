"""The node's REST API: what a PACS administrator or a script asks the node.

Read-only views of the database, which is the single source of truth; the node's threads
write it, the API never changes job state behind their back.

No ``from __future__ import annotations`` here: FastAPI resolves string annotations in the
module's globals, and ``SessionDep`` is local to :func:`create_app`, so with postponed
annotations every route took ``session`` for a required query parameter (HTTP 422).
"""

from datetime import datetime
from typing import Annotated, Any

from fastapi import Depends, FastAPI, HTTPException, Query
from pydantic import BaseModel
from sqlalchemy import select
from sqlalchemy.orm import Session

import medvision
from medvision.api._auth import router as auth_router
from medvision.audit import DbAuditLog
from medvision.config import Settings, load_settings
from medvision.db import Database, Job, Outbox, Study


class StudyOut(BaseModel):
    study_instance_uid: str
    state: str
    version: int
    instances: int
    calling_aet: str
    first_received_at: datetime
    last_received_at: datetime
    completed_at: datetime | None
    reason: str


class JobOut(BaseModel):
    id: int
    study_instance_uid: str
    study_version: int
    pipeline: str
    state: str
    attempts: int
    reason: str
    series_instance_uid: str | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    timings: dict[str, Any]


class DeliveryOut(BaseModel):
    destination: str
    ae_title: str
    sop_instance_uid: str
    sop_class_uid: str
    state: str
    attempts: int
    last_error: str
    sent_at: datetime | None


def _study_out(s: Study) -> StudyOut:
    return StudyOut(
        study_instance_uid=s.study_instance_uid,
        state=s.state,
        version=s.version,
        instances=s.instance_count,
        calling_aet=s.calling_aet,
        first_received_at=s.first_received_at,
        last_received_at=s.last_received_at,
        completed_at=s.completed_at,
        reason=s.reason,
    )


def _job_out(j: Job) -> JobOut:
    return JobOut.model_validate(j, from_attributes=True)


def create_app(db: Database, settings: Settings | None = None) -> FastAPI:
    app = FastAPI(
        title="medvision",
        version=medvision.__version__,
        description="DICOM AI node: studies, jobs and deliveries.",
    )
    app.state.db = db
    app.state.settings = settings or load_settings()
    app.state.audit = DbAuditLog(db)
    app.include_router(auth_router)

    def get_session() -> Any:
        with db.session() as session:
            yield session

    SessionDep = Annotated[Session, Depends(get_session)]

    @app.get("/health")
    def health(session: SessionDep) -> dict[str, str]:
        session.execute(select(1))
        return {"status": "ok", "version": medvision.__version__}

    @app.get("/studies", response_model=list[StudyOut])
    def studies(
        session: SessionDep, state: Annotated[str | None, Query()] = None
    ) -> list[StudyOut]:
        query = select(Study).order_by(Study.id.desc())
        if state:
            query = query.where(Study.state == state)
        return [_study_out(s) for s in session.scalars(query)]

    @app.get("/studies/{study_uid}")
    def study(study_uid: str, session: SessionDep) -> dict[str, Any]:
        s = session.scalar(select(Study).where(Study.study_instance_uid == study_uid))
        if s is None:
            raise HTTPException(404, f"Study {study_uid} not found.")
        jobs = session.scalars(select(Job).where(Job.study_instance_uid == study_uid))
        outbox = session.scalars(select(Outbox).where(Outbox.study_instance_uid == study_uid))
        return {
            **_study_out(s).model_dump(mode="json"),
            "jobs": [_job_out(j).model_dump(mode="json") for j in jobs],
            "deliveries": [
                DeliveryOut.model_validate(o, from_attributes=True).model_dump(mode="json")
                for o in outbox
            ],
        }

    @app.get("/jobs", response_model=list[JobOut])
    def jobs(session: SessionDep, state: Annotated[str | None, Query()] = None) -> list[JobOut]:
        query = select(Job).order_by(Job.id.desc())
        if state:
            query = query.where(Job.state == state)
        return [_job_out(j) for j in session.scalars(query)]

    return app


__all__ = ["create_app"]
