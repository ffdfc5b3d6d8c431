"""Pixel decoding: a direct path for uncompressed little-endian data, pydicom's plugins for
everything else (JPEG baseline/lossless, JPEG-LS, JPEG 2000, RLE via pylibjpeg, pyjpegls
and gdcm).

The direct path exists for speed: most CT/MR arrives uncompressed, and pydicom's generic
decoder spends about a millisecond per frame on checks we have already made. It applies
the same rules as the DICOM standard (bits above BitsStored are not part of the value;
signed values are sign-extended from BitsStored), so both paths give identical numbers,
which the tests check.
"""

from __future__ import annotations

import numpy as np
from pydicom import Dataset
from pydicom.pixels import get_decoder
from pydicom.uid import UID, ExplicitVRLittleEndian, ImplicitVRLittleEndian

_NATIVE = {ImplicitVRLittleEndian, ExplicitVRLittleEndian}


class DecodeError(Exception):
    """Pixel data is present but cannot be turned into an array (the reason is the text)."""


def transfer_syntax(ds: Dataset) -> UID:
    """The transfer syntax of a read dataset, guessed from its encoding if the meta lacks it."""
    meta = getattr(ds, "file_meta", None)
    uid = meta.get("TransferSyntaxUID") if meta is not None else None
    if uid:
        return UID(str(uid))
    implicit = getattr(ds, "is_implicit_VR", True)
    return ImplicitVRLittleEndian if implicit in (True, None) else ExplicitVRLittleEndian


def decode_frames(ds: Dataset) -> np.ndarray:
    """All frames of ``ds`` as an array ``(frames, rows, columns)`` of stored values."""
    syntax = transfer_syntax(ds)
    if "PixelData" in ds and syntax in _NATIVE:
        fast = _native(ds)
        if fast is not None:
            return fast
    try:
        if "PixelData" in ds:
            pixels, _ = get_decoder(syntax).as_array(ds)
        else:  # FloatPixelData / DoubleFloatPixelData
            pixels = ds.pixel_array
    except Exception as err:  # noqa: BLE001 - plugins raise anything; we report one line
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise DecodeError(f"cannot decode pixel data ({syntax.name}): {reason}") from None
    return pixels[None] if pixels.ndim == 2 else pixels


def _native(ds: Dataset) -> np.ndarray | None:
    """Uncompressed little-endian frames straight from the bytes, or None if unusual."""
    try:
        rows, cols = int(ds.Rows), int(ds.Columns)
        allocated = int(ds.BitsAllocated)
        stored = int(ds.get("BitsStored", allocated) or allocated)
        signed = int(ds.get("PixelRepresentation", 0) or 0) == 1
        frames = int(ds.get("NumberOfFrames", 1) or 1)
        samples = int(ds.get("SamplesPerPixel", 1) or 1)
    except (AttributeError, TypeError, ValueError):
        return None
    if samples != 1 or allocated not in (8, 16, 32) or not 0 < stored <= allocated:
        return None
    dtype = np.dtype(f"<{'i' if signed else 'u'}{allocated // 8}")
    count = frames * rows * cols
    data = ds.PixelData
    if len(data) < count * dtype.itemsize:
        return None  # let pydicom explain the short pixel data
    pixels = np.frombuffer(data, dtype=dtype, count=count).reshape(frames, rows, cols)
    if stored < allocated:
        # Bits above BitsStored are not part of the value. Checking the range first is a
        # cheap reduction; rewriting the array is only needed when those bits are set.
        shift = allocated - stored
        if signed:
            low, high = -(1 << (stored - 1)), (1 << (stored - 1)) - 1
            if pixels.min() < low or pixels.max() > high:
                pixels = (pixels << shift) >> shift  # sign-extend from BitsStored
        elif pixels.max() >= (1 << stored):
            pixels = pixels & dtype.type((1 << stored) - 1)
    return pixels


__all__ = ["DecodeError", "decode_frames", "transfer_syntax"]
