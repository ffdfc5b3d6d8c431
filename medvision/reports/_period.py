"""What the node did over a period: the numbers behind the QA dashboard and its summary.

Computed from the database rows (the single source of truth) and each done job's
findings.json; nothing is cached, so the dashboard is always current. The filters run in
SQL; the arithmetic (percentiles, acceptance) in Python, where it is easy to read and test.
"""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from medvision.db import Database, Feedback, Job, Outbox, Study
from medvision.reports._study import _aware, _seconds, read_findings

_UID = re.compile(r"\b\d+(?:\.\d+){3,}\b")
_NUMBER = re.compile(r"\b\d+(?:\.\d+)?\b")


#: States that end a study, a job or a delivery without results (strings, as in the tables).
FAILED_STATES = ("failed", "refused")


@dataclass(frozen=True)
class Failure:
    """One thing that went wrong for a study, at whichever stage it stopped.

    ``stage`` is "study" (refused or failed before any job existed, e.g. no series any
    pipeline accepts), "job" (a pipeline failed or refused) or "delivery" (a result
    could not be sent after every try). ``what`` names the pipeline or the destination.
    """

    study_instance_uid: str
    stage: str
    what: str
    state: str
    reason: str
    at: datetime | None


@dataclass(frozen=True)
class PeriodSummary:
    since: date
    until: date  # inclusive
    jobs: tuple[dict[str, Any], ...]
    jobs_by_state: dict[str, int]
    #: Every failure and refusal of the period, at any stage, newest first.
    failures: tuple[Failure, ...]
    #: The same, grouped by reason class (one count per failure, not per study).
    failures_by_reason: list[tuple[str, int]]
    #: seconds; keys p50, p90, p95, max, n — for processing and for complete → results.
    processing_s: dict[str, float]
    turnaround_s: dict[str, float]
    accepted: int
    rejected: int
    lesions_by_pipeline: dict[str, int]
    studies_by_pipeline: dict[str, int]
    missed_by_pipeline: dict[str, int]
    studies_per_day: list[tuple[date, int]]

    @property
    def failed_studies(self) -> int:
        """How many studies failed or were refused at some stage: what QA counts first."""
        return len({f.study_instance_uid for f in self.failures})

    @property
    def acceptance_rate(self) -> float | None:
        decided = self.accepted + self.rejected
        return self.accepted / decided if decided else None


def reason_class(reason: str) -> str:
    """A failure reason with UIDs and numbers masked, so equal causes group together."""
    text = _UID.sub("<uid>", reason.strip().splitlines()[0] if reason.strip() else "no reason")
    text = _NUMBER.sub("N", text)
    return text[:120]


