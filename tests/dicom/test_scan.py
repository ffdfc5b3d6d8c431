"""scan(): what a pipeline sees of a folder before any pixel is read."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from pydicom.uid import CTImageStorage, EnhancedMRImageStorage, RawDataStorage

from medvision.dicom import load_series, scan
from medvision.errors import NoDicomFound

from .conftest import only_series


def test_chest_ct_series_fields(chest_ct_dir: Path) -> None:
    (study,) = scan(chest_ct_dir)
    (series,) = study.series
    assert series.modality == "CT"
    assert series.sop_class_uid == CTImageStorage
    assert series.orientation == "AXIAL"
    assert series.image_type[:3] == ("ORIGINAL", "PRIMARY", "AXIAL")
    assert series.slice_thickness_mm == 5.0
    assert (series.rows, series.columns, series.num_frames) == (512, 512, 64)
    assert series.is_image and series.problems == ()
    assert len(series.files) == 64
    assert series.study_instance_uid == study.study_instance_uid


def test_nested_folders_odd_names_and_non_dicom_are_handled(
    chest_ct_files: list[Path], edge_dir: Path, tmp_path: Path
) -> None:
    deep = tmp_path / "a" / "b c" / "ü"
    deep.mkdir(parents=True)
    for i, src in enumerate(chest_ct_files[:6]):
        target = (deep if i % 2 else tmp_path) / f"no-extension-{i}"
        shutil.copy(src, target)
    (tmp_path / "notes.txt").write_text("not dicom\n")
    (tmp_path / "a" / "junk.bin").write_bytes(bytes(range(256)) * 4)
    (tmp_path / "a" / "short").write_bytes(b"\x08\x00")
    # A DICOMDIR by name, and a Philips directory file under another name: both ignored.
    dirfile = edge_dir / "philips-head-phantom-study" / "S2010" / "DIRFILE"
    shutil.copy(dirfile, tmp_path / "DICOMDIR")
    shutil.copy(dirfile, deep / "DIRFILE")
    series = only_series(tmp_path)
    assert len(series.files) == 6 and series.problems == ()


def test_a_single_file_is_a_valid_path(chest_ct_files: list[Path]) -> None:
    series = only_series(chest_ct_files[0])
    assert series.files == (chest_ct_files[0],)


def test_nothing_readable_raises_no_dicom_found(tmp_path: Path) -> None:
    with pytest.raises(NoDicomFound, match="No DICOM found.*no files"):
        scan(tmp_path)
    (tmp_path / "readme.txt").write_text("hello")
    with pytest.raises(NoDicomFound, match="none of 1 file"):
        scan(tmp_path)
    with pytest.raises(NoDicomFound, match="does not exist"):
        scan(tmp_path / "missing")


def test_gzipped_dicom_is_not_read(shared_data: Path) -> None:
    enhanced = shared_data / "mr" / "philips-3t-brain" / "enhanced"
    series = [s for st in scan(enhanced) for s in st.series]
    assert all(not str(f).endswith(".gz") for s in series for f in s.files)


def test_phantom_study_reports_every_series_so_a_pipeline_can_pick_the_axial(
    edge_dir: Path,
) -> None:
    (study,) = scan(edge_dir / "philips-head-phantom-study")
    by_number = {s.series_number: s for s in study.series}
    assert sorted(by_number) == [100, 201, 401]
    scout, axial, captures = by_number[100], by_number[201], by_number[401]
    assert "LOCALIZER" in scout.image_type and scout.num_frames == 1
    assert axial.orientation == "AXIAL" and axial.num_frames == 28
    assert axial.slice_thickness_mm == 5.0 and axial.problems == ()
    assert captures.sop_class_uid == "1.2.840.10008.5.1.4.1.1.7"  # Secondary Capture
    assert "SECONDARY" in captures.image_type
    assert any("no ImageOrientationPatient in 3 of 6" in p for p in captures.problems)

    picked = [
        s
        for s in study.series
        if s.modality == "CT"
        and s.orientation == "AXIAL"
        and "LOCALIZER" not in s.image_type
        and "SECONDARY" not in s.image_type
        and not s.problems
    ]
    assert picked == [axial]
    assert load_series(axial).shape == (28, 512, 512)


def test_enhanced_folder_marks_raw_data_as_not_an_image(enhanced_dir: Path) -> None:
    series = {s.sop_class_uid: s for st in scan(enhanced_dir) for s in st.series}
    raw = series[RawDataStorage]
    assert not raw.is_image and raw.num_frames == 0
    assert any("not an image: Raw Data Storage" in p for p in raw.problems)
    images = [s for st in scan(enhanced_dir) for s in st.series if s.is_image]
    assert {s.sop_class_uid for s in images} == {EnhancedMRImageStorage}
    assert sorted(s.num_frames for s in images) == [40, 240]
    assert all(s.orientation == "AXIAL" and s.slice_thickness_mm == 4.0 for s in images)


def test_blank_uids_do_not_crash_scanning(totalseg_dir: Path) -> None:
    series = only_series(totalseg_dir)
    assert series.series_instance_uid == ""
    assert series.num_frames == 20 and series.orientation == "AXIAL"
    assert any("blank or missing SOPInstanceUID in 20 of 20" in p for p in series.problems)
    assert any("SOPClassUID" in p for p in series.problems)


def test_classic_mr_is_sagittal(mr_t1_dir: Path) -> None:
    series = only_series(mr_t1_dir)
    assert series.modality == "MR" and series.orientation == "SAGITTAL"
    assert series.num_frames == 170
