"""Everything QA needs to know about one study, gathered once from the database and files.

One :class:`StudyReport` feeds the HTML page, the PDF and the tests, so the three can never
disagree. It holds identifiers (UIDs), never patient names or IDs: a QA report is passed
around and archived like a log, and the PACS resolves the Study UID to the patient under
its own access control.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import func, select

from medvision.audit import DbAuditLog, Verification, head, verify_database
from medvision.db import Database, Feedback, Instance, Job, Outbox, Study


@dataclass(frozen=True)
class SeriesInput:
    series_instance_uid: str
    instances: int
    sop_class_uid: str
    analysed_by: tuple[str, ...]


@dataclass(frozen=True)
class JobReport:
    """One pipeline run on the study: model, findings, timings and where results went."""

    id: int
    pipeline: str
    state: str
    study_version: int
    attempts: int
    reason: str
    series_instance_uid: str | None
    created_at: datetime | None
    started_at: datetime | None
    finished_at: datetime | None
    timings: dict[str, Any]
    #: findings.json as written (None when the job wrote none, e.g. a failure).
    findings: dict[str, Any] | None
    deliveries: tuple[dict[str, Any], ...]

    @property
    def algorithm(self) -> dict[str, Any]:
        return (self.findings or {}).get("algorithm") or {}

    @property
    def quality_flags(self) -> list[str]:
        return list((self.findings or {}).get("quality_flags") or [])

    @property
    def finding_rows(self) -> list[dict[str, Any]]:
        return list((self.findings or {}).get("findings") or [])

    @property
    def processing_s(self) -> float | None:
        return _seconds(self.started_at, self.finished_at)

    @property
    def waiting_s(self) -> float | None:
        return _seconds(self.created_at, self.started_at)


@dataclass(frozen=True)
class StudyReport:
    study_instance_uid: str
    state: str
    version: int
    instances: int
    calling_aet: str
    first_received_at: datetime | None
    completed_at: datetime | None
    reason: str
    series: tuple[SeriesInput, ...]
    jobs: tuple[JobReport, ...]
    #: Reviewer decisions and missed-lesion marks, oldest first; "finding" is the tracking
    #: ID of the finding decided on ("Lesion 3"), empty for a missed-lesion mark.
    feedback: tuple[dict[str, Any], ...]
    #: The whole chain's check (DbAuditLog(db).verify(), batched), and its head to note down.
    audit: Verification
    audit_head_seq: int | None
    audit_head_hash: str
    #: This study's audit events (type, time, outcome), oldest first.
    audit_events: tuple[dict[str, Any], ...]
    generated_at: datetime = field(default_factory=lambda: datetime.now(UTC))


def _seconds(start: datetime | None, end: datetime | None) -> float | None:
    if start is None or end is None:
        return None
    return (_aware(end) - _aware(start)).total_seconds()


def _aware(value: datetime) -> datetime:
    """SQLite hands back naive datetimes for timezone-aware columns; they are UTC."""
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def read_findings(result_dir: str | None) -> dict[str, Any] | None:
    """findings.json of a job, or None when there is none or it is unreadable."""
    if not result_dir:
        return None
    path = Path(result_dir) / "findings.json"
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _finding_name(labels: dict[tuple[Any, Any], Any], job_id: Any, number: Any) -> str:
    """How a reviewer's decision names its finding: the tracking ID the viewer, the SEG and
    the SR show ("Lesion 3"), not the segment number, which no page displays."""
    if number is None:
        return ""
    return str(labels.get((job_id, number)) or f"segment {number}")


def build_study_report(db: Database, study_uid: str) -> StudyReport | None:
    """The report of ``study_uid``, or None when the node has never seen it."""
    with db.session() as session:
        study = session.scalar(select(Study).where(Study.study_instance_uid == study_uid))
        if study is None:
            return None
        counts = session.execute(
            select(Instance.series_instance_uid, Instance.sop_class_uid, func.count())
            .where(Instance.study_instance_uid == study_uid)
            .group_by(Instance.series_instance_uid, Instance.sop_class_uid)
        ).all()
        jobs = list(
            session.scalars(select(Job).where(Job.study_instance_uid == study_uid).order_by(Job.id))
        )
        outbox = list(
            session.scalars(
                select(Outbox).where(Outbox.study_instance_uid == study_uid).order_by(Outbox.id)
            )
        )
        feedback = [
            {
                "id": f.id,
                "kind": f.kind,
                "job_id": f.job_id,
                "finding_number": f.finding_number,
                "decision": f.decision,
                "comment": f.comment,
                "location": dict(f.location or {}),
                "user": f.user,
                "created_at": f.created_at,
            }
            for f in session.scalars(
                select(Feedback)
                .where(Feedback.study_instance_uid == study_uid)
                .order_by(Feedback.id)
            )
        ]
        by_job: dict[int, list[dict[str, Any]]] = {}
        for o in outbox:
            by_job.setdefault(o.job_id, []).append(
                {
                    "destination": o.destination,
                    "ae_title": o.ae_title,
                    "sop_class_uid": o.sop_class_uid,
                    "sop_instance_uid": o.sop_instance_uid,
                    "state": o.state,
                    "attempts": o.attempts,
                    "last_error": o.last_error,
                    "sent_at": o.sent_at,
                }
            )
        job_reports = tuple(
            JobReport(
                id=j.id,
                pipeline=j.pipeline,
                state=j.state,
                study_version=j.study_version,
                attempts=j.attempts,
                reason=j.reason,
                series_instance_uid=j.series_instance_uid,
                created_at=j.created_at,
                started_at=j.started_at,
                finished_at=j.finished_at,
                timings=dict(j.timings or {}),
                findings=read_findings(j.result_dir),
                deliveries=tuple(by_job.get(j.id, [])),
            )
            for j in jobs
        )
        series = tuple(
            SeriesInput(
                series_instance_uid=s_uid,
                instances=int(n),
                sop_class_uid=sop,
                analysed_by=tuple(j.pipeline for j in jobs if j.series_instance_uid == s_uid),
            )
            for s_uid, sop, n in sorted(counts)
        )
        info = {
            "state": study.state,
            "version": study.version,
            "instances": study.instance_count,
            "calling_aet": study.calling_aet,
            "first_received_at": study.first_received_at,
            "completed_at": study.completed_at,
            "reason": study.reason,
        }
    labels = {
        (j.id, f.get("number")): f.get("tracking_id") or f.get("label")
        for j in job_reports
        for f in j.finding_rows
    }
    for f in feedback:
        f["finding"] = _finding_name(labels, f["job_id"], f["finding_number"])
    events = tuple(
        {"seq": e["seq"], "time": e["time"], "type": e["type"], "outcome": e["outcome"]}
        for e in DbAuditLog(db).events(study_uid)
    )
    newest = head(db) or {}
    return StudyReport(
        study_instance_uid=study_uid,
        series=series,
        jobs=job_reports,
        feedback=tuple(feedback),
        audit=verify_database(db),
        audit_head_seq=newest.get("seq"),
        audit_head_hash=str(newest.get("hash", "")),
        audit_events=events,
        **info,
    )


__all__ = ["JobReport", "SeriesInput", "StudyReport", "build_study_report", "read_findings"]
