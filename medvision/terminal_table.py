"""The findings table `medvision run` prints in the terminal (QA reports are `reports/`)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from medvision.findings import key_slice_number

if TYPE_CHECKING:
    from medvision.runner import PipelineRun


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def findings_table(run: PipelineRun) -> str:
    """A short fixed-width table: one row per finding, then where the files are.

    "slice" is the finding's key slice, numbered as everywhere else (medvision.findings._slices).
    """
    assert run.findings is not None
    f = run.findings
    lines = [
        f"{f.pipeline} {f.pipeline_version} on series {f.volume.series_instance_uid} "
        f"({f.volume.modality}, {f.volume.shape[0]} slices)",
        f"{'#':>3}  {'finding':<14} {'site':<18} {'vol mL':>8} {'long mm':>8} "
        f"{'short mm':>8} {'mean ' + f.intensity_unit:>11} {'conf':>5}  slice",
    ]
    for item in f.items:
        m = item.measurements
        site = item.site or item.label.site
        lines.append(
            f"{item.number:>3}  {item.tracking_id[:14]:<14} "
            f"{(site.meaning if site else '-')[:18]:<18} {m.volume_ml:>8.2f} "
            f"{_fmt(m.long_axis_mm, '8.1f'):>8} {_fmt(m.short_axis_mm, '8.1f'):>8} "
            f"{m.mean_hu:>11.0f} {item.confidence:>5.2f}  {key_slice_number(m)}"
        )
    if not f.lesions:
        lines.append("     no lesion found")
    for flag in f.quality_flags:
        lines.append(f"  quality: {flag}")
    if run.out_dir is not None:
        lines.append(f"  written to {run.out_dir}/ (seg.dcm, sr.dcm, findings.json, audit.jsonl)")
    return "\n".join(lines)


__all__ = ["findings_table"]
