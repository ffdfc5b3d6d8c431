"""The SCP against real peers: dcmtk's echoscu/storescu/img2dcm and a pynetdicom SCU.

Each test runs the real StorageSCP (durable spool + database index + audit) on a free port.
"""

from __future__ import annotations

from pathlib import Path

from pydicom import dcmread
from pydicom.uid import generate_uid
from pynetdicom import AE
from sqlalchemy import select

from medvision.db import Instance, Study
from tests.node.peers import dcmtk

CT = "1.2.840.10008.5.1.4.1.1.2"


def _instances(scp) -> list[Instance]:  # noqa: ANN001
    scp.flush()
    with scp.db.session() as session:
        return list(session.scalars(select(Instance).order_by(Instance.id)))


def _store(port: int, *files: Path, aet: str = "STORESCU", extra: tuple[str, ...] = ()):  # noqa: ANN202
    return dcmtk("storescu", *extra, "-aet", aet, "-aec", "MEDVISION", "127.0.0.1", port, *files)


def _dataset_bytes(path: Path) -> bytes:
    """The dataset after the file meta, as it was encoded on the wire."""
    raw = path.read_bytes()
    ds = dcmread(path, stop_before_pixels=True)
    meta_end = 132 + 12 + int(ds.file_meta.FileMetaInformationGroupLength)
    return raw[meta_end:]


def test_echo_and_store_real_ct(start_scp, chest_ct_dir: Path) -> None:
    scp = start_scp()
    echo = dcmtk("echoscu", "-aet", "PACS1", "-aec", "MEDVISION", "127.0.0.1", scp.port)
    assert echo.returncode == 0, echo.stderr

    files = sorted(chest_ct_dir.glob("*.dcm"))[:5]
    result = _store(scp.port, *files, aet="PACS1")
    assert result.returncode == 0, result.stderr

    rows = _instances(scp)
    assert len(rows) == 5
    assert {r.sop_class_uid for r in rows} == {CT}
    assert {r.calling_aet for r in rows} == {"PACS1"}
    for src in files:
        uid = str(dcmread(src, stop_before_pixels=True).SOPInstanceUID)
        row = next(r for r in rows if r.sop_instance_uid == uid)
        spooled = scp.settings.spool_dir / row.path
        # Written as received: the same elements and pixel data (storescu may have sent it
        # in another uncompressed transfer syntax; see the -R test below for byte identity).
        assert dcmread(spooled) == dcmread(src)
        meta = dcmread(spooled, stop_before_pixels=True).file_meta
        assert meta.SourceApplicationEntityTitle.strip() == "PACS1"
    with scp.db.session() as session:
        study = session.scalars(select(Study)).one()
        assert (study.state, study.instance_count, study.calling_aet) == ("receiving", 5, "PACS1")

    types = [e["type"] for e in scp.audit.events()]
    assert types.count("association.accepted") == 2  # echo + store
    received = [e for e in scp.audit.events() if e["type"] == "instances.received"]
    assert [e["instances"] for e in received] == [5]
    assert scp.audit.verify().ok


def _storage_classes_examples(shared: Path, out: Path) -> dict[str, Path]:
    """One real file per SOP class we accept (plus the two we must derive ourselves)."""
    mr = shared / "mr" / "philips-3t-brain"
    segsr = shared / "seg-sr"
    files = {
        "ct": shared / "ct" / "lung-pet-ct-dx-A0001" / "series-5mm" / "1-01.dcm",
        "mr": sorted((mr / "classic-t1").glob("*.dcm"))[0],
        "enhanced-mr": mr / "enhanced" / "1901_WIP_3DpCASL_real.dcm",
        "legacy-enhanced-ct": segsr / "dcmqi/data/segmentations/24x38x3/multiframe/mf.dcm",
        "seg": segsr / "highdicom/data/test_files/seg_image_ct_binary.dcm",
        "labelmap-seg": segsr / "dcmqi/data/segmentations/sparse-labelmap-noppv.dcm",
        "comprehensive-sr": segsr / "dcmqi/data/sr-example/sr.dcm",
        "enhanced-sr": segsr / "tid1500/examples/dcmqi/result.dcm",
        "comprehensive-3d-sr": segsr
        / "highdicom/data/test_files/sr_document_with_multiple_groups.dcm",
    }
    # Enhanced CT: no public sample here; relabel the legacy converted one (same modules
    # the SCP cares about) with a fresh SOP Instance UID.
    ds = dcmread(files["legacy-enhanced-ct"])
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.2.1"
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.save_as(out / "enhanced-ct.dcm")
    files["enhanced-ct"] = out / "enhanced-ct.dcm"
    # Secondary Capture, JPEG baseline: dcmtk's img2dcm wraps a real screenshot.
    jpeg = segsr / "dcmqi/data/segmentations/24x38x3/screenshots/brainlab.jpg"
    made = dcmtk("img2dcm", "-stf", files["ct"], jpeg, out / "sc.dcm")
    assert made.returncode == 0, made.stderr
    files["secondary-capture"] = out / "sc.dcm"
    return files


