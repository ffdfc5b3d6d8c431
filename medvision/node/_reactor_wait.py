"""Wake pynetdicom's two reactor threads of an accepted association when there is work.

Why: pynetdicom polls. The DUL thread sleeps 1 ms whenever its event queue is empty and
then checks the socket with a zero-timeout ``select``; the association thread sleeps 1 ms
before each look at its message queue. With a C-STORE taking ~5 ms that is a dozen empty
turns of two threads per instance, each taking the GIL, and an idle association costs ~6 %
of a core doing nothing (measured: four idle associations kept the node at 25 % CPU). The
acceptor processes share the machine's cores with everything else the node does, so at
four associations on two cores that polling was the difference to Orthanc.

:func:`wake_on_work` keeps pynetdicom's reactors as they are and only changes what their
1 ms sleep does, for the accepted association's own two threads: the DUL thread waits in
``select`` on its socket and on a wake pipe that every hand-over to it writes to (a
primitive to send, an event, a kill), the association thread on an event that every
hand-over to it sets (a decoded message, an indication). Each wait has a short upper
bound (:data:`LONGEST_WAIT_S`), so that what nobody announces (the ARTIM and idle timers,
which the reactors check on each turn) is seen within that bound. Any other sleep, and
the sleeps of any other thread (the node's own SCU), are untouched.
"""

from __future__ import annotations

import queue
import select
import socket
import threading
import time
from typing import Any

import pynetdicom.association
import pynetdicom.dul
from pynetdicom import evt

#: The most a reactor waits without an announcement: the resolution left to pynetdicom's
#: timers (ARTIM, idle and DIMSE timeouts, seconds long) and to a thread ending.
LONGEST_WAIT_S = 0.05
#: pynetdicom's reactor turn (``DULServiceProvider._run_loop_delay`` and the association
#: reactor's sleep); shorter sleeps (its 0.1 ms pause loops) and longer ones pass through.
_TURN_S = (0.0005, 0.002)
_real_sleep = time.sleep
_WAIT_ATTR = "_medvision_wait"


class _TimeWithWake:
    """Stands in for the ``time`` module inside pynetdicom's dul and association modules:
    everything is ``time``'s, except that a reactor turn of a thread that has a waiter
    (see :func:`wake_on_work`) waits for work instead of sleeping."""

    def __getattr__(self, name: str) -> Any:
        return getattr(time, name)

    @staticmethod
    def sleep(seconds: float) -> None:
        wait = getattr(threading.current_thread(), _WAIT_ATTR, None)
        if wait is None or not _TURN_S[0] <= seconds <= _TURN_S[1]:
            _real_sleep(seconds)
            return
        wait()


def install() -> None:
    """Route pynetdicom's reactor sleeps through :class:`_TimeWithWake` (idempotent)."""
    for module in (pynetdicom.dul, pynetdicom.association):
        if not isinstance(module.time, _TimeWithWake):
            module.time = _TimeWithWake()  # type: ignore[assignment]


def _announce(q: queue.Queue, wake: Any) -> None:
    """Make ``q.put`` also call ``wake()`` once the item is on the queue."""
    put = q.put

    def put_and_wake(item: Any, block: bool = True, timeout: float | None = None) -> None:
        put(item, block, timeout)
        wake()

    q.put = put_and_wake  # type: ignore[method-assign]


class _DulWaker:
    """The DUL thread's wait: its socket or a wake-up from another thread, whichever first.

    The wake-up is one end of a socket pair, closed when the connection closes
    (EVT_CONN_CLOSE) or the reactor finds it ended, under the lock the writers take. Only a
    thread that finds the DUL ``waiting`` writes to it: the DUL sets that flag and then
    looks at its queues once more before it waits, so a hand-over is either seen in that
    look or wakes it (the GIL orders the flag and the queue), and the DUL's own queue
    puts (one per PDU it reads) cost no system call."""

    def __init__(self, dul: Any) -> None:
        self.dul = dul
        self.reader, self.writer = socket.socketpair()
        self.reader.setblocking(False)
        self.writer.setblocking(False)
        self.lock = threading.Lock()
        self.closed = False
        self.waiting = False

    def wake(self) -> None:
        if not self.waiting:
            return
        with self.lock:
            if self.closed:
                return
            try:
                self.writer.send(b"\0")
            except OSError:  # full: it is awake anyway
                pass

    def close(self, _event: evt.Event | None = None) -> None:
        with self.lock:
            self.closed = True
            self.reader.close()
            self.writer.close()

    def wait(self) -> None:
        dul = self.dul
        sock = dul.socket.socket if dul.socket is not None else None
        if sock is None or dul._kill_thread or self.closed:
            if not self.closed:
                self.close()
            _real_sleep(0.001)  # the connection has ended: pynetdicom's own turn
            return
        if dul.state_machine.current_state == "Sta1":  # not yet started, or stopping
            _real_sleep(0.001)
            return
        pending = getattr(sock, "pending", None)  # TLS: decrypted bytes select cannot see
        if pending is not None and pending():
            return
        self.waiting = True
        try:
            if dul.to_provider_queue.qsize() or dul.event_queue.qsize() or dul._kill_thread:
                return
            select.select([sock, self.reader], [], [], LONGEST_WAIT_S)
            while self.reader.recv(4096):
                pass
        except (OSError, ValueError):  # nothing to drain, or the socket closed under us
            pass
        finally:
            self.waiting = False


def wake_on_work(event: evt.Event) -> None:
    """EVT_CONN_OPEN handler: give the accepted association's DUL and association threads
    waiters instead of their 1 ms polling sleep (see the module)."""
    install()
    assoc = event.assoc
    dul = assoc.dul
    waker = _DulWaker(dul)
    assoc_wake = threading.Event()
    assoc_waiting = [False]  # as the DUL's ``waiting`` (see _DulWaker)
    messages, indications = assoc.dimse.msg_queue, dul.to_user_queue

    def assoc_wait() -> None:
        if assoc._kill:  # kill() waits for the DUL thread to end: pynetdicom's own turn
            _real_sleep(0.001)
            return
        assoc_waiting[0] = True
        if not (messages.qsize() or indications.qsize() or assoc._kill):
            assoc_wake.wait(LONGEST_WAIT_S)
        assoc_waiting[0] = False
        assoc_wake.clear()  # before the reactor looks: what comes later sets it again

    def wake_assoc() -> None:
        if assoc_waiting[0]:
            assoc_wake.set()

    _announce(dul.to_provider_queue, waker.wake)
    _announce(dul.event_queue, waker.wake)
    _announce(indications, wake_assoc)
    _announce(messages, wake_assoc)
    kill_dul = dul.kill_dul

    def kill_and_wake() -> None:
        kill_dul()
        waker.wake()
        wake_assoc()

    dul.kill_dul = kill_and_wake  # type: ignore[method-assign]
    setattr(dul, _WAIT_ATTR, waker.wait)
    setattr(assoc, _WAIT_ATTR, assoc_wait)
    assoc.bind(evt.EVT_CONN_CLOSE, waker.close)


__all__ = ["LONGEST_WAIT_S", "install", "wake_on_work"]
