"""How long each C-STORE waits for its answer, from a sender with Nagle's algorithm on or off.

    .venv/bin/python bench/store_latency.py [--rounds 3] [--instances 300]

dcmtk's ``storescu`` as Debian builds it leaves Nagle's algorithm on unless its environment
says ``TCP_NODELAY=1``; many PACS senders do the same. Such a sender holds the short last
segment of each instance until the receiver acknowledges what came before, and Linux delays
that acknowledgement by up to 40 ms once a connection looks interactive (request, answer,
request ...). This bench sends ``--instances`` CT images of 512x512 (bench/ingest.py's) over
one association to the node and to Orthanc, with ``TCP_NODELAY=0`` (Nagle on) and ``=1``
(off), each receiver started fresh, in rotating order within a round, and reads storescu's
own log (millisecond timestamps) for the time from each "Sending Store Request" to its
"Received Store Response". Printed per sender mode and receiver: the rate, the median, 90th,
99th percentile and longest wait, how many waited over 20 ms, and the node's rate over
Orthanc's in the same round; ``--baseline DIR`` adds the node of another commit.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from ingest import REAL_CT, make_series, settle  # noqa: E402 - needs bench/ on sys.path

from tests.node.peers import DCMTK, NodeProcess, Orthanc  # noqa: E402

#: storescu's log lines with a timestamp in milliseconds (log4cplus pattern).
LOG_CONFIG = """\
log4cplus.rootLogger = DEBUG, console
log4cplus.appender.console = log4cplus::ConsoleAppender
log4cplus.appender.console.layout = log4cplus::PatternLayout
log4cplus.appender.console.layout.ConversionPattern = %D{%H:%M:%S.%q} %m%n
"""
MODES = {"nagle": "0", "nodelay": "1"}


def _seconds(stamp: str) -> float:
    hours, minutes, rest = stamp.split(":")
    return int(hours) * 3600 + int(minutes) * 60 + float(rest)


def waits_ms(log: str) -> list[float]:
    """Each C-STORE's wait for its response, from storescu's debug log."""
    waits, sent = [], None
    for line in log.splitlines():
        stamp, _, message = line.partition(" ")
        if "Sending Store Request" in message:
            sent = _seconds(stamp)
        elif "Received Store Response" in message and sent is not None:
            waits.append((_seconds(stamp) - sent) * 1000)
            sent = None
    return waits


def store(port: int, called: str, files: list[Path], nodelay: str, config: Path) -> tuple:
    """storescu over one association; (seconds, waits in ms)."""
    env = {"TCP_NODELAY": nodelay, "PATH": "/usr/bin:/bin"}
    start = time.perf_counter()
    done = subprocess.run(
        [str(DCMTK / "storescu"), "-lc", str(config), "-aet", "BENCH", "-aec", called]
        + ["127.0.0.1", str(port)]
        + [str(p) for p in files],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    seconds = time.perf_counter() - start
    waits = waits_ms(done.stdout)
    if done.returncode != 0 or len(waits) != len(files):
        raise RuntimeError(f"storescu failed ({done.returncode}): {done.stdout[-2000:]}")
    return seconds, waits


def run(
    receiver: str, work: Path, files: list[Path], mode: str, config: Path, code: Path | None
) -> tuple:
    """``code``: the folder holding the baseline's ``medvision`` package."""
    if receiver in ("medvision", "baseline"):
        node = NodeProcess(
            work / "medvision-data", quiet_period_s=3600, max_associations=10,
            pipelines=["lung-ct"], code=code if receiver == "baseline" else None,
        )  # fmt: skip
        node.start()
        port, called = node.dicom_port, node.ae_title
    else:
        node = Orthanc(work / "orthanc", {})
        node.start()
        port, called = node.dicom_port, node.aet
    try:
        settle()
        return store(port, called, files, MODES[mode], config)
    finally:
        node.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--instances", type=int, default=300)
    parser.add_argument("--real-ct", type=Path, default=REAL_CT)
    parser.add_argument(
        "--baseline",
        type=Path,
        help="also run the node from this folder's medvision package (an older commit's "
        "worktree, as bench/ingest.py --baseline)",
    )
    args = parser.parse_args()
    print(f"{time.strftime('%Y-%m-%d %H:%M:%S %Z')}, {os.cpu_count()} CPUs", flush=True)
    receivers = ["medvision", "orthanc"] + (["baseline"] if args.baseline else [])
    code = args.baseline.resolve() if args.baseline else None
    results: dict[tuple[str, str], list[tuple[float, list[float]]]] = {}
    with tempfile.TemporaryDirectory(prefix="store-latency-") as tmp:
        root = Path(tmp)
        config = root / "storescu-log.cfg"
        config.write_text(LOG_CONFIG)
        src = root / "series"
        src.mkdir()
        _study, files = make_series(src, args.instances, args.real_ct)
        for r in range(args.rounds):
            for mode in MODES:
                shift = r % len(receivers)
                order = receivers[shift:] + receivers[:shift]
                for receiver in order:
                    with tempfile.TemporaryDirectory(dir=tmp) as work:
                        seconds, waits = run(receiver, Path(work), files, mode, config, code)
                    results.setdefault((mode, receiver), []).append((seconds, waits))
                    print(
                        f"round {r + 1} {mode:8s} {receiver:10s} {len(files) / seconds:5.0f} "
                        f"inst/s, waits over 20 ms: {sum(w > 20 for w in waits)}",
                        flush=True,
                    )
    print()
    print("| sender | receiver | inst/s (median) | wait median / p90 / p99 / max, ms "
          "| waits > 20 ms (per round) | / Orthanc (per round) |")  # fmt: skip
    print("| --- | --- | --- | --- | --- | --- |")
    for mode in MODES:
        for receiver in receivers:
            runs = results[(mode, receiver)]
            rates = [len(files) / s for s, _ in runs]
            waits = sorted(w for _, ws in runs for w in ws)
            q = [waits[int(f * (len(waits) - 1))] for f in (0.5, 0.9, 0.99)] + [waits[-1]]
            over = " / ".join(str(sum(w > 20 for w in ws)) for _, ws in runs)
            ratio = ""
            if receiver != "orthanc":
                theirs = [len(files) / s for s, _ in results[(mode, "orthanc")]]
                per = [a / b for a, b in zip(rates, theirs, strict=True)]
                ratio = f"{statistics.median(per):.2f} (" + " / ".join(f"{x:.2f}" for x in per)
                ratio += ")"
            print(
                f"| {mode} | {receiver} | {statistics.median(rates):.0f} | "
                + " / ".join(f"{x:.0f}" for x in q)
                + f" | {over} | {ratio} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
