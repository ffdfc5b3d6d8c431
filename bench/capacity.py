"""Capacity model: receivers and workers (CPU, GPU) for a number of studies a day.

Arithmetic only, from per-stage costs measured by the other benchmarks (each cost below
names its source) and stated assumptions, so that it can be re-run when a figure changes:

    python bench/capacity.py                                  # the table in docs/scaling.md
    python bench/capacity.py --costs my-costs.json            # replace any cost by name
    python bench/capacity.py --gpu-inference-s 6 --peak-share 0.12

Model: the reference study is a chest CT of 300 slices of 512² (158 MB, the size
bench/inference.py and bench/ingest.py use). A receiver spends ``ingest_s + send_s`` per
study (receiving it, delivering its results); a worker ``load_s + inference_s + write_s``.
A day's studies arrive with ``peak_share`` of them in the busiest hour, and every process
is planned to run at ``utilisation`` of its capacity in that hour (headroom for retries,
a lost worker, and the machines' noise). Units are sized as measured: a receiver as the
2-core machine of the figures with its default two acceptor processes, a CPU worker as one
process on it, a GPU worker as one process with
one GPU (``--concurrency 1``).
"""

from __future__ import annotations

import argparse
import json
import math
from dataclasses import dataclass, fields, replace
from pathlib import Path


@dataclass(frozen=True)
class Costs:
    """Seconds per reference study (300 × 512² CT), and the assumptions of the model."""

    #: Receiver, storing 300 instances: 440 inst/s with four associations over the default
    #: two acceptor processes, the median of the eight rounds of two runs of 1,200 instances
    #: on 2026-12-07 16:35-16:47 UTC (342-535 inst/s; Orthanc 318 in the same rounds, 1.38x;
    #: docs/benchmarks.md "What one and two cores allow": the 2-core development machine
    #: with nothing else running, the four storescu senders on the same cores). Before:
    #: 320 inst/s (``--ingest-s 0.94``, the runs before the command-set parser, 0.97-1.09x
    #: Orthanc); before the acceptor processes, at load 4-9: 67 inst/s (``--ingest-s 4.48``).
    ingest_s: float = 300 / 440
    #: Receiver, sending SEG + SR: ESTIMATED 16 MB of results (a binary SEG frame of
    #: 512²/8 = 32 KiB per slice with lung, two lung segments on ~80 % of 300 slices, plus
    #: a small SR) at 104 MB/s, Orthanc's durable one-association rate in the same run
    #: standing for the PACS; not measured on a 300-slice result.
    send_s: float = 16 / 104
    #: Worker, series → volume: bench/inference.py, 300 × 512², CPU (docs/benchmarks.md).
    load_s: float = 4.72
    #: Worker, lung-ct inference on CPU: bench/inference.py, 300 × 512².
    inference_s: float = 75.30
    #: Worker, SEG + SR + findings.json: 0.28 × the analysis, the warm CPU ratio of
    #: bench/results.py after the SEG/SR changes (docs/benchmarks.md "Writing results",
    #: 64 slices), applied to the 300-slice analysis. Before those changes
    #: bench/inference.py measured 78.66 s for this study (--write-s 78.66 to compare).
    write_s: float = 0.28 * 75.30
    #: Worker, inference on one GPU: the MONAI spleen bundle (untrained weights, 2 TTA
    #: passes, AMP off), warm, on an H200: 6.31 s for the real CT's 64 slices
    #: (docs/benchmarks.md "On a lent GPU"), scaled linearly to 300 slices; the 300-slice
    #: case itself was not measured there. Replace with a measured figure
    #: (``--gpu-inference-s``) when bench/inference.py --device cuda has one.
    gpu_inference_s: float = 6.31 * 300 / 64
    #: Broker: job queued → claimed by an idle worker: bench/scale.py, medians 24 and
    #: 13 ms in two runs (docs/scaling.md).
    broker_s: float = 0.02
    #: Study size, MB (for the ingest bandwidth and storage columns).
    study_mb: float = 158.0
    #: Share of a day's studies arriving in the busiest hour (ASSUMED: 10 %, i.e. 2.4× a
    #: flat day; radiology arrivals follow the working day).
    peak_share: float = 0.10
    #: Planned load of every process in the peak hour.
    utilisation: float = 0.70

    @property
    def receiver_s(self) -> float:
        return self.ingest_s + self.send_s

    @property
    def cpu_worker_s(self) -> float:
        return self.load_s + self.inference_s + self.write_s + self.broker_s

    @property
    def gpu_worker_s(self) -> float:
        return self.load_s + self.gpu_inference_s + self.write_s + self.broker_s

    def per_hour(self, seconds_per_study: float) -> float:
        """Studies one process serves in an hour at the planned utilisation."""
        return 3600 * self.utilisation / seconds_per_study

    def per_day(self, seconds_per_study: float) -> float:
        """Studies a day one process serves, given the peak hour."""
        return self.per_hour(seconds_per_study) / self.peak_share


