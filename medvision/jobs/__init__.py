"""Jobs: the queue in the database, and the embedded worker pool."""

from medvision.jobs._queue import MAX_ATTEMPTS, claim_next, recover_orphans, take_back
from medvision.jobs._worker import WorkerPool, destinations_for, execute_job, worker_id

__all__ = [
    "MAX_ATTEMPTS",
    "WorkerPool",
    "claim_next",
    "destinations_for",
    "execute_job",
    "recover_orphans",
    "take_back",
    "worker_id",
]