def test_store_every_supported_sop_class(start_scp, shared_data: Path, tmp_path: Path) -> None:
    scp = start_scp()
    files = _storage_classes_examples(shared_data, tmp_path)
    # -R: propose exactly what the files are (dcmtk 3.6.7 has no default context for
    # some of these classes).
    by_dcmtk = [p for n, p in files.items() if n not in ("labelmap-seg", "secondary-capture")]
    result = _store(scp.port, *by_dcmtk, extra=("-R",))
    assert result.returncode == 0, result.stderr + result.stdout
    # With -R, storescu offers one context per class and cannot decode JPEG Baseline to
    # fall back: the SC goes with -xy, "propose JPEG baseline".
    result = _store(scp.port, files["secondary-capture"], extra=("-xy",))
    assert result.returncode == 0, result.stderr + result.stdout
    # dcmtk 3.6.7 refuses the Label Map SEG class it does not know: pynetdicom sends it.
    labelmap = dcmread(files["labelmap-seg"])
    ae = AE(ae_title="PACS1")
    ae.add_requested_context(labelmap.SOPClassUID, labelmap.file_meta.TransferSyntaxUID)
    assoc = ae.associate("127.0.0.1", scp.port, ae_title="MEDVISION")
    assert assoc.is_established
    try:
        assert assoc.send_c_store(labelmap).Status == 0x0000
    finally:
        assoc.release()
    rows = {r.sop_instance_uid: r for r in _instances(scp)}
    for name, path in files.items():
        ds = dcmread(path, stop_before_pixels=True)
        row = rows.get(str(ds.SOPInstanceUID))
        assert row is not None, f"{name} was not stored"
        assert row.sop_class_uid == str(ds.SOPClassUID), name
        spooled = dcmread(scp.settings.spool_dir / row.path, stop_before_pixels=True)
        assert spooled.file_meta.TransferSyntaxUID == ds.file_meta.TransferSyntaxUID, name


def test_compressed_transfer_syntaxes(
    start_scp, compressed_ct: dict[str, Path], sample_dir: Path
) -> None:
    scp = start_scp()
    j2k = sorted(sample_dir.rglob("*.dcm"))[0]  # the sample is JPEG 2000 lossless
    files = {**compressed_ct, "jpeg2000": j2k}
    # One association each, proposing that transfer syntax first, as a PACS would.
    propose = {
        "rle": "-xr",
        "jpeg-ls": "-xt",
        "jpeg-lossless": "-xs",
        "deflated": "-xd",
        "explicit-be": "-xb",
        "jpeg2000": "-xv",
    }
    for name, path in files.items():
        result = _store(scp.port, path, extra=(propose[name],))
        assert result.returncode == 0, name + ": " + result.stderr + result.stdout
    rows = {r.sop_instance_uid: r for r in _instances(scp)}
    assert len(rows) == len(files)
    for name, path in files.items():
        sent = dcmread(path)
        row = rows[str(sent.SOPInstanceUID)]
        spooled_path = scp.settings.spool_dir / row.path
        spooled = dcmread(spooled_path)
        assert spooled.file_meta.TransferSyntaxUID == sent.file_meta.TransferSyntaxUID, name
        if name != "deflated":  # deflate re-compresses; elsewhere the bytes are as received
            assert _dataset_bytes(spooled_path) == _dataset_bytes(path), name
        assert (spooled.pixel_array == sent.pixel_array).all(), name


def test_duplicate_instance_is_stored_once(start_scp, chest_ct_dir: Path) -> None:
    scp = start_scp()
    src = sorted(chest_ct_dir.glob("*.dcm"))[3]
    for _ in range(2):
        result = _store(scp.port, src)
        assert result.returncode == 0, result.stderr
    rows = _instances(scp)
    assert len(rows) == 1
    assert len(list(scp.settings.spool_dir.glob("*/*/*.dcm"))) == 1
    with scp.db.session() as session:
        assert session.scalars(select(Study)).one().instance_count == 1
    received = [e for e in scp.audit.events() if e["type"] == "instances.received"]
    assert sum(e["instances"] for e in received) == 1


