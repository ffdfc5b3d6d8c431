"""A destination marked `overlays = true` also gets burned-in overlays and a KOS; one marked
`planar_sr = true` also gets the planar SR (the lesions' axes, for OHIF).

The worker runs the real lung-ct pipeline on the spooled synthetic sample; the sender delivers
to two real dcmtk storescp peers: a PACS whose viewer is OHIF (SEG + SR + planar SR) and one
whose viewer cannot show SEG (SEG + SR + Secondary Captures + KOS).
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from pydicom import dcmread
from sqlalchemy import select

from medvision.audit import DbAuditLog
from medvision.config import Modality, Settings
from medvision.db import Database, Job, JobState, Outbox, Study, StudyState
from medvision.jobs import execute_job
from medvision.node import Sender
from tests.node.peers import DCMTK, free_port, stop_process, wait_for

SEG = "1.2.840.10008.5.1.4.1.1.66.4"
SR = "1.2.840.10008.5.1.4.1.1.88.34"
SC = "1.2.840.10008.5.1.4.1.1.7"
KOS = "1.2.840.10008.5.1.4.1.1.88.59"


def _storescp(aet: str, port: int, out: Path) -> subprocess.Popen:
    out.mkdir()
    return subprocess.Popen(
        [str(DCMTK / "storescp"), "-aet", aet, "-od", str(out), str(port)],
        env={"TCP_NODELAY": "1", "PATH": "/usr/bin:/bin"},
    )


def test_overlays_go_only_to_the_destination_that_asks(tmp_path: Path, sample_dir: Path) -> None:
    plain_port, sc_port = free_port(), free_port()
    settings = Settings(
        data_dir=tmp_path / "data",
        modalities={
            "pacs": Modality(ae_title="PACS", host="127.0.0.1", port=plain_port, planar_sr=True),
            "old-viewer": Modality(
                ae_title="OLDVIEW", host="127.0.0.1", port=sc_port, overlays=True
            ),
        },
        destinations=["pacs", "old-viewer"],
    )
    db = Database(settings.db_url)
    db.create_schema()
    audit = DbAuditLog(db)
    study_uid = str(
        dcmread(next(sample_dir.glob("*.dcm")), stop_before_pixels=True).StudyInstanceUID
    )
    shutil.copytree(sample_dir, settings.spool_dir / study_uid / "series")
    with db.session() as session:
        session.add(Study(study_instance_uid=study_uid, state=StudyState.QUEUED, calling_aet="X"))
        job = Job(
            study_instance_uid=study_uid,
            study_version=1,
            pipeline="lung-ct",
            state=JobState.RUNNING,
            attempts=1,
        )
        session.add(job)
    run = execute_job(job, settings, db, audit)
    assert run.status == "done", run.reason
    assert run.files is not None and run.files.overlay_paths and run.files.kos_path
    assert run.files.planar_sr_path is not None

    with db.session() as session:
        rows = list(session.scalars(select(Outbox)))
    by_dest: dict[str, list[str]] = {}
    for r in rows:
        by_dest.setdefault(r.destination, []).append(r.sop_class_uid)
    assert sorted(by_dest["pacs"]) == sorted([SEG, SR, SR])
    n_overlays = len(run.files.overlay_paths)
    assert sorted(by_dest["old-viewer"]) == sorted([SEG, SR, KOS] + [SC] * n_overlays)

    plain = _storescp("PACS", plain_port, tmp_path / "pacs")
    old = _storescp("OLDVIEW", sc_port, tmp_path / "old")
    sender = Sender(settings, db, audit)
    try:
        wait_for(
            "delivery",
            lambda: (
                sender.send_due() is not None
                and len(list((tmp_path / "old").iterdir())) == len(by_dest["old-viewer"])
                and len(list((tmp_path / "pacs").iterdir())) == 3
            ),
            60,
            0.2,
        )
    finally:
        stop_process(plain)
        stop_process(old)
    received = [dcmread(p) for p in (tmp_path / "old").iterdir()]
    kos = next(ds for ds in received if ds.SOPClassUID == KOS)
    overlay_uids = {str(ds.SOPInstanceUID) for ds in received if ds.SOPClassUID == SC}
    assert len(overlay_uids) == n_overlays
    referenced = {
        str(item.ReferencedSOPInstanceUID)
        for series in kos.CurrentRequestedProcedureEvidenceSequence[0].ReferencedSeriesSequence
        for item in series.ReferencedSOPSequence
    }
    assert referenced == overlay_uids
    assert all(ds.StudyInstanceUID == study_uid for ds in received)
    at_pacs = [dcmread(p) for p in (tmp_path / "pacs").iterdir()]
    assert all(ds.SOPClassUID in (SEG, SR) for ds in at_pacs)
    assert {str(ds.SOPInstanceUID) for ds in at_pacs if ds.SOPClassUID == SR} == {
        run.files.sr_sop_instance_uid,
        run.files.planar_sr_sop_instance_uid,
    }
    assert not any(
        str(ds.SOPInstanceUID) == run.files.planar_sr_sop_instance_uid for ds in received
    )
    assert audit.verify().ok
    db.dispose()
