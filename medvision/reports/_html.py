"""HTML for the QA report and the period summary (Jinja2, autoescaped).

The study report is one self-contained page (inline CSS, no script, no external file), so
a QA officer can save it, attach it to a ticket or archive it and it still reads the same.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from jinja2 import Environment, PackageLoader, select_autoescape

from medvision.findings import key_slice_number, slice_number
from medvision.reports._period import PeriodSummary
from medvision.reports._study import StudyReport
from medvision.reports._svg import column_chart, hbar_chart


def when(value: Any) -> str:
    """A UTC timestamp to the second, the way the audit trail writes them."""
    if value is None or value == "":
        return "—"
    if isinstance(value, str):
        return value
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def secs(value: float | None) -> str:
    return "—" if value is None else f"{value:.1f} s"


def num(value: Any, digits: int = 1) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def environment() -> Environment:
    env = Environment(
        loader=PackageLoader("medvision.reports", "templates"),
        autoescape=select_autoescape(["html"]),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(when=when, secs=secs, num=num)
    # One slice numbering on every page (medvision.findings._slices).
    env.globals.update(key_slice_number=key_slice_number, slice_number=slice_number)
    return env


_ENV = environment()


def study_report_html(report: StudyReport, user: str = "") -> str:
    return _ENV.get_template("study_report.html").render(r=report, user=user, now=datetime.now(UTC))


def summary_charts(summary: PeriodSummary) -> dict[str, str]:
    """The dashboard's charts as inline SVG, keyed by name."""
    names = sorted(
        set(summary.lesions_by_pipeline)
        | set(summary.studies_by_pipeline)
        | set(summary.missed_by_pipeline)
    )
    acceptance = [("accepted", summary.accepted), ("rejected", summary.rejected)]
    latency = [
        (f"{k} ({what})", v)
        for what, stats in (("processing", summary.processing_s), ("ready", summary.turnaround_s))
        for k, v in stats.items()
        if k != "n"
    ]
    return {
        "jobs_by_state": hbar_chart(sorted(summary.jobs_by_state.items()), title="Jobs by state"),
        "failures": hbar_chart(
            summary.failures_by_reason[:10],
            title="Failures and refusals by reason (studies, jobs, deliveries)",
            colour="#c0392b",
            label_width=260,
        ),
        "latency": hbar_chart(latency, title="Latency percentiles", unit=" s"),
        "acceptance": hbar_chart(
            acceptance, title="Reviewer decisions (latest per finding)", colour="#2e8b57"
        ),
        "lesions": hbar_chart(
            [(n, summary.lesions_by_pipeline.get(n, 0)) for n in names],
            title="Lesions found per pipeline",
        ),
        "missed": hbar_chart(
            [(n, summary.missed_by_pipeline.get(n, 0)) for n in names],
            title="Missed-lesion marks per pipeline",
            colour="#d35400",
        ),
        "per_day": column_chart(
            [(d.isoformat(), v) for d, v in summary.studies_per_day], title="Studies per day"
        ),
    }


__all__ = ["environment", "num", "secs", "study_report_html", "summary_charts", "when"]
