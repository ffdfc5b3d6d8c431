"""load_series(): voxels and geometry agree with SimpleITK on real CT and MR."""

from __future__ import annotations

import random
import shutil
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from pydicom import dcmread

from medvision.dicom import Volume, load_series, scan

from .conftest import only_series, rewrite


def sitk_series(files: list[Path] | tuple[Path, ...]) -> sitk.Image:
    """SimpleITK's reading of the same files, sorted by its own (GDCM) rules."""
    folder = str(Path(files[0]).parent)
    names = sitk.ImageSeriesReader.GetGDCMSeriesFileNames(folder)
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(names)
    return reader.Execute()


def assert_same_as_sitk(vol: Volume, image: sitk.Image, *, rtol: float = 0.0) -> None:
    np.testing.assert_allclose(vol.origin, image.GetOrigin(), atol=1e-4)
    np.testing.assert_allclose(vol.spacing, image.GetSpacing(), rtol=1e-5)
    np.testing.assert_allclose(vol.direction.ravel(), image.GetDirection(), atol=1e-5)
    expected = sitk.GetArrayFromImage(image)
    assert vol.shape == expected.shape
    if rtol:
        np.testing.assert_allclose(vol.array, expected, rtol=rtol, atol=1e-3)
    else:
        np.testing.assert_array_equal(vol.array, expected)


@pytest.fixture(scope="module")
def chest_ct(chest_ct_dir: Path) -> Volume:
    return load_series(only_series(chest_ct_dir))


def test_chest_ct_equals_simpleitk(chest_ct: Volume, chest_ct_files: list[Path]) -> None:
    assert chest_ct.array.dtype == np.float32
    assert chest_ct.modality == "CT"
    assert_same_as_sitk(chest_ct, sitk_series(chest_ct_files))


def test_chest_ct_references_every_instance_in_slice_order(chest_ct: Volume) -> None:
    headers = chest_ct.source_headers
    assert len(headers) == 64 and chest_ct.frame_numbers == (1,) * 64
    assert tuple(h.SOPInstanceUID for h in headers) == chest_ct.sop_instance_uids
    assert all("PixelData" not in h for h in headers)
    z = [float(h.ImagePositionPatient[2]) for h in headers]
    assert z == sorted(z)
    # The affine puts slice k exactly where its header says it is.
    for k in (0, 31, 63):
        lps = chest_ct.index_to_lps(np.array([k, 0, 0]))
        np.testing.assert_allclose(lps, [float(v) for v in headers[k].ImagePositionPatient])
    assert chest_ct.frame_of_reference_uid == headers[0].FrameOfReferenceUID
    assert chest_ct.series_instance_uid == headers[0].SeriesInstanceUID


def test_any_file_order_and_names_give_the_same_volume(
    chest_ct: Volume, chest_ct_files: list[Path], tmp_path: Path
) -> None:
    shuffled = list(chest_ct_files)
    random.Random(7).shuffle(shuffled)
    for i, src in enumerate(shuffled):
        sub = tmp_path / ("x" if i % 3 else "y/z")
        sub.mkdir(parents=True, exist_ok=True)
        shutil.copy(src, sub / f"{i:03d}_{src.stem[::-1]}.img")
    again = load_series(only_series(tmp_path))
    np.testing.assert_array_equal(again.array, chest_ct.array)
    assert again.sop_instance_uids == chest_ct.sop_instance_uids
    assert again.origin == chest_ct.origin and again.spacing == chest_ct.spacing


def test_reversed_slice_positions_sort_along_the_normal(
    chest_ct: Volume, chest_ct_files: list[Path], tmp_path: Path
) -> None:
    # Instance numbers running against position must not matter: only geometry sorts.
    n = len(chest_ct_files)

    def renumber(i: int, ds):  # noqa: ANN202
        ds.InstanceNumber = n - int(ds.InstanceNumber)
        return ds

    again = load_series(only_series(rewrite(chest_ct_files, tmp_path, renumber)))
    np.testing.assert_array_equal(again.array, chest_ct.array)


def test_sagittal_mr_equals_simpleitk(mr_t1_dir: Path) -> None:
    series = only_series(mr_t1_dir)
    vol = load_series(series)
    assert vol.shape == (170, 256, 256) and vol.modality == "MR"
    # Philips rescale slope is fractional: SimpleITK computes in float64, we in float32.
    assert_same_as_sitk(vol, sitk_series(series.files), rtol=1e-6)


def test_enhanced_mr_loads_with_functional_groups(enhanced_dir: Path) -> None:
    path = enhanced_dir / "1901_WIP_3DpCASL_real.dcm"
    vol = load_series(only_series(path))
    assert vol.shape == (40, 96, 96)
    assert vol.sop_instance_uids == (dcmread(path, stop_before_pixels=True).SOPInstanceUID,) * 40
    assert len(vol.source_headers) == 1
    image = sitk.ReadImage(str(path))
    assert_same_as_sitk(vol, image, rtol=1e-6)
    # Frame numbers follow the sort along the normal; the per-frame slope (0.1) is applied.
    ds = dcmread(path)
    raw = ds.pixel_array.astype(np.float64) * 0.1
    for k, frame in enumerate(vol.frame_numbers):
        np.testing.assert_allclose(vol.array[k], raw[frame - 1], rtol=1e-6)


def test_per_frame_rescale_and_shuffled_frames(enhanced_dir: Path, tmp_path: Path) -> None:
    src = enhanced_dir / "1901_WIP_3DpCASL_real.dcm"
    reference = load_series(only_series(src))
    ds = dcmread(src)
    frames = ds.pixel_array.copy()
    order = list(range(40))
    random.Random(3).shuffle(order)
    groups = [ds.PerFrameFunctionalGroupsSequence[i] for i in order]
    for new, old in enumerate(order):
        pvt = groups[new].PixelValueTransformationSequence[0]
        pvt.RescaleSlope = f"{0.1 * (1 + old % 3):.6g}"
        pvt.RescaleIntercept = str(-old)
        frames[new] = ds.pixel_array[old] // (1 + old % 3)
    ds.PerFrameFunctionalGroupsSequence = groups
    ds.PixelData = frames.tobytes()
    ds.save_as(tmp_path / "shuffled.dcm")
    vol = load_series(only_series(tmp_path / "shuffled.dcm"))
    assert vol.shape == reference.shape
    np.testing.assert_allclose(vol.origin, reference.origin)
    for k in range(40):
        old = reference.frame_numbers[k] - 1
        expected = (ds.pixel_array[order.index(old)] * 0.1 * (1 + old % 3) - old).astype(np.float32)
        np.testing.assert_allclose(vol.array[k], expected, rtol=1e-5, atol=1e-4)
    assert vol.frame_numbers[0] == order.index(reference.frame_numbers[0] - 1) + 1


def test_scan_then_load_every_image_series_of_a_study(edge_dir: Path) -> None:
    (study,) = scan(edge_dir / "philips-head-phantom-study")
    axial = next(s for s in study.series if s.series_number == 201)
    vol = load_series(axial)
    assert_same_as_sitk(vol, sitk_series(axial.files))
