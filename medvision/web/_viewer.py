"""Sign-in, study list and the slice viewer, with slices and overlays as PNG.

No ``from __future__ import annotations``: FastAPI resolves these annotations at runtime.
"""

import json
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query, Request
from fastapi.responses import FileResponse, Response
from sqlalchemy import func, select

from medvision.config import Settings
from medvision.db import Database, Feedback, Instance, Job, Study
from medvision.findings import key_slice
from medvision.http_deps import AuditDep, DbDep, SettingsDep, require_roles
from medvision.reports import read_findings
from medvision.web._imaging import Study3D, load_study3d, overlay_png, window_png
from medvision.web._pages import (
    READ_ROLES,
    STATIC_DIR,
    image_cache,
    page_reader,
    render,
)

router = APIRouter(include_in_schema=False)
images = APIRouter(prefix="/viewer/jobs/{job_id}", dependencies=[require_roles(*READ_ROLES)])

_STATIC_TYPES = {".js": "text/javascript", ".css": "text/css", ".svg": "image/svg+xml"}
#: A job's pixels never change (a new run is a new job), so the browser may keep them.
_IMAGE_HEADERS = {"Cache-Control": "private, max-age=3600"}


@router.get("/assets/{name}")
def asset(name: str) -> FileResponse:
    """The pages' own CSS and JS (no CDN, no build step). Public: they hold no data."""
    path = STATIC_DIR / name
    if "/" in name or name.startswith(".") or path.suffix not in _STATIC_TYPES:
        raise HTTPException(404)
    if not path.is_file():
        raise HTTPException(404)
    return FileResponse(path, media_type=_STATIC_TYPES[path.suffix])


@router.get("/signin")
def signin(request: Request, next: str = "/") -> Response:  # noqa: A002 - form field name
    safe = next if next.startswith("/") and not next.startswith("//") else "/"
    return render(request, "signin.html", next=safe)


@router.get("/")
def study_list(request: Request, db: DbDep, audit: AuditDep) -> Response:
    reader = page_reader(request, db, audit, READ_ROLES)
    if isinstance(reader, Response):
        return reader
    with db.read() as session:
        studies = list(session.scalars(select(Study).order_by(Study.id.desc()).limit(200)))
        uids = [s.study_instance_uid for s in studies]
        jobs: dict[str, list[Job]] = {}
        for j in session.scalars(
            select(Job).where(Job.study_instance_uid.in_(uids)).order_by(Job.id)
        ):
            jobs.setdefault(j.study_instance_uid, []).append(j)
        reviewed = dict(
            session.execute(
                select(Feedback.study_instance_uid, func.count())
                .where(Feedback.study_instance_uid.in_(uids))
                .group_by(Feedback.study_instance_uid)
            ).all()
        )
    rows = []
    for s in studies:
        lesions = 0
        for j in jobs.get(s.study_instance_uid, []):
            doc = read_findings(j.result_dir) if j.state == "done" else None
            lesions += sum(1 for f in (doc or {}).get("findings", []) if f.get("kind") == "lesion")
        rows.append(
            {
                "study": s,
                "jobs": jobs.get(s.study_instance_uid, []),
                "lesions": lesions,
                "feedback": reviewed.get(s.study_instance_uid, 0),
            }
        )
    return render(request, "studies.html", rows=rows)


def _job_for(session: Any, study_uid: str, job_id: int | None) -> tuple[Job | None, list[Job]]:
    jobs = list(
        session.scalars(
            select(Job).where(Job.study_instance_uid == study_uid).order_by(Job.id.desc())
        )
    )
    shown = [j for j in jobs if j.result_dir and j.state in ("done", "superseded")]
    if job_id is not None:
        return next((j for j in jobs if j.id == job_id), None), shown
    return (shown[0] if shown else None), shown


def load_job_images(db: Database, settings: Settings, job_id: int) -> Study3D:
    """Decode the job's analysed series and its SEG (the cache's loader)."""
    with db.read() as session:
        job = session.get(Job, job_id)
        if job is None or not job.series_instance_uid:
            raise HTTPException(404, f"Job {job_id} has no analysed series.")
        one = session.scalar(
            select(Instance.path)
            .where(Instance.series_instance_uid == job.series_instance_uid)
            .limit(1)
        )
        series_uid, result_dir = job.series_instance_uid, job.result_dir
    if one is None:
        raise HTTPException(404, f"Job {job_id}: the analysed series is not in the spool.")
    doc = read_findings(result_dir) or {}
    kinds = {
        int(f.get("seg_segment_number") or f["number"]): f.get("kind", "lesion")
        for f in doc.get("findings", [])
    }
    seg = (doc.get("seg") or {}).get("file")
    seg_path = Path(result_dir) / seg if (result_dir and seg) else None
    series_dir = settings.spool_dir / Path(one).parent
    try:
        return load_study3d(series_dir, series_uid, seg_path, kinds)
    except (FileNotFoundError, ValueError) as err:
        raise HTTPException(404, f"Job {job_id}: cannot read its images: {err}") from None


