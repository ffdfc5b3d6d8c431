"""Writing the results (SEG + TID 1500 SR + findings.json) against the analysis and a bare SEG.

    .venv/bin/python bench/results.py [--rounds 5] [--overlays] [--pipeline lung-ct]

One process: the real 64-slice chest CT (shared data) is loaded and analysed once by the
pipeline (default ``lung-ct``), then ``write_results`` writes the findings into a temporary
folder, repeatedly. Each step is timed as CPU time of the process (``time.process_time``:
user + system of every thread, the steadier figure on a shared machine) and as wall time.

Two yardsticks, both measured in the same run:

* **analysis**: ``Pipeline.run`` on the same volume. ``write / analysis`` is the share of a
  job that goes to writing; the target is at most 0.20.
* **bare SEG**: highdicom encoding the same masks as a Segmentation with nothing of ours in
  it: the Volume's own source headers as they are, one minimal segment description per
  finding, the masks stacked along the last axis (the plain way to call it), empty frames
  omitted, then ``save_as`` into memory. ``write / bare SEG`` says how many such encodes our
  complete result set (SEG with repaired headers and full descriptions, the SR, findings.json,
  fsync'ed files) costs; it cannot go below about 1, since the SEG is part of the writing.

The first write in the process is reported on its own ("cold"): it also pays one-time
costs (highdicom loading its tables of the standard, ~0.5 s), which a long-lived worker pays
once for its first job only. The other rounds ("warm") run the bare SEG and the write in
alternating order; the medians are reported.
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def _timed(fn: Callable[[], object]) -> tuple[float, float]:
    """(CPU s, wall s) of one call."""
    cpu, wall = time.process_time(), time.perf_counter()
    fn()
    return time.process_time() - cpu, time.perf_counter() - wall


def bare_seg(findings) -> None:  # noqa: ANN001 - medvision.findings.Findings
    """highdicom alone: the same masks as a BINARY Segmentation, encoded into memory."""
    import highdicom as hd
    from pydicom.sr.codedict import codes

    algorithm = hd.AlgorithmIdentificationSequence(
        name="bench", family=codes.cid7162.ArtificialIntelligence, version="0"
    )
    descriptions = [
        hd.seg.SegmentDescription(
            segment_number=n,
            segment_label=f"segment {n}",
            segmented_property_category=codes.SCT.MorphologicallyAbnormalStructure,
            segmented_property_type=codes.SCT.Neoplasm,
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
            algorithm_identification=algorithm,
        )
        for n in range(1, len(findings.items) + 1)
    ]
    with warnings.catch_warnings():  # highdicom's person-name warning quotes the patient's name
        warnings.filterwarnings("ignore", message=".*intended person name.*")
        seg = _bare_segmentation(findings, descriptions)
    seg.save_as(io.BytesIO(), enforce_file_format=True)


def _bare_segmentation(findings, descriptions):  # noqa: ANN001, ANN202
    import highdicom as hd
    import numpy as np

    return hd.seg.Segmentation(
        source_images=findings.volume.source_headers,
        pixel_array=np.stack([f.mask for f in findings.items], axis=-1),
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=descriptions,
        series_instance_uid=hd.UID(),
        series_number=1,
        sop_instance_uid=hd.UID(),
        instance_number=1,
        manufacturer="bench",
        manufacturer_model_name="bench",
        software_versions="0",
        device_serial_number="0",
        omit_empty_frames=True,
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5, help="warm rounds (default 5)")
    parser.add_argument("--pipeline", default="lung-ct")
    parser.add_argument("--overlays", action="store_true", help="write overlays and KOS too")
    parser.add_argument("--shared-data", type=Path, default=None)
    args = parser.parse_args()

    from medvision import pipelines
    from medvision.dicom import load_series, scan
    from medvision.results import write_results
    from tests.conftest import shared_data_dir

    folder = (args.shared_data or shared_data_dir()) / "ct" / "lung-pet-ct-dx-A0001" / "series-5mm"
    pipeline = pipelines.get(args.pipeline)
    (study,) = scan(folder)
    series = pipeline.choose(list(study.series))
    if series is None:
        print(f"{args.pipeline} does not accept {folder}")
        return 1
    volume = load_series(series)
    print(
        f"{os.cpu_count()} CPUs; load average {os.getloadavg()}; case {folder.name} "
        f"{volume.shape}; pipeline {args.pipeline}; overlays {args.overlays}"
    )

    result: dict[str, object] = {}

    def analyse() -> None:
        result["findings"] = pipeline.run(volume)

    analysis = _timed(analyse)
    findings = result["findings"]
    print(f"findings: {len(findings.items)}")

    def write() -> None:
        with tempfile.TemporaryDirectory() as out:
            write_results(findings, Path(out), labels=pipeline.labels, overlays=args.overlays)

    def bare() -> None:
        bare_seg(findings)

    cold = _timed(write)
    writes: list[tuple[float, float]] = []
    bares: list[tuple[float, float]] = []
    for n in range(args.rounds):
        for fn in (write, bare) if n % 2 else (bare, write):
            (writes if fn is write else bares).append(_timed(fn))

    def med(values: list[tuple[float, float]], i: int) -> float:
        return statistics.median(v[i] for v in values)

    w_cpu, w_wall = med(writes, 0), med(writes, 1)
    b_cpu, b_wall = med(bares, 0), med(bares, 1)
    print("| step | CPU s | wall s |")
    print("| --- | --- | --- |")
    print(f"| analysis (Pipeline.run, once) | {analysis[0]:.2f} | {analysis[1]:.2f} |")
    print(f"| write, cold (first in process) | {cold[0]:.2f} | {cold[1]:.2f} |")
    print(f"| write, warm (median of {args.rounds}) | {w_cpu:.2f} | {w_wall:.2f} |")
    print(f"| bare highdicom SEG (median of {args.rounds}) | {b_cpu:.2f} | {b_wall:.2f} |")
    print(
        f"write/analysis CPU: cold {cold[0] / analysis[0]:.2f}, warm {w_cpu / analysis[0]:.2f}"
        f" (target <= 0.20); wall: cold {cold[1] / analysis[1]:.2f}, "
        f"warm {w_wall / analysis[1]:.2f}"
    )
    print(f"write/bare SEG (warm medians): CPU {w_cpu / b_cpu:.2f}, wall {w_wall / b_wall:.2f}")
    print(f"load average after: {os.getloadavg()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
