"""Several DICOM acceptor processes behind one port (``scp_processes``, docs/node.md).

pynetdicom serves every association of a process under one GIL, so one process receives at
about the same rate with four associations as with one. The node therefore runs N acceptor
processes, each a complete :class:`~medvision.node.StorageSCP` (its own journal in the
spool, its own indexer), and keeps the listener itself:

- **One listener, connections handed over.** The node accepts each TCP connection, judges
  it with the one :class:`~medvision.node._admission.ConnectionGuard` (per-address and total
  limits on connections that are not yet associations stay node-wide), and passes the
  socket (``SCM_RIGHTS``) to the acceptor with the fewest open connections, then the fewest
  handed so far. Not ``SO_REUSEPORT``: the kernel spreads connections by a hash of their
  addresses, so four associations often land on two or three processes, and a per-address
  limit would become a per-process one.
- **Association slots** (``max_associations``) are the node's: each acceptor writes how many
  it holds into shared memory and admits a new one under a file lock only while the sum is
  below the limit (a file lock, because a killed process releases it).
- **Assembly** stays in the node: each acceptor tells the node, before it answers the
  C-STORE, when a study starts having instances on their way into the index, and when it
  stops, so the study assembler never completes a study another process still holds
  (``busy``). The index itself is the database all of them write (see
  ``Database.session(immediate=True)`` and the row locks in ``_ingest``/``_assembler``), so
  a study whose associations landed on different processes is one study, assembled once.
- **A killed acceptor loses nothing it acknowledged.** The node notices its exit, replays
  its journal (every record in it was acknowledged), indexes whatever the index lacks, and
  starts a new process for the slot; the others keep serving meanwhile.

Each acceptor reports itself in the ``acceptors`` table (:class:`AcceptorReporter`), which
``medvision status``, ``GET /workers`` and ``/metrics`` read.
"""

from __future__ import annotations

import contextlib
import fcntl
import itertools
import logging
import multiprocessing
import os
import signal
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from multiprocessing.reduction import recv_handle, send_handle
from typing import Any

from sqlalchemy import select, update

from medvision.config import Settings
from medvision.db import Acceptor, Database, utcnow
from medvision.node._admission import ConnectionGuard
from medvision.node._ingest import reindex_spool
from medvision.node._spool import Spool, replay_journals

LOG = logging.getLogger("medvision.acceptors")

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


def journal_name(slot: int, node: str = "") -> str:
    """The spool journal of acceptor ``slot`` (``Spool.name``) of receiver ``node``
    (``node_name``: several receivers on one spool each have their own journals)."""
    return f"{node}/acceptor-{slot}" if node else f"acceptor-{slot}"


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


# -- the node's side ----------------------------------------------------------------------


@dataclass
class _Child:
    slot: int
    process: Any  # multiprocessing's SpawnProcess
    conn: Connection
    send_lock: threading.Lock = field(default_factory=threading.Lock)
    ready: threading.Event = field(default_factory=threading.Event)
    alive: bool = True
    #: Connections handed over and not reported closed; the node's own copy of each socket
    #: until the acceptor says it became an association (the guard may close it till then).
    open: set[int] = field(default_factory=set)
    copies: dict[int, socket.socket] = field(default_factory=dict)
    handed: int = 0
    #: Studies with instances on their way into the index in this process.
    busy: set[str] = field(default_factory=set)


