"""Prometheus metrics of a ``medvision worker``, served on ``worker_metrics_port``.

A worker has no HTTP server of its own, so ``medvision worker`` starts prometheus_client's
small one (``start_http_server``) in the worker's main process when the port is not 0.

Design: prometheus_client's **multiprocess mode, for both pools**. With ``--concurrency N``
(prefork) the jobs run in pool children, so a registry in the main process would count
nothing, and a server per child would need a port per child that comes and goes. In
multiprocess mode every process writes its values to memory-mapped files in one folder
(``PROMETHEUS_MULTIPROC_DIR``, a fresh temporary folder per worker, removed at exit) and the
main process's server adds them up at each scrape. The solo pool (``--concurrency 1``) uses
the same files (its one process is the main process), so the one code path is what the
tests exercise. prometheus_client chooses the mode when it is first imported; :func:`enable`
chooses again (see there), so it must only run before this module makes its metrics
(``medvision worker`` calls it first; they are made at first use).

These are this worker's own counts since it started (``rate()`` copes with the reset at a
restart); the cluster's totals, queue depth and delivery times are on the receiver's
``/metrics``, read from the database (:mod:`medvision.api._metrics`). The worker does not
send results (the receiver's sender does), so there is no send stage here.

Exposed (docs/scaling.md, "Metrics"):

- ``medvision_node_info{role="worker",device,concurrency,version}`` 1;
- ``medvision_worker_jobs_total{pipeline,outcome}``: jobs this worker ran, by the state the
  run left the job in (done, failed, refused, superseded) or ``lost`` (its claim was taken
  away and its results discarded) or ``crashed`` (the task raised);
- ``medvision_worker_tasks_skipped_total``: messages for jobs that were not queued
  (duplicates, late or re-published messages: harmless by design);
- ``medvision_worker_stage_seconds{pipeline,stage}``: histograms of load, inference, write
  and total per job;
- ``medvision_worker_busy``: jobs running now (0 or 1 per pool process, summed);
- ``medvision_worker_current_job{pid}``: the id of the job each pool process runs, 0 idle;
- ``medvision_worker_model_info{pipeline,version}`` 1 per pipeline loaded.
"""

from __future__ import annotations

import atexit
import logging
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import cache
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

import medvision
from medvision._extras import require

signals = require("celery.signals", "scale")

if TYPE_CHECKING:
    from medvision.db import Database, Job
    from medvision.runner import PipelineRun

LOG = logging.getLogger("medvision.metrics")

#: Upper bounds (s) of the stage buckets, the same as the receiver's.
STAGE_BUCKETS = (0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800)
STAGES = ("load", "inference", "write", "total")
ENV = "PROMETHEUS_MULTIPROC_DIR"

_enabled_by: int | None = None


def enable() -> Path:
    """Turn on multiprocess mode with a fresh folder for this worker; call before this
    module makes its metrics. Pool children forked later inherit the mode and folder."""
    global _enabled_by
    if _m.cache_info().currsize:
        raise RuntimeError("worker metrics were made before multiprocess mode was enabled")
    folder = Path(tempfile.mkdtemp(prefix="medvision-metrics-"))
    os.environ[ENV] = str(folder)
    # prometheus_client picks its value class when first imported, and the command line
    # imports it early (the API's modules, for the users subcommand). Metrics read
    # ``values.ValueClass`` when they are made, so choosing it again here is enough: ours
    # are made later (``_m``) and the API's collectors hold no values.
    from prometheus_client import values

    values.ValueClass = values.get_value_class()
    _enabled_by = os.getpid()

    def _remove() -> None:
        if os.getpid() == _enabled_by:  # the main process only, not a pool child
            shutil.rmtree(folder, ignore_errors=True)

    atexit.register(_remove)
    return folder


@cache
def _m() -> SimpleNamespace:
    """The metric objects, made at first use (after :func:`enable`)."""
    from prometheus_client import Counter, Gauge, Histogram

    return SimpleNamespace(
        info=Gauge(
            "medvision_node_info",
            "This process's role (worker), its device and pool size.",
            ["role", "device", "concurrency", "version"],
            registry=None,
            multiprocess_mode="livemax",
        ),
        jobs=Counter(
            "medvision_worker_jobs",
            "Jobs run by this worker, by outcome.",
            ["pipeline", "outcome"],
            registry=None,
        ),
        skipped=Counter(
            "medvision_worker_tasks_skipped",
            "Messages for jobs that were not queued (duplicates, re-published).",
            registry=None,
        ),
        stages=Histogram(
            "medvision_worker_stage_seconds",
            "Seconds per job stage (load, inference, write, total).",
            ["pipeline", "stage"],
            buckets=STAGE_BUCKETS,
            registry=None,
        ),
        busy=Gauge(
            "medvision_worker_busy",
            "Jobs running now in this worker.",
            registry=None,
            multiprocess_mode="livesum",
        ),
        current=Gauge(
            "medvision_worker_current_job",
            "Id of the job each pool process runs (0: idle).",
            registry=None,
            multiprocess_mode="liveall",
        ),
        models=Gauge(
            "medvision_worker_model_info",
            "Pipelines loaded, with their versions.",
            ["pipeline", "version"],
            registry=None,
            multiprocess_mode="livemax",
        ),
    )


