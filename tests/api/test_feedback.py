"""Reviewer feedback on real results (the chest CT with hand-made findings): stored,
audited, visible by role; a rejection re-issues a dciodvfy-clean SR, and the planar SR
that draws the finding for OHIF, into the outbox."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from pydicom import dcmread

from medvision.config import Modality
from medvision.db import Job, Outbox, Study
from medvision.findings import Findings
from medvision.results import ResultFiles, write_results
from tests.api.conftest import Server, ServerFactory
from tests.results.conftest import chest_findings, chest_volume, dciodvfy  # noqa: F401

SEG_CLASS = "1.2.840.10008.5.1.4.1.1.66.4"
SR_CLASS = "1.2.840.10008.5.1.4.1.1.88.34"


@pytest.fixture(scope="module")
def written(chest_findings: Findings, tmp_path_factory: pytest.TempPathFactory) -> ResultFiles:  # noqa: F811
    """The chest findings written as a node job for an OHIF PACS writes them: with sr-planar.dcm."""
    return write_results(chest_findings, tmp_path_factory.mktemp("results"), planar_sr=True)


def _seed(server: Server, written: ResultFiles, tmp_path: Path) -> tuple[str, int]:
    """A done job whose result folder is a copy of ``written``, its SEG and both SRs queued."""
    sr = dcmread(written.sr_path)
    study_uid = str(sr.StudyInstanceUID)
    result_dir = tmp_path / "results" / "lung-ct"
    shutil.copytree(written.json_path.parent, result_dir)
    with server.db.session() as session:
        session.add(Study(study_instance_uid=study_uid, state="sent", calling_aet="PACS"))
        job = Job(
            study_instance_uid=study_uid,
            study_version=1,
            pipeline="lung-ct",
            state="done",
            result_dir=str(result_dir),
        )
        session.add(job)
        session.flush()
        for name, uid, cls in (
            ("seg.dcm", written.seg_sop_instance_uid, SEG_CLASS),
            ("sr.dcm", written.sr_sop_instance_uid, SR_CLASS),
            ("sr-planar.dcm", written.planar_sr_sop_instance_uid, SR_CLASS),
        ):
            session.add(
                Outbox(
                    job_id=job.id,
                    study_instance_uid=study_uid,
                    destination="pacs",
                    ae_title="PACS",
                    host="127.0.0.1",
                    port=104,
                    path=str(result_dir / name),
                    sop_instance_uid=uid,
                    sop_class_uid=cls,
                )
            )
        return study_uid, job.id


@pytest.fixture
def reviewed(server_factory: ServerFactory, written, tmp_path: Path):
    server = server_factory(
        resend_sr_on_reject=True,
        # the PACS (OHIF) takes planar SRs, the archive does not
        modalities={
            "pacs": Modality(ae_title="PACS", host="127.0.0.1", port=104, planar_sr=True),
            "archive": Modality(ae_title="ARCHIVE", host="127.0.0.1", port=105),
        },
        destinations=["pacs", "archive"],
    )
    study_uid, job_id = _seed(server, written, tmp_path)
    return server, study_uid, job_id


def test_findings_and_downloads(reviewed) -> None:
    server, study_uid, job_id = reviewed
    rad = server.client("rad")
    doc = rad.get(f"/findings/{job_id}").json()
    assert [f["number"] for f in doc["findings"]] == [1, 2, 3] and doc["reviews"] == []
    seg = rad.get(f"/studies/{study_uid}/results/{job_id}/seg")
    assert seg.status == 200 and seg.headers["content-type"] == "application/dicom"
    assert seg.body[128:132] == b"DICM"
    assert rad.get(f"/studies/{study_uid}/results/{job_id}/sr").status == 200
    assert rad.get(f"/studies/9.9/results/{job_id}/sr").status == 404
    reads = server.events("api.read")
    assert [e["route"] for e in reads] == [
        "GET /findings/{job_id}",
        "GET /studies/{study_uid}/results/{job_id}/seg",
        "GET /studies/{study_uid}/results/{job_id}/sr",
    ]
    assert {e["study_instance_uid"] for e in reads} == {study_uid}
    assert {e["user"] for e in reads} == {"rad"}


def test_decisions_are_stored_audited_and_visible_by_role(reviewed) -> None:
    server, study_uid, job_id = reviewed
    rad = server.client("rad")
    url = f"/findings/{job_id}/2/feedback"
    made = rad.post(url, json_body={"decision": "accept", "comment": "agree"})
    assert made.status == 201
    row = made.json()
    assert (row["user"], row["decision"], row["comment"]) == ("rad", "accept", "agree")
    assert rad.post(url, json_body={"decision": "maybe"}).status == 422
    assert (
        rad.post(f"/findings/{job_id}/9/feedback", json_body={"decision": "accept"}).status == 404
    )
    assert server.client("qa").post(url, json_body={"decision": "accept"}).status == 403
    (event,) = server.events("review.decision")
    assert event["user"] == "rad" and event["decision"] == "accept"
    assert event["finding_number"] == 2 and event["study_instance_uid"] == study_uid
    assert event["has_comment"] is True and "agree" not in str(event)  # no free text
    # A radiologist sees their own feedback, QA everyone's.
    server.db  # noqa: B018
    assert len(server.client("qa").get(url).json()) == 1
    assert len(rad.get(url).json()) == 1
    assert [r["decision"] for r in rad.get(f"/findings/{job_id}").json()["reviews"]] == ["accept"]
    assert len(server.client("qa").get(f"/feedback?study={study_uid}").json()) == 1


def test_missed_lesions(reviewed) -> None:
    server, study_uid, job_id = reviewed
    rad = server.client("rad")
    url = f"/studies/{study_uid}/missed-lesions"
    pixel = rad.post(url, json_body={"slice_index": 30, "x": 120.5, "y": 200, "job_id": job_id})
    assert pixel.status == 201 and pixel.json()["location"] == {
        "slice_index": 30,
        "x": 120.5,
        "y": 200.0,
    }
    point = rad.post(url, json_body={"lps": [-10.0, 25.5, -120.0], "comment": "subpleural"})
    assert point.status == 201 and point.json()["location"] == {"lps": [-10.0, 25.5, -120.0]}
    assert rad.post(url, json_body={"slice_index": 3}).status == 422  # x and y missing
    assert rad.post(url, json_body={}).status == 422
    assert len(server.client("qa").get(url).json()) == 2
    events = server.events("review.missed_lesion")
    assert [e["location"] for e in events] == [
        {"slice_index": 30, "x": 120.5, "y": 200.0},
        {"lps": [-10.0, 25.5, -120.0]},
    ]


def _group_texts(sr, tracking_uid: str) -> str:
    """Everything in the measurement group of ``tracking_uid``, as text."""

    def groups(item):  # noqa: ANN001, ANN202 - generator of SR content items
        for child in item.get("ContentSequence", []):
            if child.ValueType == "CONTAINER":
                yield child
                yield from groups(child)

    def shown(item) -> str:  # noqa: ANN001
        if item.ValueType == "TEXT":
            return str(item.TextValue)
        if item.ValueType == "CODE":
            return str(item.ConceptCodeSequence[0].CodeMeaning)
        return ""

    for group in groups(sr):
        uids = [i.UID for i in group.ContentSequence if i.ValueType == "UIDREF"]
        if uids == [tracking_uid]:
            return " | ".join(shown(i) for i in group.ContentSequence)
    raise AssertionError(f"no group tracks {tracking_uid}")


def test_reject_reissues_the_sr(reviewed, written) -> None:
    server, study_uid, job_id = reviewed
    rad = server.client("rad")
    answer = rad.post(f"/findings/{job_id}/1/feedback", json_body={"decision": "reject"})
    assert answer.status == 201
    new_uid = answer.json()["sr_sop_instance_uid"]
    assert new_uid
    with server.db.session() as session:
        rows = [(o.sop_instance_uid, o.state, o.destination, o.path) for o in session.query(Outbox)]
    by_uid: dict[str, list[tuple[str, str]]] = {}
    for uid, state, destination, _path in rows:
        by_uid.setdefault(uid, []).append((state, destination))
    path = next(p for uid, _s, _d, p in rows if uid == new_uid)
    # the old SR's pending row is superseded; the new one goes to both destinations
    assert by_uid[written.sr_sop_instance_uid] == [("superseded", "pacs")]
    assert sorted(by_uid[new_uid]) == [("pending", "archive"), ("pending", "pacs")]
    assert by_uid[written.seg_sop_instance_uid] == [("pending", "pacs")]
    new = dcmread(path)
    old = dcmread(Path(path).parent / "sr.dcm")
    assert new.SOPInstanceUID == new_uid != old.SOPInstanceUID
    assert new.SeriesInstanceUID == old.SeriesInstanceUID and new.InstanceNumber == 2
    ref = new.PredecessorDocumentsSequence[0].ReferencedSeriesSequence[0].ReferencedSOPSequence[0]
    assert ref.ReferencedSOPInstanceUID == old.SOPInstanceUID
    assert "Rejected by reviewer" in str(new.ContentSequence)
    errors, _warnings = dciodvfy(Path(path))
    assert errors == []
    # The download now serves the new version; rejecting again changes nothing more.
    sr = rad.get(f"/studies/{study_uid}/results/{job_id}/sr")
    assert new_uid.encode() in sr.body
    again = rad.post(f"/findings/{job_id}/1/feedback", json_body={"decision": "reject"})
    assert again.json()["sr_sop_instance_uid"] is None
    events = server.events("review.decision")
    assert events[0]["sr_sop_instance_uid"] == new_uid
    assert "planar_sr_sop_instance_uid" not in events[1]  # the second rejection wrote nothing

    # The planar SR (the axes OHIF draws) says it too, and goes only where planar SRs go.
    planar_uid = events[0]["planar_sr_sop_instance_uid"]
    assert by_uid[written.planar_sr_sop_instance_uid] == [("superseded", "pacs")]
    assert by_uid[planar_uid] == [("pending", "pacs")]
    planar_path = Path(path).parent / "sr-planar-2.dcm"
    planar, old_planar = dcmread(planar_path), dcmread(written.planar_sr_path)
    assert planar.SOPInstanceUID == planar_uid and planar.InstanceNumber == 2
    assert planar.SeriesInstanceUID == old_planar.SeriesInstanceUID
    ref = planar.PredecessorDocumentsSequence[0].ReferencedSeriesSequence[0]
    assert ref.ReferencedSOPSequence[0].ReferencedSOPInstanceUID == old_planar.SOPInstanceUID
    findings = {f["number"]: f for f in json.loads(written.json_path.read_text())["findings"]}
    rejected = _group_texts(planar, findings[1]["tracking_uid"])
    assert "Rejected by reviewer" in rejected and "Lesion 1 (rejected by reviewer)" in rejected
    kept = _group_texts(planar, findings[2]["tracking_uid"])
    assert "Rejected by reviewer" not in kept and "(rejected" not in kept
    errors, _warnings = dciodvfy(planar_path)
    assert errors == []


def test_reject_of_an_undrawn_finding_leaves_the_planar_sr(reviewed, written) -> None:
    """Finding 3 is the lung (an organ: no axes, not in the planar SR): only the SR changes."""
    server, _study_uid, job_id = reviewed
    answer = server.client("rad").post(
        f"/findings/{job_id}/3/feedback", json_body={"decision": "reject"}
    )
    assert answer.status == 201 and answer.json()["sr_sop_instance_uid"]
    (event,) = server.events("review.decision")
    assert "planar_sr_sop_instance_uid" not in event
    assert not (Path(written.json_path).parent / "sr-planar-2.dcm").exists()
    with server.db.session() as session:
        planar = (
            session.query(Outbox)
            .filter_by(sop_instance_uid=written.planar_sr_sop_instance_uid)
            .one()
        )
    assert planar.state == "pending"
