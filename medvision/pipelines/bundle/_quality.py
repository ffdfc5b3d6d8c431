"""Input checks against a bundle's intended use, and the header rules that pick series.

Two levels, on purpose: :func:`check_series` rules a series out from its headers alone
(not applicable: wrong modality or body part; refused: too few slices, slices too thick),
so a pipeline never runs on what it cannot read; :func:`quality_flags` looks at the loaded
voxels and says, in words a reader understands, where the input departs from what the model
was made for (field of view, intensity range, untrained weights, high uncertainty). Flags
travel with the findings into findings.json and the report; they never stop a run.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np

from medvision.dicom import SeriesInfo, Volume
from medvision.pipelines._contract import Acceptance
from medvision.pipelines._rules import not_a_volume, volume_problem
from medvision.pipelines.bundle._spec import InputSpec, PipelineSpec

UNTRAINED_FLAG = "UNTRAINED MODEL: output meaningless (random weights; for testing only)"


def check_series(rule: InputSpec, series: SeriesInfo) -> Acceptance:
    """Whether ``series`` can fill ``rule``: accepted, refused, or not applicable.

    Modality, body part, a scout or a screen capture make the bundle *not applicable* (it
    is not made for such a series); unreadable volumes, a single slice, the wrong
    orientation, too few slices or too thick ones are *refusals*.
    """
    if series.modality.upper() != rule.modality:
        return Acceptance.not_applicable(
            f"modality {series.modality or 'unknown'}, needs {rule.modality}"
        )
    if rule.body_parts and series.body_part_examined.upper() not in rule.body_parts:
        return Acceptance.not_applicable(
            f"body part {series.body_part_examined or 'not given'}, "
            f"needs {'/'.join(rule.body_parts)}"
        )
    if why := not_a_volume(series):
        return Acceptance.not_applicable(why)
    if why := volume_problem(series):
        return Acceptance.refused(why)
    if rule.orientations and series.orientation.upper() not in rule.orientations:
        return Acceptance.refused(
            f"orientation {series.orientation or 'unknown'}, needs {'/'.join(rule.orientations)}"
        )
    if series.num_frames < rule.min_slices:
        return Acceptance.refused(f"{series.num_frames} slices, needs at least {rule.min_slices}")
    limit = rule.max_slice_thickness_mm
    if limit is not None and series.slice_thickness_mm is not None:
        if series.slice_thickness_mm > limit + 1e-3:
            return Acceptance.refused(
                f"slice thickness {series.slice_thickness_mm:g} mm, needs at most {limit:g} mm"
            )
    if rule.series_description is not None and not re.search(
        rule.series_description, series.series_description, flags=re.IGNORECASE
    ):
        return Acceptance.not_applicable(f"series description does not match {rule.key}")
    thickness = series.slice_thickness_mm or 10.0
    return Acceptance(True, score=-thickness + series.num_frames / 1e4)


def match_series(rule: InputSpec, series: SeriesInfo) -> str:
    """Why ``series`` cannot fill ``rule`` ("" when it can)."""
    return check_series(rule, series).reason


def quality_flags(
    spec: PipelineSpec,
    volumes: Sequence[Volume],
    *,
    untrained: bool = False,
) -> list[str]:
    """Human-readable departures of the loaded input from the intended use."""
    flags: list[str] = [UNTRAINED_FLAG] if untrained else []
    for rule, volume in zip(spec.inputs, volumes, strict=False):
        name = rule.key
        if volume.modality.upper() != rule.modality:
            flags.append(f"{name}: modality {volume.modality}, model made for {rule.modality}")
        thickness = float(volume.spacing[2])
        if rule.max_slice_thickness_mm is not None and thickness > rule.max_slice_thickness_mm:
            flags.append(
                f"{name}: slice spacing {thickness:.2g} mm exceeds the intended "
                f"{rule.max_slice_thickness_mm:g} mm"
            )
        if volume.shape[0] < rule.min_slices:
            flags.append(f"{name}: {volume.shape[0]} slices, intended at least {rule.min_slices}")
        fov = spec.intended_use.fov_mm
        if fov is not None:
            extent = max(n * s for n, s in zip(volume.shape[::-1], volume.spacing, strict=True))
            if not fov[0] <= extent <= fov[1]:
                flags.append(
                    f"{name}: field of view {extent:.0f} mm outside the intended "
                    f"{fov[0]:.0f}-{fov[1]:.0f} mm"
                )
        window = spec.intended_use.intensity_range
        if window is not None:
            sample = volume.array[:: max(1, volume.shape[0] // 32), ::4, ::4]
            low, high = (float(v) for v in np.percentile(sample, [1, 99]))
            if low < window[0] or high > window[1]:
                flags.append(
                    f"{name}: intensities (1st-99th percentile {low:.0f} to {high:.0f}) outside "
                    f"the intended {window[0]:g} to {window[1]:g}"
                )
    return flags


__all__ = ["UNTRAINED_FLAG", "check_series", "match_series", "quality_flags"]
