"""Per pipeline: time and peak memory of load + inference + result writing.

    python bench/inference.py [--pipeline lung-ct ...] [--slices 300] [--device cpu|cuda]

Cases: the real 64-slice chest CT (shared data) and a 300-slice 512x512 synthetic chest CT
made by ``dicom_samples.generate_study``. Each (pipeline, case) runs in a fresh subprocess so
that its peak resident memory (``ru_maxrss``) is its own. Stages are timed separately:
``load`` (series -> Volume), ``inference`` (``Pipeline.run``) and ``write`` (SEG + SR +
findings.json). With ``--device cuda`` (a lent GPU), bundle pipelines run on the GPU with
and without AMP; the classical ``lung-ct`` has no GPU path and runs on the CPU regardless.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


def worker(pipeline_name: str, folder: Path, amp: bool) -> dict[str, object]:
    """Runs in the subprocess: one pipeline on one series, stage by stage."""
    from medvision import pipelines
    from medvision.dicom import load_series, scan
    from medvision.results import write_results

    baseline = _rss_mb()
    pipeline = pipelines.get(pipeline_name)
    if hasattr(pipeline, "runtime"):  # a MONAI bundle: AMP is its runtime's switch
        pipeline.runtime().amp = amp
    (study,) = scan(folder)
    series = pipeline.choose(list(study.series))
    if series is None:
        return {"error": "series not accepted"}
    t0 = time.perf_counter()
    volume = load_series(series)
    t1 = time.perf_counter()
    findings = pipeline.run(volume)
    t2 = time.perf_counter()
    with tempfile.TemporaryDirectory() as out:
        write_results(findings, Path(out), labels=pipeline.labels)
    t3 = time.perf_counter()
    return {
        "shape": list(volume.shape),
        "load_s": t1 - t0,
        "inference_s": t2 - t1,
        "write_s": t3 - t2,
        "total_s": t3 - t0,
        "findings": len(findings.items),
        "peak_rss_mb": _rss_mb(),
        "baseline_rss_mb": baseline,
    }


def _run_case(pipeline: str, folder: Path, amp: bool, device: str) -> dict[str, object]:
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": os.environ.get("CUDA_VISIBLE_DEVICES", "")}
    if device == "cpu":
        env["CUDA_VISIBLE_DEVICES"] = ""
    out = subprocess.run(
        [sys.executable, __file__, "--worker", pipeline, str(folder), "--amp" if amp else ""],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pipeline", action="append", help="default: every registered one")
    parser.add_argument("--slices", type=int, default=300)
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--shared-data", type=Path, default=None)
    args = parser.parse_args()

    from medvision import pipelines
    from tests.conftest import shared_data_dir

    names = args.pipeline or pipelines.available()
    shared = args.shared_data or shared_data_dir()
    cases = {"real CT 64x512^2": shared / "ct" / "lung-pet-ct-dx-A0001" / "series-5mm"}
    with tempfile.TemporaryDirectory() as tmp:
        from dicom_samples import generate_study

        synthetic = Path(tmp) / "synthetic"
        generate_study(synthetic, n_slices=args.slices, rows=512, seed=0)
        cases[f"synthetic CT {args.slices}x512^2"] = synthetic
        print(f"device: {args.device}; {os.cpu_count()} CPUs; load {os.getloadavg()[0]:.1f}")
        print("| pipeline | case | AMP | load s | inference s | write s | total s | peak RSS MB |")
        print("| --- | --- | --- | --- | --- | --- | --- | --- |")
        for name in names:
            for label, folder in cases.items():
                for amp in [False, True] if args.device == "cuda" else [False]:
                    r = _run_case(name, folder, amp, args.device)
                    if "error" in r:
                        print(f"| {name} | {label} | {amp} | {r['error']} | | | | |")
                        continue
                    print(
                        f"| {name} | {label} | {'on' if amp else 'off'} | {r['load_s']:.2f} | "
                        f"{r['inference_s']:.2f} | {r['write_s']:.2f} | {r['total_s']:.2f} | "
                        f"{r['peak_rss_mb']:.0f} |",
                        flush=True,
                    )
    return 0


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        result = worker(
            sys.argv[2], Path(sys.argv[3]), amp=len(sys.argv) > 4 and sys.argv[4] == "--amp"
        )
        print(json.dumps(result))
        sys.exit(0)
    sys.exit(main())
