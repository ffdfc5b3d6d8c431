"""Scale-out with Orthanc as the PACS, and the faults a deployment meets: every part a
separate OS process. One set of peers for the module: a throw-away PostgreSQL cluster
(SQLite when PostgreSQL is not installed), a RabbitMQ broker, Orthanc, ``medvision serve
--role receiver`` and three ``medvision worker`` processes. Studies are pushed with dcmtk's
storescu; results go to Orthanc, and what Orthanc holds is checked through its REST API.

1. 20 small synthetic chest CTs and the real chest CT: each study's SEG and SR arrive in
   Orthanc exactly once, and all three workers took part.
2. RabbitMQ stopped for 30 s while studies arrive (one job running when it stops): the
   receiver answers every C-STORE with Success and shows the studies queued; when the broker
   is back the jobs run and each result arrives once.
3. PostgreSQL restarted while jobs run and studies arrive: the receiver and the workers
   reconnect by themselves (same processes), and no study is lost or delivered twice.

The tests run in file order and share the peers; each checks its own studies, and at its end
that Orthanc holds exactly one SEG and one SR per study pushed so far.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from pydicom import dcmread
from sqlalchemy import select

from medvision.db import Database, Job, Outbox
from tests.conftest import shared_data_dir
from tests.node.peers import NodeProcess, Orthanc, wait_for
from tests.scale import postgres
from tests.scale.cluster import WorkerProcess, push, receiver, synthetic_study, workers
from tests.scale.rabbit import RabbitMQ
from tests.scale.rabbit import available as rabbit_available

pytestmark = pytest.mark.skipif(not rabbit_available(), reason="rabbitmq-server is not installed")

CHEST_CT = shared_data_dir() / "ct" / "lung-pet-ct-dx-A0001" / "series-5mm"
N_WORKERS = 3
BROKER_OUTAGE_S = 30.0
#: Longer than worker_stale_s below: the outage must not make live workers look dead.
DB_OUTAGE_S = 12.0


@dataclass
class Cluster:
    tmp: Path
    node: NodeProcess
    orthanc: Orthanc
    rabbit: RabbitMQ
    db: Database
    pg: postgres.PostgreSQL | None
    workers: list[WorkerProcess]
    #: Every study pushed so far: Study Instance UID → the pushed series' UID.
    studies: dict[str, str] = field(default_factory=dict)
    seed: int = 100

    def new_study(self, n_slices: int = 24, rows: int = 128) -> tuple[str, list[Path]]:
        self.seed += 1
        return synthetic_study(self.tmp / "studies", self.seed, n_slices, rows)

    def push(self, uid: str, files: list[Path]) -> None:
        push(self.node, files)
        self.studies[uid] = str(dcmread(files[0], stop_before_pixels=True).SeriesInstanceUID)

    def wait_sent(self, uids: list[str], timeout: float = 600) -> None:
        """Until the receiver says every one of ``uids`` is sent; fails at once when one
        fails or a process of the cluster exits."""

        def probe() -> bool:
            assert self.node.proc is not None and self.node.proc.poll() is None, "node exited"
            assert all(w.alive() for w in self.workers), "a worker exited"
            states = [(self.node.study(uid) or {}).get("state") for uid in uids]
            assert not {"failed", "send-failed"} & set(states), states
            return all(s == "sent" for s in states)

        wait_for(f"{len(uids)} studies to be sent", probe, timeout, 0.5)

    def jobs(self, uids: list[str]) -> list[Job]:
        with self.db.session() as s:
            return list(s.scalars(select(Job).where(Job.study_instance_uid.in_(uids))))

    def assert_delivered_once(self, uids: list[str]) -> None:
        """What a PACS administrator would check: in Orthanc, one SEG and one SR in each
        study, referencing it; no other SEG or SR anywhere; one run per study."""
        for uid in uids:
            seg, sr = orthanc_results(self.orthanc, uid)
            assert (len(seg), len(sr)) == (1, 1), (uid, len(seg), len(sr))
            assert seg[0]["StudyInstanceUID"] == sr[0]["StudyInstanceUID"] == uid
            referenced = seg[0]["ReferencedSeriesSequence"][0]["SeriesInstanceUID"]
            assert referenced == self.studies[uid]
            evidence = sr[0]["CurrentRequestedProcedureEvidenceSequence"]
            assert [e["StudyInstanceUID"] for e in evidence] == [uid]
        totals = orthanc_result_totals(self.orthanc)
        assert totals == {"SEG": len(self.studies), "SR": len(self.studies)}, totals
        jobs = self.jobs(uids)
        assert sorted(j.study_instance_uid for j in jobs) == sorted(uids)
        assert {(j.state, j.attempts) for j in jobs} == {("done", 1)}, [
            (j.id, j.state, j.attempts, j.reason) for j in jobs
        ]
        with self.db.session() as s:
            outbox = list(s.scalars(select(Outbox).where(Outbox.study_instance_uid.in_(uids))))
        assert len(outbox) == 2 * len(uids) and {o.state for o in outbox} == {"sent"}


def orthanc_results(orthanc: Orthanc, uid: str) -> tuple[list[dict], list[dict]]:
    """The tags of every SEG and every SR instance Orthanc holds in study ``uid``."""
    by_modality = orthanc.instances_by_modality(uid)

    def tags(items: list[dict[str, Any]]) -> list[dict]:
        return [orthanc.get(f"/instances/{i['ID']}/tags?simplify") for i in items]

    return tags(by_modality.get("SEG", [])), tags(by_modality.get("SR", []))


def orthanc_result_totals(orthanc: Orthanc) -> dict[str, int]:
    """SEG and SR instances in the whole of Orthanc."""
    totals = {"SEG": 0, "SR": 0}
    for series in orthanc.get("/series?expand"):
        modality = series["MainDicomTags"].get("Modality")
        if modality in totals:
            totals[modality] += len(series["Instances"])
    return totals


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    tmp = tmp_path_factory.mktemp("scale-out")
    pg = postgres.PostgreSQL().start() if postgres.available() else None
    stack: list[Any] = []
    db_url = pg.url if pg else f"sqlite:///{tmp / 'medvision-data' / 'medvision.db'}"
    db = Database(db_url)
    try:
        rabbit = RabbitMQ(tmp / "rabbitmq").start()
        stack.append(rabbit)
        orthanc = Orthanc(tmp / "orthanc", {}).start()
        stack.append(orthanc)
        pacs = orthanc.dicom_port
        node = receiver(
            tmp / "medvision-data",
            rabbit.url,
            ("orthanc", "ORTHANC", pacs),
            database_url=db_url,
            republish_after_s=10,
            worker_stale_s=10,
            worker_metrics_port=0,  # three workers on one host; metrics are tested elsewhere
        ).start()
        stack.append(node)
        cluster = Cluster(tmp, node, orthanc, rabbit, db, pg, [])
        for n in range(1, N_WORKERS + 1):
            cluster.workers.append(WorkerProcess(node.env, tmp, n))
            stack.append(cluster.workers[-1])

        def reported() -> bool:
            assert all(w.alive() for w in cluster.workers), "a worker exited"
            rows = workers(db)
            return len(rows) == N_WORKERS and all(r.models.get("lung-ct") for r in rows)

        wait_for("the workers to report with lung-ct loaded", reported, 300, 0.5)
        yield cluster
    finally:
        for part in stack:  # all workers at once: each warm shutdown takes a moment
            if isinstance(part, WorkerProcess):
                part.terminate()
        for part in reversed(stack):
            part.stop()
        db.dispose()
        if pg is not None:
            pg.destroy()


def test_three_workers_deliver_each_study_once_to_orthanc(cluster: Cluster) -> None:
    studies = [cluster.new_study() for _ in range(20)]
    ct_files = sorted(CHEST_CT.glob("*.dcm"))
    assert len(ct_files) == 64, f"the real chest CT is missing at {CHEST_CT}"
    ct_uid = str(dcmread(ct_files[0], stop_before_pixels=True).StudyInstanceUID)
    cluster.push(ct_uid, ct_files)  # first: the longest job starts early
    for uid, files in studies:
        cluster.push(uid, files)
    uids = [ct_uid, *(uid for uid, _ in studies)]
    cluster.wait_sent(uids)
    cluster.assert_delivered_once(uids)
    # Every worker took part, and each is a separate process that ran its jobs itself.
    pids = {w.pid for w in cluster.workers}
    ran_on = {int(j.worker.rsplit(":", 1)[1]) for j in cluster.jobs(uids)}
    assert ran_on == pids, (ran_on, pids)


def _job_running_when_connections_are_cut(cluster: Cluster) -> tuple[str, Job, list[str]]:
    """Push a study, wait for its job to run, cut every client connection of the broker:
    that job's acknowledgement is then lost with its worker's connection. rabbitmqctl takes
    seconds to act, and on an idle machine a job may end first; then a larger study is
    tried (the studies that ended too soon are returned too: they must still be delivered
    once). Returns the in-flight study, its job and the earlier studies."""
    earlier: list[str] = []
    for n_slices, rows in ((64, 256), (128, 256), (128, 512)):
        uid, files = cluster.new_study(n_slices=n_slices, rows=rows)
        cluster.push(uid, files)
        (job,) = wait_for(
            "the job to run",
            lambda uid=uid: [j for j in cluster.jobs([uid]) if j.state == "running"],
            120,
            0.05,
        )
        cluster.rabbit.ctl("close_all_connections", "broker stopping")
        if [j.state for j in cluster.jobs([uid])] == ["running"]:
            return uid, job, earlier
        earlier.append(uid)
    pytest.fail("no job was still running when the broker's connections were cut")


def test_broker_stopped_for_30_s_while_studies_arrive(cluster: Cluster) -> None:
    workers_before = {w.pid for w in cluster.workers}
    in_flight, job, earlier = _job_running_when_connections_are_cut(cluster)
    stopped_at = time.monotonic()
    cluster.rabbit.stop()
    try:
        arrived = [cluster.new_study() for _ in range(3)]
        for uid, files in arrived:
            cluster.push(uid, files)  # every instance answered Success: spooled
        uids = [uid for uid, _ in arrived]

        def queued() -> bool:
            found = [cluster.node.study(uid) for uid in uids]
            waiting = ("receiving", "complete", "queued")
            assert all(s is None or s["state"] in waiting for s in found), found
            return all(s is not None and s["state"] == "queued" for s in found)

        wait_for("the studies to be queued", queued, BROKER_OUTAGE_S)
        assert [cluster.node.study(uid)["instances"] for uid in uids] == [24, 24, 24]
        time.sleep(max(0.0, BROKER_OUTAGE_S - (time.monotonic() - stopped_at)))
        # Still queued: nothing ran without the broker.
        assert {cluster.node.study(uid)["state"] for uid in uids} == {"queued"}
    finally:
        cluster.rabbit.start()  # also when a check failed: the next test needs the broker

    cluster.wait_sent([*earlier, in_flight, *uids])
    cluster.assert_delivered_once([*earlier, in_flight, *uids])
    assert {w.pid for w in cluster.workers if w.alive()} == workers_before
    # The running job's message, never acknowledged (its worker's connection was gone when
    # the job ended), went back to the queue and was skipped by whichever worker got it.
    wait_for(
        "the unacknowledged message to come back",
        lambda: any(
            f"job {job.id} is not queued; nothing to do" in w.log_path.read_text()
            for w in cluster.workers
        ),
        60,
        0.5,
    )


@pytest.mark.skipif(not postgres.available(), reason="PostgreSQL is not installed")
def test_postgres_restarted_while_jobs_run_and_studies_arrive(cluster: Cluster) -> None:
    assert cluster.pg is not None
    before = [cluster.new_study() for _ in range(4)]
    for uid, files in before:
        cluster.push(uid, files)
    uids = [uid for uid, _ in before]
    wait_for(
        "a job to run",
        lambda: [j for j in cluster.jobs(uids) if j.state == "running"],
        120,
        0.1,
    )
    stopped_at = time.monotonic()
    cluster.pg.stop()  # "fast": every session is cut, as in a restart or a fail-over
    try:
        during, files = cluster.new_study()
        cluster.push(during, files)  # the spool does not need the database to answer Success
        time.sleep(max(0.0, DB_OUTAGE_S - (time.monotonic() - stopped_at)))
    finally:
        cluster.pg.start()
    after, files = cluster.new_study()
    cluster.push(after, files)
    uids += [during, after]

    cluster.wait_sent(uids)
    cluster.assert_delivered_once(uids)
    assert cluster.node.proc is not None and cluster.node.proc.poll() is None
    assert all(w.alive() for w in cluster.workers)
    shown = [w for w in cluster.node.get("/workers") if w["kind"] == "celery"]
    assert len(shown) == N_WORKERS and all(w["alive"] for w in shown), shown
