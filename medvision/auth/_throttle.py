"""Password guessing is slowed down: per account and per address, with a temporary lock-out.

Every wrong password (``POST /login`` or HTTP Basic) counts against the account name that
was tried and against the caller's address. ``login_max_failures_per_account`` failures for
one account, or ``login_max_failures_per_host`` from one address, within
``login_failure_window_s`` lock that account (or address) out of password checks for
``login_lockout_s``: while locked, a password is not even checked, so a right one is refused
as well (429, ``Retry-After``). Each lock-out is audited once (``user.locked_out``) with the
account or address and why. A successful login clears the account's failures (not the
address's). Unknown account names are counted like known ones, so a lock-out tells nothing
about which accounts exist.

The counters live in the API process (the node runs one): a restart forgets them. Both
tables are bounded; the oldest entries are dropped first when an attacker tries very many
names or addresses.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

#: At most this many accounts and addresses each are tracked (oldest dropped first).
MAX_TRACKED = 10_000


@dataclass
class _Entry:
    failures: deque[float] = field(default_factory=deque)
    locked_until: float = 0.0


@dataclass(frozen=True)
class Lockout:
    """A lock-out in force: who (``kind`` ``account`` or ``host``) and for how long."""

    kind: str
    key: str
    retry_after_s: float


class LoginThrottle:
    """Counts wrong passwords per account and per address; see the module docstring."""

    def __init__(
        self,
        max_per_account: int,
        max_per_host: int,
        window_s: float,
        lockout_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.limits = {"account": max_per_account, "host": max_per_host}
        self.window_s = window_s
        self.lockout_s = lockout_s
        self._clock = clock
        self._lock = threading.Lock()
        self._tables: dict[str, dict[str, _Entry]] = {"account": {}, "host": {}}

    def locked(self, account: str, host: str) -> Lockout | None:
        """The lock-out that refuses a password check for ``account`` from ``host`` now."""
        now = self._clock()
        with self._lock:
            for kind, key in (("account", account), ("host", host)):
                entry = self._tables[kind].get(key)
                if entry is not None and entry.locked_until > now:
                    return Lockout(kind, key, entry.locked_until - now)
        return None

    def failed(self, account: str, host: str) -> list[Lockout]:
        """Count one wrong password; the lock-outs this failure starts (to be audited)."""
        now = self._clock()
        started: list[Lockout] = []
        with self._lock:
            for kind, key in (("account", account), ("host", host)):
                table = self._tables[kind]
                entry = table.pop(key, None) or _Entry()
                table[key] = entry  # most recent last: the oldest are dropped first
                while entry.failures and entry.failures[0] <= now - self.window_s:
                    entry.failures.popleft()
                entry.failures.append(now)
                if len(entry.failures) >= self.limits[kind] and entry.locked_until <= now:
                    entry.locked_until = now + self.lockout_s
                    entry.failures.clear()
                    started.append(Lockout(kind, key, self.lockout_s))
                while len(table) > MAX_TRACKED:
                    del table[next(iter(table))]
        return started

    def succeeded(self, account: str) -> None:
        """A right password outside any lock-out: forget the account's failures. The
        address keeps its count: one known password must not buy a guesser more tries at
        other accounts."""
        with self._lock:
            self._tables["account"].pop(account, None)


__all__ = ["MAX_TRACKED", "LoginThrottle", "Lockout"]
