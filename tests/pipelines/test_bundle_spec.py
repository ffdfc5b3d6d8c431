"""pipeline.yaml parsing, series matching, quality flags and bundle discovery (no torch run)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from medvision.dicom import SeriesInfo
from medvision.findings import FindingKind
from medvision.pipelines import available, get
from medvision.pipelines.bundle import (
    UNTRAINED_FLAG,
    BundlePipeline,
    SpecError,
    find_bundles,
    match_series,
    parse_spec,
    quality_flags,
    read_spec,
)
from medvision.pipelines.bundle._spec import ZOO_SPECS

SPLEEN = ZOO_SPECS / "spleen_ct_segmentation.yaml"
BRATS = ZOO_SPECS / "brats_mri_segmentation.yaml"


def ct_series(**changes) -> SeriesInfo:
    base = SeriesInfo(
        study_instance_uid="1.2.3",
        series_instance_uid="1.2.3.4",
        modality="CT",
        sop_class_uid="1.2.840.10008.5.1.4.1.1.2",
        files=(),
        orientation="AXIAL",
        slice_thickness_mm=2.0,
        num_frames=120,
        series_description="Abdomen venous",
    )
    return dataclasses.replace(base, **changes)


def test_shipped_zoo_specs_parse():
    spleen, brats = read_spec(SPLEEN), read_spec(BRATS)
    assert spleen.name == "spleen-ct" and [s.value for s in spleen.labels] == [1]
    assert spleen.labels[0].label.type.value == "78961009"
    assert [i.key for i in brats.inputs] == ["t1c", "t1", "t2", "flair"]
    assert {s.value: s.channel for s in brats.labels} == {1: 0, 2: 1, 4: 2}
    assert all(s.label.kind is FindingKind.LESION for s in brats.labels)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"name": "Bad Name"}, "name must be"),
        ({"labels": {0: {"name": "x"}}}, "values start at 1"),
        ({"labels": {1: {"name": "x", "kind": "tumour"}}}, "kind must be"),
        ({"labels": {1: {"name": "x"}}}, "category must be a mapping"),
        ({"explain": {"flip_axes": [3]}}, "flip_axes"),
        ({"intended_use": {"fov_mm": [300, 100]}}, "low <= high"),
    ],
)
def test_spec_errors_name_the_field(change, message):
    raw = yaml.safe_load(SPLEEN.read_text())
    raw.update(change)
    with pytest.raises(SpecError, match=message):
        parse_spec(raw, Path("x/pipeline.yaml"))


def test_match_series_reasons():
    rule = read_spec(SPLEEN).reference
    assert match_series(rule, ct_series()) == ""
    assert "modality MR" in match_series(rule, ct_series(modality="MR"))
    assert "orientation SAGITTAL" in match_series(rule, ct_series(orientation="SAGITTAL"))
    assert "8 slices" in match_series(rule, ct_series(num_frames=8))
    assert "thickness 7.5 mm" in match_series(rule, ct_series(slice_thickness_mm=7.5))


def test_choose_inputs_fills_each_role_from_descriptions():
    pipe = BundlePipeline(Path("/nonexistent"), BRATS)
    mr = ct_series(modality="MR", orientation="AXIAL", slice_thickness_mm=1.0, num_frames=150)
    study = [
        dataclasses.replace(mr, series_instance_uid=f"1.{n}", series_description=d)
        for n, d in enumerate(["T2 FLAIR", "T1 post Gd", "T2 TSE", "T1 SE", "Localizer"])
    ]
    chosen = pipe.choose_inputs(study)
    assert chosen is not None
    assert {k: s.series_description for k, s in chosen.items()} == {
        "t1c": "T1 post Gd",
        "t1": "T1 SE",
        "t2": "T2 TSE",
        "flair": "T2 FLAIR",
    }
    assert pipe.choose_inputs(study[:2]) is None


def test_quality_flags(chest_ct_dir):
    from medvision.dicom import load_series, scan

    volume = load_series(scan(chest_ct_dir)[0].series[0])
    spec = read_spec(SPLEEN)
    assert quality_flags(spec, [volume]) == []
    flags = quality_flags(spec, [volume], untrained=True)
    assert flags == [UNTRAINED_FLAG]
    mr_like = dataclasses.replace(volume, modality="MR")
    mr_like = mr_like.with_array(np.full(volume.shape, 4000, np.float32))
    strict = dataclasses.replace(
        spec, inputs=(dataclasses.replace(spec.reference, max_slice_thickness_mm=3.0),)
    )
    flags = quality_flags(strict, [mr_like])
    assert any("modality MR" in f for f in flags)
    assert any("slice spacing 5 mm exceeds" in f for f in flags)
    assert any("intensities" in f and "4000" in f for f in flags)


def test_discovery_and_registry(tmp_path, monkeypatch, shared_data):
    bundle = tmp_path / "my-spleen"
    (bundle / "configs").mkdir(parents=True)
    zoo = shared_data / "monai-bundles" / "spleen_ct_segmentation" / "configs"
    for name in ("inference.json", "metadata.json"):
        (bundle / "configs" / name).write_text((zoo / name).read_text())
    raw = yaml.safe_load(SPLEEN.read_text())
    raw["name"] = "my-spleen"
    (bundle / "pipeline.yaml").write_text(yaml.safe_dump(raw))
    broken = tmp_path / "broken"
    (broken / "configs").mkdir(parents=True)
    (broken / "configs" / "inference.json").write_text("{}")
    (broken / "pipeline.yaml").write_text("name: [unclosed")
    monkeypatch.setenv("MEDVISION_MODELS_DIR", str(tmp_path))
    assert set(find_bundles([tmp_path])) == {"my-spleen"}
    assert "my-spleen" in available()
    pipe = get("my-spleen")
    assert isinstance(pipe, BundlePipeline)
    assert pipe.version == json.loads((zoo / "metadata.json").read_text())["version"]
    assert pipe.labels[0].name == "Spleen"
    assert pipe.accepts(ct_series())
    assert not pipe.accepts(ct_series(modality="MR"))
