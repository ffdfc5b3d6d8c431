"""The ``acceptors`` table: one row per acceptor slot of a receiver, which ``medvision
status``, ``GET /workers`` and ``/metrics`` read.

An acceptor process keeps its own row up to date (:class:`AcceptorReporter`); the node
records what it saw happen to a slot (:func:`set_state`, :func:`retire_slots`). Kept apart
from the pool (``_acceptors``) and the process (``_acceptor_process``) because both write
here, and a process must not import the pool's side to do so.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from collections import Counter
from collections.abc import Callable
from typing import Any

from sqlalchemy import select, update

from medvision.db import Acceptor, Database, utcnow

LOG = logging.getLogger("medvision.acceptors")

#: The states in which an acceptor should be serving: silent too long in one, it is dead
#: (``medvision.db.heartbeat_state``); ``restarting`` and ``stopped`` are the node's word.
ACCEPTOR_RUNNING_STATES = ("starting", "serving")
#: Seconds between an acceptor's reports in the ``acceptors`` table.
HEARTBEAT_S = 2.0
#: How long the node waits for its acceptors to start, and for one to stop.
START_TIMEOUT_S = 120.0
STOP_TIMEOUT_S = 60.0
#: Counter columns of ``acceptors`` and the ``StorageSCP.counts`` keys they come from.
COUNTERS = {
    "associations": "associations",
    "instances": "instances",
    "duplicates": "duplicates",
    "refused": "refused",
    "bytes_received": "bytes",
}


def row_name(slot: int, receiver: str = "") -> str:
    """The ``acceptors`` row of ``slot`` of ``receiver`` (``Settings.receiver_name``;
    default: this host)."""
    return f"{receiver or socket.gethostname()}/acceptor-{slot}"


class AcceptorReporter:
    """Keeps one acceptor's row in ``acceptors`` up to date (every :data:`HEARTBEAT_S`).

    The slot's counters carry on from what the row holds, so that the sums ``/metrics``
    shows never go down when a process is replaced.
    """

    def __init__(
        self, db: Database, slot: int, counts: Callable[[], Counter[str]], receiver: str = ""
    ) -> None:
        self.db = db
        self.slot = slot
        self.counts = counts
        self.name = row_name(slot, receiver)
        self._base: dict[str, int] = dict.fromkeys(COUNTERS, 0)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        now = utcnow()
        with self.db.session(immediate=True) as session:
            row = session.scalar(select(Acceptor).where(Acceptor.name == self.name))
            if row is None:
                row = Acceptor(
                    name=self.name,
                    host=socket.gethostname(),
                    slot=self.slot,
                    restarts=0,
                    active_associations=0,
                    **dict.fromkeys(COUNTERS, 0),
                )
                session.add(row)
            else:
                self._base = {column: int(getattr(row, column) or 0) for column in COUNTERS}
            row.pid = os.getpid()
            row.state = "serving"
            row.started_at = now
            row.heartbeat_at = now
        self._thread = threading.Thread(
            target=self._loop, name="medvision-acceptor-report", daemon=True
        )
        self._thread.start()

    def report(self, state: str | None = None) -> None:
        counts = self.counts()
        values: dict[str, Any] = {
            column: self._base[column] + int(counts.get(key, 0)) for column, key in COUNTERS.items()
        }
        values["active_associations"] = int(counts.get("active", 0))
        values["heartbeat_at"] = utcnow()
        if state is not None:
            values["state"] = state
        with self.db.session(immediate=True) as session:
            session.execute(update(Acceptor).where(Acceptor.name == self.name).values(**values))

    def stop(self, state: str = "stopped") -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
        try:
            self.report(state)
        except Exception as err:
            LOG.warning("cannot record acceptor %s as %s: %s", self.name, state, err)

    def _loop(self) -> None:
        while not self._stop.wait(HEARTBEAT_S):
            try:
                self.report()
            except Exception as err:  # the database is away: the next report catches up
                LOG.warning("cannot report acceptor %s: %s", self.name, err)


def set_state(
    db: Database, slot: int, state: str, restarted: bool = False, receiver: str = ""
) -> None:
    """The node's word on a slot whose process it stopped or saw die."""
    values: dict[str, Any] = {"state": state}
    if restarted:
        values["restarts"] = Acceptor.restarts + 1
    try:
        with db.session(immediate=True) as session:
            session.execute(
                update(Acceptor).where(Acceptor.name == row_name(slot, receiver)).values(**values)
            )
    except Exception as err:
        LOG.warning("cannot record acceptor %d as %s: %s", slot, state, err)


def retire_slots(db: Database, count: int, receiver: str = "") -> None:
    """Slots of this receiver above ``count`` (an earlier run had more processes) are
    stopped; another receiver's rows, on this host or not, are left alone."""
    prefix = row_name(0, receiver)[: -len("0")]
    try:
        with db.session(immediate=True) as session:
            session.execute(
                update(Acceptor)
                .where(
                    Acceptor.name.startswith(prefix, autoescape=True),
                    Acceptor.slot > count,
                    Acceptor.state != "stopped",
                )
                .values(state="stopped")
            )
    except Exception as err:
        LOG.warning("cannot record retired acceptor slots: %s", err)


__all__ = [
    "ACCEPTOR_RUNNING_STATES",
    "COUNTERS",
    "HEARTBEAT_S",
    "AcceptorReporter",
    "retire_slots",
    "row_name",
    "set_state",
]
