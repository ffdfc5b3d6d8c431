"""Every event type that the node and ``medvision run`` record exports to a DICOM audit
message (PS3.15 A.5) that validates against the A.5.1 schema and says the right thing:
which A.5.3 event, who took part in which role, and which study."""

from __future__ import annotations

import ast
import base64
import subprocess
import sys
import typing
from pathlib import Path

import pytest
from lxml import etree

from medvision import runner
from medvision.audit import (
    EVENT_MAP,
    INTERNAL_EVENTS,
    DbAuditLog,
    EventFilter,
    ExportContext,
    JsonlAuditLog,
    export_messages,
    parse_time,
    read_jsonl,
    to_message,
    to_xml,
    validation_errors,
)
from medvision.db import Database
from tests.conftest import REPO_ROOT

STUDY = "1.2.826.0.1.3680043.8.498.10"
SERIES = "1.2.826.0.1.3680043.8.498.11"
SEG_UID, SR_UID = "1.2.826.0.1.3680043.8.498.12", "1.2.826.0.1.3680043.8.498.13"
SEG_CLASS, SR_CLASS = "1.2.840.10008.5.1.4.1.1.66.4", "1.2.840.10008.5.1.4.1.1.88.34"
ALGORITHM = {"name": "lung-ct", "version": "1.1.0", "weights_sha256": "ab" * 32}
CTX = ExportContext(
    audit_source_id="node1", site_id="Hospital A", node_aet="MEDVISION", node_host="node1"
)

