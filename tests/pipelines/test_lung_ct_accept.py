"""lung-ct chooses series from headers: the chest CT yes; head, scout, capture, MR no."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from medvision.dicom import SeriesInfo, scan
from medvision.pipelines import available, get


def _series(path: Path) -> list[SeriesInfo]:
    return [s for study in scan(path) for s in study.series]


def test_registered() -> None:
    assert "lung-ct" in available()
    pipe = get("lung-ct")
    assert (pipe.name, pipe.version) == ("lung-ct", "1.1.0")
    assert [label.name for label in pipe.labels] == ["Left lung", "Right lung", "Lung lesion"]


def test_accepts_the_chest_ct(chest_ct_dir: Path) -> None:
    (series,) = _series(chest_ct_dir)
    acceptance = get("lung-ct").accepts(series)
    assert acceptance and acceptance.score > 0


def test_head_phantom_study_is_refused_with_reasons(shared_data: Path) -> None:
    by_number = {
        s.series_number: s for s in _series(shared_data / "ct/edge/philips-head-phantom-study")
    }
    pipe = get("lung-ct")
    reasons = {n: pipe.accepts(s) for n, s in by_number.items()}
    assert not any(reasons.values())
    assert "localizer" in reasons[100].reason.lower()
    assert "BRAIN" in reasons[201].reason
    assert "secondary capture" in reasons[401].reason.lower()
    assert pipe.choose(list(by_number.values())) is None


def test_mr_is_refused(shared_data: Path) -> None:
    (series,) = _series(shared_data / "mr/philips-3t-brain/classic-t1")
    acceptance = get("lung-ct").accepts(series)
    assert not acceptance and "MR" in acceptance.reason


def test_rules_from_headers(chest_ct_dir: Path) -> None:
    (chest,) = _series(chest_ct_dir)
    pipe = get("lung-ct")
    assert not pipe.accepts(replace(chest, slice_thickness_mm=7.0))
    assert not pipe.accepts(replace(chest, num_frames=12))
    assert not pipe.accepts(replace(chest, orientation="CORONAL"))
    assert pipe.accepts(replace(chest, body_part_examined=""))
    assert pipe.accepts(replace(chest, body_part_examined="THORAX"))
    thin = replace(chest, series_instance_uid="1.2.3", slice_thickness_mm=1.0)
    assert pipe.choose([chest, thin]) is thin
