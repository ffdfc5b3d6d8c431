"""Exact axis re-ordering between a DICOM volume and the array layout an nnU-Net model expects.

nnU-Net does not reorient: it runs on the array exactly as its image reader returned it and
was trained on arrays read the same way. TotalSegmentator, for example, makes every input
RAS-canonical first (voxel axes i, j, k pointing to the patient's Right, Anterior, Superior)
and nnU-Net's SimpleITK reader hands that over as ``[k, j, i]``. A medvision
:class:`~medvision.dicom.Volume` is ``[k, j, i]`` in the acquisition's own order (slices,
rows, columns), so an axial series read rows-first, a sagittal one, or one with flipped rows
must be permuted and flipped to the model's layout, and the answer undone the same way.
Only permutations and flips: no resampling, so every output voxel is exactly a source voxel
and laterality cannot be lost.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import permutations

import numpy as np

#: LPS unit vector of each orientation letter (DICOM patient coordinates).
_LETTERS = {
    "L": (1.0, 0.0, 0.0),
    "R": (-1.0, 0.0, 0.0),
    "P": (0.0, 1.0, 0.0),
    "A": (0.0, -1.0, 0.0),
    "S": (0.0, 0.0, 1.0),
    "I": (0.0, 0.0, -1.0),
}


def check_code(code: str) -> str:
    """``code`` upper-cased if it names three different body axes (e.g. RAS, LPS), else error."""
    code = str(code).upper()
    axes = {"L": 0, "R": 0, "P": 1, "A": 1, "S": 2, "I": 2}
    if len(code) != 3 or any(c not in axes for c in code) or len({axes[c] for c in code}) != 3:
        raise ValueError(f"orientation must be three letters like RAS or LPS, got {code!r}.")
    return code


@dataclass(frozen=True)
class Reorientation:
    """How to go from a volume's ``[k, j, i]`` array to the model's ``[k', j', i']`` array."""

    #: ``np.transpose`` axes taking the source array to the model layout.
    transpose: tuple[int, int, int]
    #: Model-layout array axes flipped after the transpose.
    flips: tuple[int, ...]
    #: Spacing (mm) along the model-layout array axes, as nnU-Net's ``properties['spacing']``.
    spacing: tuple[float, float, float]

    def forward(self, array: np.ndarray) -> np.ndarray:
        out = np.transpose(array, self.transpose)
        return np.ascontiguousarray(np.flip(out, self.flips) if self.flips else out)

    def backward(self, array: np.ndarray) -> np.ndarray:
        out = np.flip(array, self.flips) if self.flips else array
        return np.ascontiguousarray(np.transpose(out, np.argsort(self.transpose)))


def reorientation(
    direction: np.ndarray, spacing: tuple[float, float, float], code: str = "RAS"
) -> Reorientation:
    """The exact permutation and flips that bring voxel axes closest to ``code``.

    ``direction``'s columns are the LPS directions of voxel axes i, j, k; ``spacing`` is
    (i, j, k). ``code`` names where the model's voxel axes i', j', k' point (``RAS``: i' to
    the Right, j' Anterior, k' Superior). For an oblique (tilted) series the nearest axes win.
    """
    target = np.array([_LETTERS[c] for c in check_code(code)]).T  # columns: i', j', k'
    dots = np.asarray(direction, dtype=np.float64).T @ target  # [source axis, target axis]
    best = max(permutations(range(3)), key=lambda p: sum(abs(dots[p[t], t]) for t in range(3)))
    # Array axis b of the model layout is voxel axis 2 - b; of the source likewise.
    transpose = tuple(2 - best[2 - b] for b in range(3))
    flips = tuple(b for b in range(3) if dots[best[2 - b], 2 - b] < 0)
    model_spacing = tuple(float(spacing[best[2 - b]]) for b in range(3))
    return Reorientation(transpose, flips, model_spacing)  # type: ignore[arg-type]


__all__ = ["Reorientation", "check_code", "reorientation"]
