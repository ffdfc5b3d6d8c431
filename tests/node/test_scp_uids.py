"""What the SCP refuses about UIDs, against real peers over loopback (dcmtk and pynetdicom).

- A UID is checked as a whole string (the UI VR): ``1.2.3\\n`` must not name a spool folder.
- A SOP Instance UID the node already holds in another study or series is refused (0xC000,
  Error: Cannot understand) and audited; the spool and the index keep agreeing.
- Every refused C-STORE is logged with the SOP Instance UID and the calling AE title.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path

import pytest
from pydicom import Dataset, dcmread
from pydicom.uid import generate_uid
from pynetdicom import AE, _config
from sqlalchemy import select

from medvision.db import Instance, Study
from tests.node.peers import dcmtk

CT = "1.2.840.10008.5.1.4.1.1.2"


def _spooled(scp) -> list[Path]:  # noqa: ANN001
    """Every instance file in the spool once the journal has written them out."""
    scp.flush()
    return sorted(scp.settings.spool_dir.glob("*/*/*.dcm"))


def _indexed(scp) -> tuple[list[Instance], list[Study]]:  # noqa: ANN001
    scp.flush()
    with scp.db.session() as session:
        return (
            list(session.scalars(select(Instance).order_by(Instance.id))),
            list(session.scalars(select(Study).order_by(Study.id))),
        )


def _send(port: int, *datasets: Dataset, aet: str = "PACS1") -> list[Dataset]:
    """C-STORE each dataset over one pynetdicom association; the response statuses."""
    ae = AE(ae_title=aet)
    for ds in datasets:
        ae.add_requested_context(ds.SOPClassUID, ds.file_meta.TransferSyntaxUID)
    assoc = ae.associate("127.0.0.1", port, ae_title="MEDVISION")
    assert assoc.is_established
    try:
        return [assoc.send_c_store(ds) for ds in datasets]
    finally:
        assoc.release()


def _moved(src: Path, out: Path, *, study: bool = True, series: bool = True) -> Path:
    """``src`` with its SOP Instance UID kept and new Study and/or Series UIDs."""
    ds = dcmread(src)
    if study:
        ds.StudyInstanceUID = generate_uid()
    if series:
        ds.SeriesInstanceUID = generate_uid()
    out.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(out)
    return out


def _with_newline(src: Path, keyword: str, out: Path) -> tuple[Path, str]:
    """``src`` with the UID ``keyword`` ending in a newline, written byte for byte (pydicom
    strips whitespace from a UID it is given, so the file is patched instead); the file and
    the patched UID as sent (the file meta's SOP Instance UID is patched along)."""
    raw = src.read_bytes()
    uid = str(getattr(dcmread(src, stop_before_pixels=True), keyword)).encode()
    if len(uid) % 2:  # padded with a NUL: the newline takes the pad's place
        old, new = uid + b"\x00", uid + b"\n"
    else:  # even: the last digit becomes the newline (lengths stay right)
        old, new = uid, uid[:-1] + b"\n"
    assert raw.count(old) == (2 if keyword == "SOPInstanceUID" else 1)
    out.write_bytes(raw.replace(old, new))
    return out, new.decode()


@pytest.mark.filterwarnings("ignore:Invalid value for VR UI")  # pydicom reading our bad file
@pytest.mark.parametrize("keyword", ["StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID"])
def test_a_uid_with_a_trailing_newline_is_refused(
    start_scp,
    chest_ct_dir: Path,
    keyword: str,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    scp = start_scp()
    src = sorted(chest_ct_dir.glob("*.dcm"))[0]
    path, bad = _with_newline(src, keyword, tmp_path / "newline.dcm")
    ds = dcmread(path, stop_before_pixels=True)
    # pynetdicom streams the file's dataset bytes as they are (dcmtk's storescu and a
    # decoded pydicom dataset would strip the newline). The request's SOP Instance UID
    # comes from the file meta, read (and stripped) by pydicom.
    monkeypatch.setattr(_config, "STORE_SEND_CHUNKED_DATASET", True)
    ae = AE(ae_title="NEWLINE")
    ae.add_requested_context(CT, ds.file_meta.TransferSyntaxUID)
    assoc = ae.associate("127.0.0.1", scp.port, ae_title="MEDVISION")
    assert assoc.is_established
    with caplog.at_level(logging.WARNING, logger="medvision.scp"):
        try:
            status = assoc.send_c_store(path)
        finally:
            assoc.release()
    assert status.Status == 0xC000
    assert _spooled(scp) == []
    assert [p.name for p in scp.settings.spool_dir.iterdir() if not p.name.startswith(".")] == []
    instances, studies = _indexed(scp)
    assert (instances, studies) == ([], [])
    (line,) = [r.getMessage() for r in caplog.records if "C-STORE refused" in r.getMessage()]
    assert str(ds.SOPInstanceUID).strip() in line
    if keyword != "SOPInstanceUID":
        assert repr(bad) in line  # the bad UID itself, shown as what it is
    assert "NEWLINE" in line and "127.0.0.1" in line
    assert "\n" not in line  # the peer's newline cannot forge a second log line


def test_same_sop_instance_in_another_study_is_refused(
    start_scp, chest_ct_dir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    scp = start_scp()
    src = sorted(chest_ct_dir.glob("*.dcm"))[5]
    first = dcmread(src, stop_before_pixels=True)
    sent = dcmtk("storescu", "-aet", "PACS1", "-aec", "MEDVISION", "127.0.0.1", scp.port, src)
    assert sent.returncode == 0, sent.stderr

    other_study = _moved(src, tmp_path / "other-study.dcm")
    other_series = _moved(src, tmp_path / "other-series.dcm", study=False)
    with caplog.at_level(logging.WARNING, logger="medvision.scp"):
        for path in (other_study, other_series):
            refused = dcmtk(
                "storescu", "-v", "-aet", "PACS2", "-aec", "MEDVISION", "127.0.0.1", scp.port, path
            )
            # dcmtk reports the status it got back ("Error: Cannot understand" for Cxxx).
            assert refused.returncode != 0
            assert "Error: CannotUnderstand" in refused.stdout + refused.stderr, refused.stderr
        # pynetdicom sees the related fields PS3.4 B.2.3 allows for Cxxx.
        (status,) = _send(scp.port, dcmread(other_study), aet="PACS3")
    assert status.Status == 0xC000
    assert status.OffendingElement == 0x00080018
    assert "already held" in status.ErrorComment

    # Spool and index agree: one file, one row, one study that counts it.
    files = _spooled(scp)
    instances, studies = _indexed(scp)
    assert [str(p.relative_to(scp.settings.spool_dir)) for p in files] == [
        i.path for i in instances
    ]
    assert [i.sop_instance_uid for i in instances] == [str(first.SOPInstanceUID)]
    assert [(s.study_instance_uid, s.instance_count) for s in studies] == [
        (str(first.StudyInstanceUID), 1)
    ]
    assert dcmread(files[0]).SeriesInstanceUID == first.SeriesInstanceUID

    refusals = [e for e in scp.audit.events() if e["type"] == "instances.refused"]
    assert [(e["calling_aet"], e["sop_instance_uid"]) for e in refusals] == [
        ("PACS2", str(first.SOPInstanceUID)),
        ("PACS2", str(first.SOPInstanceUID)),
        ("PACS3", str(first.SOPInstanceUID)),
    ]
    assert {e["held_in_study_instance_uid"] for e in refusals} == {str(first.StudyInstanceUID)}
    assert all(e["outcome"] == "failure" for e in refusals)
    assert scp.audit.verify().ok
    lines = [r.getMessage() for r in caplog.records if "C-STORE refused" in r.getMessage()]
    assert len(lines) == 3
    assert all(str(first.SOPInstanceUID) in line for line in lines)
    assert ["PACS2" in lines[0], "PACS2" in lines[1], "PACS3" in lines[2]] == [True] * 3
    # No patient attribute reaches the log.
    for keyword in ("PatientName", "PatientID"):
        value = str(first.get(keyword, "") or "").strip()
        assert not value or all(value not in line for line in lines)

    # A true resend (same study and series) is still a harmless Success.
    again = dcmtk("storescu", "-aet", "PACS1", "-aec", "MEDVISION", "127.0.0.1", scp.port, src)
    assert again.returncode == 0, again.stderr
    assert len(_spooled(scp)) == 1


def test_two_studies_racing_for_one_sop_instance_uid(
    start_scp, chest_ct_dir: Path, tmp_path: Path
) -> None:
    """Eight associations at once send one SOP Instance UID in eight different studies,
    none of them acknowledged or indexed yet: exactly one is stored, the rest refused."""
    scp = start_scp()
    src = sorted(chest_ct_dir.glob("*.dcm"))[7]
    variants = [dcmread(_moved(src, tmp_path / f"v{n}.dcm")) for n in range(8)]
    statuses: list[int] = []
    start = threading.Barrier(len(variants))

    def push(ds: Dataset) -> None:
        ae = AE(ae_title="RACER")
        ae.add_requested_context(CT, ds.file_meta.TransferSyntaxUID)
        assoc = ae.associate("127.0.0.1", scp.port, ae_title="MEDVISION")
        assert assoc.is_established
        try:
            start.wait(30)
            statuses.append(int(assoc.send_c_store(ds).Status))
        finally:
            assoc.release()

    threads = [threading.Thread(target=push, args=(ds,)) for ds in variants]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert sorted(statuses) == [0x0000] + [0xC000] * 7
    files = _spooled(scp)
    instances, studies = _indexed(scp)
    assert len(files) == len(instances) == len(studies) == 1
    assert studies[0].instance_count == 1
    assert str(files[0].relative_to(scp.settings.spool_dir)) == instances[0].path


def test_a_spooled_file_whose_uid_is_indexed_elsewhere_opens_no_study(tmp_path: Path) -> None:
    """Start-up re-indexing of a spool written before the SCP refused such files: the file
    is left out of the index (and logged), instead of opening a study of 0 instances."""
    from medvision.db import Database
    from medvision.node._ingest import Received, index_instances
    from medvision.node._spool import StoredFile

    db = Database(f"sqlite:///{tmp_path / 'medvision.db'}")
    db.create_schema()
    try:

        def item(study: str, series: str, sop: str) -> tuple[Received, StoredFile]:
            relpath = f"{study}/{series}/{sop}.dcm"
            return Received(study, series, sop, CT, "PACS1", ""), StoredFile(relpath, 1, "0", True)

        assert index_instances(db, [item("1.2.1", "1.2.1.1", "1.2.9")]) == 1
        assert index_instances(db, [item("1.2.2", "1.2.2.1", "1.2.9")]) == 0
        assert index_instances(db, [item("1.2.1", "1.2.1.2", "1.2.9")]) == 0
        both = [item("1.2.3", "1.2.3.1", "1.2.9"), item("1.2.3", "1.2.3.1", "1.2.10")]
        assert index_instances(db, both) == 1
        with db.session() as session:
            counts = {
                s.study_instance_uid: s.instance_count for s in session.scalars(select(Study))
            }
            rows = {i.sop_instance_uid: i.path for i in session.scalars(select(Instance))}
        assert counts == {"1.2.1": 1, "1.2.3": 1}
        assert rows == {"1.2.9": "1.2.1/1.2.1.1/1.2.9.dcm", "1.2.10": "1.2.3/1.2.3.1/1.2.10.dcm"}
    finally:
        db.dispose()
