"""The QA pages: the dashboard (a period summary with charts) and the report per study.

No ``from __future__ import annotations``: FastAPI resolves these annotations at runtime.
"""

from datetime import UTC, date, datetime, timedelta
from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse, Response

from medvision.auth import CurrentUser
from medvision.http_deps import AuditDep, DbDep
from medvision.reports import (
    StudyReport,
    build_period_summary,
    build_study_report,
    study_report_html,
    study_report_pdf,
    summary_charts,
)
from medvision.web._pages import QA_ROLES, page_reader, render

router = APIRouter(prefix="/qa", include_in_schema=False)

#: The dashboard's default period: the last 30 days, today included.
DEFAULT_DAYS = 30


def _period(since: date | None, until: date | None) -> tuple[date, date]:
    until = until or datetime.now(UTC).date()
    since = since or until - timedelta(days=DEFAULT_DAYS - 1)
    if since > until:
        since, until = until, since
    # A year at most per page: the per-day chart and the jobs table stay readable.
    return max(since, until - timedelta(days=366)), until


@router.get("")
def dashboard(
    request: Request,
    db: DbDep,
    audit: AuditDep,
    since: Annotated[date | None, Query()] = None,
    until: Annotated[date | None, Query()] = None,
) -> Response:
    reader = page_reader(request, db, audit, QA_ROLES)
    if isinstance(reader, Response):
        return reader
    start, end = _period(since, until)
    summary = build_period_summary(db, start, end)
    return render(
        request,
        "qa.html",
        s=summary,
        charts=summary_charts(summary),
        jobs=summary.jobs[:300],
    )


def _viewed_report(
    study_uid: str, request: Request, db: DbDep, audit: AuditDep
) -> tuple[CurrentUser, StudyReport] | Response:
    """(user, report) for a QA user, audited as a view; otherwise the page to answer with."""
    reader = page_reader(request, db, audit, QA_ROLES)
    if isinstance(reader, Response):
        return reader
    report = build_study_report(db, study_uid)
    if report is None:
        return render(
            request,
            "message.html",
            status=404,
            title="Study not found",
            text="The node has no study with this UID.",
        )
    reader.record(study_uid)
    return reader.user, report


@router.get("/studies/{study_uid}/report.html")
def report_html(study_uid: str, request: Request, db: DbDep, audit: AuditDep) -> Response:
    found = _viewed_report(study_uid, request, db, audit)
    if isinstance(found, Response):
        return found
    user, report = found
    return HTMLResponse(study_report_html(report, user.name), headers={"Cache-Control": "no-store"})


@router.get("/studies/{study_uid}/report.pdf")
def report_pdf(study_uid: str, request: Request, db: DbDep, audit: AuditDep) -> Response:
    found = _viewed_report(study_uid, request, db, audit)
    if isinstance(found, Response):
        return found
    user, report = found
    name = f"medvision-qa-{study_uid[-24:]}.pdf"
    return Response(
        study_report_pdf(report, user.name),
        media_type="application/pdf",
        headers={"Content-Disposition": f'inline; filename="{name}"', "Cache-Control": "no-store"},
    )


__all__ = ["router"]
