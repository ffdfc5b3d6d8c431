"""A seeded fuzz corpus against the real SCP: malformed DICOM files and raw PDUs.

Every case must get a refusal (a failure status, A-ASSOCIATE-RJ, A-ABORT or a closed
connection) or a harmless store (its own new study, on disk and in the index alike, byte for
byte as sent); afterwards the node still answers C-ECHO, the study it held before is exactly
as it was (index rows and file hashes), and the spool holds no file the index does not know.
The corpus is tests/node/fuzz_corpus.py; ``MEDVISION_FUZZ_SEED`` picks another seed (a
failure message names the seed to reproduce it with).
"""

from __future__ import annotations

import hashlib
import os
import socket
import struct
import time
from pathlib import Path
from typing import Any

from pydicom.filereader import read_file_meta_info
from pynetdicom import AE, _config
from sqlalchemy import select

from medvision.config import Settings
from medvision.db import Instance, Study
from medvision.node._assembler import complete_quiet_studies
from tests.node.fuzz_corpus import (
    CT_IMAGE,
    REFUSED,
    FileCase,
    PduCase,
    associate_rq,
    file_cases,
    p_data,
    pdu_cases,
)
from tests.node.peers import dcmtk

SEED = int(os.environ.get("MEDVISION_FUZZ_SEED", "20261206"))
MAX_PDU = 16384
SUCCESS = 0x0000
A_ASSOCIATE_AC, A_ASSOCIATE_RJ, P_DATA_TF, A_ABORT = 0x02, 0x03, 0x04, 0x07
#: How long a case waits for the node's answer before it closes its side (the node then
#: sees the end of a truncated PDU).
ANSWER_WAIT_S = 1.5
#: PDUs whose announced length the node must refuse on the header alone, without waiting
#: for the rest (which never comes while the test waits).
AT_ONCE = ("associate-rq-4-gib", "p-data-larger-than-negotiated", "p-data-4-gib")
#: What a user sees of a study in ``medvision status`` and ``GET /studies``.
STUDY_COLUMNS = (
    "state",
    "version",
    "instance_count",
    "calling_aet",
    "first_received_at",
    "last_received_at",
    "reason",
)


def _c_store(port: int, case: FileCase) -> int | str:
    """C-STORE the file byte for byte over its own association: the status, or what
    happened to the association instead."""
    ae = AE(ae_title="FUZZER")
    ae.add_requested_context(CT_IMAGE, read_file_meta_info(case.path).TransferSyntaxUID)
    assoc = ae.associate("127.0.0.1", port, ae_title="MEDVISION")
    assert assoc.is_established, f"{case.name}: no association"
    try:
        status = assoc.send_c_store(case.path)
    finally:
        if assoc.is_established:
            assoc.release()
    return int(status.Status) if "Status" in status else "aborted"


def _read_pdu(sock: socket.socket) -> bytes:
    head = b""
    while len(head) < 6:
        chunk = sock.recv(6 - len(head))
        assert chunk, "the node closed the connection during the association"
        head += chunk
    (length,) = struct.unpack(">I", head[2:])
    body = b""
    while len(body) < length:
        body += sock.recv(length - len(body))
    return head + body


