"""An acceptor process: one :class:`~medvision.node.StorageSCP` serving the connections
the node's listener hands it (``_acceptors``), until the node says stop or is gone.

Its entry point :func:`acceptor_main` is what the node spawns (``multiprocessing``'s
*spawn*: the child imports this module by name), so this module imports little at the top:
the SCP, its spool and its indexer come in with the process, not with the node's pool.
:class:`_Link` is what the SCP shares with the node over the pipe and shared memory
(``AcceptorLink``).
"""

from __future__ import annotations

import fcntl
import logging
import os
import signal
import socket
import threading
from multiprocessing.connection import Connection
from multiprocessing.reduction import recv_handle
from typing import Any

from medvision.config import Settings
from medvision.db import Database
from medvision.node._acceptor_rows import AcceptorReporter


def journal_name(slot: int, node: str = "") -> str:
    """The spool journal of acceptor ``slot`` (``Spool.name``) of receiver ``node``
    (``node_name``: several receivers on one spool each have their own journals)."""
    return f"{node}/acceptor-{slot}" if node else f"acceptor-{slot}"


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


def acceptor_main(
    slot: int, settings: Settings, conn: Connection, slots: Any, lock_path: str
) -> None:
    """An acceptor process: serve the connections the node hands over until told to stop
    (or the node is gone)."""
    from pydicom import config as pydicom_config

    from medvision.audit import DbAuditLog
    from medvision.node._scp import StorageSCP

    # pydicom checks every UI value it decodes or wraps against the UID rules, and at most
    # warns: each C-STORE's command set goes through that (~3 % of this process's CPU at
    # four associations). What refuses a malformed UID here is the SCP's own check
    # (``_dataset_bytes.header_uids``, Cannot Understand), which this does not touch.
    pydicom_config.settings.reading_validation_mode = pydicom_config.IGNORE
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


__all__ = ["acceptor_main", "journal_name"]
