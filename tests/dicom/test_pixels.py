"""The direct decoding path obeys BitsStored exactly as the standard (and pydicom) do."""

from __future__ import annotations

import numpy as np
import pytest
from pydicom import Dataset
from pydicom.dataset import FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian

from medvision.dicom._pixels import decode_frames


def _native(values: list[int], *, signed: bool, stored: int = 12) -> Dataset:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.Rows, ds.Columns, ds.SamplesPerPixel = 1, len(values), 1
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, stored, stored - 1
    ds.PixelRepresentation = int(signed)
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.PixelData = np.array(values, dtype=np.int16 if signed else np.uint16).tobytes()
    return ds


@pytest.mark.parametrize(
    ("values", "signed", "expected"),
    [
        ([0, 4095, 0xF00F], False, [0, 4095, 15]),  # bits above BitsStored are dropped
        ([-2048, 2047, 0x0FFF], True, [-2048, 2047, -1]),  # 12-bit two's complement
        ([-5, 100, 2000], True, [-5, 100, 2000]),  # already sign-extended: unchanged
    ],
)
def test_bits_stored(values: list[int], signed: bool, expected: list[int]) -> None:
    ds = _native(values, signed=signed)
    decoded = decode_frames(ds)
    assert decoded.shape == (1, 1, len(values))
    assert decoded.ravel().tolist() == expected
    assert ds.pixel_array.ravel().tolist() == expected  # pydicom agrees
