"""SIGTERM while the node runs a real MR job: a clean stop, and the job is not lost.

The real Philips 3 T T1 is pushed with dcmtk to ``medvision serve`` running brainchop's
grey/white model (imported from the shared weights as docs/models.md says). The signal
arrives once the series has been read, i.e. while the job's thread is inside torch; a
normal interpreter exit under that thread used to abort with "terminate called without an
active exception" and exit code 134.
"""

from __future__ import annotations

import signal
from pathlib import Path

import pytest
from pydicom import dcmread
from sqlalchemy import select

from medvision.audit import DbAuditLog
from medvision.db import Database, Job
from tests.node.models_node import GWM as PIPELINE
from tests.node.models_node import ModelsNode, import_gwm
from tests.node.peers import dcmtk, wait_for


@pytest.fixture(scope="module")
def models(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return import_gwm(shared_data, tmp_path_factory.mktemp("models"))


def test_sigterm_during_an_mr_job_exits_0_and_queues_the_job_again(
    shared_data: Path, models: Path, tmp_path: Path
) -> None:
    mr = sorted((shared_data / "mr" / "philips-3t-brain" / "classic-t1").glob("*.dcm"))
    study_uid = str(dcmread(mr[0], stop_before_pixels=True).StudyInstanceUID)
    node = ModelsNode(
        tmp_path / "node", models, pipelines=[PIPELINE], quiet_period_s=1.0, poll_interval_s=0.2
    ).start()
    assert node.proc is not None
    proc = node.proc
    try:
        sent = dcmtk("storescu", "-aec", node.ae_title, "127.0.0.1", str(node.dicom_port), *mr)
        assert sent.returncode == 0, sent.stderr
        # "series.read" is the run's last event before the pipeline itself starts.
        run_log = node.data_dir / "results" / study_uid / "v1" / PIPELINE / "audit.jsonl"
        wait_for(
            "the MR job to be inside the pipeline",
            lambda: run_log.is_file() and "series.read" in run_log.read_text(),
            240,
            0.1,
        )
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
    finally:
        node.stop()
    log = node.log_path.read_text(errors="replace")
    assert "terminate called" not in log, log
    assert "interrupted, queued again for the next start" in log

    db = Database(f"sqlite:///{node.data_dir / 'medvision.db'}")
    try:
        with db.session() as session:
            (job,) = session.scalars(select(Job).where(Job.study_instance_uid == study_uid))
            assert (job.state, job.pipeline) == ("queued", PIPELINE)
            assert job.reason == "requeued: the node stopped while it was running"
        audit = DbAuditLog(db)
        *_, last, checkpoint = audit.events()
        assert (last["type"], checkpoint["type"]) == ("application.stop", "audit.checkpoint")
        assert last["interrupted_jobs"] == [job.id], last
        assert audit.verify().ok
    finally:
        db.dispose()
