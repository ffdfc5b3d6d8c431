"""What associations held open and idle cost the receiver, against Orthanc in the same run.

    .venv/bin/python bench/idle_associations.py [--associations 0,4,16] [--seconds 10]
                                                [--baseline DIR]

A PACS or a modality often keeps an association open between studies. For each count,
``medvision serve`` (default ``scp_processes``) and Orthanc are started fresh, that many
associations are opened to them from one pynetdicom SCU process and left idle, and the
receiver's CPU time (all its processes, from /proc) is read over ``--seconds``. Printed: CPU
% of one core per receiver, and medvision's excess over Orthanc in points. ``--baseline``:
also a node whose ``medvision`` package is imported from DIR (another version, e.g. a
``git worktree`` of an earlier commit), in the same run.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.node.peers import NodeProcess, Orthanc  # noqa: E402 - needs the repository on sys.path

TICKS = os.sysconf("SC_CLK_TCK")


def _tree(pid: int) -> list[int]:
    kids = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
    return [pid] + [p for k in kids.split() for p in _tree(int(k))]


def _cpu_s(pids: list[int]) -> float:
    total = 0.0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except FileNotFoundError:
            continue
        total += (int(fields[11]) + int(fields[12])) / TICKS
    return total


def _hold(port: int, called: str, count: int, ready: multiprocessing.Event, stop) -> None:  # noqa: ANN001
    """In its own process: ``count`` open associations until ``stop`` is set."""
    from pynetdicom import AE
    from pynetdicom.sop_class import Verification

    ae = AE(ae_title="IDLE")
    ae.add_requested_context(Verification)
    ae.network_timeout = ae.acse_timeout = 3600
    assocs = [ae.associate("127.0.0.1", port, ae_title=called) for _ in range(count)]
    if not all(a.is_established for a in assocs):
        raise SystemExit("an association was not accepted")
    ready.set()
    stop.wait()
    for assoc in assocs:
        assoc.release()


def measure(name: str, work: Path, count: int, seconds: float, code: Path | None = None) -> float:
    if name == "medvision":
        receiver = NodeProcess(
            work / "node",
            code=code,  # the node imports medvision from there (before the venv's)
            quiet_period_s=3600,
            max_associations=count + 4,
            pipelines=["lung-ct"],
        )
        receiver.start()
        port, called = receiver.dicom_port, receiver.ae_title
    else:
        receiver = Orthanc(work / "orthanc", {})
        receiver.start()
        port, called = receiver.dicom_port, receiver.aet
    ctx = multiprocessing.get_context("spawn")
    ready, stop = ctx.Event(), ctx.Event()
    holder = ctx.Process(target=_hold, args=(port, called, count, ready, stop))
    holder.start()
    try:
        if not ready.wait(60):
            raise RuntimeError("the associations did not open")
        time.sleep(1.0)
        pids = _tree(receiver.proc.pid)
        before = _cpu_s(pids)
        time.sleep(seconds)
        return 100.0 * (_cpu_s(pids) - before) / seconds
    finally:
        stop.set()
        holder.join(30)
        receiver.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--associations", default="0,4,16")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--baseline", type=Path, default=None)
    args = parser.parse_args()
    base = args.baseline.resolve() if args.baseline else None
    print(f"{time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime())}, {os.cpu_count()} CPUs")
    extra = " baseline CPU % |" if base else ""
    print(f"\n| idle associations | medvision CPU % | Orthanc CPU % | medvision - Orthanc |{extra}")
    print("| --- | --- | --- | --- |" + (" --- |" if base else ""))
    for count in (int(c) for c in args.associations.split(",")):
        with tempfile.TemporaryDirectory(prefix="medvision-idle-") as tmp:
            mine = measure("medvision", Path(tmp), count, args.seconds)
            theirs = measure("orthanc", Path(tmp), count, args.seconds)
            old = (
                f" {measure('medvision', Path(tmp) / 'b', count, args.seconds, base):.1f} |"
                if base
                else ""
            )
        print(f"| {count} | {mine:.1f} | {theirs:.1f} | {mine - theirs:+.1f} |{old}", flush=True)


if __name__ == "__main__":
    main()
