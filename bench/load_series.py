"""Series -> volume: medvision.dicom.load_series against SimpleITK's ImageSeriesReader.

    .venv/bin/python bench/load_series.py [--repeats 3] [--slices 300]

Cases: the real 64-slice chest CT (shared data) and a 300-slice 512x512 synthetic CT (from
``dicom_samples.generate.generate_study`` when it is importable, else real slices copied with
new positions and UIDs). Each reader runs in its own fresh subprocess per case, so that peak
memory (``ru_maxrss``) belongs to that reader alone; inside it the load is repeated and the
best and median times are kept. Both readers get the same files; ours returns float32 with
rescale applied, SimpleITK returns its own pixel type (int16 for these CTs) as a numpy array.

"load" is what a pipeline pays once it has chosen a series: ``load_series(series)`` against
``ImageSeriesReader.SetFileNames(files); Execute(); GetArrayFromImage``. "scan" is finding
the series in the folder: ``scan(folder)`` against ``GetGDCMSeriesFileNames(folder)``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def _cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


def worker(reader: str, folder: Path, repeats: int) -> dict[str, object]:
    """Runs in the subprocess: time scan and load for one reader, report times and memory."""
    import numpy as np  # noqa: F401 - imported before the baseline so it is not counted
    import SimpleITK as sitk

    from medvision.dicom import load_series, scan

    baseline = _rss_mb()
    scans: list[float] = []
    loads: list[float] = []
    cpus: list[float] = []
    shape: tuple[int, ...] = ()
    for _ in range(repeats):
        t0 = time.perf_counter()
        if reader == "ours":
            (series,) = [s for st in scan(folder) for s in st.series]
            files = [str(f) for f in series.files]
        else:
            files = list(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder)))
        t1, c1 = time.perf_counter(), _cpu_s()
        if reader == "ours":
            array = load_series(series).array
        else:
            r = sitk.ImageSeriesReader()
            r.SetFileNames(files)
            array = sitk.GetArrayFromImage(r.Execute())
        t2, c2 = time.perf_counter(), _cpu_s()
        shape = tuple(array.shape)
        del array
        scans.append(t1 - t0)
        loads.append(t2 - t1)
        cpus.append(c2 - c1)
    return {
        "reader": reader,
        "shape": shape,
        "scan_best": min(scans),
        "load_best": min(loads),
        "load_median": statistics.median(loads),
        "cpu_best": min(cpus),
        "peak_mb": _rss_mb(),
        "baseline_mb": baseline,
    }


def synthetic_ct(out: Path, n_slices: int, real_ct: Path) -> str:
    """Write an n-slice 512x512 CT series into ``out``; return how it was made."""
    try:
        from dicom_samples.generate import generate_study

        generate_study(out, n_slices=n_slices, rows=512, seed=0)
        return "dicom_samples.generate.generate_study(rows=512, seed=0)"
    except Exception as err:  # noqa: BLE001 - another package in progress; fall back
        print(f"(generate_study unavailable: {type(err).__name__}; copying real slices)")
    from pydicom import dcmread
    from pydicom.uid import generate_uid

    sources = sorted(real_ct.glob("*.dcm"))
    study, series = generate_uid(), generate_uid()
    first = dcmread(sources[0], stop_before_pixels=True)
    x, y, z0 = (float(v) for v in first.ImagePositionPatient)
    for k in range(n_slices):
        ds = dcmread(sources[k % len(sources)])
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series
        ds.SOPInstanceUID = generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.ImagePositionPatient = [x, y, z0 + 1.0 * k]
        ds.SliceThickness = 1.0
        ds.InstanceNumber = k + 1
        ds.save_as(out / f"IM{k:04d}.dcm")
    return f"{len(sources)} real CT slices copied {n_slices} times with new positions/UIDs"


def run_case(name: str, folder: Path, repeats: int, rounds: int) -> list[dict[str, object]]:
    """Alternate the readers ``rounds`` times (fresh processes) and keep each one's best."""
    best: dict[str, dict[str, object]] = {}
    for reader in ("sitk", "ours") * rounds:
        proc = subprocess.run(
            [sys.executable, __file__, "--worker", reader, str(folder), "--repeats", str(repeats)],
            check=True,
            capture_output=True,
            text=True,
        )
        result = json.loads(proc.stdout.strip().splitlines()[-1])
        result["case"] = name
        if reader not in best or result["load_best"] < best[reader]["load_best"]:  # type: ignore[operator]
            best[reader] = result
    return [best["sitk"], best["ours"]]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--slices", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--worker", nargs=2, metavar=("READER", "FOLDER"))
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker[0], Path(args.worker[1]), args.repeats)))
        return

    shared = Path(os.environ.get("MEDVISION_SHARED_DATA", REPO.parent / "shared" / "data"))
    real_ct = shared / "ct" / "lung-pet-ct-dx-A0001" / "series-5mm"
    tmp = Path(tempfile.mkdtemp(prefix="bench-load-"))
    try:
        how = synthetic_ct(tmp, args.slices, real_ct)
        print(f"synthetic CT: {how}")
        print(f"cpus: {os.cpu_count()}, load average: {os.getloadavg()[0]:.2f}")
        rows = run_case("real CT 64 x 512²", real_ct, args.repeats, args.rounds)
        rows += run_case(f"synthetic CT {args.slices} x 512²", tmp, args.repeats, args.rounds)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    header = (
        "| case | reader | load best s | load median s | ours/sitk wall | load CPU s "
        "| ours/sitk CPU | scan s | peak RSS MB | RSS before load MB |"
    )
    print(header)
    print("|" + " --- |" * 10)
    for i in range(0, len(rows), 2):
        sitk_row, ours_row = rows[i], rows[i + 1]
        ratio = float(ours_row["load_best"]) / float(sitk_row["load_best"])
        cpu_ratio = float(ours_row["cpu_best"]) / float(sitk_row["cpu_best"])
        for row in (sitk_row, ours_row):
            ours = row is ours_row
            print(
                f"| {row['case']} | {'medvision' if ours else 'SimpleITK'} "
                f"| {row['load_best']:.3f} | {row['load_median']:.3f} "
                f"| {f'{ratio:.2f}' if ours else ''} | {row['cpu_best']:.3f} "
                f"| {f'{cpu_ratio:.2f}' if ours else ''} | {row['scan_best']:.3f} "
                f"| {row['peak_mb']:.0f} | {row['baseline_mb']:.0f} |"
            )


if __name__ == "__main__":
    main()
