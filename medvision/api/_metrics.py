"""``/metrics`` in the Prometheus text format, computed from the database at each scrape.

The database is the single source of truth and several processes may work on it, so the
numbers are read from it (a custom collector) rather than counted in this process, where
they would reset on restart and miss other workers' work. Exposed:

- ``medvision_node_info{role,jobs_run_by,version}`` (always 1): which role answers, so a
  cluster's scrape tells the receiver (or the all-in-one node) from the workers, whose own
  endpoint (``medvision worker --metrics-port``) has ``role="worker"``;
- ``medvision_studies{state}``, ``medvision_jobs{state}``, ``medvision_deliveries{state}``
  (gauges: rows per state now);
- ``medvision_queue_depth`` (jobs queued and not yet claimed by any worker: the backlog);
- ``medvision_workers{state}`` (Celery workers by idle/busy/stopped/dead, the same rule as
  ``GET /workers``);
- ``medvision_receivers{state}`` (the receivers of a database shared by several, those with
  a ``node_name``, by serving/stopped/dead: :func:`medvision.node.receiver_state`, the rule
  of ``GET /workers`` and of the assemblers; docs/scaling.md);
- ``medvision_job_duration_seconds`` (histogram of finished jobs, started to finished);
- ``medvision_job_stage_seconds{stage}`` (histograms of finished jobs per stage: ``wait``
  queued to started, ``load``, ``inference``, ``write`` from the job's own timings, and
  ``deliver`` finished to the last of its results sent, once all are);
- ``medvision_audit_events_total`` (counter: events in the trail);
- the DICOM acceptor processes' own counts, summed over every process (and every receiver)
  that reports in the ``acceptors`` table (docs/node.md): ``medvision_scp_associations_total``,
  ``medvision_scp_instances_total{outcome}`` (stored, duplicate, refused),
  ``medvision_scp_received_bytes_total``, ``medvision_scp_active_associations`` and
  ``medvision_scp_acceptors{state}`` (serving, starting, restarting, stopped, dead: silent
  for ``worker_stale_s``), ``medvision_scp_acceptor_restarts_total``. Each process writes its
  counts every 2 s, carrying on from its slot's previous process, so the sums only grow.

Access: roles ``qa`` or ``admin``; with ``metrics_public = true`` no credentials at all, for
a Prometheus on a trusted network that cannot hold a token. Metrics carry no UIDs.

No ``from __future__ import annotations``: FastAPI resolves these annotations at runtime.
"""

from collections.abc import Iterable, Iterator
from datetime import datetime

from fastapi import APIRouter, BackgroundTasks, Depends, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from sqlalchemy import func, select

import medvision
from medvision.auth import Role
from medvision.config import Settings
from medvision.db import (
    Acceptor,
    AuditEvent,
    Database,
    Job,
    JobState,
    Outbox,
    OutboxState,
    Receiver,
    Study,
    StudyState,
    Worker,
    as_utc,
    heartbeat_state,
    stale_cutoff,
)
from medvision.http_deps import AuditDep, DbDep, SettingsDep, get_current_user, require_roles
from medvision.node import ACCEPTOR_RUNNING_STATES, RECEIVER_STATES, receiver_state

#: Upper bounds (s) of the job-duration buckets: seconds for small CTs up to an hour.
DURATION_BUCKETS = (1, 5, 10, 30, 60, 120, 300, 600, 1800, 3600)
#: Upper bounds (s) of the per-stage buckets: a stage of a small CT takes well under a
#: second, a large CT's inference on CPU minutes (docs/benchmarks.md).
STAGE_BUCKETS = (0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800)
#: Stages taken from ``jobs.timings`` (what ``medvision.runner.run_pipeline`` measures).
RUN_STAGES = ("load", "inference", "write")
WORKER_STATES = ("idle", "busy", "stopped", "dead")
_METRICS_ROLES = require_roles(Role.QA, Role.ADMIN)