#: One realistic event per type, with the fields the code records (see test below).
NODE_SAMPLES: dict[str, dict] = {
    "application.start": dict(
        medvision_version="0.1.0", ae_title="MEDVISION", dicom_port=11112, dicom_tls_port=2762
    ),
    "application.stop": dict(interrupted_jobs=[3]),
    "audit.checkpoint": dict(checkpoint=3, anchor_file="/var/lib/medvision/audit-anchors.jsonl"),
    "association.accepted": dict(
        calling_aet="ORTHANC",
        calling_host="10.0.0.5",
        # over DICOM TLS: the subject of the certificate the PACS presented
        tls=True,
        tls_subject="organizationName=Hospital A, commonName=ORTHANC",
    ),
    "association.rejected": dict(
        outcome="failure",
        calling_aet="INTRUDER",
        calling_host="10.0.0.66",
        called_aet="MEDVISION",
        reason="calling AE title 'INTRUDER' is not on the allow-list",
        security_alert=True,
        tls=False,
        # set when the TLS handshake failed (no AE title yet): the caller's source port
        calling_port=40312,
    ),
    "instances.received": dict(
        study_instance_uid=STUDY, calling_aet="ORTHANC", calling_host="10.0.0.5", instances=64
    ),
    "instances.refused": dict(
        outcome="failure",
        calling_aet="ORTHANC",
        calling_host="10.0.0.5",
        instances=2,
        # one instance whose SOP Instance UID is already held elsewhere (node/_cstore.py)
        study_instance_uid=f"{STUDY}.2",
        series_instance_uid=f"{SERIES}.2",
        sop_instance_uid=f"{SERIES}.9",
        held_in_study_instance_uid=f"{STUDY}.1",
        held_in_series_instance_uid=f"{SERIES}.1",
        reason="SOP Instance UID already held in another study or series",
    ),
    "study.complete": dict(
        study_instance_uid=STUDY, study_version=1, instances=64, pipelines=["lung-ct"]
    ),
    "study.refused": dict(
        outcome="failure", study_instance_uid=STUDY, study_version=1, reason="MR: not CT"
    ),
    "job.started": dict(
        study_instance_uid=STUDY, job_id=7, pipeline="lung-ct", study_version=1, attempt=1
    ),
    "job.finished": dict(
        study_instance_uid=STUDY,
        job_id=7,
        pipeline="lung-ct",
        series_instance_uid=SERIES,
        reason="",
        algorithm=ALGORITHM,
        results=[SEG_UID, SR_UID],
        timings_s={"total": 12.3},
    ),
    "job.failed": dict(
        outcome="failure",
        study_instance_uid=STUDY,
        job_id=8,
        pipeline="lung-ct",
        series_instance_uid=SERIES,
        reason="internal error: MemoryError",
        algorithm=None,
        results=[],
        timings_s={"total": 1.0},
    ),
    "job.refused": dict(
        outcome="failure",
        study_instance_uid=STUDY,
        job_id=9,
        pipeline="lung-ct",
        series_instance_uid=None,
        reason="no series accepted by lung-ct",
        algorithm=None,
        results=[],
        timings_s={"total": 0.1},
    ),
    "results.send_started": dict(
        destination="ORTHANC",
        host="10.0.0.5",
        port=4242,
        tls=True,
        instances=[SEG_UID, SR_UID],
        studies=[
            {
                "study_instance_uid": STUDY,
                "sop_classes": [
                    {"sop_class_uid": SEG_CLASS, "instances": 1},
                    {"sop_class_uid": SR_CLASS, "instances": 1},
                ],
            }
        ],
    ),
    "results.sent": dict(
        study_instance_uid=STUDY,
        destination="pacs",
        ae_title="ORTHANC",
        host="10.0.0.5",
        sop_instance_uid=SEG_UID,
        sop_class_uid=SEG_CLASS,
        deidentified=False,
    ),
    "export.deidentified": dict(
        studies=[STUDY],
        destination="/srv/research-export",
        cases=1,
        reviewed_only=True,
        instances=66,
    ),
    "results.send_failed": dict(
        outcome="failure",
        study_instance_uid=STUDY,
        destination="pacs",
        ae_title="ORTHANC",
        host="10.0.0.5",
        sop_instance_uid=SR_UID,
        sop_class_uid=SR_CLASS,
        attempt=2,
        reason="cannot associate with ORTHANC@10.0.0.5:4242",
    ),
    # The API's users (built separately); mapped now so they export when they appear.
    "user.login": dict(user="qa.reviewer", client_host="10.0.0.20", method="password"),
    "user.login_failed": dict(
        outcome="failure",
        user="qa.reviewer",
        client_host="10.0.0.20",
        reason="bad password",
        method="basic",
        route="GET /studies",
    ),
    "user.locked_out": dict(
        outcome="failure",
        user="qa.reviewer",
        client_host="10.0.0.20",
        method="form",
        locked="account",
        lockout_s=300.0,
        reason="5 wrong passwords for this account within 300 s",
        security_alert=True,
    ),
    "user.logout": dict(user="qa.reviewer", client_host="10.0.0.20"),
    "user.added": dict(user="admin", via="cli", subject_user="dr.a", roles=["radiologist"]),
    "user.disabled": dict(user="admin", via="cli", subject_user="dr.a"),
    "user.token_issued": dict(user="admin", via="cli", subject_user="dr.a"),
    "api.read": dict(
        study_instance_uid=STUDY,
        user="dr.a",
        route="GET /studies/{study_uid}/results/{job_id}/sr",
        client_host="10.0.0.21",
        job_id=1,
        object="sr",
        version=2,
        count=1,
    ),
    "review.decision": dict(
        study_instance_uid=STUDY,
        user="dr.a",
        job_id=1,
        finding_number=3,
        decision="reject",
        has_comment=True,
    ),
    "review.missed_lesion": dict(
        study_instance_uid=STUDY,
        user="dr.a",
        job_id=1,
        feedback_id=7,
        location={"slice": 30, "x": 100, "y": 120},
        has_comment=False,
    ),
    "query.sent": dict(
        destination="ORTHANC",
        host="10.0.0.5",
        sop_class_uid="1.2.840.10008.5.1.4.1.2.2.1",
        query="(0020,000D)=1.2.3",
    ),
    "audit.log_used": dict(
        action="export",
        user="qa",
        host="ws1",
        log_uri="sqlite:////data/medvision.db",
        returned=3,
        chain_ok=True,
    ),
}

