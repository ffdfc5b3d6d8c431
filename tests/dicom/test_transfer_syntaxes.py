"""Every common transfer syntax decodes to the same volume as the uncompressed original.

Real CT slices are re-encoded into temp folders, by pydicom's encoders and by dcmtk (called by
absolute path: the venv's pynetdicom installs commands that shadow some of dcmtk's names).
Lossless encodings must give identical voxels; lossy ones must stay close.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from pydicom import Dataset, dcmread
from pydicom.uid import (
    JPEG2000Lossless,
    JPEGLSLossless,
    RLELossless,
    generate_uid,
)

from medvision.dicom import Volume, load_series

from .conftest import only_series, rewrite

N_SLICES = 4


@pytest.fixture(scope="module")
def reference(chest_ct_files: list[Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Four real 12-bit CT slices, Explicit VR Little Endian."""
    out = tmp_path_factory.mktemp("reference")
    return rewrite(chest_ct_files[20 : 20 + N_SLICES], out, lambda i, ds: ds)


@pytest.fixture(scope="module")
def reference_volume(reference: Path) -> Volume:
    return load_series(only_series(reference))


def _pydicom_encode(reference: Path, out: Path, syntax: str) -> Path:
    out.mkdir()
    for path in sorted(reference.iterdir()):
        ds = dcmread(path)
        ds.compress(syntax)
        ds.save_as(out / path.name)
    return out


def _dcmtk_encode(reference: Path, out: Path, command: list[str]) -> Path:
    if not Path(command[0]).exists():
        pytest.skip(f"{command[0]} not installed")
    out.mkdir()
    for path in sorted(reference.iterdir()):
        subprocess.run([*command, str(path), str(out / path.name)], check=True)
    return out


@pytest.mark.parametrize("syntax", [RLELossless, JPEGLSLossless, JPEG2000Lossless])
def test_pydicom_encoded_lossless_equals_uncompressed(
    syntax: str, reference: Path, reference_volume: Volume, tmp_path: Path
) -> None:
    series = only_series(_pydicom_encode(reference, tmp_path / "enc", syntax))
    assert str(dcmread(series.files[0]).file_meta.TransferSyntaxUID) == syntax
    vol = load_series(series)
    np.testing.assert_array_equal(vol.array, reference_volume.array)
    assert vol.origin == reference_volume.origin and vol.spacing == reference_volume.spacing


@pytest.mark.parametrize(
    ("command", "syntax_name"),
    [
        (["/usr/bin/dcmcjpeg", "+e1"], "JPEG Lossless, Non-Hierarchical, First-Order Prediction"),
        (["/usr/bin/dcmcjpeg", "+el"], "JPEG Lossless, Non-Hierarchical (Process 14)"),
        (["/usr/bin/dcmcrle"], "RLE Lossless"),
        (["/usr/bin/dcmcjpls", "+el"], "JPEG-LS Lossless Image Compression"),
        (["/usr/bin/dcmconv", "+td"], "Deflated Explicit VR Little Endian"),
        (["/usr/bin/dcmconv", "+tb"], "Explicit VR Big Endian"),
        (["/usr/bin/dcmconv", "+ti"], "Implicit VR Little Endian"),
    ],
)
def test_dcmtk_encoded_lossless_equals_uncompressed(
    command: list[str],
    syntax_name: str,
    reference: Path,
    reference_volume: Volume,
    tmp_path: Path,
) -> None:
    series = only_series(_dcmtk_encode(reference, tmp_path / "enc", command))
    assert dcmread(series.files[0]).file_meta.TransferSyntaxUID.name.startswith(syntax_name)
    np.testing.assert_array_equal(load_series(series).array, reference_volume.array)


def test_jpeg_extended_12_bit_lossy_is_close(
    reference: Path, reference_volume: Volume, tmp_path: Path
) -> None:
    series = only_series(_dcmtk_encode(reference, tmp_path / "enc", ["/usr/bin/dcmcjpeg", "+ee"]))
    vol = load_series(series)
    diff = np.abs(vol.array - reference_volume.array)
    assert float(diff.mean()) < 5.0  # HU, lossy at dcmtk's default quality


def test_jpeg_baseline_8_bit_is_close(reference: Path, tmp_path: Path) -> None:
    def to_8_bit(i: int, ds: Dataset) -> Dataset:
        pixels = (np.clip(ds.pixel_array, 0, 2047) // 8).astype(np.uint8)
        ds.BitsAllocated = ds.BitsStored = 8
        ds.HighBit = 7
        ds.PixelRepresentation = 0
        ds.PixelData = pixels.tobytes()
        return ds

    eight = rewrite(sorted(reference.iterdir()), tmp_path / "eight", to_8_bit)
    expected = load_series(only_series(eight)).array
    series = only_series(_dcmtk_encode(eight, tmp_path / "enc", ["/usr/bin/dcmcjpeg", "+eb"]))
    assert dcmread(series.files[0]).file_meta.TransferSyntaxUID.name.startswith("JPEG Baseline")
    vol = load_series(series)
    assert float(np.abs(vol.array - expected).mean()) < 2.0


def test_real_jpeg2000_ct_decodes_like_simpleitk(totalseg_dir: Path, tmp_path: Path) -> None:
    """The TotalSegmentator slices (JPEG 2000, blank UIDs), with UIDs filled in, load."""
    study, series_uid = generate_uid(), generate_uid()

    def repair(i: int, ds: Dataset) -> Dataset:
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series_uid
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID
        ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID
        return ds

    files = sorted(totalseg_dir.iterdir())
    vol = load_series(only_series(rewrite(files, tmp_path / "fixed", repair)))
    assert vol.shape == (20, 512, 512)
    assert str(vol.source_headers[0].file_meta.TransferSyntaxUID) == JPEG2000Lossless
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(totalseg_dir)))
    image = reader.Execute()
    np.testing.assert_array_equal(vol.array, sitk.GetArrayFromImage(image))
    np.testing.assert_allclose(vol.origin, image.GetOrigin(), atol=1e-4)
    np.testing.assert_allclose(vol.spacing, image.GetSpacing(), rtol=1e-6)


def test_enhanced_mr_compressed_equals_uncompressed(enhanced_dir: Path, tmp_path: Path) -> None:
    src = enhanced_dir / "1901_WIP_3DpCASL_real.dcm"
    expected = load_series(only_series(src))
    ds = dcmread(src)
    ds.compress(JPEG2000Lossless)
    (tmp_path / "j2k").mkdir()
    ds.save_as(tmp_path / "j2k" / "mf.dcm")
    vol = load_series(only_series(tmp_path / "j2k"))
    np.testing.assert_array_equal(vol.array, expected.array)
    assert vol.frame_numbers == expected.frame_numbers
