"""lung-ct chooses series from headers: the chest CT yes; head, scout, capture, MR are not
for it (not applicable); a chest series it cannot read is refused, with the reason."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from medvision.dicom import SeriesInfo, scan
from medvision.pipelines import Acceptance, available, get


def _series(path: Path) -> list[SeriesInfo]:
    return [s for study in scan(path) for s in study.series]


def test_registered() -> None:
    assert "lung-ct" in available()
    pipe = get("lung-ct")
    assert (pipe.name, pipe.version) == ("lung-ct", "1.1.1")
    assert [label.name for label in pipe.labels] == ["Left lung", "Right lung", "Lung lesion"]


def test_accepts_the_chest_ct(chest_ct_dir: Path) -> None:
    (series,) = _series(chest_ct_dir)
    acceptance = get("lung-ct").accepts(series)
    assert acceptance and acceptance.score > 0


def test_head_phantom_study_is_not_for_lung_ct(shared_data: Path) -> None:
    """Scout, head series and dose captures are outside lung-ct's scope, each by its rule."""
    by_number = {
        s.series_number: s for s in _series(shared_data / "ct/edge/philips-head-phantom-study")
    }
    pipe = get("lung-ct")
    verdicts = {n: pipe.accepts(s) for n, s in by_number.items()}
    assert not any(verdicts.values())
    assert not any(v.applicable for v in verdicts.values())
    assert "localizer" in verdicts[100].reason.lower()
    assert verdicts[201].reason == "body part is BRAIN, not chest"
    assert "REF_SURVIEW" in verdicts[401].reason
    selection = pipe.select(list(by_number.values()))
    assert selection.chosen is None and not selection.applicable
    assert selection.reason.startswith("lung-ct does not apply: localizer/scout image")
    assert "body part is BRAIN, not chest (series 201 (CT))" in selection.reason


def test_mr_is_not_applicable(shared_data: Path) -> None:
    (series,) = _series(shared_data / "mr/philips-3t-brain/classic-t1")
    acceptance = get("lung-ct").accepts(series)
    assert not acceptance and not acceptance.applicable
    assert acceptance.reason == "modality is MR, not CT"


def test_rules_from_headers(chest_ct_dir: Path) -> None:
    (chest,) = _series(chest_ct_dir)
    pipe = get("lung-ct")
    assert chest.slice_spacing_mm == pytest.approx(5.0, abs=0.01)
    # Routine thick-slice thorax CT is analysed up to 10 mm; beyond, refused with the reason.
    assert pipe.accepts(replace(chest, slice_thickness_mm=8.0))
    assert pipe.accepts(replace(chest, slice_thickness_mm=10.0))
    thick = pipe.accepts(replace(chest, slice_thickness_mm=12.5))
    assert not thick and thick.applicable
    assert thick.reason.startswith("slices 12.5 mm thick or apart; at most 10 mm are analysed")
    assert not pipe.accepts(replace(chest, slice_spacing_mm=11.0))
    few = pipe.accepts(replace(chest, num_frames=12))
    assert not few and few.applicable and few.reason == "12 slices; at least 20 are needed"
    coronal = pipe.accepts(replace(chest, orientation="CORONAL"))
    assert not coronal and coronal.applicable
    single = pipe.accepts(replace(chest, num_frames=1))
    assert single.applicable and single.reason == "a single slice, not a volume"
    head = pipe.accepts(replace(chest, body_part_examined="HEAD"))
    assert not head and not head.applicable
    assert pipe.accepts(replace(chest, body_part_examined=""))
    assert pipe.accepts(replace(chest, body_part_examined="THORAX"))
    thin = replace(chest, series_instance_uid="1.2.3", slice_thickness_mm=1.0, slice_spacing_mm=1.0)
    assert pipe.choose([chest, thin]) is thin


def test_refusal_lists_only_series_lung_ct_is_for(chest_ct_dir: Path, shared_data: Path) -> None:
    """A mixed study's refusal names the chest series' problem, not the MR's modality."""
    (chest,) = _series(chest_ct_dir)
    (mr,) = _series(shared_data / "mr/philips-3t-brain/classic-t1")
    selection = get("lung-ct").select([mr, replace(chest, num_frames=12)])
    assert selection.chosen is None and selection.applicable
    assert selection.reason == (
        "lung-ct refused the study: series 2 (CT): 12 slices; at least 20 are needed"
    )


def test_acceptance_is_typed() -> None:
    assert Acceptance.not_applicable("x").applicable is False
    assert Acceptance.refused("x").applicable is True
    with pytest.raises(ValueError, match="cannot be 'not applicable'"):
        Acceptance(True, applicable=False)


def test_lidc_chest_ct_with_imagetype_secondary_is_analysed(shared_data: Path) -> None:
    """LIDC-IDRI-0002 says ORIGINAL/SECONDARY/AXIAL: a CT volume, not a screen capture."""
    series = [s for s in _series(shared_data / "ct/lidc-idri/LIDC-IDRI-0002") if s.modality == "CT"]
    assert any("SECONDARY" in s.image_type for s in series)
    selection = get("lung-ct").select(series)
    assert selection.chosen is not None, selection.reason
