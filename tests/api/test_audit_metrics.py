"""QA's audit endpoints (filters, verification, their own Audit Log Used events), the
Prometheus metrics (parsed with prometheus_client's own parser) and the admin views."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from prometheus_client.parser import text_string_to_metric_families

from medvision.db import AuditEvent, Job, Outbox, Study
from tests.api.conftest import Server, ServerFactory


def _seed_events(api: Server) -> None:
    api.app.state.audit.record("study.complete", study_instance_uid="1.2.3")
    api.app.state.audit.record("job.started", study_instance_uid="1.2.3", job_id=1)
    api.app.state.audit.record("job.finished", study_instance_uid="1.2.4", job_id=2)


def test_audit_events_filter(api: Server) -> None:
    _seed_events(api)
    qa = api.client("qa")
    by_study = qa.get("/audit/events?study=1.2.3").json()["events"]
    assert [e["type"] for e in by_study] == ["study.complete", "job.started"]
    jobs = qa.get("/audit/events?type=job.*").json()["events"]
    assert [e["type"] for e in jobs] == ["job.started", "job.finished"]
    exact = qa.get("/audit/events?type=job.finished&type=study.complete").json()["events"]
    assert [e["type"] for e in exact] == ["study.complete", "job.finished"]
    tomorrow = (datetime.now(UTC) + timedelta(days=1)).date().isoformat()
    yesterday = (datetime.now(UTC) - timedelta(days=1)).date().isoformat()
    assert qa.get(f"/audit/events?since={tomorrow}").json()["count"] == 0
    window = qa.get(f"/audit/events?since={yesterday}&until={tomorrow}&type=job.*").json()
    assert window["count"] == 2
    page = qa.get("/audit/events?limit=1&after_seq=0").json()
    assert page["truncated"] and page["events"][0]["seq"] == 1
    assert qa.get("/audit/events?since=yesterday").status == 422
    used = api.events("audit.log_used")
    assert used and all(e["user"] == "qa" and e["action"] == "api.events" for e in used)
    assert used[0]["study"] == "1.2.3"


def test_audit_verify_finds_tampering(api: Server) -> None:
    _seed_events(api)
    qa = api.client("qa")
    assert qa.get("/audit/verify").json()["ok"] is True
    with api.db.session() as session:
        row = session.get(AuditEvent, 1)
        row.data = {**row.data, "job_id": 99}
    result = qa.get("/audit/verify").json()
    assert result["ok"] is False and result["first_bad_index"] == 1


def _families(text: str) -> dict:
    return {f.name: f for f in text_string_to_metric_families(text)}


def test_metrics(api: Server) -> None:
    start = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
    with api.db.session() as session:
        session.add(Study(study_instance_uid="1.2.3", state="sent"))
        session.add(Study(study_instance_uid="1.2.4", state="failed"))
        for n, seconds in enumerate((3, 45, 400)):
            session.add(
                Job(
                    study_instance_uid="1.2.3",
                    study_version=n + 1,
                    pipeline="lung-ct",
                    state="done",
                    started_at=start,
                    finished_at=start + timedelta(seconds=seconds),
                )
            )
        session.add(
            Outbox(
                job_id=1,
                study_instance_uid="1.2.3",
                destination="pacs",
                ae_title="PACS",
                host="h",
                port=104,
                path="/x",
                sop_instance_uid="1.2.3.9",
                sop_class_uid="1.2",
                state="sent",
            )
        )
    answer = api.client("admin").get("/metrics")
    assert answer.status == 200 and answer.headers["content-type"].startswith("text/plain")
    families = _families(answer.body.decode())
    studies = {s.labels["state"]: s.value for s in families["medvision_studies"].samples}
    assert studies["sent"] == 1 and studies["failed"] == 1 and studies["receiving"] == 0
    jobs = {s.labels["state"]: s.value for s in families["medvision_jobs"].samples}
    assert jobs["done"] == 3
    deliveries = {s.labels["state"]: s.value for s in families["medvision_deliveries"].samples}
    assert deliveries == {"pending": 0, "sent": 1, "failed": 0, "superseded": 0}
    hist = {
        (s.name, s.labels.get("le")): s.value
        for s in families["medvision_job_duration_seconds"].samples
    }
    assert hist[("medvision_job_duration_seconds_bucket", "5.0")] == 1
    assert hist[("medvision_job_duration_seconds_bucket", "60.0")] == 2
    assert hist[("medvision_job_duration_seconds_bucket", "+Inf")] == 3
    assert hist[("medvision_job_duration_seconds_count", None)] == 3
    assert hist[("medvision_job_duration_seconds_sum", None)] == 448
    (audit,) = families["medvision_audit_events"].samples
    assert audit.name == "medvision_audit_events_total" and audit.value >= 0


def test_metrics_public_setting(server_factory: ServerFactory) -> None:
    public = server_factory(metrics_public=True)
    assert public.client().get("/metrics").status == 200
    assert public.client().get("/studies").status == 401


def test_admin_config_hides_secrets_and_manages_users(server_factory: ServerFactory) -> None:
    server = server_factory(stow_url="http://user:hunter2@pacs:8042/dicom-web")
    admin = server.client("admin")
    config = admin.get("/admin/config").json()
    assert "hunter2" not in str(config) and config["ae_title"] == "MEDVISION"
    made = admin.post("/admin/users", json_body={"name": "eve", "roles": ["qa"], "password": "pw"})
    assert made.status == 201
    assert admin.post("/admin/users", json_body={"name": "eve", "roles": ["qa"]}).status == 409
    token = admin.post("/admin/users/eve/tokens").json()["token"]
    assert (
        server.client().get("/audit/verify", headers={"Authorization": f"Bearer {token}"}).status
        == 200
    )
    assert admin.post("/admin/users/eve/disable").status == 200
    assert (
        server.client().get("/audit/verify", headers={"Authorization": f"Bearer {token}"}).status
        == 401
    )
    names = {u["name"]: u for u in admin.get("/admin/users").json()}
    assert names["eve"]["disabled"] is True and "password_hash" not in names["eve"]
    assert [
        e["type"] for e in server.app.state.audit.events() if e.get("subject_user") == "eve"
    ] == [
        "user.added",
        "user.token_issued",
        "user.disabled",
    ]
