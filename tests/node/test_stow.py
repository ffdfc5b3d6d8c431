"""STOW-RS delivery against a real Orthanc with its DICOMweb plugin: down first, then up."""

from __future__ import annotations

from pathlib import Path

from medvision.config import Modality
from tests.node.outbox import PendingResults
from tests.node.peers import Orthanc, wait_for


def test_stow_rs_to_orthanc_after_an_outage(tmp_path: Path, shared_data: Path) -> None:
    orthanc = Orthanc(tmp_path / "orthanc", {})  # not started yet: the PACS is down
    pending = PendingResults(
        tmp_path,
        shared_data,
        Modality(
            ae_title=orthanc.aet,
            host="127.0.0.1",
            port=orthanc.dicom_port,
            stow_url=f"{orthanc.url}/dicom-web/studies",
        ),
        "1.2.826.0.1.3680043.8.498.2",
    )
    try:
        assert pending.sender.send_due() == 0
        assert [(r.state, r.attempts) for r in pending.rows()] == [("pending", 1)] * 2
        assert "STOW-RS" in pending.rows()[0].last_error
        assert pending.study_state() == "send-failed"

        orthanc.start()
        wait_for(
            "delivery by STOW-RS",
            lambda: pending.sender.send_due() >= 0 and pending.all_sent(),
            30,
            0.1,
        )
        stored = {
            orthanc.get(f"/instances/{i}/tags?simplify")["SOPInstanceUID"]
            for i in orthanc.get("/instances")
        }
        assert stored == {r.sop_instance_uid for r in pending.rows()}
        assert pending.study_state() == "sent"
        events = pending.audit.events()
        started = [e for e in events if e["type"] == "results.send_started"]
        assert started and started[-1]["url"] == f"{orthanc.url}/dicom-web/studies"
        assert [e["type"] for e in events].count("results.sent") == 2
        assert pending.audit.verify().ok
        # Sent rows stay sent: a later pass sends nothing again.
        assert pending.sender.send_due() == 0
    finally:
        orthanc.stop()
        pending.close()
