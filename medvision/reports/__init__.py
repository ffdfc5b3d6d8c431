"""QA reports: what the node did with one study, and what it did over a period.

:func:`build_study_report` and :func:`build_period_summary` gather the facts from the
database (the single source of truth) and each job's findings.json; the HTML, PDF and SVG
renderers only lay them out, so every format says the same thing. Served by
``medvision.web`` at ``/qa`` (see docs/reviewing.md).
"""

from medvision.reports._html import num, secs, study_report_html, summary_charts, when
from medvision.reports._pdf import study_report_pdf
from medvision.reports._period import (
    PeriodSummary,
    build_period_summary,
    percentiles,
    reason_class,
)
from medvision.reports._study import (
    JobReport,
    SeriesInput,
    StudyReport,
    build_study_report,
    read_findings,
)
from medvision.reports._svg import column_chart, hbar_chart

__all__ = [
    "JobReport",
    "PeriodSummary",
    "SeriesInput",
    "StudyReport",
    "build_period_summary",
    "build_study_report",
    "column_chart",
    "hbar_chart",
    "num",
    "percentiles",
    "read_findings",
    "reason_class",
    "secs",
    "study_report_html",
    "study_report_pdf",
    "summary_charts",
    "when",
]
