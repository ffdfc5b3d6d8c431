"""One study in, results out: the offline path that the node's worker also calls.

``run_study`` finds the studies under a path, lets every requested pipeline choose its
series, loads it, runs the pipeline and writes SEG, SR, ``findings.json`` and an audit
record per (study, pipeline). It never raises for bad input: every problem becomes a
:class:`PipelineRun` with status ``refused`` or ``failed`` and a one-line reason, recorded
in the audit trail, so that one bad series cannot stop the others. A pipeline that is not
for the study at all (another modality or body part: :attr:`Selection.applicable`) is
``not-applicable``: no folder, no audit record, not an error.
"""

from __future__ import annotations

import platform
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import medvision
from medvision import pipelines
from medvision._hashing import sha256_file
from medvision.audit import JsonlAuditLog
from medvision.dicom import SeriesInfo, StudyInfo, load_series, scan
from medvision.errors import MedvisionError, NoMatchingSeries
from medvision.findings import Findings
from medvision.pipelines import Pipeline, Progress, no_progress
from medvision.results import ResultFiles, write_results

#: How a run that started ended; each is audited as ``run.<status>``.
Status = Literal["done", "refused", "failed"]
#: A pipeline that is not for the study never starts: no folder, no audit record.
NOT_APPLICABLE: Literal["not-applicable"] = "not-applicable"
#: Makes a progress callback for one (study, pipeline); the CLI draws a bar with it.
ProgressFactory = Callable[[str], Progress]


@dataclass
class PipelineRun:
    """What happened to one study under one pipeline."""

    pipeline: str
    study_instance_uid: str
    status: Status | Literal["not-applicable"]
    reason: str = ""
    series_instance_uid: str | None = None
    findings: Findings | None = None
    files: ResultFiles | None = None
    out_dir: Path | None = None
    timings_s: dict[str, float] = field(default_factory=dict)


def run_study(
    path: Path,
    out_dir: Path,
    pipeline_names: Sequence[str] | None = None,
    progress: ProgressFactory | None = None,
    *,
    overlays: bool = False,
    planar_sr: bool = False,
) -> list[PipelineRun]:
    """Run the pipelines on every study under ``path``; results go to ``out_dir``.

    Results of study S under pipeline P go to ``out_dir/S/P/``. Raises only
    :class:`~medvision.errors.NoDicomFound` (nothing to do at all) or
    :class:`~medvision.errors.UnknownPipeline` for an unknown pipeline name, before any
    work is done.
    """
    names = list(pipeline_names or pipelines.available())
    chosen = [pipelines.get(name) for name in names]
    studies = scan(path)
    runs: list[PipelineRun] = []
    for study in studies:
        for pipeline in chosen:
            selection = pipeline.select(study.series)
            if not selection.applicable:
                runs.append(
                    PipelineRun(
                        pipeline.name,
                        study.study_instance_uid,
                        NOT_APPLICABLE,
                        reason=selection.reason,
                    )
                )
                continue
            report = progress(f"{pipeline.name}") if progress else no_progress
            runs.append(
                run_pipeline(
                    study,
                    pipeline,
                    Path(out_dir) / study.study_instance_uid / pipeline.name,
                    report,
                    overlays=overlays,
                    planar_sr=planar_sr,
                )
            )
    return runs


