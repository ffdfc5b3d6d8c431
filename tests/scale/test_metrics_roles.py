"""Prometheus metrics of both roles, scraped over HTTP as a Prometheus would: a real
RabbitMQ, ``medvision serve --role receiver`` (``/metrics`` with an API token), one
``medvision worker --metrics-port`` and dcmtk's storescp as the destination.

Checked on one study pushed through: each endpoint says its role; while the job runs the
worker reports itself busy with that job; afterwards the job is counted once with outcome
done on the worker, the stage histograms have observations, the queue is empty, the
worker is idle with its model listed, and the receiver's delivery stage counted the send.
"""

from __future__ import annotations

import os
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from medvision.db import Database
from tests.node.peers import NodeProcess, free_port, stop_process, wait_for
from tests.scale.cluster import StoreSCP, push, receiver, synthetic_study
from tests.scale.rabbit import RabbitMQ, available

pytestmark = pytest.mark.skipif(not available(), reason="rabbitmq-server is not installed")

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(url: str, token: str | None = None) -> Samples:
    """Every sample of one scrape, keyed by (sample name, labels)."""
    req = urllib.request.Request(url)
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    with urllib.request.urlopen(req, timeout=30) as resp:
        text = resp.read().decode()
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    """The sum of ``name`` over the samples whose labels include ``labels`` (as PromQL's
    ``sum(name{labels})``); 0 when there is none."""
    want = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and want <= ls)


@pytest.fixture(scope="module")
def rabbit(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RabbitMQ]:
    """One broker for the module's tests (starting one takes ~10 s here)."""
    broker = RabbitMQ(tmp_path_factory.mktemp("rabbitmq")).start()
    try:
        yield broker
    finally:
        broker.stop()


