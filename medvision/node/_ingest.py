"""Bookkeeping for a received instance: index it, and open or re-open its study.

Called after the instance is durably in the spool. A study that was already complete
(or further along) and gets a new instance starts a new version: its queued jobs are
superseded, and when it is complete again, the new version's results supersede the old.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select, update

from medvision.db import Database, Instance, Job, JobState, Study, StudyState, utcnow
from medvision.node._spool import StoredFile

#: Image SOP classes: only these reopen a finished study. Our own SEG/SR coming back from a
#: PACS (auto-routing) must not trigger another run.
IMAGE_SOP_CLASSES = frozenset(
    {
        "1.2.840.10008.5.1.4.1.1.2",  # CT Image
        "1.2.840.10008.5.1.4.1.1.2.1",  # Enhanced CT Image
        "1.2.840.10008.5.1.4.1.1.4",  # MR Image
        "1.2.840.10008.5.1.4.1.1.4.1",  # Enhanced MR Image
    }
)


@dataclass(frozen=True)
class Received:
    study_instance_uid: str
    series_instance_uid: str
    sop_instance_uid: str
    sop_class_uid: str
    calling_aet: str
    calling_host: str


def index_instance(db: Database, item: Received, stored: StoredFile) -> bool:
    """Record the instance and update its study; False when it was a duplicate."""
    now = utcnow()
    with db.session() as session:
        exists = session.scalar(
            select(Instance.id).where(Instance.sop_instance_uid == item.sop_instance_uid)
        )
        study = session.scalar(
            select(Study).where(Study.study_instance_uid == item.study_instance_uid)
        )
        if exists is not None and study is not None:
            return False
        if study is None:
            study = Study(
                study_instance_uid=item.study_instance_uid,
                state=StudyState.RECEIVING,
                version=1,
                calling_aet=item.calling_aet,
                calling_host=item.calling_host,
                instance_count=0,
                first_received_at=now,
                last_received_at=now,
            )
            session.add(study)
        elif study.state != StudyState.RECEIVING and item.sop_class_uid in IMAGE_SOP_CLASSES:
            study.version += 1
            study.state = StudyState.RECEIVING
            study.completed_at = None
            study.reason = ""
            session.execute(
                update(Job)
                .where(
                    Job.study_instance_uid == study.study_instance_uid,
                    Job.state == JobState.QUEUED,
                )
                .values(state=JobState.SUPERSEDED, reason="new instances arrived")
            )
        if study.state == StudyState.RECEIVING:
            study.last_received_at = now
        study.calling_aet = item.calling_aet or study.calling_aet
        study.calling_host = item.calling_host or study.calling_host
        if exists is None:
            study.instance_count += 1
            session.add(
                Instance(
                    sop_instance_uid=item.sop_instance_uid,
                    study_instance_uid=item.study_instance_uid,
                    series_instance_uid=item.series_instance_uid,
                    sop_class_uid=item.sop_class_uid,
                    path=stored.relpath,
                    size=stored.size,
                    sha256=stored.sha256,
                    calling_aet=item.calling_aet,
                    received_at=now,
                )
            )
    return exists is None


__all__ = ["Received", "index_instance"]
