"""Orthanc goes down while the node still has results for it, comes back, and gets them once.

``test_sender.py`` covers backoff against a dcmtk storescp that appears late; this is the
same promise as a PACS administrator meets it: the study came from a real Orthanc, which is
stopped (a PACS restart, maintenance) before the SEG and SR are ready. The node must keep
the results queued (``send-failed``, visible with the error), and deliver each of them
exactly once when Orthanc listens again on the same port with the same storage.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydicom import dcmread

from medvision.audit import DbAuditLog
from medvision.db import Database
from tests.node.peers import NodeProcess, Orthanc, node_with_orthanc, wait_for


@pytest.fixture
def pacs_and_node(tmp_path: Path) -> Iterator[tuple[Orthanc, NodeProcess]]:
    orthanc, node = node_with_orthanc(tmp_path, retry_initial_s=0.5, retry_max_s=2)
    try:
        yield orthanc, node
    finally:
        node.stop()
        orthanc.stop()


def _study(node: NodeProcess, uid: str) -> dict[str, Any]:
    return node.study(uid) or {}


def test_results_wait_for_a_stopped_orthanc_and_arrive_once(
    pacs_and_node: tuple[Orthanc, NodeProcess], sample_dir: Path
) -> None:
    orthanc, node = pacs_and_node
    files = sorted(sample_dir.rglob("*.dcm"))
    uid = str(dcmread(files[0], stop_before_pixels=True).StudyInstanceUID)
    orthanc.start()
    study_id = orthanc.upload(files)
    node.start()
    orthanc.push("medvision", study_id)
    # Acknowledged means spooled; the index follows a moment later.
    wait_for("the index", lambda: _study(node, uid).get("instances") == len(files), 30, 0.1)

    # The PACS goes away before the results exist (the quiet period has not even ended).
    orthanc.stop()
    wait_for(
        "a failed delivery attempt",
        lambda: _study(node, uid).get("state") == "send-failed",
        600,
        0.2,
    )
    pending = _study(node, uid)["deliveries"]
    assert len(pending) == 2, pending  # SEG and SR, one destination
    assert all(d["state"] == "pending" and d["attempts"] >= 1 for d in pending), pending
    assert all(d["last_error"] for d in pending), pending
    (job,) = node.get("/jobs")
    assert job["state"] == "done"  # the work is finished; only delivery waits

    # Orthanc is back on the same port, with the same storage.
    orthanc.start()
    wait_for("delivery", lambda: _study(node, uid).get("state") == "sent", 120, 0.2)

    delivered = _study(node, uid)["deliveries"]
    assert {d["state"] for d in delivered} == {"sent"}, delivered
    found = orthanc.instances_by_modality(uid)
    assert len(found.get("SEG", [])) == 1 and len(found.get("SR", [])) == 1, found
    assert len(found.get("CT", [])) == len(files)
    sent_uids = {d["sop_instance_uid"] for d in delivered}
    in_orthanc = {
        orthanc.get(f"/instances/{i['ID']}/tags?simplify")["SOPInstanceUID"]
        for m in ("SEG", "SR")
        for i in found[m]
    }
    assert in_orthanc == sent_uids

    audit = DbAuditLog(Database(f"sqlite:///{node.data_dir / 'medvision.db'}"))
    events = audit.events()
    sent = [e for e in events if e["type"] == "results.sent"]
    failed = [e for e in events if e["type"] == "results.send_failed"]
    # Once: each result was reported sent exactly once, after at least one failure.
    assert failed, [e["type"] for e in events]
    assert sorted(e["sop_instance_uid"] for e in sent) == sorted(sent_uids), sent
    assert audit.verify().ok
