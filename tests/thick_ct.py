"""Thick-slice chest CT made from the real A0001 series, as hospitals archive routine thorax CT.

Resampling the real 5 mm series to a coarser slice grid (linear along the slice normal, the
way a thicker reconstruction averages neighbouring slices) keeps real anatomy and the real
tumour; positions, thickness and UIDs are rewritten so the result is a consistent series.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from pydicom import dcmread
from pydicom.uid import generate_uid


def write_thick_series(src: Path, out: Path, spacing_mm: float) -> Path:
    """Write ``src`` (one axial series) resampled to slices ``spacing_mm`` apart into ``out``."""
    datasets = sorted(
        (dcmread(p) for p in src.glob("*.dcm")), key=lambda d: float(d.ImagePositionPatient[2])
    )
    z = np.array([float(d.ImagePositionPatient[2]) for d in datasets])
    hu = np.stack(
        [d.pixel_array * float(d.RescaleSlope) + float(d.RescaleIntercept) for d in datasets]
    )
    new_z = np.arange(z[0], z[-1] + 1e-6, spacing_mm)
    out.mkdir(parents=True, exist_ok=True)
    series_uid = generate_uid()
    for n, zn in enumerate(new_z):
        k = int(np.clip(np.searchsorted(z, zn) - 1, 0, len(z) - 2))
        w = (zn - z[k]) / (z[k + 1] - z[k])
        plane = (1 - w) * hu[k] + w * hu[k + 1]
        ds = datasets[k if w < 0.5 else k + 1].copy()
        slope, intercept = float(ds.RescaleSlope), float(ds.RescaleIntercept)
        dtype = ds.pixel_array.dtype
        stored = np.round((plane - intercept) / slope)
        info = np.iinfo(dtype)
        ds.PixelData = np.clip(stored, info.min, info.max).astype(dtype).tobytes()
        ds.ImagePositionPatient = [*ds.ImagePositionPatient[:2], round(float(zn), 3)]
        ds.SliceLocation = round(float(zn), 3)
        ds.SliceThickness = spacing_mm
        ds.InstanceNumber = n + 1
        ds.SeriesInstanceUID = series_uid
        ds.SOPInstanceUID = generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.SeriesDescription = f"thorax {spacing_mm:g} mm"
        ds.save_as(out / f"IM{n + 1:04d}.dcm", enforce_file_format=True)
    return out
