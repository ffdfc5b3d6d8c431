"""Scale-out end to end, every part a separate OS process on real peers: a RabbitMQ
broker, ``medvision serve --role receiver``, two ``medvision worker`` processes and dcmtk's
storescp as the PACS the results go to. Studies are pushed with dcmtk's storescu.

Checked: every study's SEG and SR arrive exactly once; a worker killed with SIGKILL while
it runs a job loses the job to the other worker, which finishes it, once.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydicom import dcmread
from sqlalchemy import select

from medvision.db import Database, Job, Outbox
from tests.node.peers import NodeProcess, stop_process, wait_for
from tests.scale.cluster import StoreSCP, WorkerProcess, receiver
from tests.scale.cluster import push as _push
from tests.scale.cluster import synthetic_study as _study
from tests.scale.cluster import workers as _workers
from tests.scale.rabbit import RabbitMQ, available

POSTGRES_URL = os.environ.get("MEDVISION_TEST_POSTGRES_URL", "")

pytestmark = pytest.mark.skipif(not available(), reason="rabbitmq-server is not installed")

SEG = "1.2.840.10008.5.1.4.1.1.66.4"
SR = "1.2.840.10008.5.1.4.1.1.88.34"


def _received(out: Path) -> Counter[tuple[str, str]]:
    """(study UID, SOP class) of every file storescp wrote (unique names: -uf)."""
    found: Counter[tuple[str, str]] = Counter()
    for path in out.iterdir():
        if path.is_file() and not path.name.startswith("."):
            ds = dcmread(path, stop_before_pixels=True)
            found[(str(ds.StudyInstanceUID), str(ds.SOPClassUID))] += 1
    return found


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[dict]:
    if POSTGRES_URL:
        from tests.db.conftest import empty_postgres

        empty_postgres(POSTGRES_URL)
        db_url = POSTGRES_URL
    else:  # one host: SQLite in WAL mode is shared safely by the processes
        db_url = f"sqlite:///{tmp_path / 'medvision-data' / 'medvision.db'}"
    rabbit = RabbitMQ(tmp_path / "rabbitmq").start()
    pacs = StoreSCP(tmp_path / "pacs")
    pacs_out = pacs.out
    node = receiver(
        tmp_path / "medvision-data",
        rabbit.url,
        ("dest", pacs.ae_title, pacs.port),
        database_url=db_url,
        republish_after_s=10,
        worker_stale_s=15,
    )
    workers: list[WorkerProcess] = []
    db = Database(db_url)
    try:
        node.start()
        env = node.env
        workers = [WorkerProcess(env, tmp_path, n) for n in (1, 2)]
        yield {
            "node": node,
            "workers": workers,
            "db": db,
            "pacs_out": pacs_out,
            "rabbit": rabbit,
            "tmp": tmp_path,
        }
    finally:
        for w in workers:
            w.stop()
        node.stop()
        pacs.stop()
        rabbit.stop()
        db.dispose()
        if POSTGRES_URL:
            from tests.db.conftest import empty_postgres

            empty_postgres(POSTGRES_URL)


def _wait_sent(node: NodeProcess, uid: str, timeout: float = 600) -> None:
    def probe() -> bool:
        study = node.study(uid)
        assert study is None or study["state"] not in ("failed", "send-failed"), study
        return study is not None and study["state"] == "sent"

    wait_for(f"study {uid} to be sent", probe, timeout, 0.2)


def _freeze(pid: int) -> None:
    """SIGSTOP ``pid`` and wait until the kernel shows it stopped (state T)."""
    os.kill(pid, signal.SIGSTOP)
    stat = Path(f"/proc/{pid}/stat")
    wait_for(
        f"process {pid} to stop",
        lambda: stat.read_text().rsplit(")", 1)[1].split()[0] == "T",
        10,
        0.01,
    )


def test_receiver_and_two_workers_deliver_once_and_survive_sigkill(cluster: dict) -> None:
    node: NodeProcess = cluster["node"]
    db: Database = cluster["db"]
    workers: list[WorkerProcess] = cluster["workers"]
    pacs_out: Path = cluster["pacs_out"]

    def reported() -> bool:
        assert all(w.proc.poll() is None for w in workers), "a worker exited"
        return len(_workers(db)) == 2

    wait_for("the workers to report", reported, 300)

    # 1. Three studies: each SEG and SR arrives exactly once.
    studies = [_study(cluster["tmp"], seed) for seed in (1, 2, 3)]
    for _uid, files in studies:
        _push(node, files)
    for uid, _files in studies:
        _wait_sent(node, uid)
    received = _received(pacs_out)
    for uid, _files in studies:
        assert (received[(uid, SEG)], received[(uid, SR)]) == (1, 1), received
    with db.session() as s:
        jobs = list(s.scalars(select(Job)))
        assert sorted(j.state for j in jobs) == ["done"] * 3
        assert all(j.attempts == 1 for j in jobs)
        outbox = list(s.scalars(select(Outbox)))
        assert len(outbox) == 6 and {o.state for o in outbox} == {"sent"}
    # Both workers took part, each with the model loaded once (reported by name).
    reported = _workers(db)
    assert all(w.models.get("lung-ct") for w in reported), [w.models for w in reported]
    assert sum(w.jobs_done for w in reported) == 3

    # 2. SIGKILL the worker running a job: the other one finishes it, once. The victim is
    # frozen (SIGSTOP) the moment its job is seen running, and the job is read again while
    # it is frozen: still running means the kill lands mid-job, whatever the machine's
    # speed. (Sleeping 1 s before the kill let a fast run finish first: attempts 1, not 2.)
    # A job finished before the freeze (its whole run inside one poll) is no kill test:
    # the victim is thawed and the next study tried.
    def job_of(uid: str) -> Job | None:
        with db.session() as s:
            return s.scalar(select(Job).where(Job.study_instance_uid == uid, Job.state != "queued"))

    for seed in (4, 5, 6):
        uid, files = _study(cluster["tmp"], seed)
        _push(node, files)
        job = wait_for(f"study {seed}'s job to run", lambda u=uid: job_of(u), 300, 0.05)
        victim = next(w for w in workers if job.worker.endswith(f":{w.pid}"))
        survivor = next(w for w in workers if w is not victim)
        _freeze(victim.pid)
        frozen = job_of(uid)
        if frozen is not None and frozen.state == "running" and frozen.attempts == 1:
            break
        os.kill(victim.pid, signal.SIGCONT)
        _wait_sent(node, uid)
    else:
        pytest.fail("every job finished before its worker could be frozen")
    victim.stop(signal.SIGKILL)
    _wait_sent(node, uid)
    with db.session() as s:
        (job,) = s.scalars(select(Job).where(Job.study_instance_uid == uid))
        assert (job.state, job.attempts) == ("done", 2), (job.state, job.attempts, job.reason)
        assert job.worker.endswith(f":{survivor.pid}")
        assert len(list(s.scalars(select(Outbox).where(Outbox.job_id == job.id)))) == 2
    received = _received(pacs_out)
    assert (received[(uid, SEG)], received[(uid, SR)]) == (1, 1), received
    # The dead worker is shown as such; the status command has the workers section.
    dead = wait_for(
        "the killed worker to be reported dead",
        lambda: [w for w in node.get("/workers") if w["kind"] == "celery" and not w["alive"]],
        60,
        0.5,
    )
    assert [w["pid"] for w in dead] == [victim.pid]
    status = node.status()
    assert "workers:" in status.stdout and "dead" in status.stdout, status.stdout


def test_prefork_worker_children_claim_nothing_that_is_not_queued(tmp_path: Path) -> None:
    """``--concurrency 2`` (prefork pool): children build their runtime at their first
    task, register in ``workers`` and ignore messages for jobs that are not queued."""
    from medvision.jobs._celery import Publisher

    data = tmp_path / "data"
    data.mkdir()
    db_url = f"sqlite:///{data / 'medvision.db'}"
    db = Database(db_url)
    db.create_schema()
    rabbit = RabbitMQ(tmp_path / "rabbitmq").start()
    env = {k: v for k, v in os.environ.items() if not k.startswith("MEDVISION_")}
    env.update(
        MEDVISION_DATA_DIR=str(data),
        MEDVISION_DATABASE_URL=db_url,
        MEDVISION_BROKER_URL=rabbit.url,
        MEDVISION_PIPELINES='["lung-ct"]',
        PYTHONUNBUFFERED="1",
    )
    log = open(tmp_path / "worker.log", "ab")  # noqa: SIM115
    proc = subprocess.Popen(
        [sys.executable, "-m", "medvision.cli", "worker", "--concurrency", "2"],
        env=env,
        cwd=tmp_path,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    publisher = Publisher(rabbit.url)
    try:
        publisher.publish([12345, 12346, 12347, 12348])
        wait_for(
            "four tasks skipped",
            lambda: (
                proc.poll() is None
                and (tmp_path / "worker.log").read_text().count("nothing to do") == 4
            ),
            300,
            0.5,
        )
        rows = _workers(db)
        assert 1 <= len(rows) <= 2 and all(r.pid != proc.pid for r in rows)
    finally:
        publisher.close()
        stop_process(proc)
        log.close()
        rabbit.stop()
        db.dispose()
    assert {r.state for r in _workers(db)} == {"stopped"}