def histogram(
    name: str,
    doc: str,
    bounds: Iterable[float],
    series: dict[tuple[str, ...], list[float]],
    labels: list[str] | None = None,
) -> HistogramMetricFamily:
    """A cumulative histogram family from raw observations, one series per label tuple."""
    family = HistogramMetricFamily(name, doc, labels=labels or [])
    bounds = tuple(bounds)
    for key, values in series.items():
        buckets = [(str(float(b)), sum(1 for v in values if v <= b)) for b in bounds]
        buckets.append(("+Inf", len(values)))
        family.add_metric(list(key), buckets, sum(values))
    return family


class NodeCollector:
    """A prometheus_client collector that reads the node's tables."""

    def __init__(self, db: Database, settings: Settings | None = None) -> None:
        self.db = db
        self.settings = settings or Settings()

    def collect(self) -> Iterator[Metric]:
        settings = self.settings
        info = GaugeMetricFamily(
            "medvision_node_info",
            "This process's role; jobs_run_by: celery (a broker) or embedded (in-process).",
            labels=["role", "jobs_run_by", "version"],
        )
        info.add_metric(
            [settings.role, "celery" if settings.broker_url else "embedded", medvision.__version__],
            1,
        )
        yield info
        stale_before = stale_cutoff(settings.worker_stale_s)
        with self.db.read() as session:
            per_state: dict[type, dict[str, int]] = {}
            for table in (Study, Job, Outbox):
                rows = session.execute(select(table.state, func.count()).group_by(table.state))
                per_state[table] = {state: int(n) for state, n in rows}
            finished = list(
                session.execute(
                    select(
                        Job.id, Job.created_at, Job.started_at, Job.finished_at, Job.timings
                    ).where(Job.started_at.is_not(None), Job.finished_at.is_not(None))
                )
            )
            # Only jobs whose every result is sent: an observation must not change later
            # (a histogram's buckets only grow), as it would while a second result waits.
            last_sent = {
                job_id: at
                for job_id, at, rows, sent in session.execute(
                    select(
                        Outbox.job_id,
                        func.max(Outbox.sent_at),
                        func.count(),
                        func.count(Outbox.sent_at),
                    ).group_by(Outbox.job_id)
                )
                if at is not None and rows == sent
            }
            workers = list(session.execute(select(Worker.state, Worker.heartbeat_at)))
            receivers = list(session.execute(select(Receiver.state, Receiver.heartbeat_at)))
            audit_count = session.scalar(select(func.count()).select_from(AuditEvent)) or 0
            acceptors = list(
                session.execute(
                    select(
                        Acceptor.state,
                        Acceptor.heartbeat_at,
                        Acceptor.restarts,
                        Acceptor.associations,
                        Acceptor.active_associations,
                        Acceptor.instances,
                        Acceptor.duplicates,
                        Acceptor.refused,
                        Acceptor.bytes_received,
                    )
                )
            )
        for name, table, states, doc in (
            ("medvision_studies", Study, StudyState, "Studies per state."),
            ("medvision_jobs", Job, JobState, "Jobs per state."),
            ("medvision_deliveries", Outbox, OutboxState, "Result deliveries per state."),
        ):
            gauge = GaugeMetricFamily(name, doc, labels=["state"])
            counts = per_state[table]
            for state in [*(s.value for s in states), *sorted(set(counts) - set(states))]:
                gauge.add_metric([state], counts.get(state, 0))
            yield gauge
        yield GaugeMetricFamily(
            "medvision_queue_depth",
            "Jobs queued and not yet claimed by a worker (the backlog).",
            value=per_state[Job].get(JobState.QUEUED, 0),
        )
        yield _state_gauge(
            "medvision_workers",
            "Celery workers by state (dead: silent too long).",
            WORKER_STATES,
            (heartbeat_state(state, heartbeat, stale_before) for state, heartbeat in workers),
        )
        yield _state_gauge(
            "medvision_receivers",
            "Receivers sharing this database (node_name set) by state (dead: silent too long).",
            RECEIVER_STATES,
            (receiver_state(state, heartbeat, stale_before) for state, heartbeat in receivers),
        )
        yield histogram(
            "medvision_job_duration_seconds",
            "Run time of finished jobs, from start to finish.",
            DURATION_BUCKETS,
            {(): [(done - started).total_seconds() for _, _, started, done, _ in finished]},
        )
        stages: dict[tuple[str, ...], list[float]] = {(s,): [] for s in ("wait", *RUN_STAGES)}
        stages[("deliver",)] = []
        for job_id, created, started, done, timings in finished:
            stages[("wait",)].append(max(0.0, (as_utc(started) - as_utc(created)).total_seconds()))
            for stage in RUN_STAGES:
                if isinstance(timings, dict) and stage in timings:
                    stages[(stage,)].append(float(timings[stage]))
            sent = last_sent.get(job_id)
            if sent is not None:
                stages[("deliver",)].append(max(0.0, (as_utc(sent) - as_utc(done)).total_seconds()))
        yield histogram(
            "medvision_job_stage_seconds",
            "Finished jobs per stage: wait (queued to started), load, inference, write "
            "(the job's own timings), deliver (finished to all its results sent).",
            STAGE_BUCKETS,
            stages,
            ["stage"],
        )
        yield CounterMetricFamily(
            "medvision_audit_events", "Events in the audit trail.", value=audit_count
        )
        yield from _acceptor_metrics(acceptors, stale_before)


