"""``medvision export``: de-identified copies of finished (or reviewed) cases for training.

Each case is the study's received images and our results (SEG, SR, overlays) from its
latest finished job, all de-identified with the same keys, so that the SEG's and SR's
references to the images are remapped exactly as the images' own UIDs are and still
resolve in the copy. Layout: ``OUT/<pseudonym>/<study UID>/{images,results}/<SOP UID>.dcm``
(all de-identified values), and ``OUT/manifest.json`` listing what was written.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import select

from medvision.audit import DbAuditLog
from medvision.config import Settings
from medvision.db import Database, Feedback, Instance, Job, JobState
from medvision.deid import Deidentifier


@dataclass
class ExportedCase:
    pseudonym: str
    study_instance_uid: str  # de-identified
    images: int = 0
    results: int = 0
    files: list[str] = field(default_factory=list)


def export_cases(settings: Settings, out: Path, reviewed_only: bool) -> list[ExportedCase]:
    """De-identify every finished study (with ``reviewed_only``: every study a reviewer
    has given feedback on) into ``out``; returns what was written. Audited (counts only)."""
    deid = Deidentifier.from_settings(settings)
    db = Database(settings.db_url)
    db.create_schema()
    try:
        with db.session() as session:
            latest: dict[str, Job] = {}
            for job in session.scalars(
                select(Job).where(Job.state == JobState.DONE).order_by(Job.id)
            ):
                latest[job.study_instance_uid] = job
            if reviewed_only:
                reviewed = set(session.scalars(select(Feedback.study_instance_uid)))
                latest = {uid: j for uid, j in latest.items() if uid in reviewed}
            instances = {
                uid: list(
                    session.scalars(
                        select(Instance)
                        .where(Instance.study_instance_uid == uid)
                        .order_by(Instance.id)
                    )
                )
                for uid in latest
            }
        cases = []
        for uid in sorted(latest):
            job = latest[uid]
            images = [settings.spool_dir / i.path for i in instances[uid]]
            results = sorted(Path(job.result_dir).rglob("*.dcm")) if job.result_dir else []
            cases.append(_export_one(deid, out, images, results))
        out.mkdir(parents=True, exist_ok=True)
        (out / "manifest.json").write_text(json.dumps([c.__dict__ for c in cases], indent=2) + "\n")
        DbAuditLog(db).record(
            "export.deidentified",
            # The source studies (UIDs are not PHI here; the pseudonymised copies' UIDs are
            # in manifest.json): A.5.3.5 names what left, and QA can trace each one back.
            studies=sorted(latest),
            destination=str(out),
            cases=len(cases),
            reviewed_only=reviewed_only,
            instances=sum(c.images + c.results for c in cases),
        )
        return cases
    finally:
        db.dispose()


def _export_one(
    deid: Deidentifier, out: Path, images: list[Path], results: list[Path]
) -> ExportedCase:
    case: ExportedCase | None = None
    for kind, paths in (("images", images), ("results", results)):
        for path in paths:
            ds = deid.file(path)
            if case is None:
                case = ExportedCase(str(ds.PatientID), str(ds.StudyInstanceUID))
            folder = out / case.pseudonym / case.study_instance_uid / kind
            folder.mkdir(parents=True, exist_ok=True)
            target = folder / f"{ds.SOPInstanceUID}.dcm"
            ds.save_as(target, enforce_file_format=True)
            case.files.append(str(target.relative_to(out)))
            setattr(case, kind, getattr(case, kind) + 1)
    if case is None:
        raise ValueError("a finished study without images or results cannot be exported")
    return case


__all__ = ["ExportedCase", "export_cases"]
