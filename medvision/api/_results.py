"""A job's results: its findings (findings.json) and its SEG and SR files.

These are patient data, so every read is an ``api.read`` audit event naming the user,
the route and the study UID. The SR served is the latest version: after a reviewer's
rejection (``resend_sr_on_reject``) that is the one the PACS was sent.

No ``from __future__ import annotations``: FastAPI resolves these annotations at runtime.
"""

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastapi import APIRouter, HTTPException
from fastapi.responses import FileResponse
from sqlalchemy import select

from medvision.api._review import sr_versions
from medvision.auth import Role
from medvision.db import Database, Feedback, Job
from medvision.http_deps import DbDep, ReaderDep, require_roles

#: Who may read results: the readers and QA (an admin runs the node, not the reading).
RESULT_READERS = (Role.RADIOLOGIST, Role.QA)


@dataclass(frozen=True)
class JobResults:
    job_id: int
    study_instance_uid: str
    result_dir: Path

    def findings(self) -> dict[str, Any]:
        path = self.result_dir / "findings.json"
        try:
            return json.loads(path.read_text())
        except FileNotFoundError:
            raise HTTPException(404, f"Job {self.job_id} has no findings.json.") from None

    def finding_numbers(self) -> set[int]:
        return {int(f["number"]) for f in self.findings().get("findings", [])}


def job_results(db: Database, job_id: int, study_uid: str | None = None) -> JobResults:
    """The job's result folder, or 404 (unknown job, other study, no results yet)."""
    with db.read() as session:
        job = session.get(Job, job_id)
        if job is None or (study_uid is not None and job.study_instance_uid != study_uid):
            raise HTTPException(
                404, f"Job {job_id} not found" + (f" in study {study_uid}." if study_uid else ".")
            )
        if not job.result_dir:
            raise HTTPException(404, f"Job {job_id} has no results (state {job.state}).")
        return JobResults(job.id, job.study_instance_uid, Path(job.result_dir))


findings = APIRouter(
    prefix="/findings", tags=["findings"], dependencies=[require_roles(*RESULT_READERS)]
)
results = APIRouter(
    prefix="/studies/{study_uid}/results",
    tags=["results"],
    dependencies=[require_roles(*RESULT_READERS)],
)


@findings.get("/{job_id}")
def read_findings(job_id: int, reader: ReaderDep, db: DbDep) -> dict[str, Any]:
    """findings.json of the job, with ``reviews``: every decision on its findings."""
    res = job_results(db, job_id)
    doc = res.findings()
    with db.read() as session:
        rows = session.scalars(
            select(Feedback)
            .where(Feedback.job_id == job_id, Feedback.kind == "decision")
            .order_by(Feedback.id)
        )
        doc["reviews"] = [
            {
                "finding_number": f.finding_number,
                "decision": f.decision,
                "user": f.user,
                "at": f.created_at.isoformat(),
            }
            for f in rows
        ]
    reader.record(res.study_instance_uid, job_id=job_id)
    return doc


def _dicom(path: Path | None, what: str, job_id: int) -> Path:
    if path is None or not path.is_file():
        raise HTTPException(404, f"Job {job_id} has no {what}.")
    return path


@results.get("/{job_id}/seg", response_class=FileResponse)
def download_seg(study_uid: str, job_id: int, reader: ReaderDep, db: DbDep) -> FileResponse:
    """The DICOM SEG (404 when the job found nothing: then there is only an SR)."""
    res = job_results(db, job_id, study_uid)
    path = _dicom(res.result_dir / "seg.dcm", "SEG", job_id)
    reader.record(study_uid, job_id=job_id, object="seg")
    return FileResponse(path, media_type="application/dicom", filename=f"seg-{job_id}.dcm")


@results.get("/{job_id}/sr", response_class=FileResponse)
def download_sr(study_uid: str, job_id: int, reader: ReaderDep, db: DbDep) -> FileResponse:
    """The latest version of the TID 1500 SR."""
    res = job_results(db, job_id, study_uid)
    versions = sr_versions(res.result_dir) if res.result_dir.is_dir() else []
    path = _dicom(versions[-1] if versions else None, "SR", job_id)
    reader.record(study_uid, job_id=job_id, object="sr", version=len(versions))
    return FileResponse(path, media_type="application/dicom", filename=f"sr-{job_id}.dcm")


__all__ = ["RESULT_READERS", "JobResults", "findings", "job_results", "results"]
