"""Rewrite a real MR volume as another acquisition: an (oblique) axial DICOM series.

Why: the GE and Siemens T1s behind issue 12 item 6 are not in the shared data, so the
orientation (and obliquity, voxel size, field of view) of a scanner's acquisition is
reproduced from the one real T1 we hold. The head is resampled (trilinear) onto an axial
grid tilted about the patient's left-right axis, as an AC-PC-aligned axial 3-D T1 is, and
written slice by slice with a correct ImageOrientationPatient / ImagePositionPatient, so
the node's own DICOM loader and the pipeline see it exactly as a scanner's series.
"""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
from pydicom.uid import ExplicitVRLittleEndian, generate_uid
from scipy import ndimage

from medvision.dicom import Volume

# Geometry-bearing or vendor-private attributes of the source that would contradict the new grid.
_DROP = (
    "SliceLocation",
    "SpacingBetweenSlices",
    "ImagesInAcquisition",
    "InStackPositionNumber",
    "ReferencedImageSequence",
)


def axial_grid(
    volume: Volume,
    *,
    tilt_deg: float,
    spacing: tuple[float, float, float],
    shape: tuple[int, int, int],
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Direction (LPS columns: row, column, slice), origin and spacing of a tilted axial grid.

    The grid is centred on the source volume's centre; rows run left, columns posterior,
    slices from inferior to superior, all rotated by ``tilt_deg`` about the LR axis.
    ``shape`` is (slices, rows, columns), ``spacing`` (column, row, slice) mm as in Volume.
    """
    t = np.deg2rad(tilt_deg)
    rot = np.array([[1, 0, 0], [0, np.cos(t), -np.sin(t)], [0, np.sin(t), np.cos(t)]])
    direction = rot @ np.eye(3)  # columns: +x (L), +y (P), +z (S) in LPS, tilted
    centre_src = volume.index_to_lps(np.asarray(volume.shape, dtype=float)[None, :] / 2 - 0.5)[0]
    n_kji = np.asarray(shape, dtype=float)
    half = (n_kji[::-1] - 1) / 2 * np.asarray(spacing)  # (i, j, k) half extents in mm
    origin = centre_src - direction @ half
    return direction, origin, np.asarray(spacing, dtype=float)


def resample_axial(
    volume: Volume,
    *,
    tilt_deg: float = 12.0,
    spacing: tuple[float, float, float] = (1.0, 1.0, 1.0),
    shape: tuple[int, int, int] = (220, 256, 256),
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The volume's voxels on the tilted axial grid: (array k,j,i, direction, origin, spacing)."""
    direction, origin, sp = axial_grid(volume, tilt_deg=tilt_deg, spacing=spacing, shape=shape)
    k, j, i = np.meshgrid(*(np.arange(n, dtype=np.float64) for n in shape), indexing="ij")
    ijk = np.stack([i, j, k], axis=-1) * sp
    lps = ijk @ direction.T + origin
    src = volume.lps_to_index(lps)  # (..., 3) continuous (k, j, i) in the source
    coords = np.moveaxis(src, -1, 0)
    array = ndimage.map_coordinates(volume.array, coords, order=1, cval=0.0, mode="constant")
    return array.astype(np.float32), direction, origin, sp


def write_axial_series(
    volume: Volume,
    out_dir: Path,
    *,
    tilt_deg: float = 12.0,
    spacing: tuple[float, float, float] = (1.0, 1.0, 1.0),
    shape: tuple[int, int, int] = (220, 256, 256),
) -> Path:
    """Write the volume resampled onto a tilted axial grid as a new single-frame MR series."""
    array, direction, origin, sp = resample_axial(
        volume, tilt_deg=tilt_deg, spacing=spacing, shape=shape
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    template = volume.source_headers[0]
    series_uid = generate_uid()
    stored = np.clip(np.rint(array), 0, 65535).astype(np.uint16)
    iop = [float(v) for v in (*direction[:, 0], *direction[:, 1])]
    for k in range(array.shape[0]):
        ds = copy.deepcopy(template)  # Dataset.copy() is shallow: it would edit the source
        for keyword in _DROP:
            if keyword in ds:
                delattr(ds, keyword)
        for tag in [t for t in ds.keys() if t.is_private]:
            del ds[tag]
        ds.file_meta = copy.deepcopy(template.file_meta)
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        sop_uid = generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = sop_uid
        ds.SOPInstanceUID = sop_uid
        ds.SeriesInstanceUID = series_uid
        ds.SeriesNumber = int(getattr(template, "SeriesNumber", 1) or 1) + 1000
        ds.SeriesDescription = "T1 3D axial (rewritten from the sagittal series)"
        ds.InstanceNumber = k + 1
        ds.ImageOrientationPatient = [round(v, 10) for v in iop]
        position = origin + direction[:, 2] * sp[2] * k
        ds.ImagePositionPatient = [round(float(v), 6) for v in position]
        ds.PixelSpacing = [float(sp[1]), float(sp[0])]  # row spacing, column spacing
        ds.SliceThickness = float(sp[2])
        ds.Rows, ds.Columns = int(array.shape[1]), int(array.shape[2])
        ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 16, 15
        ds.PixelRepresentation = 0
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.RescaleSlope, ds.RescaleIntercept = 1, 0
        for keyword in (
            "WindowCenter",
            "WindowWidth",
            "SmallestImagePixelValue",
            "LargestImagePixelValue",
        ):
            if keyword in ds:
                delattr(ds, keyword)
        ds.PixelData = np.ascontiguousarray(stored[k]).tobytes()
        ds["PixelData"].VR = "OW"
        ds.save_as(out_dir / f"axial_{k + 1:04d}.dcm", enforce_file_format=True)
    return out_dir


__all__ = ["axial_grid", "resample_axial", "write_axial_series"]