RUN_SAMPLES: dict[str, dict] = {
    "run.started": dict(
        medvision_version="0.1.0",
        host="ws1",
        pipeline="lung-ct",
        pipeline_version="1.1.0",
        study_instance_uid=STUDY,
        series_available=2,
    ),
    "series.selected": dict(chosen=SERIES, candidates=[]),
    "series.read": dict(
        series_instance_uid=SERIES,
        modality="CT",
        instances=[{"sop_instance_uid": f"{SERIES}.{i}", "sha256": "cd" * 32} for i in range(3)],
        shape=[3, 512, 512],
        spacing_mm=[5.0, 0.7, 0.7],
        seconds=1.0,
    ),
    "model.ran": dict(algorithm=ALGORITHM, findings=3, lesions=1, quality_flags=[], seconds=2.0),
    "results.written": dict(
        files=[
            {"file": "seg.dcm", "sha256": "ef" * 32, "sop_instance_uid": SEG_UID},
            {"file": "sr.dcm", "sha256": "01" * 32, "sop_instance_uid": SR_UID},
            {"file": "findings.json", "sha256": "23" * 32},
        ],
        seconds=0.5,
    ),
    "run.done": dict(reason="", series_instance_uid=SERIES, timings_s={"total": 3.5}),
    "run.failed": dict(
        outcome="failure", reason="internal error", series_instance_uid=SERIES, timings_s={}
    ),
    "run.refused": dict(
        outcome="failure", reason="no series accepted", series_instance_uid=None, timings_s={}
    ),
}


# -- what the code really records ---------------------------------------------------------


def _recorded_types() -> dict[str, set[str]]:
    """Event type -> keyword fields, from every ``*.record(...)`` call outside audit/."""
    statuses = set(typing.get_args(runner.Status))
    found: dict[str, set[str]] = {}

    def names(node: ast.expr, exclude: set[str] = frozenset()) -> set[str]:
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            return {node.value}
        if isinstance(node, ast.JoinedStr):
            prefix = "".join(v.value for v in node.values if isinstance(v, ast.Constant))
            return {prefix + s for s in statuses - exclude}
        if isinstance(node, ast.IfExp):
            # `"job.finished" if run.status == "done" else f"job.{run.status}"`
            test = node.test
            done = (
                {test.comparators[0].value}
                if isinstance(test, ast.Compare) and isinstance(test.comparators[0], ast.Constant)
                else set()
            )
            return names(node.body) | names(node.orelse, done)
        raise AssertionError(f"cannot read the event type of {ast.dump(node)}")

    for path in (REPO_ROOT / "medvision").rglob("*.py"):
        if "audit" in path.parts:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr == "record"
                and node.args
            ):
                kwargs = {k.arg for k in node.keywords if k.arg and k.arg != "outcome"}
                receiver = node.func.value
                if isinstance(receiver, ast.Name) and receiver.id == "reader":
                    # http_deps' Reader.record(study_uid, **fields) writes "api.read"
                    found.setdefault("api.read", set()).update(kwargs)
                    continue
                for name in names(node.args[0]):
                    found.setdefault(name, set()).update(kwargs)
    return found


def test_every_recorded_event_type_has_a_sample_and_a_mapping_decision() -> None:
    recorded = _recorded_types()
    samples = NODE_SAMPLES | RUN_SAMPLES
    assert {"application.start", "instances.received", "job.started", "run.done"} <= set(recorded)
    missing = sorted(set(recorded) - set(samples))
    assert not missing, f"new event types {missing}: add a sample here and a mapping in EVENT_MAP"
    undecided = sorted(set(recorded) - set(EVENT_MAP))
    assert not undecided, f"no A.5 mapping decision for {undecided} in medvision.audit._export"
    for name, fields in recorded.items():
        lacking = fields - set(samples[name])
        assert not lacking, f"{name} now records {sorted(lacking)}: update its sample (and mapping)"