@dataclass
class Plan:
    studies_per_day: int
    peak_per_hour: float
    peak_mb_s: float
    receivers: int
    cpu_workers: int
    gpu_workers: int


def plan(costs: Costs, studies_per_day: int) -> Plan:
    peak = studies_per_day * costs.peak_share
    return Plan(
        studies_per_day=studies_per_day,
        peak_per_hour=peak,
        peak_mb_s=peak * costs.study_mb / 3600,
        receivers=math.ceil(peak / costs.per_hour(costs.receiver_s)),
        cpu_workers=math.ceil(peak / costs.per_hour(costs.cpu_worker_s)),
        gpu_workers=math.ceil(peak / costs.per_hour(costs.gpu_worker_s)),
    )


def report(costs: Costs, volumes: list[int]) -> str:
    c = costs
    lines = [
        f"Reference study: CT 300 × 512², {c.study_mb:.0f} MB. Peak hour: "
        f"{100 * c.peak_share:.0f} % of the day ({24 * c.peak_share:.1f}× a flat day); "
        f"processes planned at {100 * c.utilisation:.0f} % in that hour.",
        "",
        "| process | seconds per study | stages | studies/h each | studies/day each |",
        "| --- | --- | --- | --- | --- |",
        f"| receiver | {c.receiver_s:.1f} | ingest {c.ingest_s:.1f} + send {c.send_s:.1f} "
        f"| {c.per_hour(c.receiver_s):.0f} | {c.per_day(c.receiver_s):.0f} |",
        f"| CPU worker | {c.cpu_worker_s:.1f} | load {c.load_s:.1f} + inference "
        f"{c.inference_s:.1f} + write {c.write_s:.1f} + broker {c.broker_s:.2f} "
        f"| {c.per_hour(c.cpu_worker_s):.1f} | {c.per_day(c.cpu_worker_s):.0f} |",
        f"| GPU worker | {c.gpu_worker_s:.1f} | load {c.load_s:.1f} + inference "
        f"{c.gpu_inference_s:.1f} (GPU) + write {c.write_s:.1f} + broker {c.broker_s:.2f} "
        f"| {c.per_hour(c.gpu_worker_s):.1f} | {c.per_day(c.gpu_worker_s):.0f} |",
        "",
        "| studies/day | peak studies/h | peak ingest MB/s | receivers "
        "| CPU workers | or GPU workers | stored per day |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for n in volumes:
        p = plan(c, n)
        lines.append(
            f"| {n:,} | {p.peak_per_hour:,.0f} | {p.peak_mb_s:.0f} | {p.receivers} "
            f"| {p.cpu_workers} | {p.gpu_workers} | {n * c.study_mb / 1e6:.2f} TB |"
        )
    gpu_share = c.gpu_inference_s / c.gpu_worker_s
    lines += [
        "",
        f"First bottleneck: the workers. A receiver (a 2-core host, two acceptor "
        f"processes) serves ~{c.per_day(c.receiver_s):,.0f} studies/day at this peak, and "
        f"several receivers share one PostgreSQL database and data folder (docs/scaling.md, "
        f"'Several receivers on one database'), so the receivers column is receiver hosts "
        f"of one deployment; what one database takes from many receivers was not measured. "
        f"Workers scale out behind the receivers. On a GPU worker the GPU can be "
        f"busy during inference only ({100 * gpu_share:.0f} % of a job, and part of that "
        f"stage is CPU-side resampling); loading and SEG/SR writing are CPU work, so run "
        f"--concurrency 2 or more per GPU to overlap them.",
    ]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--costs", type=Path, help="JSON object overriding any Costs field")
    parser.add_argument("--volumes", default="1000,10000,100000", help="studies per day")
    for f in fields(Costs):
        parser.add_argument(f"--{f.name.replace('_', '-')}", type=float, dest=f.name)
    args = parser.parse_args()
    costs = Costs()
    if args.costs:
        costs = replace(costs, **json.loads(args.costs.read_text()))
    given = {f.name: getattr(args, f.name) for f in fields(Costs)}
    costs = replace(costs, **{k: v for k, v in given.items() if v is not None})
    print(report(costs, [int(v) for v in args.volumes.split(",") if v]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
