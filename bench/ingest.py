"""Ingest rate of the node against Orthanc and dcmtk's storescp, and the PACS round trip.

    .venv/bin/python bench/ingest.py [--rounds 3] [--instances 300] [--streams 1,2,4]
                                          [--processes 1,2,4] [--no-e2e] [--e2e-only]
    .venv/bin/python bench/ingest.py --ceiling     # what the disk allows, and storescp

One sender for every receiver: dcmtk ``/usr/bin/storescu`` with ``TCP_NODELAY=1``, sending
``--instances`` CT images of 512x512 (the real 64-slice chest CT copied with new UIDs and
positions, written as Explicit VR Little Endian so that nobody transcodes). ``--streams``
runs that many storescu processes at once, each sending its share over its own association.

Receivers, each started fresh (empty storage) for every measurement, in rotating order
within a round, so that the machine's load drifts over all of them alike:

- ``medvision``: ``medvision serve`` as a subprocess (the real node: durable spool, index,
  HTTP API, workers idle because the quiet period is long). Timed until storescu has every
  Success (an acknowledgement means flushed to disk: in the spool's journal, or as a file);
  the time until the index has caught up is reported beside it. It runs with the default
  ``scp_processes`` (one acceptor process per core); ``--processes 1,2,4`` replaces it by
  one receiver per count (``medvision-p1``, ``medvision-p2``, ...), so that one run shows how
  the rate scales with acceptor processes at each stream count, beside Orthanc's.
- ``orthanc``: Debian's Orthanc (1.10.1) with ``TCP_NODELAY=1`` and its default storage;
  ``strace`` shows it ``fdatasync``s each stored file (not its folder), index in SQLite WAL.
- ``storescp``: dcmtk's ``storescp --fork`` with ``TCP_NODELAY=1``, writing files (no fsync:
  an upper bound for "receive and write", not a durable store).

The end-to-end case: Orthanc holds the real chest CT, pushes it to a node with a 2 s quiet
period, and the clock stops when the SEG and the SR are in Orthanc.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.node.peers import (  # noqa: E402 - needs the repository on sys.path
    DCMTK,
    NodeProcess,
    Orthanc,
    free_port,
    log_tail,
    stop_process,
    wait_for,
)

REAL_CT = Path(
    os.environ.get("MEDVISION_SHARED_DATA", "/work/shared/data"),
    "ct",
    "lung-pet-ct-dx-A0001",
    "series-5mm",
)
DCMTK_ENV = {"TCP_NODELAY": "1", "PATH": "/usr/bin:/bin"}


def make_series(out: Path, n: int, real_ct: Path) -> tuple[str, list[Path]]:
    """``n`` CT instances of 512x512 made from the real slices; returns (study UID, files)."""
    from pydicom import dcmread
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    sources = sorted(real_ct.glob("*.dcm"))
    study, series = generate_uid(), generate_uid()
    first = dcmread(sources[0], stop_before_pixels=True)
    x, y, z0 = (float(v) for v in first.ImagePositionPatient)
    files = []
    for k in range(n):
        ds = dcmread(sources[k % len(sources)])
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series
        ds.SOPInstanceUID = generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.ImagePositionPatient = [x, y, z0 - 1.0 * k]
        ds.SliceLocation = z0 - 1.0 * k
        ds.SliceThickness = 1.0
        ds.SpacingBetweenSlices = 1.0
        ds.InstanceNumber = k + 1
        path = out / f"IM{k:04d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        files.append(path)
    return study, files


def send(port: int, called: str, files: list[Path], streams: int) -> float:
    """storescu ``streams`` times at once, each with its share; seconds until all are done."""
    shares = [files[i::streams] for i in range(streams)]
    start = time.perf_counter()
    procs = [
        subprocess.Popen(
            [str(DCMTK / "storescu"), "-aet", "BENCH", "-aec", called, "127.0.0.1", str(port)]
            + [str(p) for p in share],
            env=DCMTK_ENV,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for share in shares
    ]
    outputs = [p.communicate(timeout=600)[0] for p in procs]
    elapsed = time.perf_counter() - start
    for proc, out in zip(procs, outputs, strict=True):
        if proc.returncode != 0 or "E:" in out:
            raise RuntimeError(f"storescu failed ({proc.returncode}): {out[-2000:]}")
    return elapsed


def settle() -> None:
    """Before a receiver's clock starts: what the previous receivers wrote is flushed
    (``sync``), so that none is timed while the kernel writes back another's files."""
    os.sync()
    time.sleep(0.5)


@dataclass
class Result:
    receiver: str
    streams: int
    seconds: float
    #: medvision only: seconds from the start until the index held every instance.
    indexed_s: float | None
    load: float


