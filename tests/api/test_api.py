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