def run_pipeline(
    study: StudyInfo,
    pipeline: Pipeline,
    out_dir: Path,
    progress: Progress = no_progress,
    *,
    overlays: bool = False,
    planar_sr: bool = False,
) -> PipelineRun:
    """Select, load, run, write and audit one pipeline on one study; never raises.

    The node's worker calls this very function for each job. ``overlays`` also writes
    Secondary Capture overlays and a KOS for viewers without SEG support; ``planar_sr``
    also writes sr-planar.dcm, the lesions' axes on their key slices (for OHIF).
    """
    audit = JsonlAuditLog(out_dir / "audit.jsonl")
    run = PipelineRun(pipeline.name, study.study_instance_uid, "failed", out_dir=out_dir)
    audit.record(
        "run.started",
        medvision_version=medvision.__version__,
        host=platform.node(),
        pipeline=pipeline.name,
        pipeline_version=pipeline.version,
        study_instance_uid=study.study_instance_uid,
        series_available=len(study.series),
    )
    t0 = time.perf_counter()
    try:
        series = _select(study, pipeline, audit)
        run.series_instance_uid = series.series_instance_uid
        t = time.perf_counter()
        progress("load", 0.0)
        volume = load_series(series)
        run.timings_s["load"] = time.perf_counter() - t
        audit.record(
            "series.read",
            series_instance_uid=series.series_instance_uid,
            modality=series.modality,
            instances=[
                {"sop_instance_uid": uid, "sha256": digest}
                for uid, digest in _instance_digests(series, volume.sop_instance_uids)
            ],
            shape=list(volume.shape),
            spacing_mm=list(volume.spacing),
            seconds=round(run.timings_s["load"], 3),
        )
        t = time.perf_counter()
        findings = pipeline.run(volume, _within(progress, 0.05, 0.9))
        run.timings_s["inference"] = time.perf_counter() - t
        audit.record(
            "model.ran",
            algorithm=findings.algorithm.to_json(),
            findings=len(findings.items),
            lesions=len(findings.lesions),
            quality_flags=list(findings.quality_flags),
            seconds=round(run.timings_s["inference"], 3),
        )
        t = time.perf_counter()
        progress("write", 0.95)
        files = write_results(
            findings, out_dir, labels=pipeline.labels, overlays=overlays, planar_sr=planar_sr
        )
        run.timings_s["write"] = time.perf_counter() - t
        audit.record(
            "results.written",
            files=[
                {"file": p.name, "sha256": sha256_file(p), **extra}
                for p, extra in (
                    (files.seg_path, {"sop_instance_uid": files.seg_sop_instance_uid}),
                    (files.sr_path, {"sop_instance_uid": files.sr_sop_instance_uid}),
                    (
                        files.planar_sr_path,
                        {"sop_instance_uid": files.planar_sr_sop_instance_uid},
                    ),
                    (files.json_path, {}),
                    *(
                        (path, {"sop_instance_uid": uid})
                        for path, uid in zip(
                            files.overlay_paths, files.overlay_sop_instance_uids, strict=True
                        )
                    ),
                    (files.kos_path, {"sop_instance_uid": files.kos_sop_instance_uid}),
                )
                if p is not None
            ],
            seconds=round(run.timings_s["write"], 3),
        )
        progress("done", 1.0)
        run.status, run.findings, run.files = "done", findings, files
    except NoMatchingSeries as err:
        run.status, run.reason = "refused", str(err)
    except MedvisionError as err:
        run.status, run.reason = "failed", str(err)
    except Exception as err:  # a bug, not bad input: still audited, still one line
        run.status, run.reason = "failed", f"internal error: {type(err).__name__}: {err}"
    run.timings_s["total"] = time.perf_counter() - t0
    audit.record(
        f"run.{run.status}",
        outcome="success" if run.status == "done" else "failure",
        reason=run.reason,
        series_instance_uid=run.series_instance_uid,
        timings_s={k: round(v, 3) for k, v in run.timings_s.items()},
    )
    return run


def _within(progress: Progress, start: float, end: float) -> Progress:
    """Map a pipeline's own 0..1 progress into its share of the whole run."""

    def report(stage: str, fraction: float) -> None:
        if stage != "done":
            progress(stage, start + (end - start) * max(0.0, min(1.0, fraction)))

    return report


def _select(study: StudyInfo, pipeline: Pipeline, audit: JsonlAuditLog) -> SeriesInfo:
    selection = pipeline.select(study.series)
    chosen = selection.chosen
    audit.record(
        "series.selected",
        outcome="success" if chosen else "failure",
        chosen=chosen.series_instance_uid if chosen else None,
        candidates=[
            {
                "series_instance_uid": s.series_instance_uid,
                "series_number": s.series_number,
                "modality": s.modality,
                "accepted": a.accepted,
                "applicable": a.applicable,
                "reason": a.reason,
            }
            for s, a in selection.decisions
        ],
    )
    if chosen is None:
        raise NoMatchingSeries(selection.reason)
    return chosen


def _instance_digests(series: SeriesInfo, sop_uids: Sequence[str]) -> list[tuple[str, str]]:
    """sha256 of each source file, so the audit proves exactly which bytes were analysed."""
    digests = {}
    for path in series.files:
        digests[path] = sha256_file(path)
    order = list(dict.fromkeys(sop_uids))
    by_uid = dict(zip(_file_uids(series), series.files, strict=False))
    return [(uid, digests.get(by_uid.get(uid, Path()), "")) for uid in order]


def _file_uids(series: SeriesInfo) -> list[str]:
    import pydicom

    return [
        str(
            pydicom.dcmread(p, stop_before_pixels=True, specific_tags=["SOPInstanceUID"]).get(
                "SOPInstanceUID", ""
            )
        )
        for p in series.files
    ]


__all__ = ["PipelineRun", "ProgressFactory", "run_pipeline", "run_study"]
