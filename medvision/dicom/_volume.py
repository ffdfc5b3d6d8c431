"""The one image type that crosses from ``medvision.dicom`` into the pipelines.

Conventions (the same as ITK/SimpleITK, so that a volume can be handed to either without
guessing):

* ``array`` is float32, indexed ``[k, j, i]`` = ``[slice, row, column]``.
* ``spacing`` is ``(si, sj, sk)`` in mm: column spacing, row spacing, slice spacing.
* ``direction`` is a 3x3 matrix whose *columns* are the unit vectors of the i, j and k axes
  in patient LPS coordinates (DICOM's patient coordinate system).
* ``origin`` is the LPS position (mm) of the centre of voxel ``[0, 0, 0]``.
* ``affine`` maps ``(i, j, k, 1)`` to ``(x, y, z, 1)`` in LPS mm.

Geometry travels with the data and is never re-derived downstream.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np
from pydicom import Dataset


@dataclass(frozen=True, eq=False)
class Volume:
    """A 3-D image of one series with its geometry and the instances it came from."""

    array: np.ndarray
    origin: tuple[float, float, float]
    spacing: tuple[float, float, float]
    direction: np.ndarray
    frame_of_reference_uid: str
    study_instance_uid: str
    series_instance_uid: str
    modality: str
    #: SOP Instance UID of the instance that holds each slice k (repeated for multi-frame).
    sop_instance_uids: tuple[str, ...]
    #: 1-based frame number of each slice k inside its instance (1 for single-frame images).
    frame_numbers: tuple[int, ...]
    #: Headers (no pixel data) of the source instances, in slice order, one per instance.
    #: highdicom needs them to build a SEG/SR that references the source images.
    source_headers: tuple[Dataset, ...] = field(repr=False)

    def __post_init__(self) -> None:
        if self.array.ndim != 3:
            raise ValueError(f"Volume.array must be 3-D (k, j, i), got shape {self.array.shape}.")
        if self.array.dtype != np.float32:
            raise ValueError(f"Volume.array must be float32, got {self.array.dtype}.")
        direction = np.asarray(self.direction, dtype=np.float64)
        if direction.shape != (3, 3):
            raise ValueError(f"Volume.direction must be 3x3, got {direction.shape}.")
        object.__setattr__(self, "direction", direction)
        n = self.array.shape[0]
        if len(self.sop_instance_uids) != n or len(self.frame_numbers) != n:
            raise ValueError(
                f"Volume has {n} slices but {len(self.sop_instance_uids)} SOP Instance UIDs "
                f"and {len(self.frame_numbers)} frame numbers."
            )
        if any(s <= 0 for s in self.spacing):
            raise ValueError(f"Volume.spacing must be positive, got {self.spacing}.")
        self.array.setflags(write=False)
        direction.setflags(write=False)

    @property
    def shape(self) -> tuple[int, int, int]:
        """``(slices, rows, columns)``."""
        return tuple(self.array.shape)  # type: ignore[return-value]

    @property
    def affine(self) -> np.ndarray:
        """4x4 matrix from ``(i, j, k, 1)`` voxel indices to LPS mm."""
        affine = np.eye(4)
        affine[:3, :3] = self.direction * np.asarray(self.spacing)[None, :]
        affine[:3, 3] = self.origin
        return affine

    @property
    def voxel_volume_mm3(self) -> float:
        return float(np.prod(self.spacing))

    def index_to_lps(self, kji: np.ndarray) -> np.ndarray:
        """Map voxel indices given as ``(..., 3)`` in ``(k, j, i)`` order to LPS mm."""
        kji = np.asarray(kji, dtype=np.float64)
        ijk = kji[..., ::-1]
        return ijk @ (self.direction * np.asarray(self.spacing)[None, :]).T + np.asarray(
            self.origin
        )

    def lps_to_index(self, xyz: np.ndarray) -> np.ndarray:
        """Map LPS mm ``(..., 3)`` to continuous voxel indices in ``(k, j, i)`` order."""
        xyz = np.asarray(xyz, dtype=np.float64) - np.asarray(self.origin)
        m = self.direction * np.asarray(self.spacing)[None, :]
        ijk = xyz @ np.linalg.inv(m).T
        return ijk[..., ::-1]

    def with_array(self, array: np.ndarray) -> Volume:
        """A volume on the same grid with other voxel values (e.g. a resampled intensity)."""
        return replace(self, array=np.ascontiguousarray(array, dtype=np.float32))


__all__ = ["Volume"]