def _images(request: Request, db: Database, settings: Settings, job_id: int) -> Study3D:
    return image_cache(request).get(f"job:{job_id}", lambda: load_job_images(db, settings, job_id))


@router.get("/viewer/{study_uid}")
def viewer(
    study_uid: str,
    request: Request,
    db: DbDep,
    audit: AuditDep,
    settings: SettingsDep,
    job: Annotated[int | None, Query()] = None,
) -> Response:
    reader = page_reader(request, db, audit, READ_ROLES)
    if isinstance(reader, Response):
        return reader
    with db.read() as session:
        study = session.scalar(select(Study).where(Study.study_instance_uid == study_uid))
        if study is None:
            return render(
                request,
                "message.html",
                status=404,
                title="Study not found",
                text="The node has no study with this UID.",
            )
        selected, shown = _job_for(session, study_uid, job)
        if selected is None or not selected.result_dir:
            return render(
                request,
                "message.html",
                status=404,
                title="No results to show",
                text="No job of this study has finished with results yet.",
            )
        feedback = [
            {
                "id": f.id,
                "kind": f.kind,
                "finding_number": f.finding_number,
                "decision": f.decision,
                "comment": f.comment,
                "location": f.location,
                "user": f.user,
                "job_id": f.job_id,
            }
            for f in session.scalars(
                select(Feedback)
                .where(Feedback.study_instance_uid == study_uid)
                .order_by(Feedback.id)
            )
        ]
        job_row = {
            "id": selected.id,
            "pipeline": selected.pipeline,
            "state": selected.state,
            "version": selected.study_version,
        }
    doc = read_findings(selected.result_dir) or {}
    volume = _images(request, db, settings, selected.id)
    findings = doc.get("findings", [])
    lesions = [f for f in findings if f.get("kind") == "lesion"]
    first = lesions[0] if lesions else (findings[0] if findings else None)
    start = key_slice((first or {}).get("measurements") or {})
    if start is None:
        start = volume.slices // 2
    decisions: dict[int, dict[str, Any]] = {}
    for f in feedback:
        if f["kind"] == "decision" and f["job_id"] == selected.id and f["decision"] != "comment":
            decisions[f["finding_number"]] = f
    config = {
        "studyUid": study_uid,
        "jobId": selected.id,
        "slices": volume.slices,
        "start": min(max(start, 0), volume.slices - 1),
        "window": list(volume.default_window),
        "presets": volume.presets,
        "rows": int(volume.pixels.shape[1]),
        "cols": int(volume.pixels.shape[2]),
        "marks": [
            f["location"] | {"id": f["id"]}
            for f in feedback
            if f["kind"] == "missed_lesion" and f["location"].get("slice_index") is not None
        ],
        "canReview": "radiologist" in {r.value for r in reader.user.roles},
    }
    reader.record(study_uid, job_id=selected.id)
    return render(
        request,
        "viewer.html",
        study=study,
        job=job_row,
        jobs=shown,
        doc=doc,
        findings=findings,
        segments=volume.segments,
        presets=list(volume.presets),
        modality=volume.modality,
        decisions=decisions,
        feedback=feedback,
        config=json.dumps(config).replace("</", "<\\/"),
        can_review=config["canReview"],
        generated=_generated_by(doc),
    )


def _generated_by(doc: dict[str, Any]) -> str:
    family = (doc.get("algorithm") or {}).get("family", "AI")
    return "AI-generated, not verified" if family == "AI" else "Computer-generated, not verified"


@images.get("/slices/{k}.png")
def slice_png(
    job_id: int,
    k: int,
    request: Request,
    db: DbDep,
    settings: SettingsDep,
    wc: Annotated[float | None, Query()] = None,
    ww: Annotated[float | None, Query()] = None,
) -> Response:
    volume = _images(request, db, settings, job_id)
    if not 0 <= k < volume.slices:
        raise HTTPException(404, f"No slice {k}: the series has {volume.slices}.")
    centre, width = volume.default_window
    body = window_png(volume, k, centre if wc is None else wc, width if ww is None else ww)
    return Response(body, media_type="image/png", headers=_IMAGE_HEADERS)


@images.get("/overlay/{k}.png")
def overlay(
    job_id: int,
    k: int,
    request: Request,
    db: DbDep,
    settings: SettingsDep,
    segments: Annotated[str | None, Query(pattern=r"^[0-9,]*$")] = None,
) -> Response:
    volume = _images(request, db, settings, job_id)
    if not 0 <= k < volume.slices:
        raise HTTPException(404, f"No slice {k}: the series has {volume.slices}.")
    wanted = {int(n) for n in segments.split(",") if n} if segments is not None else None
    return Response(overlay_png(volume, k, wanted), media_type="image/png", headers=_IMAGE_HEADERS)


router.include_router(images)

__all__ = ["load_job_images", "router"]