def test_every_unmapped_type_says_why() -> None:
    unmapped = {name for name, builder in EVENT_MAP.items() if builder is None}
    assert unmapped == set(INTERNAL_EVENTS)


# -- export from real logs ----------------------------------------------------------------


def _node_db(tmp_path: Path) -> Database:
    db = Database(f"sqlite:///{tmp_path / 'medvision.db'}")
    db.create_schema()
    log = DbAuditLog(db)
    for name, fields in NODE_SAMPLES.items():
        fields = dict(fields)
        outcome = fields.pop("outcome", "success")
        log.record(name, outcome, **fields)
    return db


def _run_log(tmp_path: Path) -> Path:
    path = tmp_path / "audit.jsonl"
    log = JsonlAuditLog(path)
    for name, fields in RUN_SAMPLES.items():
        fields = dict(fields)
        outcome = fields.pop("outcome", "success")
        log.record(name, outcome, **fields)
    return path


def _parse(xml: bytes) -> etree._Element:
    return etree.fromstring(xml)


@pytest.fixture
def node_messages(tmp_path: Path) -> dict[str, etree._Element]:
    db = _node_db(tmp_path)
    events = DbAuditLog(db).events()
    db.dispose()
    out = {}
    for msg, xml in export_messages(events, CTX):
        assert validation_errors(xml) == [], msg.event_type
        out[msg.event_type] = _parse(xml)
    return out


def test_every_mapped_node_event_exports_a_valid_message(node_messages) -> None:
    expected = {n for n in NODE_SAMPLES if EVENT_MAP[n] is not None}
    assert set(node_messages) == expected


def test_every_mapped_run_event_exports_a_valid_message(tmp_path: Path) -> None:
    events = read_jsonl(_run_log(tmp_path))
    exported = {}
    for msg, xml in export_messages(events, CTX):
        assert validation_errors(xml) == []
        exported[msg.event_type] = _parse(xml)
    assert set(exported) == {n for n in RUN_SAMPLES if EVENT_MAP[n] is not None}
    # later events inherit the study named by run.started
    read = exported["series.read"]
    assert read.find("ParticipantObjectIdentification").get("ParticipantObjectID") == STUDY
    assert len(read.findall(".//SOPClass/Instance")) == 3


def _event_id(root: etree._Element) -> tuple[str, str, str]:
    ev = root.find("EventIdentification")
    return (
        ev.find("EventID").get("csd-code"),
        ev.get("EventActionCode"),
        ev.get("EventOutcomeIndicator"),
    )


def _roles(root: etree._Element) -> dict[str, etree._Element]:
    return {
        p.find("RoleIDCode").get("csd-code"): p
        for p in root.findall("ActiveParticipant")
        if p.find("RoleIDCode") is not None
    }


def _type_codes(root: etree._Element) -> list[str]:
    return [c.get("csd-code") for c in root.findall("EventIdentification/EventTypeCode")]


def test_application_activity(node_messages) -> None:
    start, stop = node_messages["application.start"], node_messages["application.stop"]
    assert _event_id(start) == ("110100", "E", "0") and _type_codes(start) == ["110120"]
    assert _type_codes(stop) == ["110121"]
    assert "110150" in _roles(start)
    src = start.find("AuditSourceIdentification")
    assert src.get("AuditSourceID") == "node1" and src.get("AuditEnterpriseSiteID") == "Hospital A"
    assert src.find("AuditSourceTypeCode").get("csd-code") == "4"


