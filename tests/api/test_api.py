"""The REST API over real HTTP (uvicorn on a free port) on a real database."""

from __future__ import annotations

import threading
import urllib.error
from collections.abc import Iterator
from pathlib import Path

import pytest
import uvicorn

from medvision.api import create_app
from medvision.db import Database, Job, Outbox, Study
from tests.node.peers import free_port, http_json, wait_for


@pytest.fixture
def api(tmp_path: Path) -> Iterator[tuple[str, Database]]:
    db = Database(f"sqlite:///{tmp_path / 'medvision.db'}")
    db.create_schema()
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(create_app(db), host="127.0.0.1", port=port, log_level="warning")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    wait_for("the API", lambda: http_json(url + "/health"), 30)
    yield url, db
    server.should_exit = True
    thread.join(10)
    db.dispose()


def test_health_studies_jobs(api) -> None:
    url, db = api
    assert http_json(url + "/health")["status"] == "ok"
    assert http_json(url + "/studies") == [] and http_json(url + "/jobs") == []
    with db.session() as session:
        session.add(Study(study_instance_uid="1.2.3", state="failed", reason="no series"))
        session.add(Study(study_instance_uid="1.2.4", state="send-failed", instance_count=3))
        job = Job(study_instance_uid="1.2.4", study_version=1, pipeline="lung-ct", state="done")
        session.add(job)
        session.flush()
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
    studies = http_json(url + "/studies")
    assert [s["study_instance_uid"] for s in studies] == ["1.2.4", "1.2.3"]
    failed = http_json(url + "/studies?state=failed")
    assert [(s["study_instance_uid"], s["reason"]) for s in failed] == [("1.2.3", "no series")]
    detail = http_json(url + "/studies/1.2.4")
    assert detail["state"] == "send-failed" and detail["instances"] == 3
    assert detail["jobs"][0]["pipeline"] == "lung-ct"
    (delivery,) = detail["deliveries"]
    assert (delivery["state"], delivery["attempts"], delivery["last_error"]) == (
        "pending",
        2,
        "cannot associate",
    )
    assert [j["state"] for j in http_json(url + "/jobs?state=done")] == ["done"]
    assert http_json(url + "/jobs?state=running") == []
    with pytest.raises(urllib.error.HTTPError) as err:
        http_json(url + "/studies/9.9.9")
    assert err.value.code == 404