class AcceptorPool:
    """The node's listener and its acceptor processes (see the module docstring)."""

    def __init__(self, settings: Settings, db: Database, count: int) -> None:
        self.settings = settings
        self.db = db
        self.count = count
        self.root = settings.spool_dir
        #: ``node_name``: whose journals are ours in a spool shared by several receivers.
        self.node = settings.node_name
        self.receiver = settings.receiver_name
        self.guard = ConnectionGuard(
            settings.max_connections_per_host, settings.max_pending_connections
        )
        #: Held by the node's study assembler for a pass, and here while a dead acceptor's
        #: journal is replayed and indexed: no study completes half-indexed.
        self.assembly_lock = threading.Lock()
        self._ctx = multiprocessing.get_context("spawn")
        # Association slots in use per acceptor (index = slot), written by each acceptor.
        self._slots = self._ctx.Array("i", count + 1, lock=False)
        self._slot_lock = self.root / ".journal" / self.node / "slots.lock"
        self._children: dict[int, _Child] = {}
        self._lock = threading.Lock()
        self._cids = itertools.count(1)
        #: Listening sockets: (socket, True for the DICOM TLS port).
        self._listeners: list[tuple[socket.socket, bool]] = []
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []

    @property
    def port(self) -> int:
        """The plain DICOM port."""
        return self._port_of(tls=False)

    @property
    def tls_port(self) -> int:
        """The DICOM TLS port."""
        return self._port_of(tls=True)

    def _port_of(self, tls: bool) -> int:
        for sock, is_tls in self._listeners:
            if is_tls == tls:
                return int(sock.getsockname()[1])
        raise RuntimeError(f"the node has no {'DICOM TLS' if tls else 'plain DICOM'} listener")

    def recover(self) -> int:
        """Before start: write out what the acceptors of the last run left in their
        journals, and what a single-process run left in the node's own; returns the
        temporary files removed. The node then re-indexes."""
        own = Spool(self.root, name=self.node)  # replays .journal[/node] itself
        removed = own.discard_partial()
        own.stop()
        return removed + replay_journals(self.root, node=self.node)

    def start(self) -> None:
        settings = self.settings
        if settings.dicom_tls_port is not None:  # an unreadable certificate stops us here
            from medvision.node._tls import server_context

            server_context(settings)
        ports = [] if settings.dicom_tls_only else [(settings.dicom_port, False)]
        if settings.dicom_tls_port is not None:
            ports.append((settings.dicom_tls_port, True))
        family = socket.AF_INET6 if ":" in settings.bind_address else socket.AF_INET
        for port, tls in ports:
            listener = socket.socket(family, socket.SOCK_STREAM)
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                listener.bind((settings.bind_address, port))
                listener.listen(256)  # as the single-process server's request_queue_size
            except OSError:
                listener.close()
                for other, _ in self._listeners:
                    other.close()
                raise
            listener.settimeout(0.5)
            self._listeners.append((listener, tls))
        self._slot_lock.parent.mkdir(parents=True, exist_ok=True)
        self._slot_lock.touch()
        for slot in range(1, self.count + 1):
            self._spawn(slot)
        retire_slots(self.db, self.count, self.receiver)
        deadline = time.monotonic() + START_TIMEOUT_S
        for child in list(self._children.values()):
            while not child.ready.wait(0.1):
                if child.process.exitcode is not None or time.monotonic() > deadline:
                    self.stop()
                    raise OSError(f"acceptor process {child.slot} did not start (its log says why)")
        for listener, tls in self._listeners:
            thread = threading.Thread(
                target=self._accept_loop,
                args=(listener, tls),
                name="medvision-acceptors-listen" + ("-tls" if tls else ""),
                daemon=True,
            )
            thread.start()
            self._threads.append(thread)
        thread = threading.Thread(
            target=self._supervise, name="medvision-acceptors-supervise", daemon=True
        )
        thread.start()
        self._threads.append(thread)
        # DEBUG: `serve` prints its one start-up line after this (docs/node.md).
        LOG.debug("%d acceptor processes on %s", self.count, [p for p, _ in ports])

    def stop(self) -> None:
        """Stop listening, then let every acceptor finish (index and journal drained)."""
        self._stopping.set()
        for listener, _ in self._listeners:
            listener.close()
        for thread in self._threads:
            thread.join(5)
        with self._lock:
            children = list(self._children.values())
        for child in children:
            with contextlib.suppress(OSError, ValueError), child.send_lock:
                child.conn.send(("stop",))
        for child in children:
            child.process.join(STOP_TIMEOUT_S)
            if child.process.exitcode is None:  # its journal is replayed at the next start
                LOG.error("acceptor process %d did not stop; killed", child.slot)
                child.process.kill()
                child.process.join(5)
                set_state(self.db, child.slot, "stopped", receiver=self.receiver)
            self._forget(child)

    def busy(self) -> set[str]:
        """Studies any acceptor has on their way into the index (``Indexer.pending``)."""
        with self._lock:
            return set().union(*(c.busy for c in self._children.values()))

    def processes(self) -> dict[int, int]:
        """Slot -> pid of the acceptor processes now serving."""
        with self._lock:
            return {
                s: c.process.pid for s, c in self._children.items() if c.alive and c.ready.is_set()
            }

    # -- processes ------------------------------------------------------------------------

    def _spawn(self, slot: int) -> _Child:
        ours, theirs = self._ctx.Pipe(duplex=True)
        process = self._ctx.Process(
            target=_acceptor_main,
            args=(slot, self.settings, theirs, self._slots, str(self._slot_lock)),
            name=f"medvision-acceptor-{slot}",
            daemon=True,
        )
        process.start()
        theirs.close()
        child = _Child(slot, process, ours)
        with self._lock:
            self._children[slot] = child
        thread = threading.Thread(
            target=self._read, args=(child,), name=f"medvision-acceptor-{slot}-read", daemon=True
        )
        thread.start()
        return child

    def _read(self, child: _Child) -> None:
        """Messages from one acceptor, until it exits."""
        while True:
            try:
                msg = child.conn.recv()
            except (EOFError, OSError):
                return
            kind = msg[0]
            if kind == "busy":
                with self._lock:
                    if msg[2]:
                        child.busy.add(msg[1])
                    else:
                        child.busy.discard(msg[1])
            elif kind in ("settled", "closed"):
                with self._lock:
                    copy = child.copies.pop(msg[1], None)
                    if kind == "closed":
                        child.open.discard(msg[1])
                if copy is not None:
                    self.guard.settle(copy)
                    copy.close()
            elif kind == "ready":
                child.ready.set()

    def _supervise(self) -> None:
        """Replace an acceptor that died, after replaying and indexing its journal."""
        while not self._stopping.wait(0.2):
            with self._lock:
                dead = [c for c in self._children.values() if c.process.exitcode is not None]
            for child in dead:
                if self._stopping.is_set():
                    return
                self._replace(child)

    def _replace(self, child: _Child) -> None:
        slot = child.slot
        LOG.error(
            "acceptor process %d (pid %d) exited with %s; replaying its journal and starting "
            "it again",
            slot,
            child.process.pid,
            child.process.exitcode,
        )
        set_state(self.db, slot, "restarting", restarted=True, receiver=self.receiver)
        self._forget(child)
        with self.assembly_lock:
            try:
                removed = replay_journals(self.root, [journal_name(slot, self.node)])
                indexed = reindex_spool(self.db, self.root)
            except Exception as err:  # the database is away: the next start re-indexes
                LOG.error("cannot recover acceptor %d's instances now: %s", slot, err)
                removed = indexed = 0
            with self._lock:
                child.busy.clear()
        LOG.info(
            "acceptor %d recovered: %d partial files removed, %d files indexed",
            slot,
            removed,
            indexed,
        )
        if not self._stopping.is_set():
            self._spawn(slot)

    def _forget(self, child: _Child) -> None:
        """An acceptor is gone: its connections and association slots with it."""
        with self._lock:
            child.alive = False
            copies = list(child.copies.values())
            child.copies.clear()
            child.open.clear()
            self._slots[child.slot] = 0
        for copy in copies:
            self.guard.settle(copy)
            with contextlib.suppress(OSError):
                copy.shutdown(socket.SHUT_RDWR)
            copy.close()
        child.conn.close()

    # -- connections ----------------------------------------------------------------------

    def _accept_loop(self, listener: socket.socket, tls: bool) -> None:
        while not self._stopping.is_set():
            try:
                sock, address = listener.accept()
            except TimeoutError:
                continue
            except OSError as err:
                if self._stopping.is_set():
                    return
                LOG.error("DICOM listener: %s", err)
                time.sleep(0.1)
                continue
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if not self.guard.admit(sock, address[0]):
                sock.close()
                continue
            self._hand_over(sock, address, tls)

    def _hand_over(self, sock: socket.socket, address: tuple[str, int], tls: bool) -> None:
        """To the acceptor with the fewest open connections (then the fewest handed)."""
        deadline = time.monotonic() + 10.0
        while not self._stopping.is_set():
            with self._lock:
                ready = [c for c in self._children.values() if c.alive and c.ready.is_set()]
                child = min(ready, key=lambda c: (len(c.open), c.handed, c.slot), default=None)
                if child is not None:
                    cid = next(self._cids)
                    child.open.add(cid)
                    child.copies[cid] = sock
                    child.handed += 1
            if child is None:  # every acceptor is restarting: the peer may wait a little
                if time.monotonic() > deadline:
                    break
                time.sleep(0.05)
                continue
            try:
                with child.send_lock:
                    child.conn.send(("conn", cid, address[:2], tls))
                    send_handle(child.conn, sock.fileno(), child.process.pid)
                return
            except (OSError, ValueError) as err:  # it died just now: the next one
                LOG.warning("cannot hand a connection to acceptor %d: %s", child.slot, err)
                with self._lock:
                    child.alive = False
                    child.open.discard(cid)
                    child.copies.pop(cid, None)
        self.guard.settle(sock)
        sock.close()


