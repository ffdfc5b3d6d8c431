"""What makes the phantom look scanned rather than drawn: parenchymal texture and noise.

Both are random but reproducible: each comes from its own stream seeded by the study seed
(and, for noise, the slice number), and both use only exact arithmetic on the pixels, so the
same seed gives the same bits everywhere.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from medvision.synthetic.anatomy import Grid, Window


class LungTexture:
    """Smooth random parenchyma variation (about ±12 HU, 6 mm grain) so that lungs are not
    flat: a coarse random grid, smoothed, and interpolated linearly to each pixel."""

    STEP_MM = 6.0

    def __init__(self, grid: Grid, center_z: float, seed: int, sigma_hu: float = 12.0) -> None:
        rng = np.random.default_rng([seed, 1])
        n_xy = int(grid.rows * grid.pixel_mm / self.STEP_MM) + 5
        span = grid.n_slices * grid.slice_mm + 4 * self.STEP_MM
        n_z = int(span / self.STEP_MM) + 4
        field_ = rng.standard_normal((n_z, n_xy, n_xy))
        for axis in range(3):
            field_ = _smooth121(field_, axis)
        # Each [1, 2, 1] / 4 pass keeps sqrt(6 / 16) of the deviation; computed, not measured,
        # so that no reduction (whose rounding may depend on the CPU) enters the pixels.
        self.field = field_ * (sigma_hu / (6.0 / 16.0) ** 1.5)
        self.origin_xy = grid.x0 - 2 * self.STEP_MM
        self.origin_z = grid.z(grid.n_slices - 1) - center_z - 2 * self.STEP_MM
        self.grid = grid

    def at(self, zl: float, w: Window) -> np.ndarray:
        s = self.STEP_MM
        fz = (zl - self.origin_z) / s
        kz = int(np.floor(fz))
        plane = self.field[kz] * (1 - (fz - kz)) + self.field[kz + 1] * (fz - kz)
        x, y = self.grid.coords(w)
        fy, fx = (y[:, 0] - self.origin_xy) / s, (x[0, :] - self.origin_xy) / s
        jy, ix = np.floor(fy).astype(int), np.floor(fx).astype(int)
        ty, tx = (fy - jy)[:, None], (fx - ix)[None, :]
        rows = plane[jy] * (1 - ty) + plane[jy + 1] * ty
        return (rows[:, ix] * (1 - tx) + rows[:, ix + 1] * tx).astype(np.float32)


def _smooth121(a: np.ndarray, axis: int) -> np.ndarray:
    """[1, 2, 1] / 4 along one axis, edges repeated: a cheap, exactly reproducible blur."""
    pad = [(0, 0)] * a.ndim
    pad[axis] = (1, 1)
    p = np.pad(a, pad, mode="edge")
    n = a.shape[axis]
    take = lambda s: np.take(p, range(s, s + n), axis=axis)  # noqa: E731
    return (take(0) + 2 * take(1) + take(2)) / 4


def add_noise(img: np.ndarray, seed: int, k: int, sigma_hu: float) -> np.ndarray:
    """Quantum noise with the fine grain of a soft kernel, standard deviation ``sigma_hu``.

    White noise (a sum of four random bytes, close to Gaussian and several times cheaper to
    draw than normal deviates, in exact integer arithmetic) is blurred by [1, 2, 1] in both
    directions, which makes it Gaussian to the eye and gives it a CT-like grain. Each slice
    has its own stream, so slice k does not depend on how many came before."""
    if sigma_hu <= 0:
        return img
    h, w = img.shape[0] + 2, img.shape[1] + 2
    rng = np.random.default_rng([seed, 2, k])
    b = np.frombuffer(rng.bytes(4 * h * w), dtype=np.uint8).reshape(4, h, w)
    n = b[0].astype(np.int16) + b[1] + b[2] + b[3] - 510  # mean 0, sd sqrt(4 * 65535 / 12)
    n = n[:, :-2] + 2 * n[:, 1:-1] + n[:, 2:]
    n = n[:-2] + 2 * n[1:-1] + n[2:]  # |n| <= 16 * 510: fits int16; sd grows 6-fold
    scale = np.float32(sigma_hu / (6.0 * np.sqrt(4 * 65535 / 12)))
    return img + n.astype(np.float32) * scale
