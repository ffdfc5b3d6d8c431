"""Scale-out on one machine: jobs per minute with 1, 2, 3 Celery workers, the receiver's
ingest rate while the workers are idle and busy, and the broker's overhead per job.

Everything is a real process: a throw-away RabbitMQ (tests/scale/rabbit.py), a throw-away
PostgreSQL (tests/scale/postgres.py, fsync off) or, without one, SQLite; ``medvision serve
--role receiver``; ``medvision worker --concurrency 1`` processes; dcmtk's storescp as the
destination of the results (so the sender works as in production) and storescu as the
modality. Figures come from the database's own timestamps (jobs.created_at: the study was
complete and the job queued and published; started_at: a worker claimed it; finished_at).

The pipeline is the registered ``lung-ct`` on small synthetic chest CTs
(``dicom_samples.generate_study``, 24 slices of 128², 5 mm): light enough that a job takes
seconds, so that the broker and the database are visible next to the work. The ingest
study is 512² CT slices (0.5 MB each, as bench/ingest.py) at 10 mm, which lung-ct refuses
at the header check, so measuring ingest adds no inference job of its own.

Caveat printed with the figures: receiver, workers, broker and database share this
machine's cores, so "busy" ingest measures contention for the CPU, which separate worker
hosts would not cause, and more workers than cores cannot scale.

    python bench/scale.py --workers 1,2,3 --studies 6 --rounds 2
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from sqlalchemy import select  # noqa: E402 - needs the repository on sys.path

from medvision.db import Database, Job, Outbox, Study, Worker, as_utc  # noqa: E402
from tests.node.peers import DCMTK, NodeProcess, free_port, stop_process, wait_for  # noqa: E402
from tests.scale.rabbit import RabbitMQ  # noqa: E402


@dataclass
class Throughput:
    workers: int
    jobs: int
    wall_s: float
    mean_job_s: float
    deliver_s: float
    statuses: dict[str, int]

    @property
    def per_minute(self) -> float:
        return 60.0 * self.jobs / self.wall_s


def uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def small_study(root: Path, seed: int) -> tuple[str, list[Path]]:
    """A chest CT lung-ct accepts and runs in seconds."""
    from dicom_samples import generate_study

    out = root / f"small{seed}"
    generate_study(out, n_slices=24, rows=128, seed=seed, nodules=(), slice_thickness_mm=5.0)
    return _uid(out), sorted(out.glob("*.dcm"))


def ingest_study(root: Path, seed: int, slices: int) -> tuple[str, list[Path]]:
    """512² CT slices at 10 mm: lung-ct refuses them from the headers, without loading."""
    from dicom_samples import generate_study

    out = root / f"ingest{seed}"
    generate_study(out, n_slices=slices, rows=512, seed=seed, nodules=(), slice_thickness_mm=10.0)
    return _uid(out), sorted(out.glob("*.dcm"))


def _uid(folder: Path) -> str:
    from pydicom import dcmread

    first = next(iter(sorted(folder.glob("*.dcm"))))
    return str(dcmread(first, stop_before_pixels=True).StudyInstanceUID)


def push(node: NodeProcess, files: list[Path]) -> float:
    """storescu (one association, TCP_NODELAY as bench/ingest.py); seconds taken."""
    t0 = time.perf_counter()
    subprocess.run(
        [str(DCMTK / "storescu"), "-aet", "PACS", "-aec", node.ae_title, "127.0.0.1",
         str(node.dicom_port), *map(str, files)],
        env={"TCP_NODELAY": "1", "PATH": "/usr/bin:/bin"},
        check=True,
        timeout=600,
        capture_output=True,
    )  # fmt: skip
    return time.perf_counter() - t0


class Workers:
    """``n`` ``medvision worker --concurrency 1`` processes (metrics off: one host)."""

    def __init__(self, node: NodeProcess, n: int, logs: Path) -> None:
        env = dict(node.env, MEDVISION_WORKER_METRICS_PORT="0")
        self.logs = [open(logs / f"worker-{n}-{i}.log", "ab") for i in range(n)]  # noqa: SIM115
        self.procs = [
            subprocess.Popen(
                [sys.executable, "-m", "medvision.cli", "worker", "--concurrency", "1"],
                env=env,
                cwd=logs,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
            for log in self.logs
        ]

    def wait_ready(self, db: Database) -> None:
        """Every worker registered, its model loaded (before its first message)."""
        pids = {p.pid for p in self.procs}

        def ready() -> bool:
            assert all(p.poll() is None for p in self.procs), "a worker exited"
            with db.session() as s:
                rows = list(s.scalars(select(Worker).where(Worker.pid.in_(pids))))
            return len(rows) == len(pids) and all(r.models for r in rows)

        wait_for("the workers to load their models", ready, 600, 0.5)

    def stop(self) -> None:
        for proc in self.procs:
            stop_process(proc)
        for log in self.logs:
            log.close()


def jobs_of(db: Database, uids: list[str]) -> list[Job]:
    with db.session() as s:
        return list(s.scalars(select(Job).where(Job.study_instance_uid.in_(uids))))


def wait_finished(db: Database, uids: list[str], timeout: float = 1800) -> list[Job]:
    def done() -> list[Job] | None:
        jobs = jobs_of(db, uids)
        finished = len(jobs) == len(uids) and all(j.finished_at for j in jobs)
        return jobs if finished else None

    return wait_for(f"{len(uids)} jobs to finish", done, timeout, 0.5)


def wait_sent(db: Database, uids: list[str], timeout: float = 600) -> None:
    def sent() -> bool:
        with db.session() as s:
            states = list(s.scalars(select(Study.state).where(Study.study_instance_uid.in_(uids))))
        return len(states) == len(uids) and all(st in ("sent", "done", "failed") for st in states)

    wait_for("the results to be delivered", sent, timeout, 0.5)


def _t(dt: datetime | None) -> float:
    assert dt is not None
    return as_utc(dt).timestamp()


def throughput(
    node: NodeProcess, db: Database, n: int, studies: int, root: Path, seed0: int
) -> Throughput:
    """A burst of ``studies`` studies pushed at once to ``n`` idle workers; jobs per minute
    from the first job queued to the last finished."""
    made = [small_study(root, seed0 + i) for i in range(studies)]
    workers = Workers(node, n, root)
    try:
        workers.wait_ready(db)
        for _uid, files in made:
            push(node, files)
        uids = [uid for uid, _ in made]
        jobs = wait_finished(db, uids)
        wait_sent(db, uids)
    finally:
        workers.stop()
    first = min(_t(j.created_at) for j in jobs)
    last = max(_t(j.finished_at) for j in jobs)
    statuses: dict[str, int] = {}
    for j in jobs:
        statuses[j.state] = statuses.get(j.state, 0) + 1
    with db.session() as s:
        sent: dict[int, float] = {}
        for job_id, at in s.execute(
            select(Outbox.job_id, Outbox.sent_at).where(Outbox.job_id.in_([j.id for j in jobs]))
        ):
            if at is not None:
                sent[job_id] = max(sent.get(job_id, 0.0), _t(at))
    return Throughput(
        workers=n,
        jobs=len(jobs),
        wall_s=last - first,
        mean_job_s=statistics.mean(_t(j.finished_at) - _t(j.started_at) for j in jobs),
        deliver_s=statistics.median(sent[j.id] - _t(j.finished_at) for j in jobs if j.id in sent),
        statuses=statuses,
    )


def ingest_idle_and_busy(
    node: NodeProcess, db: Database, n: int, slices: int, root: Path, seed0: int
) -> tuple[float, float, int]:
    """Instances/s of one storescu association with ``n`` workers idle, then while they
    work through a backlog. Returns (idle, busy, jobs still running when the push ended)."""
    _, idle_files = ingest_study(root, seed0, slices)
    _, busy_files = ingest_study(root, seed0 + 1, slices)
    backlog = [small_study(root, seed0 + 10 + i) for i in range(4 * n)]
    workers = Workers(node, n, root)
    try:
        workers.wait_ready(db)
        idle = len(idle_files) / push(node, idle_files)
        for _uid, files in backlog:
            push(node, files)

        def all_busy() -> bool:
            with db.session() as s:
                return len(list(s.scalars(select(Job.id).where(Job.state == "running")))) >= n

        wait_for("every worker to be busy", all_busy, 300, 0.1)
        busy = len(busy_files) / push(node, busy_files)
        with db.session() as s:
            still = len(list(s.scalars(select(Job.id).where(Job.state == "running"))))
        wait_finished(db, [u for u, _ in backlog])
    finally:
        workers.stop()
    return idle, busy, still


def broker_overhead(
    node: NodeProcess, db: Database, rounds: int, root: Path, seed0: int
) -> list[float]:
    """One idle worker, one study at a time: seconds from the job queued and published
    (created_at, same transaction as published_at) to claimed by the worker (started_at)."""
    workers = Workers(node, 1, root)
    waits: list[float] = []
    try:
        workers.wait_ready(db)
        for i in range(rounds):
            uid, files = small_study(root, seed0 + i)
            push(node, files)
            (job,) = wait_finished(db, [uid])
            waits.append(_t(job.started_at) - _t(job.created_at))
            time.sleep(1.0)  # the worker back at its idle wait for a message
    finally:
        workers.stop()
    return waits


def database(kind: str) -> tuple[str, object | None]:
    """(URL, server to destroy) for ``postgres`` (throw-away, fsync off) or ``sqlite``."""
    if kind in ("postgres", "auto"):
        try:
            from tests.scale.postgres import PostgreSQL, available
        except ImportError:
            available = None  # type: ignore[assignment]
        if available is not None and available():
            server = PostgreSQL().start()
            return server.url, server
        if kind == "postgres":
            raise SystemExit("PostgreSQL is not available (tests/scale/postgres.py, pg_ctl)")
    return "", None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", default="1,2,3", help="worker counts (default 1,2,3)")
    parser.add_argument("--studies", type=int, default=6, help="studies per burst (default 6)")
    parser.add_argument(
        "--rounds", type=int, default=1, help="throughput rounds, worker counts interleaved"
    )
    parser.add_argument(
        "--ingest-slices", type=int, default=100, help="512² instances per ingest push"
    )
    parser.add_argument("--ingest-workers", type=int, default=2, help="workers for ingest")
    parser.add_argument("--overhead-rounds", type=int, default=5, help="studies, one at a time")
    parser.add_argument("--db", choices=["auto", "postgres", "sqlite"], default="auto")
    parser.add_argument("--skip", default="", help="comma list: throughput,ingest,overhead")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder (logs)")
    args = parser.parse_args()
    counts = [int(x) for x in args.workers.split(",") if x]
    skip = set(args.skip.split(",")) - {""}

    print(f"start: {uptime()}", flush=True)
    root = Path(tempfile.mkdtemp(prefix="medvision-bench-scale-"))
    db_url, pg = database(args.db)
    rabbit = RabbitMQ(root / "rabbitmq").start()
    pacs_port = free_port()
    (root / "pacs").mkdir()
    pacs = subprocess.Popen(
        [str(DCMTK / "storescp"), "-aet", "DEST", "-uf", "-od", str(root / "pacs"), str(pacs_port)],
        env={"TCP_NODELAY": "1", "PATH": "/usr/bin:/bin"},
    )
    settings: dict[str, object] = dict(
        role="receiver",
        broker_url=rabbit.url,
        quiet_period_s=1,
        poll_interval_s=0.2,
        worker_heartbeat_s=2,
        pipelines=["lung-ct"],
        modalities={"dest": {"ae_title": "DEST", "host": "127.0.0.1", "port": pacs_port}},
        destinations=["dest"],
    )
    if db_url:
        settings["database_url"] = db_url
    node = NodeProcess(root / "medvision-data", **settings)
    db = Database(db_url or f"sqlite:///{root / 'medvision-data' / 'medvision.db'}")
    print(f"database: {'PostgreSQL (throw-away, fsync off)' if db_url else 'SQLite (WAL)'}")
    results: dict[int, list[Throughput]] = {n: [] for n in counts}
    ingest: tuple[float, float, int] | None = None
    waits: list[float] = []
    try:
        node.start()
        if "throughput" not in skip:
            seed = 1000
            for _round in range(args.rounds):
                for n in counts:
                    r = throughput(node, db, n, args.studies, root, seed)
                    seed += args.studies
                    results[n].append(r)
                    print(f"  {n} worker(s): {r.jobs} jobs in {r.wall_s:.1f} s", flush=True)
        if "ingest" not in skip:
            ingest = ingest_idle_and_busy(
                node, db, args.ingest_workers, args.ingest_slices, root, 90000
            )
        if "overhead" not in skip:
            waits = broker_overhead(node, db, args.overhead_rounds, root, 95000)
    finally:
        node.stop()
        stop_process(pacs)
        rabbit.stop()
        db.dispose()
        if pg is not None:
            pg.destroy()  # type: ignore[attr-defined]
        if args.keep:
            print(f"kept {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)
    print(f"end: {uptime()}\n")

    first_mean_job_s = 0.0
    if any(results.values()):
        base = statistics.median(r.per_minute for r in results[counts[0]])
        first_mean_job_s = statistics.median(r.mean_job_s for r in results[counts[0]])
        print(
            "| workers | jobs per burst | jobs/min (median) | × first row | rounds, jobs/min "
            "| mean job s (claim → finish) | deliver s (finish → sent, median) | job states |"
        )
        print("| --- | --- | --- | --- | --- | --- | --- | --- |")
        for n, rs in results.items():
            per_min = statistics.median(r.per_minute for r in rs)
            states: dict[str, int] = {}
            for r in rs:
                for k, v in r.statuses.items():
                    states[k] = states.get(k, 0) + v
            print(
                f"| {n} | {rs[0].jobs} | {per_min:.1f} | {per_min / base:.2f} "
                f"| {' / '.join(f'{r.per_minute:.1f}' for r in rs)} "
                f"| {' / '.join(f'{r.mean_job_s:.2f}' for r in rs)} "
                f"| {statistics.median(r.deliver_s for r in rs):.2f} "
                f"| {', '.join(f'{k} {v}' for k, v in sorted(states.items()))} |"
            )
    if ingest is not None:
        idle, busy, still = ingest
        print(
            f"\ningest, {args.ingest_slices} × 512² CT on one association, "
            f"{args.ingest_workers} workers: idle {idle:.1f} inst/s, busy {busy:.1f} inst/s, "
            f"busy/idle {busy / idle:.2f} ({still} jobs still running when the push ended)"
        )
    if waits:
        print(
            f"\nbroker overhead (job queued+published → claimed by an idle worker), "
            f"{len(waits)} jobs: median {1000 * statistics.median(waits):.0f} ms, "
            f"min {1000 * min(waits):.0f} ms, max {1000 * max(waits):.0f} ms"
        )
        if first_mean_job_s:
            ratio = statistics.median(waits) / first_mean_job_s
            print(f"  = {ratio:.3f} × the mean job ({counts[0]} worker): {first_mean_job_s:.2f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
