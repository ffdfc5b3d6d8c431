"""Per pipeline: time and peak memory of load + inference + result writing.

    python bench/inference.py [--pipeline lung-ct ...] [--bundle DIR ...] [--nnunet DIR ...]
                              [--slices 300 | --case DIR ...] [--device cpu] [--device cuda]
                              [--case-timeout S] [--json-out F]

Cases: the real 64-slice chest CT and the real Philips 3 T T1 MPRAGE (shared data), and a
300-slice 512x512 synthetic chest CT made by ``dicom_samples.generate_study``; each pipeline
runs on the cases it accepts (a brain MR model is not run on a chest CT). Each (pipeline,
case, device, AMP) runs in a fresh subprocess so that its peak resident memory is its own.
Stages are timed separately: ``load`` (series -> Volume), ``inference`` (``Pipeline.run``)
and ``write`` (SEG + SR + findings.json). On CUDA the first inference includes the CUDA
context, kernel loading and cuDNN's algorithm search; a second, warm ``Pipeline.run`` in the
same process is timed too, and the GPU's peak allocated memory is reported. Bundle
pipelines run on the GPU with and without AMP (fp16 autocast); the classical ``lung-ct``
has no GPU path and runs on the CPU regardless, so it is run once, as a CPU case.

``--bundle DIR`` adds a bundle folder that is not installed (e.g. a MONAI Model Zoo config
without weights: it then runs UNTRAINED, with seed-0 weights, and its row says so; only its
time and memory mean anything).

``--nnunet RESULTS_DIR`` adds an nnU-Net v2 results folder (``dataset.json``, ``plans.json``,
``fold_*/checkpoint_final.pth``; e.g. a TotalSegmentator model, or the tiny test model in
``tests/fixtures/nnunet``): it is imported with ``medvision models import nnunet``'s defaults
into a temporary model folder and run as that pipeline, through nnU-Net's own predictor,
without test-time mirroring as TotalSegmentator runs its models (``--nnunet-mirroring``:
nnU-Net's default, 8 passes in 3-D). nnU-Net chooses its own mixed precision on CUDA, so its
rows have no AMP variants; the TTA column says whether mirroring is on. An already imported
model runs with ``--pipeline NAME`` like any other.
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


def _build(pipeline_name: str, bundle: str | None) -> object:
    from medvision import pipelines

    if bundle:
        from medvision.pipelines.bundle import BundlePipeline

        return BundlePipeline(Path(bundle), allow_untrained=True)
    return pipelines.get(pipeline_name)


def worker(job: dict[str, object]) -> dict[str, object]:
    """Runs in the subprocess: one pipeline on one series, stage by stage."""
    import torch

    from medvision.dicom import load_series, scan
    from medvision.results import write_results

    baseline = _rss_mb()
    pipeline = _build(str(job["pipeline"]), job.get("bundle"))  # type: ignore[arg-type]
    (study,) = scan(Path(str(job["folder"])))
    series = pipeline.choose(list(study.series))  # type: ignore[attr-defined]
    if series is None:
        return {"skip": "series not accepted"}
    runtime = None
    if hasattr(pipeline, "runtime"):  # a MONAI bundle: AMP is its runtime's switch
        runtime = pipeline.runtime()
        if hasattr(runtime, "amp"):  # nnU-Net's predictor decides for itself
            runtime.amp = bool(job["amp"])
    t0 = time.perf_counter()
    volume = load_series(series)
    t1 = time.perf_counter()
    findings = pipeline.run(volume)  # type: ignore[attr-defined]
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    t2 = time.perf_counter()
    warm = None
    on_gpu = runtime is not None and runtime.device.type == "cuda"
    if on_gpu:
        pipeline.run(volume)  # type: ignore[attr-defined]
        torch.cuda.synchronize()
        warm = time.perf_counter() - t2
    t3 = time.perf_counter()
    with tempfile.TemporaryDirectory() as out:
        write_results(findings, Path(out), labels=pipeline.labels)  # type: ignore[attr-defined]
    t4 = time.perf_counter()
    algo = findings.algorithm
    return {
        "name": pipeline.name,  # type: ignore[attr-defined]
        "untrained": bool(runtime is not None and runtime.weights.untrained),
        "gpu_path": runtime is not None,
        "device": str(runtime.device) if runtime is not None else "cpu",
        "gpu": torch.cuda.get_device_name(0) if on_gpu else None,
        "torch_threads": torch.get_num_threads(),
        "tta_passes": _tta(algo.parameters) if algo else "",
        "nnunet": "use_mirroring" in (algo.parameters if algo else {}),
        "shape": list(volume.shape),
        "load_s": t1 - t0,
        "inference_s": t2 - t1,
        "inference_warm_s": warm,
        "write_s": t4 - t3,
        "total_s": (t1 - t0) + (t2 - t1) + (t4 - t3),
        "findings": len(findings.items),
        "peak_rss_mb": _rss_mb(),
        "baseline_rss_mb": baseline,
        "gpu_peak_alloc_mb": torch.cuda.max_memory_allocated() / 2**20 if on_gpu else None,
        "gpu_peak_reserved_mb": torch.cuda.max_memory_reserved() / 2**20 if on_gpu else None,
    }


def _tta(parameters: dict[str, str]) -> str:
    if "use_mirroring" in parameters:  # nnU-Net: its flips over the allowed axes, or none
        return "mirroring" if parameters["use_mirroring"] == "True" else "0"
    return parameters.get("tta_passes", "")


def _run_case(job: dict[str, object], device: str, timeout: float | None) -> dict[str, object]:
    env = dict(os.environ)
    if device == "cpu":
        env["CUDA_VISIBLE_DEVICES"] = ""
    try:
        out = subprocess.run(
            [sys.executable, __file__, "--worker", json.dumps(job)],
            capture_output=True,
            text=True,
            env=env,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired:
        return {"error": f"stopped after {timeout:.0f} s"}
    if out.returncode != 0:
        tail = (out.stderr.strip().splitlines() or ["?"])[-1]
        return {"error": f"failed: {tail[:200]}"}
    return json.loads(out.stdout.strip().splitlines()[-1])


def _f(value: object, fmt: str = "{:.2f}") -> str:
    return "—" if value is None else fmt.format(value)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pipeline", action="append", help="default: every registered one")
    parser.add_argument("--bundle", action="append", default=[], type=Path, help="bundle folder")
    parser.add_argument(
        "--nnunet", action="append", default=[], type=Path, help="nnU-Net v2 results folder"
    )
    parser.add_argument(
        "--nnunet-mirroring", action="store_true", help="--nnunet models with mirroring TTA"
    )
    parser.add_argument("--slices", type=int, default=300)
    parser.add_argument(
        "--case", action="append", default=[], type=Path,
        help="a study folder to run instead of the standard cases (repeatable)",
    )  # fmt: skip
    parser.add_argument(
        "--device", action="append", choices=["cpu", "cuda"], help="default: cpu; repeatable"
    )
    parser.add_argument("--no-amp", action="store_true", help="on cuda: only AMP off")
    parser.add_argument("--case-timeout", type=float, default=None, help="seconds per case")
    parser.add_argument("--json-out", type=Path, default=None, help="append one JSON per row")
    parser.add_argument("--shared-data", type=Path, default=None)
    args = parser.parse_args()

    from medvision import pipelines
    from tests.conftest import shared_data_dir

    devices = args.device or ["cpu"]
    jobs: list[dict[str, object]] = []
    names = args.pipeline if args.pipeline is not None else []
    if not args.pipeline and not args.bundle and not args.nnunet:
        names = pipelines.available()
    jobs = [{"pipeline": n, "bundle": None} for n in names]
    jobs += [{"pipeline": b.name, "bundle": str(b.resolve())} for b in args.bundle]
    imported = tempfile.TemporaryDirectory()
    if args.nnunet:
        from medvision.pipelines.nnunet import import_nnunet

        # The workers find the imported models where `medvision run` would: the user's folder.
        os.environ["MEDVISION_MODELS_DIR"] = imported.name
        for results in args.nnunet:
            folder = import_nnunet(
                results.resolve(), Path(imported.name), use_mirroring=args.nnunet_mirroring
            )
            jobs.append({"pipeline": folder.name, "bundle": None})
    shared = args.shared_data or shared_data_dir()
    cases = {
        "real CT 64×512²": shared / "ct" / "lung-pet-ct-dx-A0001" / "series-5mm",
        "real MR T1 170×256²": shared / "mr" / "philips-3t-brain" / "classic-t1",
    }
    if args.case:
        cases = {f"{folder.name} (--case)": folder for folder in args.case}
    import torch

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
    with tempfile.TemporaryDirectory() as tmp:
        from dicom_samples import generate_study

        if not args.case:
            synthetic = Path(tmp) / "synthetic"
            generate_study(synthetic, n_slices=args.slices, rows=512, seed=0)
            cases[f"synthetic CT {args.slices}×512²"] = synthetic
        print(
            f"devices: {', '.join(devices)}; GPU: {gpu}; {os.cpu_count()} CPUs; "
            f"torch {torch.__version__}; load {os.getloadavg()[0]:.1f}"
        )
        print(
            "| pipeline | case | device | AMP | TTA passes | load s | inference s | "
            "warm inference s | write s | total s | peak RSS MB | GPU peak MB |"
        )
        print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
        from medvision.dicom import scan

        studies = {label: scan(folder)[0] for label, folder in cases.items()}
        skipped: set[str] = set()
        for job in jobs:
            # Which cases this pipeline accepts is decided here, cheaply (headers only): a
            # worker is started only for the cases it will run.
            chooser = _build(str(job["pipeline"]), job["bundle"])  # type: ignore[arg-type]
            nnunet = type(chooser).__name__ == "NnunetPipeline"
            for label, folder in cases.items():
                if chooser.choose(list(studies[label].series)) is None:  # type: ignore[attr-defined]
                    skipped.add(f"{job['pipeline']} on {label}")
                    continue
                done = False  # not accepted, or no GPU path: run once
                for device in devices:
                    once = device == "cpu" or args.no_amp or nnunet
                    for amp in [False] if once else [False, True]:
                        if done:
                            continue
                        r = _run_case(
                            {**job, "folder": str(folder), "amp": amp}, device, args.case_timeout
                        )
                        if "skip" in r:
                            skipped.add(f"{job['pipeline']} on {label}")
                            done = True
                            continue
                        row = {"case": label, "requested_device": device, "amp": amp, **job, **r}
                        if args.json_out:
                            with open(args.json_out, "a") as fh:
                                fh.write(json.dumps(row) + "\n")
                        if "error" in r:
                            print(
                                f"| {job['pipeline']} | {label} | {device} | {amp} | | "
                                f"{r['error']} | | | | | | |",
                                flush=True,
                            )
                            continue
                        name = r["name"] + (" (UNTRAINED)" if r["untrained"] else "")
                        amp_text = "nnU-Net's" if r["nnunet"] else ("on" if amp else "off")
                        dev = r["device"] if r["device"] == "cpu" else f"{r['device']} ({r['gpu']})"
                        if not r["gpu_path"]:
                            dev = "cpu (no GPU path)"
                            done = True  # once, whatever the devices asked
                        print(
                            f"| {name} | {label} | {dev} | {amp_text} | "
                            f"{r['tta_passes']} | {r['load_s']:.2f} | {r['inference_s']:.2f} | "
                            f"{_f(r['inference_warm_s'])} | {r['write_s']:.2f} | "
                            f"{r['total_s']:.2f} | {r['peak_rss_mb']:.0f} | "
                            f"{_f(r['gpu_peak_alloc_mb'], '{:.0f}')} |",
                            flush=True,
                        )
        if skipped:
            print(f"\nnot accepted (not run): {'; '.join(sorted(skipped))}")
    imported.cleanup()
    return 0


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] == "--worker":
        print(json.dumps(worker(json.loads(sys.argv[2]))))
        sys.exit(0)
    sys.exit(main())
