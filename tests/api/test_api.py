"""Studies and jobs over real HTTP, as an authenticated radiologist."""

from __future__ import annotations

from medvision.db import Job, Outbox, Study
from tests.api.conftest import Server


def test_health_studies_jobs(api: Server) -> None:
    anyone, rad = api.client(), api.client("rad")
    assert anyone.get("/health").json()["status"] == "ok"
    assert rad.get("/studies").json() == [] and rad.get("/jobs").json() == []
    with api.db.session() as session:
        session.add(Study(study_instance_uid="1.2.3", state="failed", reason="no series"))
        session.add(Study(study_instance_uid="1.2.4", state="send-failed", instance_count=3))
        job = Job(study_instance_uid="1.2.4", study_version=1, pipeline="lung-ct", state="done")
        session.add(job)
        session.flush()
        job_id = job.id
        session.add(
            Outbox(
                job_id=job.id,
                study_instance_uid="1.2.4",
                destination="pacs",
                ae_title="ORTHANC",
                host="127.0.0.1",
                port=4242,
                path="/x/seg.dcm",
                sop_instance_uid="1.2.4.9",
                sop_class_uid="1.2.840.10008.5.1.4.1.1.66.4",
                attempts=2,
                last_error="cannot associate",
            )
        )
    studies = rad.get("/studies").json()
    assert [s["study_instance_uid"] for s in studies] == ["1.2.4", "1.2.3"]
    failed = rad.get("/studies?state=failed").json()
    assert [(s["study_instance_uid"], s["reason"]) for s in failed] == [("1.2.3", "no series")]
    detail = rad.get("/studies/1.2.4").json()
    assert detail["state"] == "send-failed" and detail["instances"] == 3
    assert detail["jobs"][0]["pipeline"] == "lung-ct"
    (delivery,) = detail["deliveries"]
    assert (delivery["state"], delivery["attempts"], delivery["last_error"]) == (
        "pending",
        2,
        "cannot associate",
    )
    assert [j["state"] for j in rad.get("/jobs?state=done").json()] == ["done"]
    assert rad.get("/jobs?state=running").json() == []
    assert rad.get(f"/jobs/{job_id}").json()["pipeline"] == "lung-ct"
    assert rad.get("/studies/9.9.9").status == 404
    assert rad.get("/jobs/999").status == 404
    # The study detail is patient data: its read is audited, without PHI.
    (read,) = api.events("api.read")
    assert read["user"] == "rad" and read["study_instance_uid"] == "1.2.4"
    assert read["route"] == "GET /studies/{study_uid}"


def test_lists_come_in_pages(api: Server) -> None:
    """A busy node's lists are paged, newest first: a client follows ``Link: rel="next"``
    until there is none and has seen every study once; a page beyond the limit is refused."""
    with api.db.session() as session:
        for n in range(250):
            session.add(Study(study_instance_uid=f"1.2.{n}", state="sent"))
    rad = api.client("rad")
    first = rad.get("/studies")
    assert len(first.json()) == 100 and first.json()[0]["study_instance_uid"] == "1.2.249"
    seen, answer = [], first
    while True:
        seen += [s["study_instance_uid"] for s in answer.json()]
        link = answer.headers.get("link")
        if link is None:
            break
        assert link.endswith('>; rel="next"')
        answer = rad.get(link[link.index("/studies") : link.index(">")])
    assert seen == [f"1.2.{n}" for n in reversed(range(250))]
    small = rad.get("/studies?state=sent&limit=7&offset=245")
    assert [s["study_instance_uid"] for s in small.json()] == [f"1.2.{n}" for n in range(4, -1, -1)]
    assert "link" not in small.headers
    assert rad.get("/studies?limit=1001").status == 422
    assert rad.get("/jobs?limit=0").status == 422
