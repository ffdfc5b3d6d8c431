"""The sender against a real dcmtk storescp: unreachable first, then delivered."""

from __future__ import annotations

import subprocess
from pathlib import Path

from pydicom import dcmread

from medvision.config import Modality
from medvision.db import as_utc
from tests.node.outbox import PendingResults
from tests.node.peers import DCMTK, free_port, stop_process, wait_for


def test_unreachable_destination_then_delivered(tmp_path: Path, shared_data: Path) -> None:
    port = free_port()  # nothing listens here yet
    pending = PendingResults(
        tmp_path,
        shared_data,
        Modality(ae_title="STORESCP", host="127.0.0.1", port=port),
        "1.2.826.0.1.3680043.8.498.1",
    )
    assert pending.sender.send_due() == 0
    first = pending.rows()
    assert [(r.state, r.attempts) for r in first] == [("pending", 1)] * 2
    assert "cannot associate" in first[0].last_error
    assert pending.study_state() == "send-failed"  # visible, and still queued
    assert pending.sender.send_due() == 0  # backing off
    assert [r.attempts for r in pending.rows()] == [1, 1]
    wait_for(
        "the first retry",
        lambda: pending.sender.send_due() == 0 and pending.rows()[0].attempts == 2,
        10,
    )
    second = pending.rows()
    # Exponential: the retry came no earlier than due, and then waits 0.4 s (twice 0.2 s).
    delta = as_utc(second[0].next_attempt_at) - as_utc(first[0].next_attempt_at)
    assert delta.total_seconds() >= 0.4

    # The PACS comes back: dcmtk's storescp on that port.
    out = tmp_path / "received"
    out.mkdir()
    scp = subprocess.Popen(
        [str(DCMTK / "storescp"), "-aet", "STORESCP", "-od", str(out), str(port)],
        env={"TCP_NODELAY": "1", "PATH": "/usr/bin:/bin"},
    )
    try:
        wait_for(
            "delivery", lambda: pending.sender.send_due() and None or pending.all_sent(), 20, 0.1
        )
    finally:
        stop_process(scp)
    arrived = sorted(str(dcmread(p).SOPInstanceUID) for p in out.iterdir())
    assert arrived == sorted(r.sop_instance_uid for r in pending.rows())
    assert pending.study_state() == "sent"
    types = [e["type"] for e in pending.audit.events()]
    assert types.count("results.sent") == 2
    assert types.count("results.send_failed") >= 4
    assert pending.audit.verify().ok
    pending.close()
