"""A chest phantom drawn slice by slice in Hounsfield units on a patient-LPS grid.

Why analytic shapes instead of a stored atlas: every boundary is known exactly, so the ground
truth (which voxel is lung, how large a nodule is) follows from the same numbers that paint the
image, and any grid size can be drawn without resampling.

Each structure is an ellipse, a capsule or a band with a *soft edge*: the fraction of a pixel
it covers ramps linearly over one pixel (in-plane) or one slice (along z). A voxel whose centre
lies inside a shape is more than half covered, so a threshold half-way between two tissues
recovers the shape. That is the partial-volume effect of a real scanner, without a blur pass.

Only +, -, *, / and sqrt are used on the pixels (no transcendental functions), so the result is
the same bit for bit on every CPU, which the committed sample relies on.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np

from medvision.synthetic.texture import LungTexture

#: Table position (z, mm) of the middle of the default scan; real scanners report table
#: coordinates like this rather than 0 at the chest.
SCAN_CENTER_Z_MM = -160.0
#: Length (mm) of the default scan range, from above the lung apices to below the bases.
DEFAULT_SCAN_LENGTH_MM = 240.0
#: Reconstruction field of view (mm), square.
FIELD_OF_VIEW_MM = 350.0

HU_AIR = -1000.0
HU_FAT = -100.0
HU_MEDIASTINAL_FAT = -90.0
HU_SKIN = 30.0
HU_MUSCLE = 40.0
HU_BLOOD = 40.0
HU_LUNG = -850.0
HU_LIVER = 58.0
HU_SPLEEN = 45.0
HU_CSF = 15.0
HU_DISC = 90.0
HU_CANCELLOUS = 380.0
HU_CORTICAL = 900.0
HU_RIB = 650.0
HU_CARTILAGE = 120.0
HU_TABLE = 150.0

Window = tuple[slice, slice]


@dataclass(frozen=True)
class Grid:
    """The voxel grid in patient LPS mm: i (columns) runs to patient left, j (rows) to
    posterior, slice k runs from head to feet as a real head-first scan is stored."""

    rows: int
    pixel_mm: float
    n_slices: int
    slice_mm: float
    x0: float
    y0: float
    z_top: float
    xs: np.ndarray = field(repr=False, compare=False)
    ys: np.ndarray = field(repr=False, compare=False)

    @classmethod
    def make(cls, rows: int, n_slices: int, slice_mm: float, center_z: float) -> Grid:
        """Round every header number first and derive the pixel centres from the rounded
        values, so that the geometry written to DICOM is exactly the one drawn."""
        pixel_mm = round(FIELD_OF_VIEW_MM / rows, 7)
        x0 = round(-(rows - 1) * pixel_mm / 2, 4)
        z_top = round(center_z + (n_slices - 1) * slice_mm / 2, 3)
        coords = x0 + pixel_mm * np.arange(rows, dtype=np.float64)
        return cls(rows, pixel_mm, n_slices, slice_mm, x0, x0, z_top, coords, coords)

    @property
    def voxel_ml(self) -> float:
        return self.pixel_mm * self.pixel_mm * self.slice_mm / 1000.0

    def z(self, k: int) -> float:
        return round(self.z_top - k * self.slice_mm, 4)

    def window(self, cx: float, cy: float, rx: float, ry: float) -> Window:
        """Rows and columns covering the box ``cx±rx, cy±ry`` plus one pixel."""
        n, p = self.rows, self.pixel_mm
        i0 = max(0, int(np.floor((cx - rx - self.x0) / p)) - 1)
        i1 = min(n, int(np.ceil((cx + rx - self.x0) / p)) + 2)
        j0 = max(0, int(np.floor((cy - ry - self.y0) / p)) - 1)
        j1 = min(n, int(np.ceil((cy + ry - self.y0) / p)) + 2)
        return slice(j0, max(j0, j1)), slice(i0, max(i0, i1))

    def coords(self, w: Window) -> tuple[np.ndarray, np.ndarray]:
        """Column x and row y coordinates of a window, shaped to broadcast to (rows, cols)."""
        return self.xs[w[1]][None, :], self.ys[w[0]][:, None]

    def ellipse(self, cx: float, cy: float, a: float, b: float) -> tuple[Window, np.ndarray]:
        """Coverage fraction of an ellipse. Signed distance to first order, F / |grad F| with
        F = (dx/a)^2 + (dy/b)^2 - 1, ramps over one pixel across the boundary."""
        w = self.window(cx, cy, a, b)
        x, y = self.coords(w)
        u, v = (x - cx) / a, (y - cy) / b
        grad = 2.0 * np.sqrt((u / a) ** 2 + (v / b) ** 2) + 1e-9
        dist = (u * u + v * v - 1.0) / grad
        return w, np.clip(0.5 - dist / self.pixel_mm, 0.0, 1.0).astype(np.float32)

    def capsule(
        self, p0: tuple[float, float], p1: tuple[float, float], r: float
    ) -> tuple[Window, np.ndarray]:
        """Coverage fraction of a 2-D capsule (a segment thickened by ``r``): vessels and
        bronchi that run obliquely through a slice."""
        cx, cy = (p0[0] + p1[0]) / 2, (p0[1] + p1[1]) / 2
        w = self.window(cx, cy, abs(p1[0] - p0[0]) / 2 + r, abs(p1[1] - p0[1]) / 2 + r)
        x, y = self.coords(w)
        dx, dy = p1[0] - p0[0], p1[1] - p0[1]
        t = np.clip(((x - p0[0]) * dx + (y - p0[1]) * dy) / max(dx * dx + dy * dy, 1e-9), 0, 1)
        dist = np.sqrt((x - p0[0] - t * dx) ** 2 + (y - p0[1] - t * dy) ** 2) - r
        return w, np.clip(0.5 - dist / self.pixel_mm, 0.0, 1.0).astype(np.float32)


def step(distance: np.ndarray | float, ramp: float) -> np.ndarray:
    """Coverage of the half-space ``distance >= 0`` by a voxel ``ramp`` mm thick."""
    return np.clip(0.5 + np.asarray(distance) / ramp, 0.0, 1.0)


def band(distance: np.ndarray | float, half_width: float, ramp: float) -> np.ndarray:
    """Coverage of a slab ``|distance| <= half_width`` by a voxel ``ramp`` mm thick."""
    return np.clip(0.5 + (half_width - np.abs(distance)) / ramp, 0.0, 1.0)


@dataclass(frozen=True)
class Lung:
    """One lung: an ellipse in each slice that shrinks towards the apex, clipped by the rib
    cage, and cut from below by a diaphragm dome (so low slices show only the costophrenic
    recesses, as in a real scan)."""

    side: str
    cx: float
    cy: float
    a: float
    b: float
    apex: float  # z (relative to the scan centre) of the apex
    dome: float  # z of the top of the diaphragm dome under this lung
    recess: float  # z of the deepest costophrenic recess
    dome_cx: float
    dome_cy: float

    def scale(self, zl: float) -> float:
        """Cross-section scale: 1 in the body of the lung, a rounded taper over the top 60 mm."""
        return float(np.sqrt(np.clip((self.apex - zl) / 60.0, 0.0, 1.0)))

    def diaphragm(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """z of the diaphragm under (x, y): highest at the dome, falling to the recesses at
        the lung's rim (deepest behind, as the dome sits forward of the lung's centre)."""
        r2 = ((x - self.dome_cx) / self.a) ** 2 + ((y - self.dome_cy) / self.b) ** 2
        return self.dome - np.minimum(r2, 1.0) * (self.dome - self.recess)


RIGHT_LUNG = Lung("right", -72.0, 4.0, 62.0, 84.0, 100.0, -35.0, -110.0, -68.0, -10.0)
LEFT_LUNG = Lung("left", 74.0, 6.0, 58.0, 84.0, 97.0, -45.0, -112.0, 68.0, -8.0)
#: Inside of the rib cage: the thoracic cavity.
CAVITY = (0.0, 6.0, 136.0, 90.0)
RIB_SPACING_MM = 24.0
RIB_TOP_MM = 104.0
RIB_COUNT = 12
DISC_SPACING_MM = 26.0


class ChestPhantom:
    """Draws slice ``k`` of the phantom. Static cross-sections (body wall, rib ring, spine)
    are computed once; per slice only what changes with z is drawn, which keeps a
    300 x 512 x 512 study within seconds."""

    def __init__(self, grid: Grid, center_z: float, seed: int) -> None:
        self.grid, self.center_z = grid, center_z
        self.base = self._body_wall()
        self.cavity_in = grid.ellipse(CAVITY[0], CAVITY[1], CAVITY[2] - 2.0, CAVITY[3] - 2.0)
        self._texture = LungTexture(grid, center_z, seed)
        self._ribs = self._rib_ring()
        self._zdia = {}
        for lung in (RIGHT_LUNG, LEFT_LUNG):
            w = grid.window(lung.cx, lung.cy, lung.a, lung.b)
            self._zdia[lung.side] = (w, lung.diaphragm(*grid.coords(w)))
        wa = self.cavity_in[0]
        xa, ya = grid.coords(wa)
        dome = np.where(xa < 0, RIGHT_LUNG.diaphragm(xa, ya), LEFT_LUNG.diaphragm(xa, ya))
        organ = np.where(xa < 15.0, HU_LIVER, HU_SPLEEN) + 0.0 * ya
        self._abdomen = (wa, dome, organ.astype(np.float32))
        self._cache: dict[tuple, tuple[Window, np.ndarray]] = {}
        self._img = np.empty_like(self.base)
        self._lungs = {"right": np.zeros_like(self.base), "left": np.zeros_like(self.base)}

    def _body_wall(self) -> np.ndarray:
        """Air, table, skin, subcutaneous fat, chest-wall muscle, cavity fat: the same in
        every slice."""
        g = self.grid
        img = np.full((g.rows, g.rows), HU_AIR, dtype=np.float32)
        w = g.window(0.0, 124.0, 160.0, 3.0)
        x, y = g.coords(w)
        frac = band(y - 124.0, 3.0, g.pixel_mm) * band(x, 160.0, g.pixel_mm)
        img[w] = img[w] * (1 - frac) + HU_TABLE * frac
        for (a, b), hu in (
            ((165.0, 118.0), HU_SKIN),
            ((163.0, 116.0), HU_FAT),
            ((151.0, 104.0), HU_MUSCLE),
        ):
            _paint(img, (), *g.ellipse(0.0, 0.0, a, b), hu)
        _paint(img, (), *g.ellipse(*CAVITY), HU_MEDIASTINAL_FAT)
        return img

    def _rib_ring(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Pixels of the ring just outside the cavity where ribs can appear, with their
        radial coverage, the z drop of a rib at that angle (ribs run down towards the
        front) and their HU (bone behind, costal cartilage in front)."""
        g = self.grid
        cx, cy, a, b = CAVITY
        w_out, outer = g.ellipse(cx, cy, a + 10.5, b + 10.5)
        w_in, inner = g.ellipse(cx, cy, a + 1.5, b + 1.5)
        ring = np.zeros((g.rows, g.rows), dtype=np.float32)
        ring[w_out] = outer
        ring[w_in] -= inner
        x, y = g.xs[None, :], g.ys[:, None]
        u, v = (x - cx) / (a + 6.0), (y - cy) / (b + 6.0)
        cos_post = v / np.maximum(np.sqrt(u * u + v * v), 1e-6)  # 1 at the back, -1 in front
        ring = ring * (np.abs(x) > 24.0)  # spine behind, sternum in front
        idx = np.flatnonzero(ring > 0)
        drop = (70.0 * (1.0 - cos_post) / 2.0).ravel()[idx]
        hu = np.where(cos_post.ravel()[idx] < -0.55, HU_CARTILAGE, HU_RIB)
        return idx, ring.ravel()[idx].astype(np.float32), drop, hu.astype(np.float32)

    def draw(self, k: int) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """Slice ``k`` in HU (float32, without noise) and each lung's coverage fraction.

        The arrays are reused by the next call: use or copy them before drawing again."""
        g = self.grid
        zl = g.z(k) - self.center_z
        img = self._img
        np.copyto(img, self.base)
        for lung_frac in self._lungs.values():
            lung_frac.fill(0.0)
        for lung in (RIGHT_LUNG, LEFT_LUNG):
            s = lung.scale(zl)
            if s * lung.b < 1.0:
                continue
            w, frac = self._lung_section(lung, s)
            wd, zdia = self._zdia[lung.side]
            frac = frac * step(zl - zdia[_within(w, wd)], g.slice_mm)
            hu = self._lung_hu(w) + self._texture.at(zl, w)
            img[w] = img[w] * (1 - frac) + hu * frac
            self._lungs[lung.side][w] = frac
        for w, frac, hu in self._mediastinum(zl):
            _paint(img, self._lungs, w, frac, hu)
        self._draw_bones(img, zl)
        return img, self._lungs

    def _shape(self, cx: float, cy: float, a: float, b: float) -> tuple[Window, np.ndarray]:
        """An ellipse that is the same in every slice, computed once."""
        key = (cx, cy, a, b)
        if key not in self._cache:
            self._cache[key] = self.grid.ellipse(cx, cy, a, b)
        return self._cache[key]

    def _lung_section(self, lung: Lung, s: float) -> tuple[Window, np.ndarray]:
        """The lung's ellipse at scale ``s`` clipped by the inside of the rib cage."""
        key = (lung.side, s)
        if key in self._cache:
            return self._cache[key]
        w, frac = self.grid.ellipse(lung.cx, lung.cy, lung.a * s, lung.b * s)
        wc, cav = self.cavity_in
        section = (w, np.minimum(frac, cav[_within(w, wc)]))
        if s == 1.0:  # most slices; the tapering apex changes with every slice
            self._cache[key] = section
        return section

    def _lung_hu(self, w: Window) -> np.ndarray:
        """Parenchyma density before texture: denser behind (gravity-dependent perfusion)."""
        return (HU_LUNG + 0.2 * (self.grid.ys[w[0]][:, None] - 5.0)).astype(np.float32)

    def _mediastinum(self, zl: float) -> Iterator[tuple[Window, np.ndarray, float | np.ndarray]]:
        """Everything between and around the lungs, in painting order. Each layer also
        removes what it covers from the lungs, so the lung masks stay exact."""
        g = self.grid
        yield (*self._shape(0.0, 8.0, 24.0, 96.0), HU_MEDIASTINAL_FAT)
        # Heart: an ellipsoid resting on the diaphragm, wrapped in pericardial fat.
        s = 1.0 - ((zl + 25.0) / 55.0) ** 2
        if s > 0:
            r = float(np.sqrt(s))
            yield (*g.ellipse(18.0, -18.0, 62.0 * r + 4.0, 50.0 * r + 4.0), HU_MEDIASTINAL_FAT)
            yield (*g.ellipse(18.0, -18.0, 62.0 * r, 50.0 * r), HU_BLOOD)
        # Aorta: ascending from the heart, the arch, and descending beside the spine.
        if -5.0 <= zl <= 46.0:
            yield (*self._shape(8.0, -28.0, 15.0, 15.0), HU_BLOOD)
        if 38.0 <= zl <= 56.0:
            yield (*g.capsule((8.0, -28.0), (30.0, 44.0), 13.0), HU_BLOOD)
        if zl <= 46.0:
            yield (*self._shape(30.0, 44.0, 13.0, 13.0), HU_MEDIASTINAL_FAT)
            yield (*self._shape(30.0, 44.0, 11.5, 11.5), HU_BLOOD)
        yield (*self._shape(-4.0, 36.0, 7.0, 7.0), HU_MUSCLE)  # oesophagus
        # Trachea above the carina, main bronchi below it running out to each hilum.
        if zl > 30.0:
            yield (*self._shape(0.0, 14.0, 11.0, 11.0), HU_MUSCLE)
            yield (*self._shape(0.0, 14.0, 9.0, 9.0), HU_AIR)
        for end_x, low in ((-22.0, 10.0), (25.0, 5.0)):
            if low <= zl <= 32.0:
                x = end_x * (32.0 - zl) / (32.0 - low)
                y = 14.0 + 6.0 * (32.0 - zl) / (32.0 - low)
                yield (*g.ellipse(x, y, 8.5, 8.5), HU_MUSCLE)
                yield (*g.ellipse(x, y, 6.5, 6.5), HU_AIR)
        # Below the diaphragm: liver on the right, spleen and stomach on the left.
        w, dome, organ = self._abdomen
        if zl < RIGHT_LUNG.dome + 2 * g.slice_mm:
            frac = step(dome - zl, g.slice_mm).astype(np.float32)
            yield w, frac * self.cavity_in[1], organ
        # Spine: vertebral body (cortex and marrow), canal, arch, processes; fat around it
        # keeps the lungs off the bone.
        yield (*self._shape(0.0, 62.0, 25.0, 22.0), HU_MEDIASTINAL_FAT)
        yield (*self._shape(0.0, 94.0, 18.0, 16.0), HU_CORTICAL)
        for sx in (-26.0, 26.0):
            yield (*self._shape(sx, 88.0, 12.0, 5.0), HU_CORTICAL)
        yield (*self._shape(0.0, 113.0, 5.0, 10.0), HU_CORTICAL)
        yield (*self._shape(0.0, 62.0, 20.0, 17.0), HU_CORTICAL)
        yield (*self._shape(0.0, 62.0, 17.5, 14.5), HU_CANCELLOUS)
        yield (*self._shape(0.0, 92.0, 8.0, 8.0), HU_CSF)

    def _draw_bones(self, img: np.ndarray, zl: float) -> None:
        """Discs between vertebral bodies, ribs crossing the slice, and the sternum."""
        g = self.grid
        disc = float(
            band(
                (zl + 3.0) - DISC_SPACING_MM * round((zl + 3.0) / DISC_SPACING_MM), 3.0, g.slice_mm
            )
        )
        if disc > 0:
            w, frac = self._shape(0.0, 62.0, 20.0, 17.0)
            _paint(img, (), w, frac * disc, HU_DISC)
        idx, radial, drop, hu = self._ribs
        offset = RIB_TOP_MM - drop - zl
        nearest = np.clip(np.round(offset / RIB_SPACING_MM), 0, RIB_COUNT - 1)
        frac = radial * band(offset - nearest * RIB_SPACING_MM, 4.5, g.slice_mm)
        flat = img.reshape(-1)
        flat[idx] = flat[idx] * (1 - frac) + hu * frac
        sternum = float(band(zl - 5.0, 70.0, g.slice_mm))
        if sternum > 0:
            w, frac = self._shape(0.0, -92.0, 16.0, 6.0)
            _paint(img, (), w, frac * sternum, 500.0)


def _within(w: Window, outer: Window) -> Window:
    """Window ``w`` expressed inside an array that covers window ``outer``."""
    return (
        slice(w[0].start - outer[0].start, w[0].stop - outer[0].start),
        slice(w[1].start - outer[1].start, w[1].stop - outer[1].start),
    )


def _paint(
    img: np.ndarray,
    lungs: dict[str, np.ndarray] | tuple,
    w: Window,
    frac: np.ndarray,
    hu: float | np.ndarray,
) -> None:
    """Lay a structure over the slice; whatever it covers is no longer lung."""
    img[w] = img[w] * (1 - frac) + hu * frac
    for lung in lungs.values() if isinstance(lungs, dict) else ():
        lung[w] *= 1 - frac
