"""``/metrics`` in the Prometheus text format, computed from the database at each scrape.

The database is the single source of truth and several processes may work on it, so the
numbers are read from it (a custom collector) rather than counted in this process, where
they would reset on restart and miss other workers' work. Exposed:

- ``medvision_studies{state}``, ``medvision_jobs{state}``, ``medvision_deliveries{state}``
  (gauges: rows per state now);
- ``medvision_job_duration_seconds`` (histogram of finished jobs, started to finished);
- ``medvision_audit_events_total`` (counter: events in the trail).

Access: roles ``qa`` or ``admin``; with ``metrics_public = true`` no credentials at all, for
a Prometheus on a trusted network that cannot hold a token. Metrics carry no UIDs.

No ``from __future__ import annotations``: FastAPI resolves these annotations at runtime.
"""

from collections.abc import Iterator

from fastapi import APIRouter, Depends, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from sqlalchemy import func, select

from medvision.api._auth import Role, get_current_user, require_roles
from medvision.api._deps import AuditDep, DbDep, SettingsDep
from medvision.db import AuditEvent, Database, Job, JobState, Outbox, OutboxState, Study, StudyState

#: Upper bounds (s) of the job-duration buckets: seconds for small CTs up to an hour.
DURATION_BUCKETS = (1, 5, 10, 30, 60, 120, 300, 600, 1800, 3600)
_METRICS_ROLES = require_roles(Role.QA, Role.ADMIN)


class NodeCollector:
    """A prometheus_client collector that reads the node's tables."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def collect(self) -> Iterator[Metric]:
        with self.db.session() as session:
            per_state: dict[type, dict[str, int]] = {}
            for table in (Study, Job, Outbox):
                rows = session.execute(select(table.state, func.count()).group_by(table.state))
                per_state[table] = {state: int(n) for state, n in rows}
            durations = [
                (finished - started).total_seconds()
                for started, finished in session.execute(
                    select(Job.started_at, Job.finished_at).where(
                        Job.started_at.is_not(None), Job.finished_at.is_not(None)
                    )
                )
            ]
            audit_count = session.scalar(select(func.count()).select_from(AuditEvent)) or 0
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
        buckets = []
        for bound in DURATION_BUCKETS:
            buckets.append((str(float(bound)), sum(1 for d in durations if d <= bound)))
        buckets.append(("+Inf", len(durations)))
        total = sum(durations)
        yield HistogramMetricFamily(
            "medvision_job_duration_seconds",
            "Run time of finished jobs, from start to finish.",
            buckets=buckets,
            sum_value=total,
        )
        yield CounterMetricFamily(
            "medvision_audit_events", "Events in the audit trail.", value=audit_count
        )


def metrics_guard(request: Request, settings: SettingsDep, db: DbDep, audit: AuditDep) -> None:
    """Roles qa/admin, unless ``metrics_public``: the setting decides at each request."""
    if settings.metrics_public:
        return
    user = get_current_user(request, db, audit)
    _METRICS_ROLES.dependency(user)  # type: ignore[misc]  # raises the 403


router = APIRouter(tags=["metrics"], dependencies=[Depends(metrics_guard)])


@router.get("/metrics", response_class=Response)
def metrics(db: DbDep) -> Response:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(NodeCollector(db))
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)


__all__ = ["DURATION_BUCKETS", "NodeCollector", "metrics_guard", "router"]
