"""STOW-RS delivery against a real Orthanc with its DICOMweb plugin: down first, then up."""

from __future__ import annotations

from pathlib import Path

from pydicom import dcmread
from sqlalchemy import select

from medvision.audit import DbAuditLog
from medvision.config import Modality, Settings
from medvision.db import Database, Job, JobState, Outbox, Study, StudyState
from medvision.node import Sender
from tests.node.peers import Orthanc, wait_for


def test_stow_rs_to_orthanc_after_an_outage(tmp_path: Path, shared_data: Path) -> None:
    orthanc = Orthanc(tmp_path / "orthanc", {})  # not started yet: the PACS is down
    settings = Settings(
        data_dir=tmp_path / "data",
        modalities={
            "pacs": Modality(
                ae_title=orthanc.aet,
                host="127.0.0.1",
                port=orthanc.dicom_port,
                stow_url=f"{orthanc.url}/dicom-web/studies",
            )
        },
        retry_initial_s=0.2,
        retry_max_s=0.5,
    )
    db = Database(settings.db_url)
    db.create_schema()
    audit = DbAuditLog(db)
    files = [
        shared_data / "seg-sr/highdicom/data/test_files/seg_image_ct_binary.dcm",
        shared_data / "seg-sr/highdicom/data/test_files/sr_document_with_multiple_groups.dcm",
    ]
    uid = "1.2.826.0.1.3680043.8.498.2"
    with db.session() as session:
        session.add(Study(study_instance_uid=uid, state=StudyState.DONE, calling_aet="X"))
        job = Job(study_instance_uid=uid, study_version=1, pipeline="lung-ct", state=JobState.DONE)
        session.add(job)
        session.flush()
        for path in files:
            ds = dcmread(path, stop_before_pixels=True)
            session.add(
                Outbox(
                    job_id=job.id,
                    study_instance_uid=uid,
                    destination="pacs",
                    ae_title=orthanc.aet,
                    host="127.0.0.1",
                    port=orthanc.dicom_port,
                    path=str(path),
                    sop_instance_uid=str(ds.SOPInstanceUID),
                    sop_class_uid=str(ds.SOPClassUID),
                )
            )
    sender = Sender(settings, db, audit)

    def rows() -> list[Outbox]:
        with db.session() as session:
            return list(session.scalars(select(Outbox).order_by(Outbox.id)))

    def study_state() -> str:
        with db.session() as session:
            return session.scalars(select(Study)).one().state

    try:
        assert sender.send_due() == 0
        assert [(r.state, r.attempts) for r in rows()] == [("pending", 1)] * 2
        assert "STOW-RS" in rows()[0].last_error
        assert study_state() == "send-failed"

        orthanc.start()
        wait_for(
            "delivery by STOW-RS",
            lambda: sender.send_due() >= 0 and all(r.state == "sent" for r in rows()),
            30,
            0.1,
        )
        stored = {
            orthanc.get(f"/instances/{i}/tags?simplify")["SOPInstanceUID"]
            for i in orthanc.get("/instances")
        }
        assert stored == {r.sop_instance_uid for r in rows()}
        assert study_state() == "sent"
        events = audit.events()
        started = [e for e in events if e["type"] == "results.send_started"]
        assert started and started[-1]["url"] == f"{orthanc.url}/dicom-web/studies"
        assert [e["type"] for e in events].count("results.sent") == 2
        assert audit.verify().ok
        # Sent rows stay sent: a later pass sends nothing again.
        assert sender.send_due() == 0
    finally:
        orthanc.stop()
        db.dispose()
