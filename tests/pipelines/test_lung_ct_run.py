"""lung-ct on the real chest CT (Lung-PET-CT-Dx A0001, CC BY 4.0) and on edge inputs.

The lesion figures are a regression guard, not an independent accuracy claim: the
classical rules were tuned on this very series (see docs/pipelines.md).
"""

from __future__ import annotations

import numpy as np
import pytest
from pydicom.uid import generate_uid

from medvision.dicom import Volume
from medvision.errors import PipelineError
from medvision.findings import FindingKind, Findings
from medvision.pipelines import get
from medvision.pipelines.lung_ct import LungParams


def _hits(findings: Findings, boxes: dict[int, tuple[int, ...]]) -> tuple[set[int], int]:
    """(boxed slices touched by any lesion, lesions touching no box)."""
    hit: set[int] = set()
    false_positives = 0
    for lesion in findings.lesions:
        touched = False
        for k, (x0, y0, x1, y1) in boxes.items():
            if lesion.mask[k, y0 : y1 + 1, x0 : x1 + 1].any():
                hit.add(k)
                touched = True
        false_positives += not touched
    return hit, false_positives


def test_both_lungs_plausible_and_on_their_side(lung_ct_findings: Findings) -> None:
    organs = {f.tracking_id: f for f in lung_ct_findings.organs}
    left, right = organs["Left lung"], organs["Right lung"]
    for lung in (left, right):
        assert 1000 <= lung.measurements.volume_ml <= 4000
        assert lung.measurements.mean_hu < -700
        assert lung.measurements.long_axis_mm is None
    assert left.measurements.volume_ml < right.measurements.volume_ml
    # Patient left is +x in LPS.
    assert left.measurements.centroid_lps[0] > 0 > right.measurements.centroid_lps[0]
    assert (left.label.type.value, right.label.type.value) == ("44029006", "3341006")
    assert not (left.mask & right.mask).any()


def test_lesions_hit_the_radiologists_boxes(lung_ct_findings: Findings, tumour_boxes) -> None:
    assert len(tumour_boxes) == 11
    hit, false_positives = _hits(lung_ct_findings, tumour_boxes)
    # Measured 11/11 boxed slices with 4 false-positive components; the hand-tuned baseline
    # in ENVIRONMENT.md is 6/11 with 3 (balanced) or 9/11 with 10 (sensitive).
    assert len(hit) >= 9, sorted(hit)
    assert false_positives <= 4
    tumour = [f for f in lung_ct_findings.lesions if f.site and f.site.value == "44029006"]
    assert tumour, "the tumour is in the left lung"


def test_findings_are_complete_and_traceable(
    lung_ct_findings: Findings, chest_ct_volume: Volume
) -> None:
    f = lung_ct_findings
    assert [x.number for x in f.items] == list(range(1, len(f.items) + 1))
    # The learned lesion filter ships in models/ but is opt-in (MEDVISION_LESION_FILTER=on):
    # by default the classical rules run, and lung-ct says so.
    assert f.algorithm.family == "classical"
    assert "lesion_filter" not in f.algorithm.parameters
    assert f.algorithm.weights_sha256 == LungParams().sha256()
    assert f.algorithm.parameters["solid_hu"] == "-300.0"
    assert any("slice spacing 5 mm" in q for q in f.quality_flags)
    lesions = f.lesions
    assert [x.tracking_id for x in lesions] == [f"Lesion {n}" for n in range(1, len(lesions) + 1)]
    assert all(0 < x.confidence < 1 for x in lesions)
    for x in lesions:
        assert x.label.kind is FindingKind.LESION
        assert (x.label.category.value, x.label.type.value) == ("49755003", "52988006")
        m = x.measurements
        assert m.long_axis_mm and m.short_axis_mm and m.short_axis_mm <= m.long_axis_mm + 1e-6
        assert x.mask[m.centroid_slice].any()
        assert m.centroid_sop_instance_uid == chest_ct_volume.sop_instance_uids[m.centroid_slice]
        expected = generate_uid(
            entropy_srcs=[chest_ct_volume.series_instance_uid, "lung-ct", "1.1.1", x.tracking_id]
        )
        assert x.tracking_uid == expected
    uids = [x.tracking_uid for x in f.items]
    assert len(set(uids)) == len(uids)


def test_parameter_hash_follows_the_parameters() -> None:
    assert LungParams().sha256() == LungParams().sha256()
    assert LungParams(solid_hu=-250.0).sha256() != LungParams().sha256()


def test_no_lungs_is_a_pipeline_error(chest_ct_volume: Volume) -> None:
    # The same grid filled with soft tissue: a body without air.
    solid = chest_ct_volume.with_array(np.full(chest_ct_volume.shape, 40.0, dtype=np.float32))
    with pytest.raises(PipelineError, match="no lungs"):
        get("lung-ct").run(solid)