def _state_gauge(
    name: str, doc: str, known: Iterable[str], states: Iterable[str]
) -> GaugeMetricFamily:
    """A gauge of how many are in each state: every ``known`` state listed (0 when none),
    and any other state met in ``states`` as well."""
    counts = dict.fromkeys(known, 0)
    for state in states:
        counts[state] = counts.get(state, 0) + 1
    gauge = GaugeMetricFamily(name, doc, labels=["state"])
    for state, n in counts.items():
        gauge.add_metric([state], n)
    return gauge


ACCEPTOR_STATES = ("serving", "starting", "restarting", "stopped", "dead")


def _acceptor_metrics(rows: list, stale_before: datetime) -> Iterator[Metric]:
    """The acceptor processes' counters, summed (see the module docstring)."""
    yield _state_gauge(
        "medvision_scp_acceptors",
        "DICOM acceptor processes by state (dead: silent too long).",
        ACCEPTOR_STATES,
        (
            heartbeat_state(row.state, row.heartbeat_at, stale_before, ACCEPTOR_RUNNING_STATES)
            for row in rows
        ),
    )
    live = [r for r in rows if r.state in ACCEPTOR_RUNNING_STATES]
    yield GaugeMetricFamily(
        "medvision_scp_active_associations",
        "Associations open now, over all acceptor processes.",
        value=sum(r.active_associations for r in live),
    )
    yield CounterMetricFamily(
        "medvision_scp_associations",
        "Associations accepted, over all acceptor processes.",
        value=sum(r.associations for r in rows),
    )
    instances = CounterMetricFamily(
        "medvision_scp_instances",
        "Instances received by C-STORE, by outcome (stored, duplicate, refused).",
        labels=["outcome"],
    )
    instances.add_metric(["stored"], sum(r.instances for r in rows))
    instances.add_metric(["duplicate"], sum(r.duplicates for r in rows))
    instances.add_metric(["refused"], sum(r.refused for r in rows))
    yield instances
    yield CounterMetricFamily(
        "medvision_scp_received_bytes",
        "Bytes of instances stored, over all acceptor processes.",
        value=sum(r.bytes_received for r in rows),
    )
    yield CounterMetricFamily(
        "medvision_scp_acceptor_restarts",
        "Acceptor processes that died and were started again.",
        value=sum(r.restarts for r in rows),
    )


def metrics_guard(
    request: Request,
    settings: SettingsDep,
    db: DbDep,
    audit: AuditDep,
    background: BackgroundTasks,
) -> None:
    """Roles qa/admin, unless ``metrics_public``: the setting decides at each request."""
    if settings.metrics_public:
        return
    user = get_current_user(request, db, audit, background)
    _METRICS_ROLES.dependency(user)  # type: ignore[misc]  # raises the 403


router = APIRouter(tags=["metrics"], dependencies=[Depends(metrics_guard)])


@router.get("/metrics", response_class=Response)
def metrics(db: DbDep, settings: SettingsDep) -> Response:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(NodeCollector(db, settings))
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)


__all__ = ["DURATION_BUCKETS", "STAGE_BUCKETS", "NodeCollector", "metrics_guard", "router"]