def run_medvision(
    work: Path,
    study: str,
    files: list[Path],
    streams: int,
    code: Path | None = None,
    processes: int | None = None,
) -> Result:
    """``code``: a folder holding another version's ``medvision`` package (the baseline);
    ``processes``: the node's ``scp_processes`` (None: its default)."""
    extra = {} if processes is None else {"scp_processes": processes}
    node = NodeProcess(
        work / "medvision-data",
        code=code,  # the child imports medvision from there (before the venv's)
        quiet_period_s=3600,
        max_associations=max(10, streams + 2),
        pipelines=["lung-ct"],
        **extra,
    )
    try:
        node.start()
        settle()
        load = os.getloadavg()[0]
        start = time.perf_counter()
        seconds = send(node.dicom_port, node.ae_title, files, streams)
        wait_for(
            "the node's index",
            lambda: (node.study(study) or {}).get("instances") == len(files),
            120,
            0.02,
        )
        indexed = time.perf_counter() - start
        spooled = list((node.data_dir / "spool" / study).glob("*/*.dcm"))
        assert len(spooled) == len(files), len(spooled)
    except BaseException:
        # The log is in the run's temporary folder, gone once this raises: show its end.
        print(log_tail(node.log_path, 40), file=sys.stderr)
        raise
    finally:
        node.stop()
    name = "baseline" if code else "medvision" if processes is None else f"medvision-p{processes}"
    return Result(name, streams, seconds, indexed, load)


def run_orthanc(work: Path, study: str, files: list[Path], streams: int) -> Result:
    orthanc = Orthanc(work / "orthanc", {})
    orthanc.start()
    try:
        settle()
        load = os.getloadavg()[0]
        seconds = send(orthanc.dicom_port, orthanc.aet, files, streams)
        sid = orthanc.study_id(study)
        assert sid is not None and len(orthanc.get(f"/studies/{sid}/instances")) == len(files)
    finally:
        orthanc.stop()
    return Result("orthanc", streams, seconds, None, load)