def test_instances_received_is_instances_transferred_from_the_pacs(node_messages) -> None:
    root = node_messages["instances.received"]
    assert _event_id(root) == ("110104", "C", "0")
    roles = _roles(root)
    source, dest = roles["110153"], roles["110152"]
    assert source.get("UserID") == "ORTHANC" and source.get("UserIsRequestor") == "true"
    assert source.get("AlternativeUserID") == "AETITLES=ORTHANC"
    assert source.get("NetworkAccessPointID") == "10.0.0.5"
    assert source.get("NetworkAccessPointTypeCode") == "2"
    assert dest.get("UserID") == "MEDVISION" and dest.get("UserIsRequestor") == "false"
    assert dest.get("NetworkAccessPointTypeCode") == "1"
    [study] = root.findall("ParticipantObjectIdentification")
    assert study.get("ParticipantObjectID") == STUDY
    assert study.get("ParticipantObjectTypeCode") == "2"
    assert study.get("ParticipantObjectTypeCodeRole") == "3"
    assert study.find("ParticipantObjectIDTypeCode").get("csd-code") == "110180"
    assert study.find("ParticipantObjectDescription/SOPClass").get("NumberOfInstances") == "64"


def test_refused_instances_are_a_minor_failure(node_messages) -> None:
    assert _event_id(node_messages["instances.refused"]) == ("110104", "C", "4")


def test_rejected_association_is_a_node_authentication_security_alert(node_messages) -> None:
    root = node_messages["association.rejected"]
    assert _event_id(root) == ("110113", "E", "4") and _type_codes(root) == ["110126"]
    assert "not on the allow-list" in root.findtext("EventIdentification/EventOutcomeDescription")
    subject = root.find("ParticipantObjectIdentification")
    assert subject.get("ParticipantObjectID") == "10.0.0.66"
    assert subject.find("ParticipantObjectIDTypeCode").get("csd-code") == "110182"


def test_jobs_are_instances_accessed(node_messages) -> None:
    assert _event_id(node_messages["job.started"]) == ("110103", "R", "0")
    done = node_messages["job.finished"]
    assert _event_id(done) == ("110103", "C", "0")
    assert {i.get("UID") for i in done.findall(".//SOPClass/Instance")} == {SEG_UID, SR_UID}
    details = {
        d.get("type"): base64.b64decode(d.get("value")).decode()
        for d in done.findall(".//ParticipantObjectDetail")
    }
    assert details["algorithm_version"] == "1.1.0" and details["job_id"] == "7"
    assert _event_id(node_messages["job.failed"])[2] == "8"
    assert _event_id(node_messages["job.refused"])[2] == "4"


def test_sending_results_is_begin_transferring_then_transferred(node_messages) -> None:
    begin = node_messages["results.send_started"]
    assert _event_id(begin) == ("110102", "E", "0")
    roles = _roles(begin)
    assert (
        roles["110153"].get("UserID") == "MEDVISION"
        and roles["110153"].get("UserIsRequestor") == "true"
    )
    assert roles["110152"].get("UserID") == "ORTHANC"
    classes = {c.get("UID"): c.get("NumberOfInstances") for c in begin.findall(".//SOPClass")}
    assert classes == {SEG_CLASS: "1", SR_CLASS: "1"}
    sent = node_messages["results.sent"]
    assert _event_id(sent) == ("110104", "C", "0")
    assert sent.find(".//SOPClass").get("UID") == SEG_CLASS
    assert _event_id(node_messages["results.send_failed"]) == ("110104", "C", "4")


def test_user_authentication(node_messages) -> None:
    login, failed, logout = (
        node_messages[n] for n in ("user.login", "user.login_failed", "user.logout")
    )
    assert _event_id(login) == ("110114", "E", "0") and _type_codes(login) == ["110122"]
    assert _event_id(failed) == ("110114", "E", "4") and _type_codes(failed) == ["110122"]
    assert _type_codes(logout) == ["110123"]
    user = login.find("ActiveParticipant")
    assert user.get("UserID") == "qa.reviewer" and user.get("UserIsRequestor") == "true"


