"""Surviving a database that goes away (restart, fail-over, network cut).

The engine replaces dead pooled connections (``pool_pre_ping``), but a transaction cut
while it ran still fails: callers that must survive that run the whole transaction again
(:func:`retry_db`), and the node's loops, which retry at every pass anyway, log such a
failure in one line (:func:`log_pass_failure`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TypeVar

from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError

#: How long :func:`retry_db` keeps trying while the database is unreachable. A worker
#: holding a finished job must not give up early: its claim would stay "running" while its
#: heartbeat says it is alive, so no sweep would ever queue the job again.
DB_RETRY_S = 900.0

LOG = logging.getLogger("medvision.db")
T = TypeVar("T")


def is_db_unavailable(err: BaseException) -> bool:
    """True for the errors of a database that went away (restart, fail-over, network):
    the connection was cut or cannot be made. Retrying the whole transaction is then safe."""
    if isinstance(err, OperationalError | InterfaceError):
        return True
    return isinstance(err, DBAPIError) and err.connection_invalidated


def log_pass_failure(log: logging.Logger, what: str, err: Exception) -> None:
    """For the node's loops (assembly, sweep, sender), which retry at every pass: one line
    while the database is away (restart, fail-over), since a traceback per pass would bury
    everything else in the log; the full traceback for anything else."""
    if is_db_unavailable(err):
        first = next(iter(str(err).splitlines()), type(err).__name__)
        log.error("%s pass failed, database unavailable; retrying: %s", what, first)
    else:
        log.error("%s pass failed; retrying", what, exc_info=err)


def retry_db(fn: Callable[[], T], what: str, retry_for_s: float = DB_RETRY_S) -> T:
    """Run the transaction ``fn`` again (backing off up to 5 s) while the database is
    unavailable, for at most ``retry_for_s``; any other error is raised at once.

    ``fn`` must be one whole transaction that may run twice: if the connection broke after
    the commit reached the server, the second run finds the work done (every caller checks
    the row's state first). The engine's ``pool_pre_ping`` replaces the dead pooled
    connections, so the retry gets a fresh one once the server is back.
    """
    deadline = time.monotonic() + retry_for_s
    delay = 0.2
    while True:
        try:
            return fn()
        except Exception as err:
            if not is_db_unavailable(err) or time.monotonic() + delay > deadline:
                raise
            LOG.warning("database unavailable while %s (retrying in %.1f s): %s", what, delay, err)
            time.sleep(delay)
            delay = min(delay * 2, 5.0)


__all__ = ["DB_RETRY_S", "is_db_unavailable", "log_pass_failure", "retry_db"]
