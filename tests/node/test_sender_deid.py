"""A research destination marked ``deidentify`` gets de-identified results, while the
source PACS gets the originals: two real dcmtk storescp peers."""

from __future__ import annotations

import subprocess
from pathlib import Path

from pydicom import dcmread

from medvision.config import DeidSettings, Modality, Settings
from medvision.db import Outbox
from medvision.deid import keyed_uid, pseudonym
from medvision.node import Sender
from tests.node.outbox import PendingResults
from tests.node.peers import DCMTK, free_port, stop_process, wait_for


def test_research_destination_gets_deidentified_copies(tmp_path: Path, shared_data: Path) -> None:
    secret = b"research-site-secret-0123456789"
    (tmp_path / "deid.key").write_bytes(secret + b"\n")
    pacs_port, research_port = free_port(), free_port()
    pacs = Modality(ae_title="PACS", host="127.0.0.1", port=pacs_port)
    research = Modality(ae_title="RESEARCH", host="127.0.0.1", port=research_port, deidentify=True)
    pending = PendingResults(tmp_path, shared_data, pacs, "1.2.826.0.1.3680043.8.498.5")
    # The same two results are also queued for the research destination.
    with pending.db.session() as session:
        for row in list(session.query(Outbox)):
            session.add(
                Outbox(
                    job_id=row.job_id,
                    study_instance_uid=row.study_instance_uid,
                    destination="research",
                    ae_title=research.ae_title,
                    host=research.host,
                    port=research.port,
                    path=row.path,
                    sop_instance_uid=row.sop_instance_uid,
                    sop_class_uid=row.sop_class_uid,
                )
            )
    settings = Settings(
        data_dir=tmp_path / "data",
        modalities={"pacs": pacs, "research": research},
        deid=DeidSettings(secret_file=tmp_path / "deid.key", clean_descriptors=True),
    )
    sender = Sender(settings, pending.db, pending.audit)

    peers, folders = [], {}
    for aet, port in (("PACS", pacs_port), ("RESEARCH", research_port)):
        folders[aet] = tmp_path / aet
        folders[aet].mkdir()
        peers.append(
            subprocess.Popen(
                [str(DCMTK / "storescp"), "-aet", aet, "-od", str(folders[aet]), str(port)],
                env={"TCP_NODELAY": "1", "PATH": "/usr/bin:/bin"},
            )
        )
    try:
        wait_for("delivery", lambda: sender.send_due() and None or pending.all_sent(), 20, 0.1)
    finally:
        for peer in peers:
            stop_process(peer)

    originals = {str(ds.SOPInstanceUID): ds for ds in (dcmread(r.path) for r in pending.rows()[:2])}
    at_pacs = {str(ds.SOPInstanceUID): ds for ds in map(dcmread, folders["PACS"].iterdir())}
    at_research = [dcmread(p) for p in folders["RESEARCH"].iterdir()]
    assert set(at_pacs) == set(originals)
    for uid, ds in at_pacs.items():  # the source PACS: untouched
        assert ds == originals[uid]  # every element as stored
    assert sorted(str(ds.SOPInstanceUID) for ds in at_research) == sorted(
        keyed_uid(secret, uid) for uid in originals
    )
    for ds in at_research:
        original = next(
            o
            for o in originals.values()
            if keyed_uid(secret, o.SOPInstanceUID) == ds.SOPInstanceUID
        )
        assert ds.PatientIdentityRemoved == "YES"
        assert ds.PatientID == pseudonym(secret, str(original.PatientID))
        assert ds.StudyInstanceUID == keyed_uid(secret, original.StudyInstanceUID)
        assert [i.CodeValue for i in ds.DeidentificationMethodCodeSequence] == [
            "113100",
            "113105",
        ]
        assert "PatientBirthDate" not in ds or not ds.PatientBirthDate
    sent = [e for e in pending.audit.events() if e["type"] == "results.sent"]
    assert sorted(e["deidentified"] for e in sent) == [False, False, True, True]
    pending.close()
