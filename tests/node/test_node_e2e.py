"""End to end, as a PACS administrator sees it: Orthanc pushes a study to ``medvision
serve`` and finds a SEG and an SR in the same study some seconds later; the node survives
SIGKILL while receiving and while running the pipeline, and delivers exactly once.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydicom import dcmread
from pynetdicom import AE
from pynetdicom.association import Association

from medvision.audit import DbAuditLog
from medvision.db import Database
from tests.node.peers import NodeProcess, Orthanc, node_with_orthanc, wait_for

ORDER = ["receiving", "complete", "queued", "running", "done", "sent"]


@pytest.fixture
def pacs_and_node(tmp_path: Path) -> Iterator[tuple[Orthanc, NodeProcess]]:
    orthanc, node = node_with_orthanc(tmp_path, retry_initial_s=1)
    orthanc.start()
    try:
        yield orthanc, node
    finally:
        node.stop()
        orthanc.stop()


def _wait_state(node: NodeProcess, uid: str, state: str, timeout: float) -> list[str]:
    """Poll GET /studies/{uid} until ``state``; returns the states seen on the way."""
    seen: list[str] = []

    def probe() -> bool:
        study = node.study(uid)
        if study is not None and (not seen or seen[-1] != study["state"]):
            seen.append(study["state"])
            assert study["state"] not in ("failed", "send-failed"), study
        return study is not None and study["state"] == state

    try:
        wait_for(f"study {uid} to be {state}", probe, timeout, 0.1)
    except TimeoutError as err:
        raise AssertionError(f"{err}; states seen: {seen}; study: {node.study(uid)}") from None
    return seen


def _results(orthanc: Orthanc, uid: str) -> dict[str, list[dict[str, Any]]]:
    found = orthanc.instances_by_modality(uid)
    return {m: found.get(m, []) for m in ("SEG", "SR")}


def _tags(orthanc: Orthanc, instance: dict[str, Any]) -> dict[str, Any]:
    return orthanc.get(f"/instances/{instance['ID']}/tags?simplify")


def _audit(node: NodeProcess) -> DbAuditLog:
    return DbAuditLog(Database(f"sqlite:///{node.data_dir / 'medvision.db'}"))


def test_orthanc_round_trip_with_the_real_ct(pacs_and_node, chest_ct_dir: Path) -> None:
    orthanc, node = pacs_and_node
    node.start()
    files = sorted(chest_ct_dir.glob("*.dcm"))
    first = dcmread(files[0], stop_before_pixels=True)
    uid, series_uid = str(first.StudyInstanceUID), str(first.SeriesInstanceUID)
    study_id = orthanc.upload(files)

    orthanc.push("medvision", study_id)
    seen = _wait_state(node, uid, "sent", timeout=600)
    assert [ORDER.index(s) for s in seen] == sorted(ORDER.index(s) for s in seen), seen

    results = _results(orthanc, uid)
    assert [len(results["SEG"]), len(results["SR"])] == [1, 1], results
    seg = _tags(orthanc, results["SEG"][0])
    assert seg["StudyInstanceUID"] == uid
    assert seg["ReferencedSeriesSequence"][0]["SeriesInstanceUID"] == series_uid
    sr = _tags(orthanc, results["SR"][0])
    assert sr["StudyInstanceUID"] == uid
    evidence = sr["CurrentRequestedProcedureEvidenceSequence"][0]["ReferencedSeriesSequence"]
    assert series_uid in {s["SeriesInstanceUID"] for s in evidence}

    study = node.get(f"/studies/{uid}")
    assert study["instances"] == len(files) and study["version"] == 1
    assert {(d["state"], d["ae_title"]) for d in study["deliveries"]} == {("sent", "ORTHANC")}
    (job,) = node.get("/jobs")
    assert (job["state"], job["attempts"], job["pipeline"]) == ("done", 1, "lung-ct")
    assert job["series_instance_uid"] == series_uid and job["timings"]
    assert node.get("/studies?state=sent")[0]["study_instance_uid"] == uid

    status = node.status()
    assert status.returncode == 0, status.stderr
    assert uid in status.stdout and "sent" in status.stdout and "lung-ct" in status.stdout
    as_json = json.loads(node.status("--json").stdout)
    assert as_json[0]["state"] == "sent" and as_json[0]["jobs"][0]["state"] == "done"

    audit = _audit(node)
    types = {e["type"] for e in audit.events()}
    assert {
        "application.start",
        "association.accepted",
        "instances.received",
        "study.complete",
        "job.started",
        "job.finished",
        "results.sent",
    } <= types
    assert audit.verify().ok

    # No patient identifiers in the node's plain application log or its audit trail.
    log = node.log_path.read_text(errors="replace")
    assert "job" in log or "medvision" in log  # the log is the node's, and not empty
    trail = json.dumps(audit.events())
    for value in (str(first.PatientName), str(first.PatientID)):
        assert value and value not in log and value not in trail, "PHI in the node's log"


def _instances_in_db(node: NodeProcess) -> int:
    with sqlite3.connect(node.data_dir / "medvision.db") as con:
        return con.execute("select count(*) from instances").fetchone()[0]


def _open_association(calling: str, node: NodeProcess, files: list[Path]) -> Association:
    """An association from ``calling`` for the (one) SOP class and transfer syntax of ``files``."""
    ae = AE(ae_title=calling)
    ds = dcmread(files[0], stop_before_pixels=True)
    ae.add_requested_context(ds.SOPClassUID, ds.file_meta.TransferSyntaxUID)
    assoc = ae.associate("127.0.0.1", node.dicom_port, ae_title=node.ae_title)
    assert assoc.is_established
    return assoc


def test_sigkill_while_receiving_and_while_running(pacs_and_node, sample_dir: Path) -> None:
    orthanc, node = pacs_and_node
    node.settings["quiet_period_s"] = 4
    files = sorted(sample_dir.rglob("*.dcm"))
    uid = str(dcmread(files[0], stop_before_pixels=True).StudyInstanceUID)
    study_id = orthanc.upload(files)
    node.start()

    # 1. Killed in the middle of receiving: the PACS (by its AE title) has had five of the
    # study's instances acknowledged and the association is still open. (Timing a kill on
    # Orthanc's own push stopped working once the node took the whole 80 in ~0.2 s.)
    sent = 5
    assoc = _open_association(orthanc.aet, node, files)
    for f in files[:sent]:
        assert assoc.send_c_store(dcmread(f)).Status == 0x0000
    node.kill()
    assoc.abort()
    assert _instances_in_db(node) <= sent

    # Restarted, every acknowledged instance is there (from the spool's journal, if the
    # index had not caught up); then the PACS sends the study again (it retries the job).
    node.start()
    wait_for(
        "the acknowledged instances after the restart",
        lambda: (node.study(uid) or {}).get("instances") == sent,
        60,
    )
    orthanc.push("medvision", study_id)

    # 2. Killed while the pipeline runs.
    wait_for(
        "a running job",
        lambda: any(j["state"] == "running" for j in node.get("/jobs")),
        120,
        0.1,
    )
    node.kill()
    node.start()
    _wait_state(node, uid, "sent", timeout=600)

    study = node.get(f"/studies/{uid}")
    assert study["instances"] == len(files) and study["version"] == 1
    (job,) = node.get("/jobs")
    assert (job["state"], job["attempts"]) == ("done", 2)

    results = _results(orthanc, uid)
    assert [len(results["SEG"]), len(results["SR"])] == [1, 1], results
    # Every image is in the spool exactly once; nothing half-written is left.
    spool = node.data_dir / "spool"
    assert len(list(spool.glob(f"{uid}/*/*.dcm"))) == len(files)
    assert list((spool / ".incoming").rglob("*.part")) == []  # acceptors' folders too

    audit = _audit(node)
    starts = [e for e in audit.events() if e["type"] == "application.start"]
    assert len(starts) == 3 and starts[2]["jobs_requeued"] == 1
    assert audit.verify().ok
