"""``lung-ct``: both lungs and lung lesion candidates on a chest CT, without trained weights."""

from __future__ import annotations

import numpy as np
from pydicom.uid import generate_uid

from medvision.dicom import SeriesInfo, Volume
from medvision.errors import PipelineError
from medvision.findings import (
    AlgorithmInfo,
    Code,
    Finding,
    FindingKind,
    Findings,
    Label,
    QualityFlag,
    measure,
)
from medvision.pipelines._contract import Acceptance, PipelineBase, Progress, no_progress
from medvision.pipelines.lung_ct._accept import accept_series
from medvision.pipelines.lung_ct._lungs import segment_lungs
from medvision.pipelines.lung_ct._params import LungParams
from medvision.pipelines.lung_ct._stage import find_lesion_findings, stage_info

# SNOMED CT codes. pydicom's codedict has Lung, Anatomical Structure, Morphologically
# Abnormal Structure and Lesion; it lacks the lateral lungs, whose concept ids are those of
# DICOM CID 4 (and of RadLex's SNOMED mapping, RID1326 = 44029006 left lung).
ANATOMICAL_STRUCTURE = Code("91723000", "SCT", "Anatomical Structure")
ABNORMAL_STRUCTURE = Code("49755003", "SCT", "Morphologically Abnormal Structure")
LUNG = Code("39607008", "SCT", "Lung")
LEFT_LUNG = Code("44029006", "SCT", "Left lung")
RIGHT_LUNG = Code("3341006", "SCT", "Right lung")
LESION = Code("52988006", "SCT", "Lesion")

LEFT_LUNG_LABEL = Label(
    "Left lung",
    ANATOMICAL_STRUCTURE,
    LEFT_LUNG,
    FindingKind.ORGAN,
    LEFT_LUNG,
    (55000, 40000, 20000),
)
RIGHT_LUNG_LABEL = Label(
    "Right lung",
    ANATOMICAL_STRUCTURE,
    RIGHT_LUNG,
    FindingKind.ORGAN,
    RIGHT_LUNG,
    (55000, 20000, 40000),
)
LESION_LABEL = Label(
    "Lung lesion", ABNORMAL_STRUCTURE, LESION, FindingKind.LESION, LUNG, (50000, 60000, 50000)
)
ORGAN_CONFIDENCE_METHOD = (
    "classical HU-threshold segmentation; confidence 1.0 means 'segmented', not a probability"
)


def slice_thickness(volume: Volume) -> float:
    """The larger of the slices' spacing and the header's SliceThickness (mm)."""
    header = volume.source_headers[0].get("SliceThickness") if volume.source_headers else None
    try:
        return max(float(volume.spacing[2]), float(header or 0.0))
    except (TypeError, ValueError):
        return float(volume.spacing[2])


