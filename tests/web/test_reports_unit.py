"""The arithmetic and drawing behind the QA pages, on small hand-made inputs (no node)."""

from __future__ import annotations

import io
import json
import re
from datetime import UTC, date, datetime, timedelta

import numpy as np
from pypdf import PdfReader
from sqlalchemy import select

from medvision.db import Database, Feedback, Job, Outbox, Study
from medvision.reports import (
    build_period_summary,
    build_study_report,
    hbar_chart,
    percentiles,
    reason_class,
    study_report_html,
    study_report_pdf,
)
from medvision.web._imaging import Segment, Study3D, VolumeCache, overlay_png, window_png


def test_percentiles_nearest_rank() -> None:
    assert percentiles([]) == {"n": 0}
    stats = percentiles([float(v) for v in range(1, 101)])
    assert (stats["p50"], stats["p90"], stats["p95"], stats["max"]) == (50, 90, 95, 100)
    assert percentiles([7.0])["p95"] == 7.0


def test_reason_class_groups_equal_causes() -> None:
    a = reason_class("lung-ct found no lungs in series 1.2.840.1.5.77 (120 mL)")
    b = reason_class("lung-ct found no lungs in series 1.3.6.1.4.9 (88.5 mL)")
    assert a == b == "lung-ct found no lungs in series <uid> (N mL)"


def test_hbar_chart_escapes_and_titles() -> None:
    svg = hbar_chart([("<script>", 3), ("b", 0)], title="T & U")
    assert "<script>" not in svg and "&lt;script&gt;: 3" in svg and "T &amp; U" in svg


def test_period_counts_failures_at_every_stage(tmp_path) -> None:
    """A study refused before any job existed, a failed job and a failed delivery each count,
    with their reasons; a study whose job failed is listed for its job, not twice; a study
    with a done job and one failed delivery is listed for that delivery."""
    db = Database(f"sqlite:///{tmp_path / 'm.db'}")
    db.create_schema()
    now = datetime.now(UTC)
    refused = "no series accepted: lung-ct: series 1: 11 slices; at least 20 are needed"
    with db.session() as s:
        s.add(Study(study_instance_uid="1.1", state="failed", reason=refused, completed_at=now))
        s.add(Study(study_instance_uid="2.2", state="failed", reason="lung-ct: boom"))
        s.add(
            Job(
                study_instance_uid="2.2",
                study_version=1,
                pipeline="lung-ct",
                state="failed",
                reason="boom",
                created_at=now,
                finished_at=now,
            )
        )
        s.add(Study(study_instance_uid="3.3", state="send-failed", reason="refused"))
        s.add(
            Job(
                study_instance_uid="3.3",
                study_version=1,
                pipeline="lung-ct",
                state="done",
                created_at=now,
                finished_at=now,
            )
        )
        s.add(Study(study_instance_uid="4.4", state="done"))
        s.add(
            Job(
                study_instance_uid="4.4",
                study_version=1,
                pipeline="lung-ct",
                state="done",
                created_at=now,
                finished_at=now,
            )
        )
    with db.session() as s:
        job = s.scalar(select(Job).where(Job.study_instance_uid == "3.3"))
        for state in ("failed", "sent"):
            s.add(
                Outbox(
                    job_id=job.id,
                    study_instance_uid="3.3",
                    destination="pacs",
                    ae_title="PACS",
                    host="h",
                    port=104,
                    path="p",
                    sop_instance_uid=f"9.{state}",
                    sop_class_uid="1.2",
                    state=state,
                    attempts=5,
                    last_error="association rejected" if state == "failed" else "",
                )
            )
    today = now.date()
    summary = build_period_summary(db, today, today)
    got = {(f.study_instance_uid, f.stage, f.what, f.state, f.reason) for f in summary.failures}
    assert got == {
        ("1.1", "study", "", "failed", refused),
        ("2.2", "job", "lung-ct", "failed", "boom"),
        ("3.3", "delivery", "pacs (PACS)", "failed", "association rejected"),
    }
    assert summary.failed_studies == 3
    assert sum(n for _, n in summary.failures_by_reason) == 3
    assert ("association rejected", 1) in summary.failures_by_reason


