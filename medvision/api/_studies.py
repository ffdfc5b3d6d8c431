"""Studies and jobs: what the node received and what it did with it.

Read-only views of the database, which is the single source of truth; the node's threads
write it and the API never changes job state behind their back. A study's detail is
patient data (its results are about one patient), so reading it is an ``api.read`` event;
the lists are operational views (UIDs and states) and are not audited one by one.

No ``from __future__ import annotations``: FastAPI resolves these annotations at runtime.
"""

from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any, TypeVar

from fastapi import APIRouter, Depends, HTTPException, Query, Request, Response
from sqlalchemy import Select, select

from medvision.api._schemas import DeliveryOut, JobOut, StudyDetail, StudyOut
from medvision.auth import Role
from medvision.db import Database, Job, Outbox, Study
from medvision.http_deps import DbDep, ReaderDep, require_roles

T = TypeVar("T")

#: Who may see studies and jobs: readers, QA, and the admin who runs the node.
READERS = (Role.RADIOLOGIST, Role.QA, Role.ADMIN)

#: One page of a list unless the client asks for another size: a node that has received
#: thousands of studies would otherwise build and send all of them on every poll (the soak
#: bench's ``GET /studies`` took up to 1.9 s with 755 studies while the node was receiving).
DEFAULT_PAGE = 100
MAX_PAGE = 1000

studies = APIRouter(prefix="/studies", tags=["studies"], dependencies=[require_roles(*READERS)])
jobs = APIRouter(prefix="/jobs", tags=["jobs"], dependencies=[require_roles(*READERS)])


@dataclass
class Page:
    """The page a list request asks for (``limit``, ``offset``), newest first.

    ``of`` answers with it and a ``Link: <...>; rel="next"`` header (RFC 8288, as GitHub's
    API pages) while there are more, so that a client needs no count query: the row after
    the page is fetched to know.
    """

    request: Request
    response: Response
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE, description="Rows per page.")] = DEFAULT_PAGE
    offset: Annotated[int, Query(ge=0, description="Rows to skip (the next page's).")] = 0

    def of(self, db: Database, query: Select, convert: Callable[[Any], T]) -> list[T]:
        with db.read() as session:
            rows = list(session.scalars(query.limit(self.limit + 1).offset(self.offset)))
            if len(rows) > self.limit:
                rows = rows[: self.limit]
                nxt = self.request.url.include_query_params(
                    limit=self.limit, offset=self.offset + self.limit
                )
                self.response.headers["Link"] = f'<{nxt}>; rel="next"'
            return [convert(r) for r in rows]


PageDep = Annotated[Page, Depends()]
StateQ = Annotated[str | None, Query()]


@studies.get("", response_model=list[StudyOut])
def list_studies(db: DbDep, page: PageDep, state: StateQ = None) -> list[StudyOut]:
    query = select(Study).order_by(Study.id.desc())
    if state:
        query = query.where(Study.state == state)
    return page.of(db, query, StudyOut.of)


@studies.get("/{study_uid}", response_model=StudyDetail)
def read_study(study_uid: str, reader: ReaderDep, db: DbDep) -> StudyDetail:
    with db.read() as session:
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
def list_jobs(db: DbDep, page: PageDep, state: StateQ = None) -> list[JobOut]:
    query = select(Job).order_by(Job.id.desc())
    if state:
        query = query.where(Job.state == state)
    return page.of(db, query, JobOut.of)


@jobs.get("/{job_id}", response_model=JobOut)
def read_job(job_id: int, db: DbDep) -> JobOut:
    with db.read() as session:
        row = session.get(Job, job_id)
        if row is None:
            raise HTTPException(404, f"Job {job_id} not found.")
        return JobOut.of(row)


__all__ = ["DEFAULT_PAGE", "MAX_PAGE", "READERS", "jobs", "studies"]