def run_storescp(work: Path, study: str, files: list[Path], streams: int) -> Result:
    out = work / "storescp"
    out.mkdir()
    port = free_port()
    proc = subprocess.Popen(
        [str(DCMTK / "storescp"), "--fork", "-aet", "STORESCP", "-od", str(out), str(port)],
        env=DCMTK_ENV,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for("storescp", lambda: _echo(port), 20)
        settle()
        load = os.getloadavg()[0]
        seconds = send(port, "STORESCP", files, streams)
        assert len(list(out.iterdir())) == len(files)
    finally:
        stop_process(proc)
    return Result("storescp", streams, seconds, None, load)


def _echo(port: int) -> bool:
    done = subprocess.run(
        [str(DCMTK / "echoscu"), "127.0.0.1", str(port)], env=DCMTK_ENV, capture_output=True
    )
    return done.returncode == 0


RECEIVERS: dict[str, Callable[[Path, str, list[Path], int], Result]] = {
    "medvision": run_medvision,
    "orthanc": run_orthanc,
    "storescp": run_storescp,
}


def throughput(args: argparse.Namespace) -> None:
    if args.baseline is not None:
        code = args.baseline.resolve()
        RECEIVERS["baseline"] = lambda w, s, f, n: run_medvision(w, s, f, n, code)
    if args.processes:
        del RECEIVERS["medvision"]
        for count in (int(p) for p in args.processes.split(",")):
            RECEIVERS[f"medvision-p{count}"] = lambda w, s, f, n, count=count: run_medvision(
                w, s, f, n, processes=count
            )
    streams_list = [int(s) for s in args.streams.split(",")]
    with tempfile.TemporaryDirectory(prefix="medvision-ingest-") as tmp:
        src = Path(tmp) / "series"
        src.mkdir()
        study, files = make_series(src, args.instances, args.real_ct)
        mb = sum(f.stat().st_size for f in files) / 1e6
        print(f"{len(files)} instances, {mb:.0f} MB, study {study}", flush=True)
        results: list[Result] = []
        names = list(RECEIVERS)
        for rnd in range(args.rounds):
            for streams in streams_list:
                order = names[rnd % len(names) :] + names[: rnd % len(names)]
                for name in order:
                    with tempfile.TemporaryDirectory(prefix=f"{name}-", dir=tmp) as work:
                        r = RECEIVERS[name](Path(work), study, files, streams)
                    results.append(r)
                    extra = f", indexed after {r.indexed_s:.2f} s" if r.indexed_s else ""
                    print(
                        f"round {rnd + 1} streams {streams} {name:9s} {r.seconds:6.2f} s "
                        f"{len(files) / r.seconds:6.0f} inst/s {mb / r.seconds:6.0f} MB/s"
                        f" (load {r.load:.1f}){extra}",
                        flush=True,
                    )
        report(results, len(files), mb, args.rounds, streams_list)


def report(results: list[Result], n: int, mb: float, rounds: int, streams_list: list[int]) -> None:
    def of(name: str, streams: int) -> list[Result]:
        return [r for r in results if r.receiver == name and r.streams == streams]

    print("\n| streams | receiver | inst/s (median) | MB/s | runs inst/s |")
    print("| --- | --- | --- | --- | --- |")
    for streams in streams_list:
        for name in RECEIVERS:
            rates = [n / r.seconds for r in of(name, streams)]
            med = statistics.median(rates)
            runs = " / ".join(f"{x:.0f}" for x in rates)
            print(f"| {streams} | {name} | {med:.0f} | {med * mb / n:.0f} | {runs} |")
    mine = [name for name in RECEIVERS if name.startswith("medvision")]
    others = [name for name in RECEIVERS if name not in mine]
    print(
        "\n| streams | receiver | " + " | ".join(f"receiver/{o} (per round)" for o in others) + " |"
    )
    print("| --- " * (len(others) + 2) + "|")
    for streams in streams_list:
        for name in mine:
            mv = of(name, streams)
            cells = []
            for other in others:
                pairs = zip(mv, of(other, streams), strict=True)
                ratios = [o.seconds / m.seconds for m, o in pairs]
                runs = " / ".join(f"{x:.2f}" for x in ratios)
                cells.append(f"{statistics.median(ratios):.2f} ({runs})")
            print(f"| {streams} | {name} | " + " | ".join(cells) + " |")
    if len(streams_list) > 1:  # how each receiver's rate grows with associations
        lo, hi = streams_list[0], streams_list[-1]
        print(f"\n| receiver | rate at {hi} streams / rate at {lo} (median) |")
        print("| --- | --- |")
        for name in RECEIVERS:
            low = statistics.median(n / r.seconds for r in of(name, lo))
            high = statistics.median(n / r.seconds for r in of(name, hi))
            print(f"| {name} | {high / low:.2f} |")
    idx = [r.indexed_s - r.seconds for r in results if r.indexed_s is not None]
    print(f"\nmedvision index lag after the last Success: median {statistics.median(idx):.2f} s")
    loads = [r.load for r in results]
    print(f"load average (1 min) during the runs: {min(loads):.1f}-{max(loads):.1f}")


def end_to_end(args: argparse.Namespace) -> None:
    """Orthanc pushes the real chest CT; seconds until SEG and SR are in Orthanc."""
    from pydicom import dcmread

    files = sorted(args.real_ct.glob("*.dcm"))
    uid = str(dcmread(files[0], stop_before_pixels=True).StudyInstanceUID)
    with tempfile.TemporaryDirectory(prefix="medvision-e2e-") as tmp:
        node = NodeProcess(Path(tmp) / "medvision-data")
        orthanc = Orthanc(Path(tmp) / "orthanc", {"medvision": (node.ae_title, node.dicom_port)})
        node.settings.update(
            quiet_period_s=args.quiet,
            poll_interval_s=0.2,
            allowed_calling_aets=[orthanc.aet],
            modalities={
                "pacs": {"ae_title": orthanc.aet, "host": "127.0.0.1", "port": orthanc.dicom_port}
            },
        )
        orthanc.start()
        node.start()
        try:
            study_id = orthanc.upload(files)
            load = os.getloadavg()[0]
            start = time.perf_counter()
            orthanc.push("medvision", study_id)
            pushed = time.perf_counter() - start

            def arrived() -> bool:
                found = orthanc.instances_by_modality(uid)
                return bool(found.get("SEG")) and bool(found.get("SR"))

            wait_for("SEG and SR in Orthanc", arrived, 1200, 0.2)
            total = time.perf_counter() - start
            (job,) = node.get("/jobs")
        finally:
            node.stop()
            orthanc.stop()
    timings = ", ".join(f"{k} {v:.1f} s" for k, v in (job.get("timings") or {}).items())
    print(
        f"\nend to end, real chest CT ({len(files)} slices): push (C-STORE) {pushed:.1f} s, "
        f"SEG + SR in Orthanc after {total:.1f} s (quiet period {args.quiet:g} s, "
        f"load {load:.1f}); job timings: {timings}"
    )


def _timed(n: int, step: Callable[[int], None]) -> float:
    """Median milliseconds of ``step(i)`` over ``n`` calls."""
    times = []
    for i in range(n):
        t0 = time.perf_counter()
        step(i)
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def disk_ceiling(args: argparse.Namespace) -> None:
    """What this disk allows for one durable write per instance, and storescp's rate.

    A C-STORE sender waits for each response before it sends the next instance, so on one
    association the durable write's latency bounds the rate: 1 / (sync latency + the rest).
    Measured in the folder the bench (and the node) writes to; 0.5 MB, the size of one of
    these CT instances.
    """
    n = args.ceiling_n
    size = 512 * 1024 + 1400  # a 512x512 16-bit CT instance with its header
    blob = os.urandom(size)
    with tempfile.TemporaryDirectory(prefix="medvision-ceiling-") as tmp:
        root = Path(tmp)
        (root / "tmp").mkdir()
        (root / "final").mkdir()

        def fsync_dir(path: Path) -> None:
            fd = os.open(path, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)

        def file_two_syncs(i: int) -> None:  # the spool's write until now
            part = root / "tmp" / f"a{i}.part"
            with open(part, "wb") as fh:
                fh.write(blob)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(part, root / "final" / f"a{i}.dcm")
            fsync_dir(root / "final")

        def file_one_sync(i: int) -> None:  # what Orthanc does: fdatasync the file only
            with open(root / "final" / f"b{i}.dcm", "wb") as fh:
                fh.write(blob)
                fh.flush()
                os.fdatasync(fh.fileno())

        def file_no_sync(i: int) -> None:  # what storescp does
            part = root / "tmp" / f"c{i}.part"
            with open(part, "wb") as fh:
                fh.write(blob)
            os.replace(part, root / "final" / f"c{i}.dcm")

        # A segment written in full and fsync'ed beforehand: appending into it changes no
        # metadata (no new blocks, same size), so fdatasync flushes only the data.
        seg_path = root / "segment"
        with open(seg_path, "wb") as fh:
            for _ in range(n):
                fh.write(b"\0" * size)
            fh.flush()
            os.fsync(fh.fileno())
        seg = os.open(seg_path, os.O_WRONLY)

        def segment_fdatasync(i: int) -> None:
            os.pwrite(seg, blob, i * size)
            os.fdatasync(seg)

        grow = os.open(root / "growing", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)

        def append_fdatasync(i: int) -> None:  # appending to a file that grows each time
            os.write(grow, blob)
            os.fdatasync(grow)

        cases = [
            ("(a) write + fsync + rename + folder fsync", file_two_syncs),
            ("(a') write + fdatasync of the file only (Orthanc)", file_one_sync),
            ("(b) pwrite into a pre-written segment + fdatasync", segment_fdatasync),
            ("(b') append to a growing file + fdatasync", append_fdatasync),
            ("(c) write + rename, no sync (storescp)", file_no_sync),
        ]
        load = os.getloadavg()[0]
        print(f"disk ceiling: {n} writes of {size / 1e6:.2f} MB each, in {root} (load {load:.1f})")
        print("| write | ms per instance (median) | inst/s ceiling, one association | MB/s |")
        print("| --- | --- | --- | --- |")
        for label, step in cases:
            ms = _timed(n, step)
            rate = 1e3 / ms
            print(f"| {label} | {ms:.2f} | {rate:.0f} | {rate * size / 1e6:.0f} |", flush=True)
        os.close(seg)
        os.close(grow)
        src = root / "series"
        src.mkdir()
        study, files = make_series(src, args.instances, args.real_ct)
        mb = sum(f.stat().st_size for f in files) / 1e6
        for streams in (1, 4):
            with tempfile.TemporaryDirectory(prefix="storescp-", dir=tmp) as work:
                r = run_storescp(Path(work), study, files, streams)
            print(
                f"storescp (no fsync), {streams} association(s): {len(files) / r.seconds:.0f} "
                f"inst/s, {mb / r.seconds:.0f} MB/s (load {r.load:.1f})",
                flush=True,
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--instances", type=int, default=300)
    parser.add_argument("--streams", default="1,2,4", help="concurrent associations, e.g. 1,2,4")
    parser.add_argument(
        "--processes",
        help="the node's scp_processes to sweep, e.g. 1,2,4 (default: only the node's "
        "default, one acceptor per core)",
    )
    parser.add_argument("--real-ct", type=Path, default=REAL_CT)
    parser.add_argument("--quiet", type=float, default=2.0, help="quiet period, end to end")
    parser.add_argument("--no-e2e", action="store_true", help="skip the end-to-end case")
    parser.add_argument("--e2e-only", action="store_true", help="only the end-to-end case")
    parser.add_argument(
        "--ceiling", action="store_true", help="only the disk's durable-write ceiling"
    )
    parser.add_argument(
        "--baseline",
        type=Path,
        help="also run the node from this folder's medvision package (e.g. an older commit "
        "unpacked with `git archive <commit> medvision | tar -x -C DIR`), interleaved",
    )
    parser.add_argument("--ceiling-n", type=int, default=200, help="writes per ceiling case")
    args = parser.parse_args()
    print(f"{time.strftime('%Y-%m-%d %H:%M:%S %Z')}, {os.cpu_count()} CPUs", flush=True)
    if args.ceiling:
        disk_ceiling(args)
        return
    if not args.e2e_only:
        throughput(args)
    if not args.no_e2e:
        end_to_end(args)


if __name__ == "__main__":
    main()
