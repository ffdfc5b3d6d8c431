"""The parameter set of the classical lung CT pipeline, and its identity hash.

Every threshold lives here, as data, so that the exact set used for a result is written
into the SEG/SR (``AlgorithmInfo.parameters``) and its sha256 stands in for a weights hash:
change one number and the reported identity changes with it.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class LungParams:
    """Thresholds (HU), sizes (mm, mm², mL) and shape limits. Why each value: docs/pipelines.md."""

    # -- series acceptance
    min_slices: int = 20
    #: Routine thorax CT is still archived at 5-10 mm in many hospitals: analysed, with the
    #: smallest reported lesion raised (:meth:`min_lesion_diameter`) and lower confidence.
    max_slice_thickness_mm: float = 10.0
    thick_slice_flag_mm: float = 3.0
    #: Over this thickness/spacing each lesion carries the ``thick-slices`` flag and its
    #: confidence is scaled by ``full_confidence_slice_mm / thickness`` (:meth:`confidence_scale`).
    full_confidence_slice_mm: float = 5.0
    # -- body and lungs
    body_hu: float = -500.0
    lung_hu: float = -400.0
    min_lung_component_ml: float = 50.0
    min_lungs_total_ml: float = 300.0
    small_lung_flag_ml: float = 500.0
    airway_max_area_mm2: float = 600.0
    airway_seed_max_offset_mm: float = 30.0
    split_search_mm: float = 40.0
    # -- lesion candidates
    envelope_close_mm: float = 20.0
    solid_hu: float = -300.0
    open_small_mm: float = 2.5
    open_large_mm: float = 5.0
    grow_mm: float = 10.0
    merge_mm: float = 2.5
    #: Smallest reported lesion, as the diameter of the sphere of equal volume: 6 mm, the
    #: size from which Lung-RADS and Fleischner act on a solid nodule. On thick slices the
    #: floor rises to ``min_lesion_slices`` slice spacings (:meth:`min_lesion_diameter`).
    min_lesion_diameter_mm: float = 6.0
    min_lesion_slices: int = 2
    lesion_min_mean_hu: float = -200.0
    lesion_max_mean_hu: float = 100.0
    max_z_elongation: float = 2.5
    min_bbox_fill: float = 0.15
    #: A candidate widest on its most caudal slice with solid tissue outside the lung
    #: envelope under at least this fraction of that slice is the top of the liver or
    #: spleen under the diaphragm dome, seen through the lung base, not a lesion.
    max_dome_continuation: float = 0.5

    def min_lesion_diameter(self, slice_spacing_mm: float) -> float:
        """Smallest reported equivalent diameter (mm) on slices ``slice_spacing_mm`` apart.

        ``max(min_lesion_diameter_mm, min_lesion_slices × spacing)``: a sphere at least two
        spacings across cuts at least two slice planes wherever it lies, so it can meet the
        ``min_lesion_slices`` rule; a smaller one may show on one slice only, where it cannot
        be told from a vessel crossing the slice. 6 mm up to 3 mm slices, 10 mm (0.52 mL) at
        5 mm, 16 mm (2.1 mL) at 8 mm, 20 mm (4.2 mL) at 10 mm.
        """
        return max(self.min_lesion_diameter_mm, self.min_lesion_slices * slice_spacing_mm)

    def confidence_scale(self, slice_mm: float) -> float:
        """Factor on a lesion's confidence on slices ``slice_mm`` thick: 1 up to
        ``full_confidence_slice_mm``, then inversely proportional (0.625 at 8 mm, 0.5 at 10):
        partial volume blurs a lesion's edge and HU in proportion to the thickness."""
        return min(1.0, self.full_confidence_slice_mm / max(slice_mm, 1e-6))

    def min_lesion_ml(self, slice_spacing_mm: float) -> float:
        """The volume (mL) of a sphere of :meth:`min_lesion_diameter`."""
        return math.pi / 6.0 * self.min_lesion_diameter(slice_spacing_mm) ** 3 / 1000.0

    def as_strings(self) -> dict[str, str]:
        """The parameters as ``AlgorithmInfo.parameters`` wants them (name → text)."""
        return {k: repr(v) for k, v in sorted(asdict(self).items())}

    def sha256(self) -> str:
        """sha256 of the canonical JSON (sorted keys, no spaces) of the parameter set."""
        canonical = json.dumps(asdict(self), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


__all__ = ["LungParams"]
