"""Two receivers on one PostgreSQL database and one data folder (docs/scaling.md, "Several
receivers on one database"), as an administrator behind a load balancer sees them: one
study's associations land on both, and the PACS gets one SEG and one SR, from one job.

PostgreSQL only (SQLite is one host's database): skipped when
``MEDVISION_TEST_POSTGRES_URL`` is unset, as the other PostgreSQL tests are.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydicom import dcmread
from sqlalchemy import func, select

from medvision.audit import DbAuditLog, load_key, verify_with_anchors
from medvision.db import Acceptor, Base, Database, Instance, Job, Outbox, Receiver, Study
from tests.node.peers import NodeProcess, Orthanc, http_json, wait_for

POSTGRES_URL = os.environ.get("MEDVISION_TEST_POSTGRES_URL", "")

pytestmark = pytest.mark.skipif(not POSTGRES_URL, reason="MEDVISION_TEST_POSTGRES_URL is not set")


@pytest.fixture
def database() -> Iterator[Database]:
    db = Database(POSTGRES_URL)
    Base.metadata.drop_all(db.engine)  # a clean schema for each test
    db.create_schema()
    yield db
    Base.metadata.drop_all(db.engine)
    db.dispose()


@pytest.fixture
def pacs_and_receivers(
    tmp_path: Path, database: Database
) -> Iterator[tuple[Orthanc, NodeProcess, NodeProcess]]:
    """Orthanc, and receivers ``rx-a`` (two acceptor processes) and ``rx-b`` (the SCP in
    the node's own process) sharing the database and ``medvision-data``."""
    data = tmp_path / "medvision-data"
    common: dict[str, Any] = {"database_url": POSTGRES_URL, "quiet_period_s": 3}
    a = NodeProcess(data, node_name="rx-a", scp_processes=2, **common)
    b = NodeProcess(data, node_name="rx-b", scp_processes=1, **common)
    orthanc = Orthanc(
        tmp_path / "orthanc",
        {"rx-a": (a.ae_title, a.dicom_port), "rx-b": (b.ae_title, b.dicom_port)},
    )
    for node in (a, b):
        node.settings.update(
            poll_interval_s=0.2,
            allowed_calling_aets=[orthanc.aet],
            accept_unknown_calling_ae=False,
            modalities={
                "pacs": {"ae_title": orthanc.aet, "host": "127.0.0.1", "port": orthanc.dicom_port}
            },
        )
    orthanc.start()
    try:
        a.start()
        b.token = a.token  # one database: the user made for a is b's too
        b.start()
        yield orthanc, a, b
    finally:
        for node in (a, b):
            node.stop()
        orthanc.stop()


def _status_receivers(node: NodeProcess) -> list[list[str]]:
    """Name and state of each line of ``medvision status``'s ``receivers:`` section."""
    status = node.status()
    assert status.returncode == 0, status.stderr
    lines = status.stdout.splitlines()
    assert lines[0] == "receivers:", status.stdout
    return [line.split()[:2] for line in lines[1:3]]


def _count(db: Database, query: Any) -> int:
    with db.session() as session:
        return int(session.scalar(query) or 0)


def test_a_study_split_between_two_receivers_is_run_and_sent_once(
    pacs_and_receivers: tuple[Orthanc, NodeProcess, NodeProcess],
    database: Database,
    chest_ct_dir: Path,
) -> None:
    orthanc, a, b = pacs_and_receivers
    files = sorted(chest_ct_dir.glob("*.dcm"))
    uid = str(dcmread(files[0], stop_before_pixels=True).StudyInstanceUID)
    ids = [
        http_json(orthanc.url + "/instances", raw=f.read_bytes(), method="POST")["ID"]
        for f in files
    ]
    # Four associations, two at a time, one to each receiver: a and b index into the same
    # study concurrently, and neither may complete it while the other is still receiving.
    quarters = [ids[i::4] for i in range(4)]
    for first, second in ((quarters[0], quarters[1]), (quarters[2], quarters[3])):
        pushes = [
            threading.Thread(
                target=orthanc.post,
                args=(f"/modalities/{name}/store", {"Resources": part, "Synchronous": True}),
            )
            for name, part in (("rx-a", first), ("rx-b", second))
        ]
        for push in pushes:
            push.start()
        for push in pushes:
            push.join(120)

    def sent() -> bool:
        study = a.study(uid)
        assert study is None or study["state"] not in ("failed", "send-failed"), study
        return study is not None and study["state"] == "sent"

    wait_for(f"study {uid} to be sent", sent, 240, 0.2)
    assert b.study(uid)["state"] == "sent"  # one index, whichever receiver is asked

    # One study, every instance, one version, one job, one delivery of each result.
    with database.session() as session:
        study = session.scalar(select(Study).where(Study.study_instance_uid == uid))
        assert study is not None
        assert (study.version, study.instance_count) == (1, len(files))
        jobs = list(session.scalars(select(Job).where(Job.study_instance_uid == uid)))
        outbox = list(session.scalars(select(Outbox).where(Outbox.study_instance_uid == uid)))
        receivers = {r.name: r.state for r in session.scalars(select(Receiver))}
    assert _count(database, select(func.count()).select_from(Study)) == 1
    assert _count(database, select(func.count()).select_from(Instance)) == len(files)
    assert [(j.state, j.attempts) for j in jobs] == [("done", 1)], jobs
    assert jobs[0].worker.split(":")[0] in ("rx-a", "rx-b")
    assert sorted((o.sop_class_uid, o.state, o.attempts) for o in outbox) == [
        ("1.2.840.10008.5.1.4.1.1.66.4", "sent", 1),
        ("1.2.840.10008.5.1.4.1.1.88.34", "sent", 1),
    ]
    assert receivers == {"rx-a": "serving", "rx-b": "serving"}
    # Both as an operator sees them, whichever receiver is asked.
    shown = {w["name"]: w for w in b.get("/workers") if w["kind"] == "receiver"}
    assert {n: (w["state"], w["alive"], w["receiver"]) for n, w in shown.items()} == {
        "rx-a": ("serving", True, {"busy_studies": 0}),
        "rx-b": ("serving", True, {"busy_studies": 0}),
    }
    assert _status_receivers(a) == [["rx-a", "serving"], ["rx-b", "serving"]]

    # Both received half of it (the acceptors' counters, as `medvision status` shows them).
    def received() -> dict[str, int] | None:
        with database.session() as session:
            by: dict[str, int] = {}
            for row in session.scalars(select(Acceptor)):
                receiver = row.name.split("/")[0]
                by[receiver] = by.get(receiver, 0) + row.instances
        return by if sum(by.values()) == len(files) else None

    assert wait_for("the acceptors' counters", received, 15) == {
        "rx-a": len(files) // 2,
        "rx-b": len(files) - len(files) // 2,
    }
    completions = [e for e in DbAuditLog(database).events(uid) if e["type"] == "study.complete"]
    assert len(completions) == 1, completions

    # The PACS has one SEG and one SR in the study, and every CT image it sent.
    def results() -> dict[str, int]:
        found = orthanc.instances_by_modality(uid)
        return {m: len(found.get(m, [])) for m in ("CT", "SEG", "SR")}

    wait_for("Orthanc to hold the results", lambda: results()["SR"] >= 1, 30)
    assert results() == {"CT": len(files), "SEG": 1, "SR": 1}

    # One spool, each receiver's journals under its own name.
    spool = a.data_dir / "spool"
    assert len(list((spool / uid).rglob("*.dcm"))) == len(files)
    journals = spool / ".journal"
    assert sorted(p.name for p in (journals / "rx-a").iterdir() if p.is_dir()) == [
        "acceptor-1",
        "acceptor-2",
    ]
    assert (journals / "rx-b").is_dir()
    assert not [p for p in journals.iterdir() if p.name.startswith("acceptor-")]

    # Both stop at once, each anchoring the one audit chain in the one anchor file: the
    # checkpoints take turns (no number twice) and the chain verifies against them.
    stops = [threading.Thread(target=node.stop) for node in (a, b)]
    for stop in stops:
        stop.start()
    for stop in stops:
        stop.join(60)
    assert _status_receivers(a) == [["rx-a", "stopped"], ["rx-b", "stopped"]]
    data = a.data_dir
    report = verify_with_anchors(
        DbAuditLog(database).events(),
        data / "audit-anchors.jsonl",
        load_key(data / "audit-anchor.key"),
        a.ae_title,
    )
    assert report.ok, report.problem or report.chain
    # Each start, then the stops (one checkpoint may anchor both receivers' stop events).
    assert report.anchors >= 3
