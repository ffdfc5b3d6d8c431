"""A throw-away PostgreSQL cluster for tests that must stop and start their database.

``initdb`` and ``pg_ctl`` from the newest ``/usr/lib/postgresql/*/bin``, a data directory
in a fresh temporary folder, a free loopback port and a Unix socket in that folder, so no
installed cluster or service is touched. PostgreSQL refuses to run as root: as root every
command runs as the ``postgres`` user (``runuser``, as ``.ci/run`` does), and the folder is
made over to it; otherwise as the current user.

The cluster is durable enough for a restart (a fast shutdown checkpoints), but skips fsync:
it lives for one test module.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
from pathlib import Path

from tests.node.peers import free_port

PG_ROOT = Path("/usr/lib/postgresql")


def pg_bin() -> Path | None:
    """The newest installed PostgreSQL's bin folder (None when none is installed)."""
    found = [p / "bin" for p in PG_ROOT.glob("*") if (p / "bin" / "pg_ctl").exists()]
    if not found:
        return None

    def version(path: Path) -> tuple[int, ...]:
        return tuple(int(x) for x in path.parent.name.split(".") if x.isdigit())

    return max(found, key=version)


def available() -> bool:
    return pg_bin() is not None


class PostgreSQL:
    """``start`` → ``url`` → ``stop``/``start`` as often as wanted → ``destroy``."""

    def __init__(self, database: str = "medvision") -> None:
        bindir = pg_bin()
        if bindir is None:
            raise RuntimeError("PostgreSQL is not installed (no /usr/lib/postgresql/*/bin)")
        self.bin = bindir
        self.database = database
        self.port = free_port()
        # Not pytest's tmp_path: that is private to root (0700), and as root the server
        # runs as postgres, which must be able to reach its data directory.
        self.dir = Path(tempfile.mkdtemp(prefix="medvision-test-pg."))
        self.data = self.dir / "data"
        self.log = self.dir / "server.log"
        self._as_root = os.getuid() == 0
        if self._as_root:
            user = pwd.getpwnam("postgres")
            os.chown(self.dir, user.pw_uid, user.pw_gid)
        self._initialised = False

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{self.database}"

    def _run(self, tool: str, *args: str, timeout: float = 120) -> str:
        cmd = [str(self.bin / tool), *args]
        if self._as_root:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=self.dir)
        if done.returncode != 0:
            raise RuntimeError(
                f"{tool} failed ({done.returncode}): {done.stderr.strip()}\nserver log: {self.log}"
            )
        return done.stdout

    def start(self) -> PostgreSQL:
        """Create the cluster and the database at the first call; start the server."""
        if not self._initialised:
            self._run("initdb", "-D", str(self.data), "-A", "trust", "-U", "postgres")
        options = (
            f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 "
            "-c fsync=off -c full_page_writes=off -c max_connections=200"
        )
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-w", "-o", options, "start")
        if not self._initialised:
            self._run("createdb", "-h", "127.0.0.1", "-p", str(self.port), self.database)
            self._initialised = True
        return self

    def stop(self, mode: str = "fast") -> None:
        """Stop the server; ``fast`` ends every client's session at once, as a database
        restart by an operator (or a fail-over) does."""
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "stop")

    def running(self) -> bool:
        try:
            self._run("pg_ctl", "-D", str(self.data), "status", timeout=30)
            return True
        except RuntimeError:
            return False

    def destroy(self) -> None:
        """Stop the server if it runs and remove every file of the cluster."""
        try:
            if self._initialised and self.running():
                self.stop("immediate")
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)


__all__ = ["PostgreSQL", "available", "pg_bin"]