def serve(port: int, addr: str, device: str, concurrency: int) -> bool:
    """Start the HTTP server (a daemon thread of the main process). A port in use is
    logged and the worker goes on without metrics: inference matters more than its
    metrics, and two workers on one host need two ports."""
    from prometheus_client import CollectorRegistry, start_http_server

    registry = CollectorRegistry(auto_describe=False)
    registry.register(_LiveCollector(Path(os.environ[ENV])))
    # Before the server: a scrape that came between the two saw the worker's counters
    # without the info that says whose they are (seen in CI).
    _m().info.labels("worker", device, str(concurrency), medvision.__version__).set(1)
    try:
        start_http_server(port, addr=addr, registry=registry)
    except OSError as err:
        LOG.error("worker metrics NOT served: cannot listen on %s:%s: %s", addr, port, err)
        return False
    LOG.info("worker metrics on http://%s:%s/metrics", addr, port)
    return True


class _LiveCollector:
    """MultiProcessCollector that first forgets pool children that are gone.

    A child's live gauges (busy, current job, models) are dropped when it exits cleanly
    (``_child_exit``); a child killed outright (OOM killer, SIGKILL) never says so, and
    would be counted busy for ever. Its counters and histograms stay, as they must.
    """

    def __init__(self, folder: Path) -> None:
        from prometheus_client.multiprocess import MultiProcessCollector

        self.folder = folder
        self.inner = MultiProcessCollector(None, str(folder))

    def collect(self) -> Iterator[Any]:
        from prometheus_client import multiprocess

        for path in self.folder.glob("gauge_live*_*.db"):
            pid = int(path.stem.rsplit("_", 1)[1])
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                multiprocess.mark_process_dead(pid, str(self.folder))
            except PermissionError:  # alive, another user's: not ours to judge
                pass
        return self.inner.collect()


def model_loaded(pipeline: str, version: str) -> None:
    _m().models.labels(pipeline, version).set(1)


def model_unloaded(pipeline: str, version: str) -> None:
    """A version replaced by a re-import is no longer loaded: 0, not removed (in
    multiprocess mode a removed label would still be read back from its value file)."""
    _m().models.labels(pipeline, version).set(0)


def task_skipped() -> None:
    _m().skipped.inc()


def _outcome(db: Database, job_id: int, worker: str) -> str:
    """What the run left the job in, read back from the database (``_finish`` decides
    superseded and lost there, not in the returned run)."""
    from medvision.db import Job, JobState

    with db.session() as session:
        row = session.get(Job, job_id)
        if row is None or row.worker != worker or row.state in (JobState.QUEUED, JobState.RUNNING):
            return "lost"
        return str(row.state)


@contextmanager
def observe_job(db: Database, job: Job, worker: str) -> Iterator[Callable[[PipelineRun], None]]:
    """Busy while the body runs; then the job's outcome and stage timings.

    The body calls the yielded function with the finished run; if it raises instead, the
    job is counted as ``crashed``. Metrics never make a job fail: their own errors are
    logged and swallowed.
    """
    m = _m()
    runs: list[PipelineRun] = []
    m.busy.inc()
    m.current.set(job.id)
    try:
        yield runs.append
    finally:
        m.busy.dec()
        m.current.set(0)
        try:
            if runs:
                for stage in STAGES:
                    if stage in runs[0].timings_s:
                        m.stages.labels(job.pipeline, stage).observe(runs[0].timings_s[stage])
                outcome = _outcome(db, job.id, worker)
            else:
                outcome = "crashed"
            m.jobs.labels(job.pipeline, outcome).inc()
        except Exception as err:
            LOG.error("job %s: metrics not recorded: %s", job.id, err)


@signals.worker_process_shutdown.connect
def _child_exit(**_kwargs: Any) -> None:  # noqa: ANN401 - Celery signal
    """A pool child leaving: drop its live gauges (busy, current job, models) so the sum
    does not count a process that is gone. Its counters and histograms stay, as they must."""
    if ENV in os.environ:
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(os.getpid())


__all__ = ["enable", "model_loaded", "observe_job", "serve", "task_skipped"]
