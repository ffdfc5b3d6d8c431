"""Pieces the scale-out tests share: small synthetic studies, pushing with dcmtk's
storescu, ``medvision worker`` processes, and what the database says about them."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

from pydicom import dcmread
from sqlalchemy import select

from medvision.db import Database, Worker
from tests.node.peers import DCMTK, NodeProcess, free_port, stop_process


def synthetic_study(
    tmp: Path, seed: int, n_slices: int = 24, rows: int = 128
) -> tuple[str, list[Path]]:
    """A small synthetic chest CT that lung-ct accepts (5 mm slices; the default 10 mm
    for 24 slices is refused, and the default nodules do not fit in 120 mm).
    Returns its Study Instance UID and its files."""
    from dicom_samples import generate_study

    out = tmp / f"study{seed}"
    generate_study(out, n_slices=n_slices, rows=rows, seed=seed, nodules=(), slice_thickness_mm=5.0)
    files = sorted(out.glob("*.dcm"))
    return str(dcmread(files[0], stop_before_pixels=True).StudyInstanceUID), files


def push(node: NodeProcess, files: list[Path], calling_aet: str = "PACS") -> None:
    """C-STORE ``files`` to the node in one association; fails unless every instance is
    answered Success (storescu's exit status alone does not say so)."""
    done = subprocess.run(
        [str(DCMTK / "storescu"), "-v", "-aet", calling_aet, "-aec", node.ae_title,
         "127.0.0.1", str(node.dicom_port), *map(str, files)],
        env={"TCP_NODELAY": "1", "PATH": "/usr/bin:/bin"},
        timeout=300,
        capture_output=True,
        text=True,
    )  # fmt: skip
    out = done.stdout + done.stderr
    assert done.returncode == 0, out[-2000:]
    assert out.count("Received Store Response (Success)") == len(files), out[-2000:]


class StoreSCP:
    """dcmtk's storescp as the PACS the results go to; ``-uf``: one file per instance
    received, so a second delivery of the same object shows as a second file."""

    def __init__(self, out: Path, ae_title: str = "DEST") -> None:
        self.out = out
        self.ae_title = ae_title
        self.port = free_port()
        out.mkdir(parents=True)
        self.proc = subprocess.Popen(
            [str(DCMTK / "storescp"), "-aet", ae_title, "-uf", "-od", str(out), str(self.port)],
            env={"TCP_NODELAY": "1", "PATH": "/usr/bin:/bin"},
        )

    def stop(self) -> None:
        stop_process(self.proc)


def receiver(
    data_dir: Path, broker_url: str, dest: tuple[str, str, int], **settings: object
) -> NodeProcess:
    """``medvision serve --role receiver`` sending every result to ``dest`` (name, AE
    title, port on 127.0.0.1), with the short timings the scale-out tests run on;
    ``settings`` add to or override them."""
    name, ae_title, port = dest
    return NodeProcess(
        data_dir,
        **{
            "role": "receiver",
            "broker_url": broker_url,
            "quiet_period_s": 2,
            "poll_interval_s": 0.2,
            "worker_heartbeat_s": 1,
            "pipelines": ["lung-ct"],
            "modalities": {name: {"ae_title": ae_title, "host": "127.0.0.1", "port": port}},
            "destinations": [name],
            "retry_initial_s": 1,
            **settings,
        },
    )


class WorkerProcess:
    """``medvision worker --concurrency 1`` as a separate OS process."""

    def __init__(self, env: dict[str, str], cwd: Path, n: int) -> None:
        self.log_path = cwd / f"worker{n}.log"
        self.log = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "medvision.cli", "worker", "--concurrency", "1"],
            env=env,
            cwd=cwd,
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        self._terminated = False

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def terminate(self) -> None:
        """SIGTERM (Celery's warm shutdown) without waiting, so that several stop at once."""
        if self.proc.poll() is None:
            self.proc.terminate()
            self._terminated = True

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc.poll() is None:
            if sig == signal.SIGTERM and self._terminated:
                try:
                    self.proc.wait(20)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait(20)
            else:
                stop_process(self.proc, sig)
        self.log.close()


def workers(db: Database) -> list[Worker]:
    """The rows of the workers table, in registration order."""
    with db.session() as s:
        return list(s.scalars(select(Worker).order_by(Worker.id)))


__all__ = ["WorkerProcess", "push", "synthetic_study", "workers"]
