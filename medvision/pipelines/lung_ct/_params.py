"""The parameter set of the classical lung CT pipeline, and its identity hash.

Every threshold lives here, as data, so that the exact set used for a result is written
into the SEG/SR (``AlgorithmInfo.parameters``) and its sha256 stands in for a weights hash:
change one number and the reported identity changes with it.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class LungParams:
    """Thresholds (HU), sizes (mm, mm², mL) and shape limits. Why each value: docs/pipelines.md."""

    # -- series acceptance
    min_slices: int = 20
    max_slice_thickness_mm: float = 5.0
    thick_slice_flag_mm: float = 3.0
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
    min_lesion_ml: float = 0.5
    min_lesion_slices: int = 2
    lesion_min_mean_hu: float = -200.0
    lesion_max_mean_hu: float = 100.0
    max_z_elongation: float = 2.5
    min_bbox_fill: float = 0.15

    def as_strings(self) -> dict[str, str]:
        """The parameters as ``AlgorithmInfo.parameters`` wants them (name → text)."""
        return {k: repr(v) for k, v in sorted(asdict(self).items())}

    def sha256(self) -> str:
        """sha256 of the canonical JSON (sorted keys, no spaces) of the parameter set."""
        canonical = json.dumps(asdict(self), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


__all__ = ["LungParams"]
