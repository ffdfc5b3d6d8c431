"""The QA report as PDF, drawn with fpdf2 from the same :class:`StudyReport` as the HTML.

Why fpdf2: pure Python (its dependencies, Pillow and fontTools, are already here or small),
LGPL-3.0, maintained with regular releases, and it makes a report in a few milliseconds in
the node's process. Headless Chromium's print-to-PDF would match the HTML exactly but would
make a 300 MB browser a runtime dependency of every node; reportlab is larger and its
table layout API heavier for a report of plain tables.

Text is set in DejaVu Sans when the font is installed (Debian ``fonts-dejavu-core``), which
covers every character we write; otherwise in the built-in Helvetica, with any character
outside Latin-1 replaced, so the PDF is produced either way.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fpdf import FPDF
from fpdf.enums import XPos, YPos

from medvision.findings import key_slice_number, slice_number
from medvision.reports._html import num, secs, when
from medvision.reports._study import StudyReport

_DEJAVU = Path("/usr/share/fonts/truetype/dejavu")


class _Report(FPDF):
    def __init__(self) -> None:
        super().__init__(orientation="P", unit="mm", format="A4")
        self.set_auto_page_break(True, margin=14)
        self.set_margins(12, 12, 12)
        regular, bold = _DEJAVU / "DejaVuSans.ttf", _DEJAVU / "DejaVuSans-Bold.ttf"
        if regular.is_file() and bold.is_file():
            self.add_font("Body", "", str(regular))
            self.add_font("Body", "B", str(bold))
            self.family, self.unicode = "Body", True
        else:
            self.family, self.unicode = "Helvetica", False

    def text_of(self, value: Any) -> str:
        text = str(value)
        return text if self.unicode else text.encode("latin-1", "replace").decode("latin-1")

    def footer(self) -> None:
        self.set_y(-10)
        self.set_font(self.family, "", 7)
        self.cell(0, 5, self.text_of(f"medvision QA report — page {self.page_no()}"), align="C")

    def heading(self, text: str, size: float = 12) -> None:
        self.ln(2)
        self.set_font(self.family, "B", size)
        self.multi_cell(0, 6, self.text_of(text), new_x=XPos.LMARGIN, new_y=YPos.NEXT)
        self.set_font(self.family, "", 8)

    def para(self, text: str) -> None:
        self.set_font(self.family, "", 8)
        self.multi_cell(0, 4.2, self.text_of(text), new_x=XPos.LMARGIN, new_y=YPos.NEXT)

    def grid(self, header: list[str], rows: list[list[Any]], widths: tuple[float, ...]) -> None:
        self.set_font(self.family, "", 7)
        with self.table(
            col_widths=widths, text_align="LEFT", line_height=3.6, first_row_as_headings=True
        ) as table:
            for row in [header, *rows]:
                cells = table.row()
                for value in row:
                    cells.cell(self.text_of("—" if value is None or value == "" else value))
        self.ln(1)


def study_report_pdf(report: StudyReport, user: str = "") -> bytes:
    """The report as PDF bytes."""
    pdf = _Report()
    pdf.set_title(f"QA report {report.study_instance_uid}")
    pdf.set_creator("medvision")
    pdf.add_page()
    pdf.heading("QA report: what medvision did with one study", 14)
    by = f" Requested by {user}." if user else ""
    pdf.para(
        "Findings are computer-generated and not verified unless a reviewer decision says "
        f"otherwise. Identifiers only: no patient data.{by}"
    )
    pdf.heading("Study")
    pdf.grid(
        ["Study Instance UID", "State", "Version", "Sent by", "Received", "Complete", "Instances"],
        [
            [
                report.study_instance_uid,
                report.state + (f" — {report.reason}" if report.reason else ""),
                report.version,
                report.calling_aet,
                when(report.first_received_at),
                when(report.completed_at),
                report.instances,
            ]
        ],
        (52, 28, 12, 18, 28, 28, 14),
    )
    pdf.heading("Inputs")
    pdf.grid(
        ["Series Instance UID", "SOP class", "Instances", "Analysed by"],
        [
            [s.series_instance_uid, s.sop_class_uid, s.instances, ", ".join(s.analysed_by)]
            for s in report.series
        ],
        (80, 55, 18, 33),
    )
    for j in report.jobs:
        _job(pdf, j)
    pdf.heading("Reviewer decisions")
    if report.feedback:
        pdf.grid(
            ["When", "Who", "Job", "What", "Finding", "Comment", "Where"],
            [
                [
                    when(f["created_at"]),
                    f["user"],
                    f["job_id"],
                    "missed lesion" if f["kind"] == "missed_lesion" else f["decision"],
                    f.get("finding") or "",
                    f["comment"],
                    _where(f["location"]),
                ]
                for f in report.feedback
            ],
            (30, 22, 10, 20, 14, 60, 30),
        )
    else:
        pdf.para("No reviewer has given feedback on this study.")
    pdf.heading("Audit trail")
    if report.audit.ok:
        head = (
            f", head {report.audit_head_hash[:16]}… (seq {report.audit_head_seq})"
            if report.audit_head_hash
            else ""
        )
        pdf.para(f"Chain of the whole node: intact, {report.audit.count} events{head}.")
    else:
        pdf.para(f"Chain of the whole node: BROKEN — {report.audit.reason}.")
    pdf.grid(
        ["Seq", "Time", "Event", "Outcome"],
        [[e["seq"], e["time"], e["type"], e["outcome"]] for e in report.audit_events],
        (14, 60, 80, 32),
    )
    return bytes(pdf.output())


def _where(location: dict[str, Any]) -> str:
    if not location:
        return ""
    k = location.get("slice_index")
    text = f"slice {slice_number(k)}" if isinstance(k, int) else "slice ?"
    if "x" in location and "y" in location:
        text += f", x {num(location['x'], 0)}, y {num(location['y'], 0)}"
    return text


def _job(pdf: _Report, j: Any) -> None:
    pdf.heading(f"Job {j.id}: {j.pipeline} — {j.state}")
    if j.reason:
        pdf.para(f"Reason: {j.reason}")
    a = j.algorithm
    params = ", ".join(f"{k}={v}" for k, v in (a.get("parameters") or {}).items())
    doc = j.findings or {}
    pdf.grid(
        ["Pipeline", "Algorithm", "Family", "Weights SHA-256"],
        [
            [
                f"{doc.get('pipeline', j.pipeline)} {doc.get('pipeline_version', '')}",
                f"{a.get('name', '')} {a.get('version', '')}",
                a.get("family", ""),
                a.get("weights_sha256", ""),
            ]
        ],
        (35, 35, 20, 96),
    )
    pdf.para(f"Parameters: {params or '—'}")
    pdf.para(f"Series analysed: {j.series_instance_uid or '—'}")
    pdf.para("Quality flags: " + ("; ".join(j.quality_flags) or "none"))
    rows = j.finding_rows
    if rows:
        pdf.grid(
            [
                "#",
                "Tracking ID",
                "Label",
                "Kind",
                "Conf.",
                "Uncert.",
                "Vol. mL",
                "Axes mm",
                "Key slice",
            ],
            [
                [
                    f.get("number"),
                    f.get("tracking_id"),
                    f.get("label"),
                    f.get("kind"),
                    num(f.get("confidence"), 2),
                    num(f.get("uncertainty"), 2),
                    num((f.get("measurements") or {}).get("volume_ml"), 2),
                    f"{num((f.get('measurements') or {}).get('long_axis_mm'))} / "
                    f"{num((f.get('measurements') or {}).get('short_axis_mm'))}",
                    key_slice_number(f.get("measurements") or {}) or "—",
                ]
                for f in rows
            ],
            (8, 22, 28, 14, 14, 16, 18, 26, 12),
        )
        pdf.para(
            "Key slice: where a lesion's axes were measured (an organ: the slice nearest its "
            "centre), numbered as in the viewer: from 1 along the patient axis, lowest "
            "position first; not the DICOM instance number."
        )
        for method in sorted(
            {f.get("confidence_method") for f in rows if f.get("confidence_method")}
        ):
            pdf.para(f"Confidence: {method}")
        for f in rows:
            if f.get("flags"):
                pdf.para(f"{f.get('tracking_id')}: quality flags {', '.join(f['flags'])}")
    else:
        pdf.para("No finding." if j.findings else "No findings.json (the job wrote no results).")
    timing = "; ".join(f"{k} {num(v, 2)} s" for k, v in j.timings.items())
    pdf.para(
        f"Queued {when(j.created_at)}, started {when(j.started_at)} (waited {secs(j.waiting_s)}), "
        f"finished {when(j.finished_at)} (ran {secs(j.processing_s)}). {timing}"
    )
    if j.deliveries:
        pdf.grid(
            ["Destination", "AE title", "SOP Instance UID", "State", "Tries", "Sent", "Last error"],
            [
                [
                    d["destination"],
                    d["ae_title"],
                    d["sop_instance_uid"],
                    d["state"],
                    d["attempts"],
                    when(d["sent_at"]),
                    d["last_error"],
                ]
                for d in j.deliveries
            ],
            (20, 20, 56, 16, 10, 30, 34),
        )
    else:
        pdf.para("No delivery queued (no destination configured, or no results).")


__all__ = ["study_report_pdf"]