@pytest.fixture
def cluster(tmp_path: Path, rabbit: RabbitMQ) -> Iterator[dict]:
    pacs = StoreSCP(tmp_path / "pacs")
    node = receiver(
        tmp_path / "medvision-data",
        rabbit.url,
        ("dest", pacs.ae_title, pacs.port),
        quiet_period_s=1,
    )
    worker_port = free_port()
    worker: subprocess.Popen | None = None
    log = open(tmp_path / "worker.log", "ab")  # noqa: SIM115
    try:
        node.start()
        worker = subprocess.Popen(
            [sys.executable, "-m", "medvision.cli", "worker", "--metrics-port", str(worker_port)],
            env=node.env,
            cwd=tmp_path,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        yield {
            "node": node,
            "worker": worker,
            "worker_url": f"http://127.0.0.1:{worker_port}/metrics",
            "tmp": tmp_path,
        }
    finally:
        if worker is not None and worker.poll() is None:
            stop_process(worker)
        log.close()
        node.stop()
        pacs.stop()


def test_receiver_and_worker_metrics_over_http(cluster: dict) -> None:
    node: NodeProcess = cluster["node"]
    worker: subprocess.Popen = cluster["worker"]
    worker_url: str = cluster["worker_url"]

    def receiver() -> Samples:
        return scrape(node.url + "/metrics", node.token)

    def worker_ready() -> Samples | None:
        assert worker.poll() is None, "the worker exited"
        samples = scrape(worker_url)
        return samples if value(samples, "medvision_worker_model_info") else None

    before = wait_for("the worker's metrics with its model loaded", worker_ready, 120, 0.2)
    assert value(before, "medvision_node_info", role="worker") == 1
    assert value(before, "medvision_worker_model_info", pipeline="lung-ct") == 1
    assert value(before, "medvision_worker_busy") == 0
    assert value(receiver(), "medvision_node_info", role="receiver", jobs_run_by="celery") == 1

    uid, files = synthetic_study(cluster["tmp"], 1)
    push(node, files)
    # While the job runs (several seconds), the worker says so.

    def worker_busy() -> Samples | None:
        samples = scrape(worker_url)
        return samples if value(samples, "medvision_worker_busy") == 1 else None

    busy = wait_for("the worker to report a running job", worker_busy, 60, 0.1)
    (job,) = node.get(f"/studies/{uid}")["jobs"]
    assert value(busy, "medvision_worker_current_job") == job["id"]

    def sent() -> bool:
        study = node.study(uid)
        assert study is None or study["state"] not in ("failed", "send-failed"), study
        return study is not None and study["state"] == "sent"

    wait_for("the study's results to be sent", sent, 120, 0.2)

    after = scrape(worker_url)
    assert value(after, "medvision_worker_jobs_total", pipeline="lung-ct", outcome="done") == 1
    assert value(after, "medvision_worker_jobs_total") == 1  # counted once, no other outcome
    for stage in ("load", "inference", "write", "total"):
        count = value(after, "medvision_worker_stage_seconds_count", stage=stage)
        assert count == 1, stage
    assert value(after, "medvision_worker_stage_seconds_sum", stage="total") > 0
    assert value(after, "medvision_worker_busy") == 0
    assert value(after, "medvision_worker_current_job") == 0
    assert value(after, "medvision_worker_tasks_skipped_total") == 0

    cluster_view = receiver()
    assert value(cluster_view, "medvision_queue_depth") == 0
    assert value(cluster_view, "medvision_jobs", state="done") == 1
    assert value(cluster_view, "medvision_jobs", state="queued") == 0
    assert value(cluster_view, "medvision_studies", state="sent") == 1
    assert value(cluster_view, "medvision_deliveries", state="sent") == 2  # SEG and SR
    assert value(cluster_view, "medvision_workers", state="idle") == 1
    for stage in ("wait", "load", "inference", "write", "deliver"):
        count = value(cluster_view, "medvision_job_stage_seconds_count", stage=stage)
        assert count == 1, stage
    assert value(cluster_view, "medvision_job_duration_seconds_count") == 1


def test_prefork_worker_metrics_add_up_the_children(tmp_path: Path, rabbit: RabbitMQ) -> None:
    """``--concurrency 2``: tasks run in pool children, the main process serves the sum.
    Four messages for jobs that do not exist are counted once each, by whichever child
    took them, and no child is left counted as busy."""
    from medvision.jobs._celery import Publisher

    data = tmp_path / "data"
    data.mkdir()
    # Made here: two children creating a new SQLite schema at once race (one fails).
    db = Database(f"sqlite:///{data / 'medvision.db'}")
    db.create_schema()
    db.dispose()
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("MEDVISION_")}
    env.update(
        PYTHONUNBUFFERED="1",
        MEDVISION_DATA_DIR=str(data),
        MEDVISION_BROKER_URL=rabbit.url,
        # No job exists, so no pipeline is needed: an unknown name is logged, not loaded.
        MEDVISION_PIPELINES='["none"]',
        MEDVISION_WORKER_METRICS_PORT=str(port),
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
    url = f"http://127.0.0.1:{port}/metrics"
    try:
        info = wait_for("the worker's metrics", lambda: proc.poll() is None and scrape(url), 120)
        assert value(info, "medvision_node_info", role="worker", concurrency="2") == 1
        publisher.publish([12345, 12346, 12347, 12348])

        def skipped_four() -> Samples | None:
            samples = scrape(url)
            return samples if value(samples, "medvision_worker_tasks_skipped_total") == 4 else None

        final = wait_for("four skipped tasks counted", skipped_four, 120, 0.5)
        assert value(final, "medvision_worker_busy") == 0
        assert value(final, "medvision_worker_jobs_total") == 0
    finally:
        publisher.close()
        stop_process(proc)
        log.close()


CHILD_KILLED = """
import os
from prometheus_client import CollectorRegistry, generate_latest
from medvision.jobs import _metrics as m

folder = m.enable()
pid = os.fork()
if pid == 0:  # a pool child that runs a job and is killed: no clean exit
    m._m().busy.inc()
    m._m().jobs.labels("lung-ct", "done").inc()
    os._exit(0)
os.waitpid(pid, 0)
registry = CollectorRegistry()
registry.register(m._LiveCollector(folder))
print(generate_latest(registry).decode())
"""


def test_a_killed_pool_child_is_not_counted_busy_and_its_counts_stay(tmp_path: Path) -> None:
    """Multiprocess mode keeps a gauge file per process; the server forgets the live
    gauges of processes that are gone (in a subprocess: the mode is process-wide)."""
    env = {k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"}
    out = subprocess.run(
        [sys.executable, "-c", CHILD_KILLED], env=env, capture_output=True, text=True, check=True
    ).stdout
    samples = {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(out)
        for s in family.samples
    }
    assert value(samples, "medvision_worker_busy") == 0
    assert value(samples, "medvision_worker_jobs_total", outcome="done") == 1
