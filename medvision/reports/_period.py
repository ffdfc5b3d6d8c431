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

from medvision.db import Database, Feedback, Job, Study
from medvision.reports._study import _aware, _seconds, read_findings

_UID = re.compile(r"\b\d+(?:\.\d+){3,}\b")
_NUMBER = re.compile(r"\b\d+(?:\.\d+)?\b")


@dataclass(frozen=True)
class PeriodSummary:
    since: date
    until: date  # inclusive
    jobs: tuple[dict[str, Any], ...]
    jobs_by_state: dict[str, int]
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

    failures = Counter(reason_class(j.reason) for j in jobs if j.state in ("failed", "refused"))
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
        failures_by_reason=failures.most_common(),
        processing_s=percentiles(processing),
        turnaround_s=percentiles(turnaround),
        accepted=sum(1 for d in latest.values() if d == "accept"),
        rejected=sum(1 for d in latest.values() if d == "reject"),
        lesions_by_pipeline=dict(lesions),
        studies_by_pipeline=dict(analysed),
        missed_by_pipeline=dict(missed),
        studies_per_day=[(d, per_day.get(d, 0)) for d in days],
    )


__all__ = ["PeriodSummary", "build_period_summary", "percentiles", "reason_class"]