def test_query_and_audit_log_used(node_messages) -> None:
    query = node_messages["query.sent"]
    assert _event_id(query) == ("110112", "E", "0")
    assert base64.b64decode(query.findtext(".//ParticipantObjectQuery")) == b"(0020,000D)=1.2.3"
    used = node_messages["audit.log_used"]
    assert _event_id(used) == ("110101", "R", "0")
    assert used.find(".//ParticipantObjectIDTypeCode").get("csd-code") == "12"


def test_no_patient_object_without_a_pseudonym_and_a_pseudonym_when_given() -> None:
    event = {
        "seq": 0,
        "time": "2026-01-01T00:00:00Z",
        "type": "instances.received",
        "outcome": "success",
        **NODE_SAMPLES["instances.received"],
    }
    root = _parse(to_xml(to_message(event, CTX), CTX))
    assert [
        o.get("ParticipantObjectTypeCode") for o in root.findall("ParticipantObjectIdentification")
    ] == ["2"]
    root = _parse(to_xml(to_message({**event, "patient_pseudonym": "hmac:9f2c"}, CTX), CTX))
    patient = root.findall("ParticipantObjectIdentification")[1]
    assert (
        patient.get("ParticipantObjectTypeCode"),
        patient.get("ParticipantObjectTypeCodeRole"),
    ) == ("1", "1")
    assert patient.get("ParticipantObjectID") == "hmac:9f2c"


def test_unknown_event_types_export_nothing() -> None:
    assert to_message({"type": "something.new", "time": "2026-01-01T00:00:00Z"}) is None


def test_filters(tmp_path: Path) -> None:
    db = _node_db(tmp_path)
    events = DbAuditLog(db).events()
    db.dispose()
    only = lambda **kw: [m.event_type for m, _ in export_messages(events, CTX, EventFilter(**kw))]  # noqa: E731
    assert only(types=("results.*",)) == [
        "results.send_started",
        "results.sent",
        "results.send_failed",
    ]
    assert set(only(study=STUDY)) == {
        "api.read",
        "instances.received",
        "job.started",
        "job.finished",
        "job.failed",
        "job.refused",
        "results.sent",
        "results.send_failed",
    }
    t = events[5]["time"]
    assert len(only(since=parse_time(t))) == len(
        [e for e in events[5:] if EVENT_MAP.get(e["type"])]
    )
    assert only(until=parse_time("2000-01-01", end=True)) == []
    assert parse_time("2026-03-01", end=True) == parse_time("2026-03-02T00:00:00Z")


def test_cli_export_from_the_database_writes_valid_messages_and_is_audited(tmp_path: Path) -> None:
    db = _node_db(tmp_path)
    url = db.url
    db.dispose()
    out = tmp_path / "audit.xml"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "medvision",
            "audit",
            "export",
            "--db",
            url,
            "--format",
            "dicom-xml",
            "--type",
            "instances.*",
            "--type",
            "application.*",
            "--out",
            str(out),
            "--site",
            "Hospital A",
        ],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    lines = out.read_bytes().splitlines()
    assert len(lines) == 4 and "4 DICOM audit messages" in result.stdout
    for line in lines:
        assert validation_errors(line) == []
        assert (
            _parse(line).find("AuditSourceIdentification").get("AuditEnterpriseSiteID")
            == "Hospital A"
        )
    db = Database(url)
    last = DbAuditLog(db).events()[-1]
    db.dispose()
    assert last["type"] == "audit.log_used" and last["action"] == "export" and last["messages"] == 4


def test_cli_export_of_jsonl_files_into_a_folder(tmp_path: Path) -> None:
    log = _run_log(tmp_path)
    out = tmp_path / "xml"
    out.mkdir()
    result = subprocess.run(
        [sys.executable, "-m", "medvision", "audit", "export", str(log), "--out", str(out)],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    files = sorted(p.name for p in out.iterdir())
    assert files[0] == "00000000-run.started.xml" and len(files) == 6
    assert all(validation_errors((out / f).read_bytes()) == [] for f in files)
