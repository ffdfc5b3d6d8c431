"""A :class:`~medvision.dicom.Volume` built straight from an array, for tests of the parts
that read only voxels and geometry (no DICOM files, no headers, empty UIDs)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from medvision.dicom import Volume


def array_volume(
    array: np.ndarray,
    spacing: Sequence[float] = (1.0, 1.0, 2.0),
    direction: np.ndarray | None = None,
    origin: Sequence[float] = (0.0, 0.0, 0.0),
) -> Volume:
    """``array`` (``[k, j, i]``, cast to float32) as a CT volume with the given geometry."""
    n = array.shape[0]
    return Volume(
        array=np.asarray(array, np.float32),
        origin=tuple(origin),
        spacing=tuple(spacing),
        direction=np.eye(3) if direction is None else direction,
        frame_of_reference_uid="",
        study_instance_uid="",
        series_instance_uid="",
        modality="CT",
        sop_instance_uids=tuple(str(k) for k in range(n)),
        frame_numbers=(1,) * n,
        source_headers=(),
    )
