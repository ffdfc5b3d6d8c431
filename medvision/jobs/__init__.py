"""Jobs: the queue in the database, and the embedded worker pool.

The Celery side (the ``scale`` extra: publishing, the sweep, the worker and its metrics)
is named here too but imported on first use, so that a node without a broker, or without
Celery installed, never loads it. ``worker_metrics`` must be set up (``enable()``) before
the Celery side is first imported: Prometheus reads its multiprocess folder at import.
"""

import importlib
from types import ModuleType
from typing import TYPE_CHECKING, Any

from medvision._lazy import lazy_exports
from medvision.jobs._queue import MAX_ATTEMPTS, claim_next, recover_orphans, take_back
from medvision.jobs._worker import WorkerPool, destinations_for, execute_job, worker_id

_CELERY = "medvision.jobs._celery"
_lazy = lazy_exports(
    __name__,
    {"Publisher": _CELERY, "Sweeper": _CELERY, "device_name": _CELERY, "run_worker": _CELERY},
)

if TYPE_CHECKING:
    from medvision.jobs import _metrics as worker_metrics
    from medvision.jobs._celery import Publisher, Sweeper, device_name, run_worker


def __getattr__(name: str) -> Any:  # noqa: ANN401 - whatever the named export is
    if name == "worker_metrics":
        module: ModuleType = importlib.import_module("medvision.jobs._metrics")
        return module
    return _lazy(name)


__all__ = [
    "MAX_ATTEMPTS",
    "Publisher",
    "Sweeper",
    "WorkerPool",
    "claim_next",
    "destinations_for",
    "device_name",
    "execute_job",
    "recover_orphans",
    "run_worker",
    "take_back",
    "worker_id",
    "worker_metrics",
]