# -- the acceptor process's side ----------------------------------------------------------


class _Link:
    """What an acceptor's :class:`StorageSCP` shares with the node (``AcceptorLink``)."""

    def __init__(
        self, slot: int, conn: Connection, slots: Any, lock_path: str, limit: int, node: str = ""
    ):
        self.name = journal_name(slot, node)
        self.slot = slot
        self.conn = conn
        self.slots = slots
        self.limit = limit
        self.current = 0  # the id of the connection being handed to StorageSCP.serve
        self.node_gone = False
        self._lock_fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        self._send_lock = threading.Lock()
        self._tracked: dict[socket.socket, int] = {}
        self._tracked_lock = threading.Lock()

    def send(self, msg: tuple[Any, ...]) -> None:
        """To the node; nothing if it is gone (this process is then finishing: its index
        writes and journal must still complete, so this never raises)."""
        with self._send_lock:
            if self.node_gone:
                return
            try:
                self.conn.send(msg)
            except (OSError, ValueError):
                self.node_gone = True

    def settle(self, sock: socket.socket | None) -> None:
        with self._tracked_lock:
            cid = self._tracked.get(sock) if sock is not None else None  # type: ignore[arg-type]
        if cid is not None:
            self.send(("settled", cid))

    def track(self, sock: socket.socket) -> None:
        with self._tracked_lock:
            self._tracked[sock] = self.current

    def replace(self, old: socket.socket, new: socket.socket) -> None:
        with self._tracked_lock:
            cid = self._tracked.pop(old, None)
            if cid is not None:
                self._tracked[new] = cid

    def poll_closed(self) -> None:
        with self._tracked_lock:
            closed = [(s, c) for s, c in self._tracked.items() if s.fileno() == -1]
            for sock, _ in closed:
                del self._tracked[sock]
        for _, cid in closed:
            self.send(("closed", cid))

    def reserve(self, admitted: int) -> bool:
        fcntl.flock(self._lock_fd, fcntl.LOCK_EX)
        try:
            others = sum(self.slots) - self.slots[self.slot]
            if others + admitted > self.limit:
                return False
            self.slots[self.slot] = admitted
            return True
        finally:
            fcntl.flock(self._lock_fd, fcntl.LOCK_UN)

    def release(self, admitted: int) -> None:
        self.slots[self.slot] = admitted  # only this process writes its element

    def busy(self, study_uid: str, busy: bool) -> None:
        self.send(("busy", study_uid, busy))


