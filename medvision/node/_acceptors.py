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

This module is the node's side: the listener, the hand-over, and the supervision of the
processes. What runs in an acceptor process is ``_acceptor_process`` (spawned by name);
each acceptor reports itself in the ``acceptors`` table (``_acceptor_rows``), which
``medvision status``, ``GET /workers`` and ``/metrics`` read.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import multiprocessing
import socket
import threading
import time
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from multiprocessing.reduction import send_handle
from typing import Any

from medvision.config import Settings
from medvision.db import Database
from medvision.node._acceptor_process import acceptor_main, journal_name
from medvision.node._acceptor_rows import AcceptorReporter, retire_slots, set_state
from medvision.node._admission import ConnectionGuard
from medvision.node._ingest import reindex_spool
from medvision.node._spool import Spool, replay_journals

LOG = logging.getLogger("medvision.acceptors")

#: How long the node waits for its acceptors to start, and for one to stop.
START_TIMEOUT_S = 120.0
STOP_TIMEOUT_S = 60.0


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
            target=acceptor_main,
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


#: The pool, and what the node service takes from here with it when it runs the SCP in
#: its own process (slot 1's row, ``_acceptor_rows``).
__all__ = ["AcceptorPool", "AcceptorReporter", "journal_name", "retire_slots", "set_state"]
