"""Every refusal: the exact error type, and one line that names the series and the problem."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from pydicom import Dataset
from pydicom.dataset import FileMetaDataset
from pydicom.uid import (
    ExplicitVRLittleEndian,
    GrayscaleSoftcopyPresentationStateStorage,
    generate_uid,
)

from medvision.dicom import SeriesInfo, load_series, scan
from medvision.errors import GeometryError, InputError, MissingData, NotAnImage

from .conftest import only_series, rewrite


def refusal(series: SeriesInfo, error: type[InputError]) -> str:
    """Load ``series``, expect ``error``, and return its message after common checks."""
    with pytest.raises(error) as caught:
        load_series(series)
    message = str(caught.value)
    assert "\n" not in message and "Traceback" not in message
    assert (series.series_instance_uid or "blank SeriesInstanceUID") in message
    return message


# -- geometry -------------------------------------------------------------------------------


def test_real_gantry_tilt_is_refused(edge_dir: Path) -> None:
    message = refusal(only_series(edge_dir / "ge-gantry-tilt"), GeometryError)
    assert "gantry tilt of 18.5 degrees, GantryDetectorTilt 18.5" in message
    assert "refused, not resampled" in message


def test_real_uneven_spacing_is_refused(edge_dir: Path, tmp_path: Path) -> None:
    # The GE tilt series with its tilt taken out keeps its real 4.2 / 1.1 / 7.4 mm gaps.
    files = sorted((edge_dir / "ge-gantry-tilt").glob("*.dcm"))

    def untilt(i: int, ds: Dataset) -> Dataset:
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.GantryDetectorTilt = 0
        return ds

    message = refusal(only_series(rewrite(files, tmp_path, untilt)), GeometryError)
    assert "non-uniform slice spacing" in message
    assert "1.14" in message and "7.38" in message


def test_slightly_irregular_spacing_beyond_tolerance_is_refused(
    chest_ct_files: list[Path], tmp_path: Path
) -> None:
    def nudge(i: int, ds: Dataset) -> Dataset:
        if i == 30:
            x, y, z = (float(v) for v in ds.ImagePositionPatient)
            ds.ImagePositionPatient = [x, y, z + 0.4]  # 8% of the 5 mm spacing
        return ds

    message = refusal(only_series(rewrite(chest_ct_files, tmp_path, nudge)), GeometryError)
    assert "non-uniform slice spacing" in message and "0.40 mm off" in message
    assert "tolerance 0.25 mm" in message


def test_jitter_within_tolerance_loads(chest_ct_files: list[Path], tmp_path: Path) -> None:
    def jitter(i: int, ds: Dataset) -> Dataset:
        x, y, z = (float(v) for v in ds.ImagePositionPatient)
        ds.ImagePositionPatient = [x, y, z + (0.05 if i % 2 else -0.05)]  # 1% of 5 mm
        return ds

    vol = load_series(only_series(rewrite(chest_ct_files, tmp_path, jitter)))
    assert vol.shape == (64, 512, 512)
    assert vol.spacing[2] == pytest.approx(5.0, abs=0.01)


def test_real_duplicate_positions_are_refused(edge_dir: Path) -> None:
    message = refusal(only_series(edge_dir / "duplicate-positions"), GeometryError)
    assert "duplicate slice positions (1 in all; the first at -90.00 mm" in message
    assert "CT26.dcm" in message and "CT28.dcm" in message


def test_missing_slices_are_refused(chest_ct_files: list[Path], tmp_path: Path) -> None:
    def drop(i: int, ds: Dataset) -> Dataset | None:
        return None if i in (20, 21) else ds

    message = refusal(only_series(rewrite(chest_ct_files, tmp_path, drop)), GeometryError)
    assert "missing slice positions" in message
    assert "about 2 slice(s) missing" in message and "15.00 mm" in message


def test_mixed_orientations_are_refused(chest_ct_files: list[Path], tmp_path: Path) -> None:
    def turn(i: int, ds: Dataset) -> Dataset:
        if i == 5:
            ds.ImageOrientationPatient = [1, 0, 0, 0, 0, -1]
        return ds

    series = only_series(rewrite(chest_ct_files, tmp_path, turn))
    assert any("mixed orientations" in p for p in series.problems)
    message = refusal(series, GeometryError)
    assert "mixed orientations (2 different ImageOrientationPatient values)" in message


def test_several_volumes_in_one_enhanced_series_are_refused(enhanced_dir: Path) -> None:
    series = only_series(enhanced_dir / "1903_WIP_SOURCE_-_3DpCASL.dcm")
    message = refusal(series, GeometryError)
    assert "240 frames at 40 slice positions (6 per position)" in message
    assert "several volumes" in message


# -- missing data ---------------------------------------------------------------------------


def test_real_blank_uids_are_refused(totalseg_dir: Path) -> None:
    message = refusal(only_series(totalseg_dir), MissingData)
    assert "blank or missing" in message and "UID in 20 of 20 instance(s)" in message


@pytest.mark.parametrize("keyword", ["SOPInstanceUID", "SOPClassUID", "FrameOfReferenceUID"])
def test_one_blank_uid_is_refused(keyword: str, chest_ct_files: list[Path], tmp_path: Path) -> None:
    def blank(i: int, ds: Dataset) -> Dataset:
        if i == 3:
            setattr(ds, keyword, "")
        return ds

    message = refusal(only_series(rewrite(chest_ct_files[:8], tmp_path, blank)), MissingData)
    assert f"blank or missing {keyword} in 1 of 8 instance(s)" in message


def test_missing_pixel_data_is_refused(chest_ct_files: list[Path], tmp_path: Path) -> None:
    def strip(i: int, ds: Dataset) -> Dataset:
        if i == 2:
            del ds.PixelData
        return ds

    message = refusal(only_series(rewrite(chest_ct_files[:5], tmp_path, strip)), MissingData)
    assert "missing pixel data in 1 of 5 instance(s)" in message


def test_truncated_pixel_data_is_refused(chest_ct_files: list[Path], tmp_path: Path) -> None:
    def cut(i: int, ds: Dataset) -> Dataset:
        if i == 1:
            ds.PixelData = ds.PixelData[:1000]
        return ds

    message = refusal(only_series(rewrite(chest_ct_files[:4], tmp_path, cut)), MissingData)
    assert "cannot decode pixel data" in message


def test_missing_position_is_refused(chest_ct_files: list[Path], tmp_path: Path) -> None:
    def unplace(i: int, ds: Dataset) -> Dataset:
        if i == 1:
            del ds.ImagePositionPatient
        return ds

    message = refusal(only_series(rewrite(chest_ct_files[:4], tmp_path, unplace)), MissingData)
    assert "no ImagePositionPatient for slice0001.dcm" in message


def test_secondary_captures_without_geometry_are_refused(edge_dir: Path) -> None:
    (study,) = scan(edge_dir / "philips-head-phantom-study")
    captures = next(s for s in study.series if s.series_number == 401)
    refusal(captures, MissingData)


# -- not an image ---------------------------------------------------------------------------


def test_raw_data_is_not_an_image(enhanced_dir: Path) -> None:
    series = only_series(enhanced_dir / "104165610_ExamCard_Raw.dcm")
    assert "Raw Data Storage" in refusal(series, NotAnImage)


@pytest.mark.parametrize(
    ("relative", "name"),
    [
        ("seg-sr/dcmqi/data/segmentations/liver.dcm", "Segmentation Storage"),
        ("seg-sr/tid1500", "Comprehensive 3D SR Storage|Enhanced SR Storage"),
    ],
)
def test_seg_and_sr_are_not_images(relative: str, name: str, shared_data: Path) -> None:
    path = shared_data / relative
    series = [s for st in scan(path) for s in st.series]
    assert series and all(not s.is_image for s in series)
    message = refusal(series[0], NotAnImage)
    assert any(n in message for n in name.split("|")), message


def test_presentation_state_is_not_an_image(tmp_path: Path) -> None:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = GrayscaleSoftcopyPresentationStateStorage
    ds.SOPInstanceUID = generate_uid()
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.Modality = "PR"
    ds.save_as(tmp_path / "gsps.dcm", enforce_file_format=True)
    series = only_series(tmp_path)
    assert not series.is_image
    assert "Grayscale Softcopy Presentation State" in refusal(series, NotAnImage)


def test_errors_carry_no_array_work_when_refused_early(edge_dir: Path) -> None:
    """A refused series fails on headers: no volume-sized array is ever allocated."""
    import tracemalloc

    series = only_series(edge_dir / "duplicate-positions")
    tracemalloc.start()
    with pytest.raises(GeometryError):
        load_series(series)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    volume_bytes = 11 * 512 * 512 * np.dtype(np.float32).itemsize
    assert peak < volume_bytes + 8 * 512 * 512 * 2  # the read files, not a float volume