def test_unknown_calling_aet_is_rejected(start_scp) -> None:
    scp = start_scp(allowed_calling_aets=["ORTHANC"], accept_unknown_calling_ae=False)
    bad = dcmtk("echoscu", "-aet", "INTRUDER", "-aec", "MEDVISION", "127.0.0.1", scp.port)
    assert bad.returncode != 0
    assert "Calling AE Title Not Recognized" in bad.stderr + bad.stdout
    good = dcmtk("echoscu", "-aet", "ORTHANC", "-aec", "MEDVISION", "127.0.0.1", scp.port)
    assert good.returncode == 0, good.stderr

    rejected = [e for e in scp.audit.events() if e["type"] == "association.rejected"]
    assert len(rejected) == 1
    event = rejected[0]
    assert event["outcome"] == "failure"
    assert event["calling_aet"] == "INTRUDER"
    assert "allow-list" in event["reason"]
    assert event["security_alert"] is True
    accepted = [e for e in scp.audit.events() if e["type"] == "association.accepted"]
    assert [e["calling_aet"] for e in accepted] == ["ORTHANC"]


def test_unknown_source_address_is_rejected(start_scp) -> None:
    scp = start_scp(allowed_hosts=["192.0.2.7"])  # TEST-NET-1: never us
    bad = dcmtk("echoscu", "-aet", "ORTHANC", "-aec", "MEDVISION", "127.0.0.1", scp.port)
    assert bad.returncode != 0
    assert "Association Rejected" in bad.stderr + bad.stdout
    (event,) = [e for e in scp.audit.events() if e["type"] == "association.rejected"]
    assert event["calling_host"] == "127.0.0.1"
    assert "host" in event["reason"]


def test_unwritable_spool_answers_out_of_resources(start_scp, chest_ct_dir: Path) -> None:
    """A real OS-level failure: the study's spool folder path is a regular file."""
    scp = start_scp()
    src = sorted(chest_ct_dir.glob("*.dcm"))[0]
    ds = dcmread(src)
    blocker = scp.settings.spool_dir / str(ds.StudyInstanceUID)
    blocker.write_bytes(b"not a folder")

    ae = AE(ae_title="PACS1")
    ae.add_requested_context(CT, ds.file_meta.TransferSyntaxUID)
    assoc = ae.associate("127.0.0.1", scp.port, ae_title="MEDVISION")
    assert assoc.is_established
    try:
        status = assoc.send_c_store(ds)
    finally:
        assoc.release()
    assert status.Status == 0xA700  # Out of Resources, never Success

    # dcmtk sees the same failure.
    result = _store(scp.port, src)
    assert "Out of Resources" in result.stderr + result.stdout or result.returncode != 0

    assert _instances(scp) == []
    assert blocker.read_bytes() == b"not a folder"
    assert list((scp.settings.spool_dir / ".incoming").iterdir()) == []
    refused = [e for e in scp.audit.events() if e["type"] == "instances.refused"]
    assert refused and refused[0]["outcome"] == "failure"


def test_max_pdu_and_max_associations(start_scp) -> None:
    scp = start_scp(max_pdu=16384, max_associations=1)
    ae = AE(ae_title="PACS1")
    ae.add_requested_context("1.2.840.10008.1.1")
    first = ae.associate("127.0.0.1", scp.port, ae_title="MEDVISION")
    assert first.is_established
    try:
        assert first.acceptor.maximum_length == 16384
        second = ae.associate("127.0.0.1", scp.port, ae_title="MEDVISION")
        assert second.is_rejected
        # dcmtk's echoscu too is turned away while the one allowed association is open.
        busy = dcmtk("echoscu", "-aet", "PACS2", "-aec", "MEDVISION", "127.0.0.1", scp.port)
        assert busy.returncode != 0
    finally:
        first.release()
    again = dcmtk("echoscu", "-aet", "PACS2", "-aec", "MEDVISION", "127.0.0.1", scp.port)
    assert again.returncode == 0, again.stderr


def test_our_associations_carry_no_per_message_logging(start_scp) -> None:
    """pynetdicom binds logging handlers to every PDU and DIMSE message of an association;
    the SCP unbinds them from the associations it accepts (~0.5 ms of CPU per instance on
    the serial receive path, docs/benchmarks.md). Fails if a pynetdicom upgrade binds them
    some other way, and checks that other associations of the process keep theirs."""
    from pynetdicom import evt

    scp = start_scp()
    ae = AE(ae_title="PACS1")
    ae.add_requested_context("1.2.840.10008.1.1")
    assoc = ae.associate("127.0.0.1", scp.port, ae_title="MEDVISION")
    assert assoc.is_established
    try:
        assert assoc.send_c_echo().Status == 0x0000
        (accepted,) = scp.scp._servers[0].active_associations
        events = (evt.EVT_PDU_RECV, evt.EVT_PDU_SENT, evt.EVT_DIMSE_RECV, evt.EVT_DIMSE_SENT)
        assert {e.name: accepted.get_handlers(e) for e in events} == {e.name: [] for e in events}
        assert all(assoc.get_handlers(e) for e in events)  # the requestor's are untouched
    finally:
        assoc.release()
