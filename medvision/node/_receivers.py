"""Several receivers on one database (docs/scaling.md, "Several receivers on one database").

Receivers (``medvision serve`` processes, each with its own ``node_name``) behind a TCP load
balancer or DNS share one PostgreSQL database and one data folder. Whatever is decided
about a study, a job or an outbox row is decided in the database by a conditional update or
under a row lock, so it holds whichever receiver decides it; what only a receiver's memory
knows is published here:

- **Who is alive.** Each receiver keeps its row in ``receivers`` fresh (every
  ``poll_interval_s``, from a thread of its own). One silent for ``worker_stale_s`` is
  taken for dead (:func:`receiver_state`, the one rule the assemblers, ``GET /workers``,
  ``medvision status`` and ``/metrics`` apply).
- **Studies on their way into the index** (``busy``): a receiver's acceptors know which
  studies have instances acknowledged but not yet indexed; the row carries that set, and
  every receiver's assembler leaves those studies alone, as it does its own. A dead
  receiver's set stops counting: what it acknowledged is in its journal, indexed when it
  (a receiver of the same ``node_name``) starts again.
- **Jobs of a dead receiver.** Its embedded workers' claims (``jobs.worker`` is
  "node_name:pid") are queued again by the others (:func:`requeue_lost`); a receiver that
  starts again queues its own earlier claims at once (``recover_orphans`` by prefix).
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Collection
from datetime import datetime

from sqlalchemy import select

from medvision.config import ConfigError
from medvision.db import (
    Database,
    Job,
    JobState,
    Receiver,
    as_utc,
    heartbeat_state,
    stale_cutoff,
    utcnow,
)
from medvision.jobs import take_back

LOG = logging.getLogger("medvision.receivers")


#: How a receiver's row is shown: ``serving`` and ``stopped`` as the receiver wrote them,
#: ``dead`` when it should be serving but has been silent for ``worker_stale_s``.
RECEIVER_STATES = ("serving", "stopped", "dead")


def receiver_state(state: str, heartbeat_at: datetime, cutoff: datetime) -> str:
    """What a receiver's row says of it now (one of :data:`RECEIVER_STATES`).

    Only ``serving`` is alive: its busy studies hold back every assembler. A receiver that
    stopped cleanly wrote ``stopped`` and stays so however old its row; one whose heartbeat
    is at or before ``cutoff`` (:func:`medvision.db.stale_cutoff`) without having stopped
    was killed or lost its host or its database: ``dead``, and its busy studies no longer
    count (:func:`medvision.db.heartbeat_state`, the rule of every process row).
    (:func:`requeue_lost` goes by the heartbeat alone: any claim still running under a row
    that old, a stopped receiver's included, is taken back.)"""
    return heartbeat_state(state, heartbeat_at, cutoff)


def claim_prefix(name: str) -> str:
    """What ``jobs.worker`` starts with for the embedded workers of receiver ``name``."""
    return f"{name}:"


class ReceiverRow:
    """This receiver's row in ``receivers``: heartbeat, busy studies, state."""

    def __init__(self, db: Database, name: str) -> None:
        self.db = db
        self.name = name

    def check_alone(self, stale_s: float) -> None:
        """Refuse to start while a receiver of the same name on another host is alive:
        it would replay and recycle that receiver's journals. (On one host, the journals'
        file locks already keep a second one out.)"""
        cutoff = stale_cutoff(stale_s)
        with self.db.session() as session:
            row = session.scalar(select(Receiver).where(Receiver.name == self.name))
            if (
                row is not None
                and row.host != socket.gethostname()
                and receiver_state(row.state, row.heartbeat_at, cutoff) == "serving"
            ):
                raise ConfigError(
                    f"node_name {self.name!r} is in use by the receiver on {row.host} (pid "
                    f"{row.pid}, last seen {row.heartbeat_at:%Y-%m-%d %H:%M:%S} UTC): give "
                    "each receiver of the database its own node_name"
                )

    def beat(self, busy: Collection[str], state: str = "serving") -> None:
        now = utcnow()
        with self.db.session() as session:
            row = session.scalar(
                select(Receiver).where(Receiver.name == self.name).with_for_update()
            )
            if row is None:
                row = Receiver(name=self.name, started_at=now)
                session.add(row)
            if row.pid != os.getpid():
                row.started_at = now
            row.host = socket.gethostname()
            row.pid = os.getpid()
            row.state = state
            row.busy = sorted(busy)
            row.heartbeat_at = now

    def others_busy(self, stale_s: float) -> set[str]:
        """Studies the other live receivers have on their way into the index."""
        cutoff = stale_cutoff(stale_s)
        with self.db.session() as session:
            rows = session.scalars(
                select(Receiver).where(Receiver.name != self.name, Receiver.state == "serving")
            )
            return {
                str(uid)
                for r in rows
                if receiver_state(r.state, r.heartbeat_at, cutoff) == "serving"
                for uid in r.busy or []
            }


def requeue_lost(db: Database, me: str, stale_s: float) -> list[int]:
    """Queue again the jobs running on receivers silent for ``stale_s`` (taken for dead),
    each only if still the same claim (:func:`~medvision.jobs.take_back`)."""
    cutoff = stale_cutoff(stale_s)
    with db.session() as session:
        dead = [
            claim_prefix(r.name)
            for r in session.scalars(select(Receiver).where(Receiver.name != me))
            if as_utc(r.heartbeat_at) <= cutoff
        ]
        if not dead:
            return []
        lost = [
            j
            for j in session.scalars(select(Job).where(Job.state == JobState.RUNNING))
            if (j.worker or "").startswith(tuple(dead))
        ]
    requeued = take_back(
        db, lost, "receiver of {worker} stopped reporting", "receiver of {worker} lost"
    )
    if requeued:
        LOG.warning("jobs %s of receivers taken for dead queued again", requeued)
    return requeued


__all__ = [
    "RECEIVER_STATES",
    "ReceiverRow",
    "claim_prefix",
    "receiver_state",
    "requeue_lost",
]
