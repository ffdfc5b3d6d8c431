"""A synthetic CT series of the tiny nnU-Net model's phantom, stored in any orientation.

The phantom lives in patient coordinates (LPS, mm): a water-like body ellipse in air and two
bright spheres, the patient's left one (x > 0) at 250 HU and the right one at 700 HU, as the
tiny model was trained. The same phantom can be written as an axial series, an axial series
with rows flipped (rows running anterior), or a sagittal series, so that each tests that the
answer comes back onto its own source grid.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

#: Sphere centres (LPS mm) and radii: the patient's left kidney stand-in at +x.
LEFT = ((14.0, 2.0, 3.0), 9.0, 250.0)
RIGHT = ((-14.0, -3.0, -2.0), 8.5, 700.0)


def phantom_hu(points: np.ndarray) -> np.ndarray:
    """HU at LPS points ``(..., 3)`` (noise-free apart from a fixed texture)."""
    x, y, z = points[..., 0], points[..., 1], points[..., 2]
    body = (x / 31.0) ** 2 + (y / 25.0) ** 2 <= 1.0
    hu = np.where(body, 40.0, -1000.0)
    hu = hu + 15.0 * np.sin(0.7 * x) * np.cos(0.5 * y + 0.3 * z)
    for centre, radius, value in (LEFT, RIGHT):
        d2 = sum((points[..., n] - centre[n]) ** 2 for n in range(3))
        hu = np.where(d2 <= radius**2, value, hu)
    return hu


@dataclass(frozen=True)
class Layout:
    """Geometry of a series: row/column direction cosines, normal, pixel and slice spacing."""

    name: str
    row_dir: tuple[float, float, float]  # along a row: the direction of increasing column
    col_dir: tuple[float, float, float]  # down a column: the direction of increasing row
    rows: int
    columns: int
    slices: int
    row_spacing: float  # between rows (PixelSpacing[0])
    col_spacing: float  # between columns (PixelSpacing[1])
    slice_spacing: float

    @property
    def normal(self) -> np.ndarray:
        return np.cross(self.row_dir, self.col_dir)

    def affine(self) -> np.ndarray:
        """Voxel (i=column, j=row, k=slice) -> LPS mm, centred on the phantom."""
        a = np.eye(4)
        a[:3, 0] = np.asarray(self.row_dir) * self.col_spacing
        a[:3, 1] = np.asarray(self.col_dir) * self.row_spacing
        a[:3, 2] = self.normal * self.slice_spacing
        half = np.array([self.columns - 1, self.rows - 1, self.slices - 1]) / 2.0
        a[:3, 3] = -a[:3, :3] @ half
        return a


AXIAL = Layout("axial", (1, 0, 0), (0, 1, 0), 48, 48, 32, 1.5, 1.5, 2.0)
ROWS_FLIPPED = Layout("rows-flipped", (1, 0, 0), (0, -1, 0), 48, 48, 32, 1.5, 1.5, 2.0)
SAGITTAL = Layout("sagittal", (0, 1, 0), (0, 0, -1), 32, 48, 44, 2.0, 1.5, 1.5)


def write_series(layout: Layout, out: Path) -> tuple[Path, list[str], np.ndarray]:
    """Write the phantom as ``layout``; return the folder, SOP UIDs in slice order, affine."""
    out.mkdir(parents=True, exist_ok=True)
    affine = layout.affine()
    study, series, frame = generate_uid(), generate_uid(), generate_uid()
    j, i = np.meshgrid(np.arange(layout.rows), np.arange(layout.columns), indexing="ij")
    uids = []
    for k in range(layout.slices):
        ijk = np.stack([i, j, np.full_like(i, k), np.ones_like(i)], axis=-1).astype(float)
        lps = (ijk @ affine.T)[..., :3]
        stored = np.rint(phantom_hu(lps) + 1024.0).astype(np.int16)
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = CTImageStorage
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = FileDataset(str(out / f"{k:03d}.dcm"), {}, file_meta=meta, preamble=b"\0" * 128)
        ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, meta.MediaStorageSOPInstanceUID
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study, series, frame
        ds.Modality, ds.BodyPartExamined = "CT", "ABDOMEN"
        ds.PatientName, ds.PatientID, ds.PatientSex = "PHANTOM^NNUNET", "NNUNET-1", "O"
        ds.PatientBirthDate, ds.StudyDate, ds.StudyTime = "19700101", "20260101", "120000"
        ds.AccessionNumber, ds.StudyID, ds.ReferringPhysicianName = "A1", "1", ""
        ds.SeriesNumber, ds.InstanceNumber = 2, k + 1
        ds.SeriesDescription = f"phantom {layout.name}"
        ds.Manufacturer = "medvision-tests"
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        ds.ImageOrientationPatient = [*map(float, layout.row_dir), *map(float, layout.col_dir)]
        ds.ImagePositionPatient = [float(v) for v in affine[:3, :3] @ [0, 0, k] + affine[:3, 3]]
        ds.PixelSpacing = [layout.row_spacing, layout.col_spacing]
        ds.SliceThickness = layout.slice_spacing
        ds.KVP = 120
        ds.Rows, ds.Columns = layout.rows, layout.columns
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        ds.RescaleIntercept, ds.RescaleSlope, ds.RescaleType = -1024, 1, "HU"
        ds.PixelData = stored.tobytes()
        pydicom.dcmwrite(ds.filename, ds, enforce_file_format=True)
        uids.append(str(ds.SOPInstanceUID))
    return out, uids, affine


__all__ = ["AXIAL", "LEFT", "RIGHT", "ROWS_FLIPPED", "SAGITTAL", "Layout", "write_series"]