def _acceptor_main(
    slot: int, settings: Settings, conn: Connection, slots: Any, lock_path: str
) -> None:
    """An acceptor process: serve the connections the node hands over until told to stop
    (or the node is gone)."""
    from medvision.audit import DbAuditLog
    from medvision.node._scp import StorageSCP

    # The node decides when we stop (Ctrl-C reaches the whole process group, systemd's
    # SIGTERM the whole cgroup); if the node dies, its end of our pipe closes and we stop.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    logging.basicConfig(
        level=logging.INFO,
        format=f"%(asctime)s %(name)s[{journal_name(slot, settings.node_name)}] "
        "%(levelname)s %(message)s",
    )
    db = Database(settings.db_url)
    audit = DbAuditLog(db)
    link = _Link(slot, conn, slots, lock_path, settings.max_associations, settings.node_name)
    scp = StorageSCP(settings, db, audit, acceptor=link)
    scp.start()
    reporter = AcceptorReporter(db, slot, scp.counts, settings.receiver_name)
    reporter.start()
    done = threading.Event()

    def watch() -> None:
        while not done.wait(0.2):
            link.poll_closed()
            scp.prune_admitted()

    watcher = threading.Thread(target=watch, name="medvision-acceptor-watch", daemon=True)
    watcher.start()
    link.send(("ready", os.getpid()))
    while True:
        try:
            msg = conn.recv()
            if msg[0] != "conn":
                break
            fd = recv_handle(conn)
        except (EOFError, OSError):
            break
        link.current = msg[1]
        scp.serve(socket.socket(fileno=fd), msg[2], tls=msg[3])
    done.set()
    watcher.join(5)
    scp.stop()
    reporter.stop("stopped")
    db.dispose()


__all__ = [
    "AcceptorPool",
    "AcceptorReporter",
    "journal_name",
    "retire_slots",
    "row_name",
    "set_state",
]