def percentiles(values: list[float]) -> dict[str, float]:
    """p50/p90/p95/max by the nearest-rank method (exact values that occurred, no interpolation
    that would invent a latency nobody saw)."""
    if not values:
        return {"n": 0}
    ordered = sorted(values)

    def rank(p: float) -> float:
        index = max(0, min(len(ordered) - 1, int(-(-p * len(ordered) // 100)) - 1))
        return round(ordered[index], 3)

    return {
        "n": len(ordered),
        "p50": rank(50),
        "p90": rank(90),
        "p95": rank(95),
        "max": round(ordered[-1], 3),
    }


def _bounds(db: Database, since: date, until: date) -> tuple[datetime, datetime]:
    start = datetime.combine(since, time.min, tzinfo=UTC)
    end = datetime.combine(until + timedelta(days=1), time.min, tzinfo=UTC)
    if db.is_sqlite:  # stored as naive UTC text: compare like with like
        return start.replace(tzinfo=None), end.replace(tzinfo=None)
    return start, end


def _failures(session: Session, jobs: list[Job], studies: list[Study]) -> tuple[Failure, ...]:
    """Failures of the period's jobs and of their deliveries, and studies of the period
    that stopped before any job of their current version existed.

    A study stopped that early has no job row at all, so counting jobs alone misses it:
    the dashboard once said "Failed or refused 0" over three refused studies.
    """
    out: list[Failure] = []
    stopped = [s for s in studies if s.state in FAILED_STATES]
    with_jobs = set(
        session.execute(
            select(Job.study_instance_uid, Job.study_version).where(
                Job.study_instance_uid.in_(sorted({s.study_instance_uid for s in stopped}))
            )
        ).all()
    )
    for s in stopped:
        if (s.study_instance_uid, s.version) not in with_jobs:
            at = _utc(s.completed_at or s.last_received_at)
            out.append(Failure(s.study_instance_uid, "study", "", s.state, s.reason, at))
    for j in jobs:
        if j.state in FAILED_STATES:
            at = _utc(j.finished_at or j.created_at)
            out.append(Failure(j.study_instance_uid, "job", j.pipeline, j.state, j.reason, at))
    finished = {j.id: _utc(j.finished_at) for j in jobs}
    for o in session.scalars(
        select(Outbox)
        .where(Outbox.job_id.in_(sorted(finished)), Outbox.state.in_(FAILED_STATES))
        .order_by(Outbox.id)
    ):
        what, at = f"{o.destination} ({o.ae_title})", finished[o.job_id]
        out.append(Failure(o.study_instance_uid, "delivery", what, o.state, o.last_error, at))
    epoch = datetime.min.replace(tzinfo=UTC)
    return tuple(sorted(out, key=lambda f: f.at or epoch, reverse=True))


def _utc(value: datetime | None) -> datetime | None:
    return _aware(value) if value is not None else None


def build_period_summary(db: Database, since: date, until: date) -> PeriodSummary:
    """Jobs created, studies first received and feedback given from ``since`` to ``until``
    (both inclusive, UTC days)."""
    start, end = _bounds(db, since, until)
    with db.session() as session:
        jobs = list(
            session.scalars(
                select(Job)
                .where(Job.created_at >= start, Job.created_at < end)
                .order_by(Job.id.desc())
            )
        )
        studies = list(
            session.scalars(
                select(Study).where(Study.first_received_at >= start, Study.first_received_at < end)
            )
        )
        feedback = list(
            session.scalars(
                select(Feedback)
                .where(Feedback.created_at >= start, Feedback.created_at < end)
                .order_by(Feedback.id)
            )
        )
        completed = {
            s.study_instance_uid: s.completed_at
            for s in session.scalars(
                select(Study).where(
                    Study.study_instance_uid.in_(sorted({j.study_instance_uid for j in jobs}))
                )
            )
        }
        job_pipeline = {j.id: j.pipeline for j in jobs}
        missing = {f.job_id for f in feedback if f.job_id is not None} - set(job_pipeline)
        if missing:
            job_pipeline.update(
                dict(
                    session.execute(
                        select(Job.id, Job.pipeline).where(Job.id.in_(sorted(missing)))
                    ).all()
                )
            )
        failures = _failures(session, jobs, studies)
        study_pipelines: dict[str, set[str]] = defaultdict(set)
        for uid, name in session.execute(
            select(Job.study_instance_uid, Job.pipeline).where(
                Job.study_instance_uid.in_(sorted({f.study_instance_uid for f in feedback}))
            )
        ):
            study_pipelines[uid].add(name)

    rows = []
    processing, turnaround = [], []
    lesions: Counter[str] = Counter()
    analysed: Counter[str] = Counter()
    for j in jobs:
        took = _seconds(j.started_at, j.finished_at)
        rows.append(
            {
                "id": j.id,
                "study_instance_uid": j.study_instance_uid,
                "pipeline": j.pipeline,
                "state": j.state,
                "attempts": j.attempts,
                "created_at": _aware(j.created_at) if j.created_at else None,
                "processing_s": took,
                "reason": j.reason,
            }
        )
        if j.state != "done":
            continue
        if took is not None:
            processing.append(took)
        ready = _seconds(completed.get(j.study_instance_uid) or j.created_at, j.finished_at)
        if ready is not None and ready >= 0:
            turnaround.append(ready)
        analysed[j.pipeline] += 1
        doc = read_findings(j.result_dir) or {}
        lesions[j.pipeline] += sum(1 for f in doc.get("findings", []) if f.get("kind") == "lesion")

    by_reason = Counter(reason_class(f.reason) for f in failures)
    # The latest decision on each finding counts: a reviewer may change their mind.
    latest: dict[tuple[int | None, int | None, str], str] = {}
    missed: Counter[str] = Counter()
    for f in feedback:
        if f.kind == "missed_lesion":
            names = (
                {job_pipeline[f.job_id]}
                if f.job_id in job_pipeline
                else study_pipelines.get(f.study_instance_uid) or {"(no job)"}
            )
            for name in names:
                missed[name] += 1
        elif f.decision in ("accept", "reject"):
            latest[(f.job_id, f.finding_number, f.study_instance_uid)] = f.decision
    per_day = Counter(_aware(s.first_received_at).date() for s in studies)
    days = [since + timedelta(days=n) for n in range((until - since).days + 1)]
    return PeriodSummary(
        since=since,
        until=until,
        jobs=tuple(rows),
        jobs_by_state=dict(Counter(j.state for j in jobs)),
        failures=failures,
        failures_by_reason=by_reason.most_common(),
        processing_s=percentiles(processing),
        turnaround_s=percentiles(turnaround),
        accepted=sum(1 for d in latest.values() if d == "accept"),
        rejected=sum(1 for d in latest.values() if d == "reject"),
        lesions_by_pipeline=dict(lesions),
        studies_by_pipeline=dict(analysed),
        missed_by_pipeline=dict(missed),
        studies_per_day=[(d, per_day.get(d, 0)) for d in days],
    )


__all__ = [
    "FAILED_STATES",
    "Failure",
    "PeriodSummary",
    "build_period_summary",
    "percentiles",
    "reason_class",
]