class LungCT(PipelineBase):
    """Lungs by HU thresholds, lesion candidates by shape rules (see docs/pipelines.md)."""

    name = "lung-ct"
    #: 1.1.1: with the learned filter, the sensitive generator's ground-glass halo rule
    #: looks beyond the component's box (docs/pipelines.md); the rules' output is unchanged.
    version = "1.1.1"
    description = "Left/right lungs and lung lesion candidates on chest CT (classical, no weights)."

    def __init__(self, params: LungParams | None = None) -> None:
        self.params = params or LungParams()

    @property
    def labels(self) -> tuple[Label, ...]:
        return (LEFT_LUNG_LABEL, RIGHT_LUNG_LABEL, LESION_LABEL)

    @property
    def algorithm(self) -> AlgorithmInfo:
        # With the learned lesion filter installed, its bundle and weights' digest are part
        # of the parameters (and the family is AI); without it, the rules alone.
        info = stage_info()
        parameters = self.params.as_strings()
        if info is not None:
            parameters["lesion_filter"] = f"{info.name} {info.version} sha256:{info.sha256}"
        return AlgorithmInfo(
            name=self.name,
            version=self.version,
            weights_sha256=self.params.sha256(),
            parameters=parameters,
            family="classical" if info is None else "AI",
        )

    def accepts(self, series: SeriesInfo) -> Acceptance:
        return accept_series(series, self.params)

    def run(self, volume: Volume, progress: Progress = no_progress) -> Findings:
        p = self.params
        progress("lungs", 0.0)
        lungs = segment_lungs(volume, p)
        ml = volume.voxel_volume_mm3 / 1000.0
        left_ml, right_ml = lungs.left.sum() * ml, lungs.right.sum() * ml
        if left_ml + right_ml < p.min_lungs_total_ml:
            raise PipelineError(
                f"lung-ct found no lungs in series {volume.series_instance_uid}: "
                f"{left_ml + right_ml:.0f} mL of air below {p.lung_hu:g} HU inside the body, "
                f"at least {p.min_lungs_total_ml:g} mL needed; is this a chest CT?"
            )
        progress("lesions", 0.4)
        candidates, lesion_method = find_lesion_findings(volume, lungs, p)
        progress("measurements", 0.85)

        items: list[Finding] = []
        for label, mask, name in (
            (LEFT_LUNG_LABEL, lungs.left, "Left lung"),
            (RIGHT_LUNG_LABEL, lungs.right, "Right lung"),
        ):
            if mask.any():
                items.append(
                    self._finding(
                        len(items) + 1,
                        label,
                        mask,
                        name,
                        volume,
                        1.0,
                        None,
                        ORGAN_CONFIDENCE_METHOD,
                    )
                )
        thickness = slice_thickness(volume)
        thick = thickness > p.full_confidence_slice_mm + 1e-3
        flags = (QualityFlag.THICK_SLICES,) if thick else ()
        for n, c in enumerate(candidates, start=1):
            side = LEFT_LUNG if c.left else RIGHT_LUNG
            confidence = c.confidence * p.confidence_scale(thickness)
            items.append(
                self._finding(
                    len(items) + 1,
                    LESION_LABEL,
                    c.mask,
                    f"Lesion {n}",
                    volume,
                    confidence,
                    side,
                    lesion_method,
                    flags,
                )
            )
        progress("done", 1.0)
        return Findings(
            pipeline=self.name,
            pipeline_version=self.version,
            algorithm=self.algorithm,
            volume=volume,
            items=tuple(items),
            quality_flags=self._quality_flags(volume, left_ml, right_ml),
        )

    def _finding(
        self,
        number: int,
        label: Label,
        mask: np.ndarray,
        tracking_id: str,
        volume: Volume,
        confidence: float,
        site: Code | None,
        confidence_method: str,
        flags: tuple[QualityFlag, ...] = (),
    ) -> Finding:
        lesion = label.kind is FindingKind.LESION
        return Finding(
            number=number,
            label=label,
            mask=mask,
            tracking_id=tracking_id,
            # Deterministic: a rerun on the same series gives the same UID.
            tracking_uid=generate_uid(
                entropy_srcs=[volume.series_instance_uid, self.name, self.version, tracking_id]
            ),
            measurements=measure(mask, volume, lesion=lesion),
            confidence=confidence,
            confidence_method=confidence_method,
            site=site,
            flags=flags,
        )

    def _quality_flags(self, volume: Volume, left_ml: float, right_ml: float) -> tuple[str, ...]:
        p = self.params
        flags = []
        thickness = slice_thickness(volume)
        if thickness > p.full_confidence_slice_mm + 1e-3:
            flags.append(
                f"{QualityFlag.THICK_SLICES}: slices {thickness:.3g} mm thick or apart (over "
                f"{p.full_confidence_slice_mm:g} mm): lesions under "
                f"{p.min_lesion_diameter(thickness):.0f} mm are not reported, and each lesion's "
                f"confidence is scaled by {p.confidence_scale(thickness):.2f}"
            )
        elif volume.spacing[2] > p.thick_slice_flag_mm:
            flags.append(
                f"slice spacing {volume.spacing[2]:g} mm is over {p.thick_slice_flag_mm:g} mm: "
                "nodules under ~10 mm may be missed and diameters are less exact"
            )
        for side, amount in (("left", left_ml), ("right", right_ml)):
            if amount < p.small_lung_flag_ml:
                flags.append(
                    f"{side} lung only {amount:.0f} mL (under {p.small_lung_flag_ml:g} mL): "
                    "lung not fully in the field of view, collapsed, or not found"
                )
        return tuple(flags)


__all__ = ["LungCT"]