def _raw(port: int, case: PduCase, wait_s: float = ANSWER_WAIT_S) -> dict[str, Any]:
    """Send the case's bytes (after a sound association if it says so); collect what the
    node answers until it closes the connection (after ``wait_s`` without an answer, this
    side says it has nothing more to send)."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    answer = b""
    try:
        if case.after_association:
            sock.sendall(associate_rq("MEDVISION", "FUZZER", MAX_PDU))
            assert _read_pdu(sock)[0] == A_ASSOCIATE_AC, case.name
        try:
            sock.sendall(case.data)
        except OSError:  # the node closed while we were still sending: also an answer
            pass
        sock.settimeout(wait_s)
        answered_in_time = True
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                chunk = sock.recv(65536)
            except TimeoutError:
                # Waiting for the rest of a PDU: say there is no more.
                answered_in_time = False
                sock.shutdown(socket.SHUT_WR)
                sock.settimeout(30)
                continue
            except OSError:  # reset: closed
                break
            if not chunk:
                break
            answer += chunk
        else:
            raise AssertionError(f"{case.name}: the node kept the connection open")
    finally:
        sock.close()
    return {"first": answer[0] if answer else None, "in_time": answered_in_time}


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _snapshot(scp, study_uid: str) -> dict[str, Any]:  # noqa: ANN001
    """A study as a user would check it: its row, its instances' rows and files' hashes."""
    scp.flush()
    with scp.db.session() as session:
        study = session.scalars(select(Study).where(Study.study_instance_uid == study_uid)).one()
        instances = session.scalars(
            select(Instance).where(Instance.study_instance_uid == study_uid)
        ).all()
        return {
            "study": {c: getattr(study, c) for c in STUDY_COLUMNS},
            "instances": sorted(
                (i.sop_instance_uid, i.series_instance_uid, i.path, i.size, i.sha256)
                for i in instances
            ),
            "files": {i.path: _sha256(scp.settings.spool_dir / i.path) for i in instances},
        }


def test_fuzz_corpus_is_refused_or_stored_harmlessly(
    start_scp, chest_ct_dir: Path, tmp_path: Path, monkeypatch
) -> None:
    # pynetdicom sends a file's dataset as it is on disk (no decoding, no re-encoding).
    monkeypatch.setattr(_config, "STORE_SEND_CHUNKED_DATASET", True)
    scp = start_scp(max_pdu=MAX_PDU, artim_timeout_s=2)
    slices = sorted(chest_ct_dir.glob("*.dcm"))
    held = slices[:3]
    stored = dcmtk("storescu", "-aet", "PACS1", "-aec", "MEDVISION", "127.0.0.1", scp.port, *held)
    assert stored.returncode == 0, stored.stderr
    study_uid = str(read_study_uid(held[0]))
    before = _snapshot(scp, study_uid)
    assert len(before["instances"]) == 3

    seed = f"(seed {SEED}: MEDVISION_FUZZ_SEED={SEED} reproduces it)"
    files = file_cases(slices[10], tmp_path / "corpus", SEED, held=held[0])
    statuses = {case.name: _c_store(scp.port, case) for case in files}
    pdus = pdu_cases("MEDVISION", "FUZZER", MAX_PDU, SEED)
    answers = {
        case.name: _raw(scp.port, case, 10.0 if case.name in AT_ONCE else ANSWER_WAIT_S)
        for case in pdus
    }

    echo = dcmtk("echoscu", "-aet", "PACS1", "-aec", "MEDVISION", "127.0.0.1", scp.port)
    assert echo.returncode == 0, f"no C-ECHO after the corpus {seed}: {echo.stderr}"
    assert _snapshot(scp, study_uid) == before, f"the held study changed {seed}"

    with scp.db.session() as session:
        rows = {i.sop_instance_uid: i for i in session.scalars(select(Instance))}
        studies = {s.study_instance_uid for s in session.scalars(select(Study))}
    held_sops = {sop for sop, *_ in before["instances"]}
    for case in files:
        status = statuses[case.name]
        if case.expect == REFUSED:
            assert status != SUCCESS, f"{case.name} was stored {seed}"
        if status == SUCCESS:  # a harmless store: its own study, as sent, indexed
            row = rows.get(case.sop_instance_uid)
            assert row is not None, f"{case.name}: Success but not indexed {seed}"
            assert row.study_instance_uid == case.study_instance_uid != study_uid, case.name
            spooled = scp.settings.spool_dir / row.path
            assert spooled.read_bytes().endswith(case.dataset), f"{case.name} {seed}"
            assert _sha256(spooled) == row.sha256, case.name
        elif case.sop_instance_uid not in held_sops:
            assert case.sop_instance_uid not in rows, f"{case.name} refused but indexed {seed}"
            assert case.study_instance_uid not in studies, case.name
            assert not (scp.settings.spool_dir / case.study_instance_uid).exists(), case.name
    # Refused, in_time or not: an A-ASSOCIATE-RJ, an A-ABORT or the connection closed;
    # never a DIMSE answer. A flipped byte may leave a sound A-ASSOCIATE-RQ (accepted).
    for case in pdus:
        answer = answers[case.name]
        allowed = {None, A_ASSOCIATE_RJ, A_ABORT}
        if case.expect != REFUSED:
            allowed.add(A_ASSOCIATE_AC)
        assert answer["first"] in allowed, f"{case.name}: answered {answer} {seed}"
    # Announced lengths past what the node reads are refused on the header, at once: the
    # node neither waits for nor buffers the rest.
    for name in AT_ONCE:
        assert answers[name] == {"first": A_ABORT, "in_time": True}, name

    # The spool holds exactly what the index knows: no file of a refused case.
    spooled = {str(p.relative_to(scp.settings.spool_dir)) for p in
               scp.settings.spool_dir.glob("*/*/*.dcm")}  # fmt: skip
    assert spooled == {r.path for r in rows.values()}
    assert scp.audit.verify().ok


def read_study_uid(path: Path) -> str:
    from pydicom import dcmread

    return str(dcmread(path, stop_before_pixels=True).StudyInstanceUID)


def test_unreadable_stored_instance_holds_up_no_other_study(
    start_scp, chest_ct_dir: Path, tmp_path: Path, monkeypatch
) -> None:
    """An instance stored harmlessly (its UIDs are sound) whose sequences are nested 200
    deep exhausts pydicom's recursion when the study is assembled: that study fails with a
    reason, and a study received after it is still assembled (it used to stay ``complete``
    forever, as did every study after the poisoned one)."""
    monkeypatch.setattr(_config, "STORE_SEND_CHUNKED_DATASET", True)
    scp = start_scp()
    slices = sorted(chest_ct_dir.glob("*.dcm"))
    (deep,) = [
        c
        for c in file_cases(slices[10], tmp_path / "corpus", SEED)
        if c.name == "nested-200-undefined-after-uids"
    ]
    assert _c_store(scp.port, deep) == SUCCESS
    good = dcmtk("storescu", "-aet", "PACS1", "-aec", "MEDVISION", "127.0.0.1", scp.port,
                 *slices[:3])  # fmt: skip
    assert good.returncode == 0, good.stderr
    scp.flush()
    settings = Settings(**{**scp.settings.model_dump(), "quiet_period_s": 0.001})
    time.sleep(0.01)
    complete_quiet_studies(settings, scp.db, scp.audit)
    with scp.db.session() as session:
        states = {s.study_instance_uid: (s.state, s.reason) for s in session.scalars(select(Study))}
    state, reason = states[deep.study_instance_uid]
    assert state == "failed" and "readable" in reason, reason
    state, reason = states[read_study_uid(slices[0])]
    assert state == "failed" and "3 slices" in reason, reason  # its own reason: too few


def test_undecodable_command_aborts_and_audits_what_was_stored(start_scp, chest_ct_dir) -> None:
    """A P-DATA-TF whose command set has no Command Field used to kill pynetdicom's reactor
    thread: no A-ABORT for the peer, and no ``instances.received`` for what the association
    had stored (it ended without EVT_ABORTED). Now: A-ABORT, and the audit has both."""
    scp = start_scp()
    src = sorted(chest_ct_dir.glob("*.dcm"))[0]
    ae = AE(ae_title="PACS1")
    ae.add_requested_context(CT_IMAGE, read_file_meta_info(src).TransferSyntaxUID)
    assoc = ae.associate("127.0.0.1", scp.port, ae_title="MEDVISION")
    assert assoc.is_established
    assert assoc.send_c_store(src).Status == SUCCESS
    (context,) = assoc.accepted_contexts
    garbage = p_data([(context.context_id, 0x03, b"\x08\x00\x10\x00" + b"\x00" * 12)])
    assoc.dul.socket.send(garbage)
    deadline = time.monotonic() + 10
    while assoc.is_established and time.monotonic() < deadline:
        time.sleep(0.05)
    assert assoc.is_aborted  # the node's A-ABORT
    scp.flush()

    def events(kind: str) -> list[dict[str, Any]]:
        return [e for e in scp.audit.events() if e["type"] == kind]

    deadline = time.monotonic() + 10
    while not events("instances.received") and time.monotonic() < deadline:
        time.sleep(0.05)
    (received,) = events("instances.received")
    assert (received["calling_aet"], received["instances"]) == ("PACS1", 1)
    echo = dcmtk("echoscu", "-aet", "PACS1", "-aec", "MEDVISION", "127.0.0.1", scp.port)
    assert echo.returncode == 0, echo.stderr
