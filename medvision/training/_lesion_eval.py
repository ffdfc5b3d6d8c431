"""``medvision evaluate lesions``: any pipeline on the three real chest CTs, one table.

Why through the :class:`~medvision.pipelines.Pipeline` contract: the figure published must
be the one a user gets, so each scan goes through exactly what ``medvision run`` does with
it (``accepts`` on the series' headers, then ``run`` on the loaded volume), and the
findings scored are the lesion findings the SEG and SR would carry. A series the pipeline
refuses is reported as refused, with its reason, and all its targets count as missed.

Scoring rules: :mod:`medvision.training._lesion_score`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

from medvision.findings import FindingKind
from medvision.pipelines import Pipeline
from medvision.training._lesion_cases import (
    CASES,
    RealCase,
    find_series,
    load_reference,
)
from medvision.training._lesion_score import BoxReference, CaseScore, score_case

#: The targets of issue 12, per unseen patient.
TARGET_HIT = 0.8
TARGET_FP = 3
TARGET_DICE = 0.5
TARGET_IN_BOX = 0.5


def evaluate_case(pipeline: Pipeline, case: RealCase, run_refused: bool = False) -> dict[str, Any]:
    """One row: the case, whether the pipeline took it, its figures and its findings.

    ``run_refused`` runs the pipeline on a series it refuses too (to measure detection
    apart from the acceptance rules); the row then says it was refused.
    """
    from medvision.dicom import load_series

    series = find_series(case)
    volume = load_series(series)
    ref = load_reference(case, volume)
    row: dict[str, Any] = {
        "case": case.name,
        "about": case.about,
        "slices": volume.shape[0],
        "slice_mm": round(float(volume.spacing[2]), 3),
        "reference": "boxed slices" if isinstance(ref, BoxReference) else "nodules",
    }
    acceptance = pipeline.accepts(series)
    if not acceptance and run_refused:
        row["refused_but_run"] = acceptance.reason
    elif not acceptance:
        score = score_case([], ref)
        return row | {"refused": acceptance.reason} | _figures(score) | {"findings_detail": []}
    start = time.perf_counter()
    findings = pipeline.run(volume)
    row["seconds"] = round(time.perf_counter() - start, 1)
    lesions = [f for f in findings.items if f.label.kind is FindingKind.LESION]
    score = score_case([f.mask for f in lesions], ref)
    row["quality_flags"] = list(findings.quality_flags)
    row["findings_detail"] = [
        {
            "finding": f.tracking_id,
            "volume_ml": round(f.measurements.volume_ml, 3),
            "mean_hu": round(f.measurements.mean_hu, 1),
            "slice": f.measurements.centroid_slice,
            "confidence": f.confidence,
            "outcome": outcome,
        }
        for f, outcome in zip(lesions, score.outcomes, strict=True)
    ]
    return row | _figures(score)


def _figures(score: CaseScore) -> dict[str, Any]:
    return {
        "targets": score.targets,
        "hits": score.hits,
        "hit_fraction": None if score.hit_fraction is None else round(score.hit_fraction, 3),
        "findings": score.findings,
        "false_positives": score.false_positives,
        "irrelevant": score.irrelevant,
        "most_findings_on_one_tumour": score.most_findings_on_one_tumour,
        "dice": None if score.dice is None else round(score.dice, 3),
        "in_box": None if score.in_box is None else round(score.in_box, 3),
    }


def evaluate_lesions(
    pipeline: Pipeline,
    cases: Sequence[RealCase] = CASES,
    on_row: Callable[[dict[str, Any]], None] | None = None,
    run_refused: bool = False,
) -> dict[str, Any]:
    """Every case's row, the totals and which targets are met on every case."""
    rows = []
    for case in cases:
        rows.append(evaluate_case(pipeline, case, run_refused))
        if on_row:
            on_row(rows[-1])
    return {
        "task": "lesions",
        "pipeline": pipeline.name,
        "version": pipeline.version,
        "cases": rows,
        "targets_met": targets_met(rows),
    }


