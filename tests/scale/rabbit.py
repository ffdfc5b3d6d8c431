"""A throw-away RabbitMQ broker for the scale-out tests: its own node name, free ports,
and every file (database, logs, Erlang cookie) under one temporary folder."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

from tests.node.peers import free_port

RABBIT_BIN = Path("/usr/lib/rabbitmq/bin")


def available() -> bool:
    return (RABBIT_BIN / "rabbitmq-server").exists() or shutil.which("rabbitmq-server") is not None


class RabbitMQ:
    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.port = free_port()
        self.dist_port = free_port()
        self.node = f"medvision-test-{self.port}@localhost"
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.port}//"

    @property
    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            HOME=str(self.workdir),
            RABBITMQ_NODENAME=self.node,
            RABBITMQ_NODE_PORT=str(self.port),
            RABBITMQ_NODE_IP_ADDRESS="127.0.0.1",
            RABBITMQ_DIST_PORT=str(self.dist_port),
            RABBITMQ_MNESIA_BASE=str(self.workdir / "mnesia"),
            RABBITMQ_LOG_BASE=str(self.workdir / "log"),
            RABBITMQ_CONFIG_FILE=str(self.workdir / "rabbitmq"),
            RABBITMQ_ENABLED_PLUGINS_FILE=str(self.workdir / "enabled_plugins"),
            RABBITMQ_PID_FILE=str(self.workdir / "rabbit.pid"),
        )
        return env

    def _bin(self, name: str) -> str:
        path = RABBIT_BIN / name
        return str(path) if path.exists() else name

    def start(self, timeout: float = 120) -> RabbitMQ:
        self.workdir.mkdir(parents=True, exist_ok=True)
        (self.workdir / "enabled_plugins").write_text("[].\n")
        # The management plugin is not needed; no listeners other than AMQP.
        (self.workdir / "rabbitmq.conf").write_text("loopback_users = none\n")
        self.log = open(self.workdir / "server.out", "ab")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [self._bin("rabbitmq-server")],
            env=self.env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        # await_startup fails at once while the Erlang node is not reachable yet: retry.
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"rabbitmq-server exited; see {self.workdir}/server.out")
            try:
                self.ctl("await_startup", timeout=max(5.0, deadline - time.monotonic()))
                return self
            except subprocess.CalledProcessError:
                if time.monotonic() > deadline:
                    self.stop()
                    raise
                time.sleep(0.5)

    def ctl(self, *args: str, timeout: float = 60) -> str:
        return subprocess.run(
            [self._bin("rabbitmqctl"), "-n", self.node, "--timeout", str(int(timeout)), *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout + 10,
            check=True,
        ).stdout

    def stop(self) -> None:
        if self.proc is None:
            return
        try:
            self.ctl("shutdown", timeout=30)
        except Exception:
            pass
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(30)
        self.proc = None
        self.log.close()
