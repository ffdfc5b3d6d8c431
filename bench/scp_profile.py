"""Where one association's time goes in the node's SCP: CPU per instance, handler time.

    .venv/bin/python bench/scp_profile.py [--instances 300] [--streams 1] [--noop]
                                               [--profile] [--max-pdu 65536]

Runs the real :class:`~medvision.node.StorageSCP` in this process (spool, journal, index,
audit on SQLite in a temporary folder) and sends ``--instances`` CT images of 512x512 with
dcmtk's ``storescu`` (``TCP_NODELAY=1``), as ``bench/ingest.py`` does. Prints the rate, the
process's CPU time per instance (all threads: pynetdicom's two per association, the
journal's and the indexer's), and the medians of the C-STORE handler and of the spool
write, and the interval between two instances.

``--noop`` answers Success without storing anything: pynetdicom's own cost, the floor for
any handler. ``--profile`` runs every thread under cProfile and prints each busy thread's
top functions (the profiler inflates Python-heavy code two to three times).
``--breakdown`` instead times a few of pynetdicom's internal steps with ``time.thread_time``
(CPU of the calling thread, inclusive of what they call; ~1 us of overhead per call) and
prints each thread's CPU per instance: where pynetdicom's milliseconds go without
cProfile's inflation. Only this script wraps those functions; the node does not.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import os
import pstats
import shutil
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.append(str(REPO))  # after PYTHONPATH: a baseline's medvision may come from there

# medvision before bench.ingest, which puts the repository first on sys.path.
# isort: off
from medvision.audit import DbAuditLog  # noqa: E402
from medvision.config import Settings  # noqa: E402
from medvision.db import Database  # noqa: E402
from medvision.node._scp import SUCCESS, StorageSCP  # noqa: E402

from bench.ingest import REAL_CT, make_series, send  # noqa: E402

# isort: on


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--instances", type=int, default=300)
    parser.add_argument("--streams", type=int, default=1)
    parser.add_argument("--noop", action="store_true", help="answer Success, store nothing")
    parser.add_argument("--profile", action="store_true", help="cProfile every thread")
    parser.add_argument(
        "--breakdown", action="store_true", help="CPU per instance of pynetdicom's steps"
    )
    parser.add_argument("--max-pdu", type=int, default=65536)
    parser.add_argument("--linger", type=float, help="the indexer's batch linger, seconds")
    parser.add_argument("--real-ct", type=Path, default=REAL_CT)
    args = parser.parse_args()

    profiles: list[tuple[str, cProfile.Profile]] = []
    if args.profile:  # before any thread starts: every thread runs under its own profiler
        run = threading.Thread.run

        def profiled(self: threading.Thread) -> None:
            prof = cProfile.Profile()
            profiles.append((self.name, prof))
            prof.enable()
            try:
                run(self)
            finally:
                prof.disable()

        threading.Thread.run = profiled  # type: ignore[method-assign]

    thread_cpu: dict[str, float] = {}
    steps: dict[str, list[float]] = {}  # label: [CPU seconds, calls]
    if args.breakdown:
        thread_cpu, steps = _breakdown()

    tmp = Path(tempfile.mkdtemp(prefix="medvision-scp-profile-"))
    try:
        src = tmp / "series"
        src.mkdir()
        _, files = make_series(src, args.instances, args.real_ct)
        mb = sum(f.stat().st_size for f in files) / 1e6
        settings = Settings(
            data_dir=tmp / "data",
            dicom_port=0,
            bind_address="127.0.0.1",
            max_pdu=args.max_pdu,
            accept_unknown_calling_ae=True,
        )
        settings.data_dir.mkdir()
        db = Database(settings.db_url)
        db.create_schema()
        scp = StorageSCP(settings, db, DbAuditLog(db))
        handler: list[tuple[float, float]] = []  # (start, seconds)
        spool_s: list[float] = []
        on_store, store = scp._on_store, scp.spool.store

        def timed_store(event: Any) -> int:
            t0 = time.perf_counter()
            if args.noop:
                status = SUCCESS
            else:
                status = on_store(event)
            handler.append((t0, time.perf_counter() - t0))
            return status

        def timed_spool(*a: Any) -> Any:
            t0 = time.perf_counter()
            result = store(*a)
            spool_s.append(time.perf_counter() - t0)
            return result

        if args.linger is not None:
            scp.indexer.linger_s = args.linger
        scp._on_store = timed_store  # type: ignore[method-assign]
        scp.spool.store = timed_spool  # type: ignore[method-assign]
        scp.start()
        if hasattr(scp.spool, "wait_journal"):  # an older version has no journal
            scp.spool.wait_journal(30)
        cpu0 = time.process_time()
        seconds = send(scp.port, settings.ae_title, files, args.streams)
        cpu = time.process_time() - cpu0
        scp.stop()
        db.dispose()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    n = len(files)
    what = "no-op handler" if args.noop else "node's handler"
    print(
        f"{what}, {args.streams} association(s), max PDU {args.max_pdu}: {n / seconds:.0f} inst/s,"
        f" {mb / seconds:.0f} MB/s; CPU {cpu / n * 1e3:.1f} ms per instance "
        f"(load {os.getloadavg()[0]:.1f})"
    )
    starts = sorted(t for t, _ in handler)
    gaps = [b - a for a, b in zip(starts, starts[1:], strict=False)]
    line = f"handler median {statistics.median(d for _, d in handler) * 1e3:.2f} ms"
    if spool_s:
        line += f", spool write median {statistics.median(spool_s) * 1e3:.2f} ms"
    print(f"{line}, interval between instances median {statistics.median(gaps) * 1e3:.2f} ms")
    print(f"spool: {dict(getattr(scp.spool, 'counts', {}))}")
    if args.breakdown:
        busy = {k: v for k, v in thread_cpu.items() if v / n > 5e-5}
        print(
            "CPU per instance by thread: "
            + ", ".join(
                f"{k} {v / n * 1e3:.2f} ms" for k, v in sorted(busy.items(), key=lambda kv: -kv[1])
            )
        )
        for label, (seconds, calls) in steps.items():
            print(f"  {label:<58} {seconds / n * 1e3:6.3f} ms  ({calls / n:.1f} calls)")
    for name, prof in profiles:
        out = io.StringIO()
        stats = pstats.Stats(prof, stream=out)
        if stats.total_tt < 0.2:  # type: ignore[attr-defined]
            continue
        stats.sort_stats("tottime").print_stats(15)
        print(f"=== thread {name}\n{out.getvalue()}")


def _breakdown() -> tuple[dict[str, float], dict[str, list[float]]]:
    """Wrap pynetdicom's receive and answer steps (and every thread) to add up their CPU."""
    from pynetdicom import dimse, dimse_messages, dul, events, fsm, transport
    from pynetdicom.association import Association

    thread_cpu: dict[str, float] = {}
    run = threading.Thread.run

    def counted(self: threading.Thread) -> None:
        try:
            run(self)
        finally:
            name = self.name.split("@")[0].split(" (")[-1].rstrip(")")
            thread_cpu[name] = thread_cpu.get(name, 0.0) + time.thread_time()

    threading.Thread.run = counted  # type: ignore[method-assign]
    steps: dict[str, list[float]] = {}
    # (owner, function, label); the indentation of a label shows what it is part of.
    wrapped = [
        (dul.DULServiceProvider, "_read_pdu_data", "DUL thread: read one PDU"),
        (
            transport.AssociationSocket,
            "recv",
            "  socket reads (4 KiB recv() calls into a bytearray)",
        ),
        (dul.DULServiceProvider, "_decode_pdu", "  decode the PDU (P-DATA-TF: copies each PDV)"),
        (fsm.StateMachine, "do_action", "DUL thread: state machine action"),
        (
            dimse.DIMSEServiceProvider,
            "receive_primitive",
            "  DIMSE: add the fragment, decode when complete",
        ),
        (dimse_messages.DIMSEMessage, "decode_msg", "    append fragment / decode the command set"),
        (
            dimse_messages.DIMSEMessage,
            "message_to_primitive",
            "    the complete message to a C-STORE primitive (pydicom)",
        ),
        (dul.DULServiceProvider, "_send", "  send the response PDU"),
        (Association, "_serve_request", "association thread: serve the C-STORE"),
        (dimse.DIMSEServiceProvider, "send_msg", "  build and encode the C-STORE-RSP (pydicom)"),
        (events, "trigger", "(within the above, both threads) event triggers and log handlers"),
    ]
    for owner, name, label in wrapped:
        func = getattr(owner, name)
        tally = steps.setdefault(label, [0.0, 0])

        def timed(*a: Any, _f: Any = func, _t: list[float] = tally, **k: Any) -> Any:
            t0 = time.thread_time()
            try:
                return _f(*a, **k)
            finally:
                _t[0] += time.thread_time() - t0
                _t[1] += 1

        setattr(owner, name, timed)
    return thread_cpu, steps


if __name__ == "__main__":
    main()