def test_period_summary_and_report(tmp_path) -> None:
    db = Database(f"sqlite:///{tmp_path / 'm.db'}")
    db.create_schema()
    now = datetime.now(UTC)
    # Segment 1 is "Lesion 7": measured on index 4, centre on index 5 → key slice 5.
    lesion = {"long_axis_slice": 4, "centroid_slice": 5}
    finding = {"number": 1, "tracking_id": "Lesion 7", "kind": "lesion", "measurements": lesion}
    (tmp_path / "r").mkdir()
    (tmp_path / "r" / "findings.json").write_text(json.dumps({"findings": [finding]}))
    with db.session() as s:
        s.add(Study(study_instance_uid="1.2.3", state="sent", completed_at=now))
        s.add(
            Job(
                study_instance_uid="1.2.3",
                study_version=1,
                pipeline="p",
                result_dir=str(tmp_path / "r"),
                state="done",
                started_at=now,
                finished_at=now + timedelta(seconds=4),
                created_at=now,
            )
        )
        s.add(
            Job(
                study_instance_uid="1.2.3",
                study_version=2,
                pipeline="p",
                state="failed",
                reason="no series 1.2.3.4.5",
                created_at=now,
            )
        )
        for decision in ("reject", "accept"):  # the later decision counts
            s.add(
                Feedback(
                    kind="decision",
                    study_instance_uid="1.2.3",
                    job_id=1,
                    finding_number=1,
                    decision=decision,
                    user="r",
                )
            )
        s.add(
            Feedback(
                kind="missed_lesion",
                study_instance_uid="1.2.3",
                user="r",
                location={"slice_index": 1, "x": 2.0, "y": 3.0},
            )
        )
    today = now.date()
    summary = build_period_summary(db, today - timedelta(days=2), today)
    assert summary.jobs_by_state == {"done": 1, "failed": 1}
    assert summary.failures_by_reason == [("no series <uid>", 1)]
    assert summary.processing_s["p50"] == 4.0
    assert (summary.accepted, summary.rejected, summary.acceptance_rate) == (1, 0, 1.0)
    assert summary.missed_by_pipeline == {"p": 1}
    assert [n for _, n in summary.studies_per_day] == [0, 0, 1]
    assert [(f.stage, f.what, f.reason) for f in summary.failures] == [
        ("job", "p", "no series 1.2.3.4.5")
    ]
    assert summary.failed_studies == 1
    assert build_period_summary(db, date(2001, 1, 1), date(2001, 1, 2)).jobs == ()

    report = build_study_report(db, "1.2.3")
    assert report is not None and report.audit.ok and len(report.jobs) == 2
    html = study_report_html(report)
    assert "missed lesion" in html and "no series 1.2.3.4.5" in html
    assert '<td class="key-slice">5</td>' in html
    # Decisions name the finding by its tracking ID, never by the bare segment number.
    assert [f["finding"] for f in report.feedback] == ["Lesion 7", "Lesion 7", ""]
    pdf = study_report_pdf(report)
    assert pdf.startswith(b"%PDF-")
    text = re.sub(r"\s+", " ", " ".join(p.extract_text() for p in PdfReader(io.BytesIO(pdf)).pages))
    assert re.search(r"reject Lesion 7", text) and re.search(r"accept Lesion 7", text), text
    assert "slice 2" in text  # the missed-lesion mark on index 1
    assert build_study_report(db, "9.9") is None


def _study(n_segments: int = 2) -> Study3D:
    pixels = np.full((3, 16, 16), -1000, dtype=np.int16)
    pixels[1, 4:12, 4:12] = 40
    bits = np.zeros((3, 16, 16), dtype=np.uint8)
    bits[1, 2:14, 2:14] |= 1  # organ
    bits[1, 6:10, 6:10] |= 2  # lesion inside it
    return Study3D(
        pixels=pixels,
        sop_instance_uids=("a", "b", "c"),
        modality="CT",
        default_window=(-600, 1500),
        seg_bits=bits,
        segments={
            1: Segment(1, "Lung", (0, 200, 0), (1,), "organ"),
            2: Segment(2, "Lesion 1", (255, 0, 0), (1,), "lesion"),
        },
    )


def test_overlay_colours_and_order() -> None:
    from io import BytesIO

    from PIL import Image

    study = _study()
    rgba = np.asarray(Image.open(BytesIO(overlay_png(study, 1))))
    assert tuple(rgba[8, 8]) == (255, 0, 0, 160)  # lesion fill on top of the organ
    assert tuple(rgba[6, 6]) == (255, 0, 0, 255)  # lesion outline
    assert tuple(rgba[3, 8]) == (0, 200, 0, 40)  # organ: faint fill
    assert (
        rgba[0, 0, 3] == 0
        and np.asarray(Image.open(BytesIO(overlay_png(study, 0))))[..., 3].max() == 0
    )
    only_lesion = np.asarray(Image.open(BytesIO(overlay_png(study, 1, {2}))))
    assert only_lesion[3, 8, 3] == 0
    grey = np.asarray(Image.open(BytesIO(window_png(study, 1, 40, 400))))
    assert grey[0, 0] == 0 and grey[8, 8] == 127


def test_volume_cache_lru_and_bytes() -> None:
    cache = VolumeCache(max_items=2, max_bytes=10**9)
    loads = []

    def loader(name: str):  # noqa: ANN202
        def load() -> Study3D:
            loads.append(name)
            return _study()

        return load

    for key in ("a", "b", "a", "c", "a", "b"):
        cache.get(key, loader(key))
    assert loads == ["a", "b", "c", "b"] and len(cache) == 2
    tiny = VolumeCache(max_items=5, max_bytes=1)
    tiny.get("x", loader("x"))
    tiny.get("y", loader("y"))
    assert len(tiny) == 1  # over the byte bound: only the newest stays
