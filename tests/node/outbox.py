"""A finished study with two results waiting in the outbox: what the sender tests start
from, whatever the way of delivery (C-STORE, STOW-RS)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydicom import dcmread
from sqlalchemy import select

from medvision.audit import DbAuditLog
from medvision.config import Modality, Settings
from medvision.db import Database, Job, JobState, Outbox, Study, StudyState
from medvision.node import Sender

#: A real SEG and a real SR (highdicom's test objects) stand for one job's results.
RESULT_FILES = (
    "seg-sr/highdicom/data/test_files/seg_image_ct_binary.dcm",
    "seg-sr/highdicom/data/test_files/sr_document_with_multiple_groups.dcm",
)


class PendingResults:
    """One study in state done, its two results queued for the destination ``pacs``, and
    a :class:`Sender` with short retry intervals (0.2 s, doubling, at most 0.5 s).
    ``settings`` add to the node's (DICOM TLS certificates ...)."""

    def __init__(
        self, tmp_path: Path, shared_data: Path, pacs: Modality, uid: str, **settings: Any
    ) -> None:
        self.settings = Settings(
            data_dir=tmp_path / "data",
            modalities={"pacs": pacs},
            retry_initial_s=0.2,
            retry_max_s=0.5,
            **settings,
        )
        self.db = Database(self.settings.db_url)
        self.db.create_schema()
        self.audit = DbAuditLog(self.db)
        with self.db.session() as session:
            session.add(Study(study_instance_uid=uid, state=StudyState.DONE, calling_aet="X"))
            job = Job(
                study_instance_uid=uid, study_version=1, pipeline="lung-ct", state=JobState.DONE
            )
            session.add(job)
            session.flush()
            for name in RESULT_FILES:
                path = shared_data / name
                ds = dcmread(path, stop_before_pixels=True)
                session.add(
                    Outbox(
                        job_id=job.id,
                        study_instance_uid=uid,
                        destination="pacs",
                        ae_title=pacs.ae_title,
                        host=pacs.host,
                        port=pacs.port,
                        path=str(path),
                        sop_instance_uid=str(ds.SOPInstanceUID),
                        sop_class_uid=str(ds.SOPClassUID),
                    )
                )
        self.sender = Sender(self.settings, self.db, self.audit)

    def rows(self) -> list[Outbox]:
        with self.db.session() as session:
            return list(session.scalars(select(Outbox).order_by(Outbox.id)))

    def study_state(self) -> str:
        with self.db.session() as session:
            return session.scalars(select(Study)).one().state

    def all_sent(self) -> bool:
        return all(r.state == "sent" for r in self.rows())

    def close(self) -> None:
        self.db.dispose()