def targets_met(rows: Sequence[dict[str, Any]]) -> dict[str, bool | None]:
    """Each target of issue 12, met on every patient it applies to (None: none applies)."""

    def every(values: list[bool]) -> bool | None:
        return all(values) if values else None

    return {
        "hit >= 80 %": every(
            [r["hit_fraction"] >= TARGET_HIT for r in rows if r["hit_fraction"] is not None]
        ),
        "FP <= 3 per scan": every([r["false_positives"] <= TARGET_FP for r in rows]),
        "LIDC Dice >= 0.5": every(
            [r["dice"] >= TARGET_DICE for r in rows if r["dice"] is not None]
        ),
        "in-box >= 50 %": every(
            [
                (r["in_box"] or 0.0) >= TARGET_IN_BOX
                for r in rows
                if r["reference"] == "boxed slices"
            ]
        ),
        "one tumour, one finding": every(
            [r["most_findings_on_one_tumour"] <= 1 for r in rows if r["targets"]]
        ),
    }


HEADER = (
    f"{'patient':<15} {'scan':<16} {'hits':<17} {'FP':>3} {'other':>5} "
    f"{'per tumour':>10} {'Dice':>5} {'in-box':>6} {'time':>6}"
)


def format_row(row: dict[str, Any]) -> str:
    """One patient's line of the table (see :data:`HEADER`)."""
    unit = "slices" if row["reference"] == "boxed slices" else "nodules"
    hits = f"{row['hits']}/{row['targets']} {unit}"
    scan = f"{row['slices']} x {row['slice_mm']:g} mm"

    def num(value: float | None, fmt: str) -> str:
        return "-" if value is None else format(value, fmt)

    if "refused" in row:
        return f"{row['case']:<15} {scan:<16} {hits:<17} refused: {row['refused']}"
    per_tumour = str(row["most_findings_on_one_tumour"]) if row["targets"] else "-"
    seconds = f"{row['seconds']:.0f} s" if "seconds" in row else "-"
    note = " (refused by acceptance; run anyway)" if "refused_but_run" in row else ""
    return (
        f"{row['case']:<15} {scan:<16} {hits:<17} {row['false_positives']:>3} "
        f"{row['irrelevant']:>5} {per_tumour:>10} {num(row['dice'], '.2f'):>5} "
        f"{num(row['in_box'], '.0%'):>6} {seconds:>6}{note}"
    )


def format_table(result: dict[str, Any]) -> str:
    """The table ``medvision evaluate lesions`` prints."""
    rows = result["cases"]
    lines = [f"lesions: {result['pipeline']} {result['version']}", HEADER]
    lines += [format_row(r) for r in rows]
    hits = sum(r["hits"] for r in rows)
    targets = sum(r["targets"] for r in rows)
    fp = sum(r["false_positives"] for r in rows) / max(1, len(rows))
    lines.append(f"{'all':<15} {'':<16} {f'{hits}/{targets}':<17} {fp:>3.1f} (mean FP per scan)")
    met = ", ".join(
        f"{name}: {'-' if ok is None else ('met' if ok else 'NOT met')}"
        for name, ok in result["targets_met"].items()
    )
    lines.append(f"targets on every patient: {met}")
    lines.append(
        "hits: reader-confirmed nodules >= 6 mm (>= 3 of 4 readers) or boxed slices; "
        "FP: findings on no mark; other: findings on marks that are not targets (LUNA16); "
        "per tumour: most findings on one tumour; Dice vs >= 2 readers' outline; "
        "in-box: tumour findings' voxels on boxed slices inside the boxes"
    )
    return "\n".join(lines)


__all__ = [
    "HEADER",
    "evaluate_case",
    "evaluate_lesions",
    "format_row",
    "format_table",
    "targets_met",
]
