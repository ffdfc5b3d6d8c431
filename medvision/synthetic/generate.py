"""Generate a synthetic chest CT study with known ground truth.

Why: pipelines, writers and the node need a chest CT whose answer is known exactly (where
each nodule is, how large, how much lung there is), that can be committed and shared freely
(it holds no patient data), and that can be made at any size for benchmarks.

    python -m medvision.synthetic.generate --out DIR [--slices N] [--rows R] [--seed S] ...

Slices are drawn, written and forgotten one at a time, so memory stays at a few slices even
for 300 x 512 x 512.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from medvision.synthetic.anatomy import (
    DEFAULT_SCAN_LENGTH_MM,
    HU_LUNG,
    SCAN_CENTER_Z_MM,
    ChestPhantom,
    Grid,
)
from medvision.synthetic.nodules import LUNG_MARGIN_MM, NoduleSpec, default_nodules, occupancy
from medvision.synthetic.texture import add_noise
from medvision.synthetic.truth import GROUND_TRUTH_FILE, GroundTruth, NoduleTruth, _r
from medvision.synthetic.writer import (
    SERIES_NUMBER,
    SeriesWriter,
    StudyIdentity,
    TransferSyntax,
    to_stored,
)

DEFAULT_SLICES = 80
DEFAULT_ROWS = 256
DEFAULT_NOISE_HU = 15.0


def generate_study(
    out_dir: Path,
    *,
    n_slices: int = DEFAULT_SLICES,
    rows: int = DEFAULT_ROWS,
    seed: int = 0,
    slice_thickness_mm: float | None = None,
    transfer_syntax: str | TransferSyntax = TransferSyntax.EXPLICIT,
    nodules: Sequence[NoduleSpec] | None = None,
    noise_hu: float = DEFAULT_NOISE_HU,
) -> GroundTruth:
    """Write one axial CT series of the chest phantom into ``out_dir`` and return (and write
    as ``ground_truth.json``) what it contains.

    ``rows`` is also the number of columns; the field of view is 350 mm whatever the matrix.
    ``slice_thickness_mm`` defaults to the 240 mm scan range divided by ``n_slices``, so that
    any slice count covers the whole chest; given explicitly, the scan is ``n_slices`` times
    it, centred on the chest (slices are contiguous: spacing equals thickness). ``nodules``
    defaults to :func:`default_nodules`; pass ``[]`` for none. Earlier output of this
    generator in ``out_dir`` (``IM-0001-*.dcm``, ``ground_truth.json``) is replaced.
    """
    if not 8 <= n_slices <= 2000:
        raise ValueError(f"n_slices must be 8-2000, got {n_slices}.")
    if not 64 <= rows <= 1024:
        raise ValueError(f"rows must be 64-1024, got {rows}.")
    if slice_thickness_mm is None:
        slice_thickness_mm = round(DEFAULT_SCAN_LENGTH_MM / n_slices, 3)
    if not 0.3 <= slice_thickness_mm <= 10.0:
        raise ValueError(f"slice_thickness_mm must be 0.3-10, got {slice_thickness_mm}.")
    if not 0.0 <= noise_hu <= 100.0:
        raise ValueError(f"noise_hu must be 0-100, got {noise_hu}.")
    syntax = TransferSyntax(transfer_syntax)
    specs = list(default_nodules() if nodules is None else nodules)

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    for old in [*out_dir.glob(f"IM-{SERIES_NUMBER:04d}-*.dcm"), out_dir / GROUND_TRUTH_FILE]:
        old.unlink(missing_ok=True)

    grid = Grid.make(rows, n_slices, slice_thickness_mm, SCAN_CENTER_Z_MM)
    phantom = ChestPhantom(grid, SCAN_CENTER_Z_MM, seed)
    ident = StudyIdentity.from_seed(seed)
    writer = SeriesWriter(out_dir, grid, ident, syntax)
    lung_voxels = {"right": 0, "left": 0}
    stats = [_NoduleStats() for _ in specs]

    for k in range(n_slices):
        img, lungs = phantom.draw(k)
        for side, frac in lungs.items():
            lung_voxels[side] += int(np.count_nonzero(frac >= 0.5))
        for number, (spec, st) in enumerate(zip(specs, stats, strict=True), start=1):
            _check_clear_of_walls(number, spec, grid, k, lungs[spec.side])
            hit = occupancy(spec, grid, k)
            if hit is None:
                continue
            w, frac = hit
            img[w] = img[w] * (1 - frac) + np.float32(spec.hu) * frac
            st.add(grid, k, w, frac)
        img = add_noise(img, seed, k, noise_hu)
        writer.write(k, to_stored(img))

    truth = GroundTruth(
        seed=seed,
        rows=rows,
        columns=rows,
        n_slices=n_slices,
        pixel_spacing_mm=grid.pixel_mm,
        slice_spacing_mm=grid.slice_mm,
        transfer_syntax=syntax.value,
        study_instance_uid=ident.study_uid,
        series_instance_uid=ident.series_uid,
        frame_of_reference_uid=ident.frame_uid,
        lung_volume_ml={s: _r(n * grid.voxel_ml) for s, n in lung_voxels.items()},
        nodules=tuple(
            st.truth(i, spec, grid)
            for i, (spec, st) in enumerate(zip(specs, stats, strict=True), start=1)
        ),
        lung_hu=HU_LUNG,
        noise_hu=noise_hu,
    )
    truth.write(out_dir)
    return truth


def _check_clear_of_walls(
    number: int, spec: NoduleSpec, grid: Grid, k: int, lung: np.ndarray
) -> None:
    """Refuse a nodule that would touch the chest wall, mediastinum or diaphragm (or sit in
    the other lung): its measured volume would then depend on how a pipeline splits it."""
    grown = occupancy(spec, grid, k, grow_mm=LUNG_MARGIN_MM)
    if grown is None:
        return
    w, frac = grown
    if np.any((frac >= 0.5) & (lung[w] < 0.5)):
        raise ValueError(
            f"Nodule {number} at {spec.center_lps_mm} (diameter {spec.diameter_mm} mm) comes "
            f"within {LUNG_MARGIN_MM} mm of the {spec.side} lung's boundary on slice {k + 1} "
            f"(z = {grid.z(k)} mm), or lies outside the scan; move it deeper into the lung."
        )


class _NoduleStats:
    """Running sums over the slices for one nodule's ground truth."""

    def __init__(self) -> None:
        self.count = 0
        self.partial = 0.0
        self.sum_xyz = np.zeros(3)

    def add(self, grid: Grid, k: int, w: tuple[slice, slice], frac: np.ndarray) -> None:
        mask = frac >= 0.5
        self.count += int(mask.sum())
        self.partial += float(frac.sum(dtype=np.float64))
        jj, ii = np.nonzero(mask)
        self.sum_xyz += (grid.xs[w[1]][ii].sum(), grid.ys[w[0]][jj].sum(), grid.z(k) * len(ii))

    def truth(self, number: int, spec: NoduleSpec, grid: Grid) -> NoduleTruth:
        if self.count == 0:
            raise ValueError(f"Nodule {number} at {spec.center_lps_mm} is not in the scan.")
        a, b, c = spec.semi_axes_mm
        cz = spec.center_lps_mm[2]
        centroid = self.sum_xyz / self.count
        return NoduleTruth(
            number=number,
            lung=spec.side,
            center_lps_mm=tuple(_r(v) for v in spec.center_lps_mm),
            diameter_mm=_r(spec.diameter_mm),
            semi_axes_mm=(_r(a), _r(b), _r(c)),
            hu=_r(spec.hu),
            threshold_hu=_r((spec.hu + HU_LUNG) / 2),
            volume_ml=_r(self.count * grid.voxel_ml),
            voxel_count=self.count,
            partial_volume_ml=_r(self.partial * grid.voxel_ml),
            analytic_volume_ml=_r(4.0 / 3.0 * np.pi * a * b * c / 1000.0),
            mask_centroid_lps_mm=tuple(_r(v) for v in centroid),
            center_instance_number=int(round((grid.z_top - cz) / grid.slice_mm)) + 1,
        )


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: ``python -m medvision.synthetic.generate --out DIR ...``."""
    parser = argparse.ArgumentParser(
        prog="python -m medvision.synthetic.generate",
        description="Write a synthetic chest CT series with known nodules and ground_truth.json.",
    )
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    parser.add_argument("--slices", type=int, default=DEFAULT_SLICES, help="number of slices")
    parser.add_argument("--rows", type=int, default=DEFAULT_ROWS, help="rows = columns")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--thickness",
        type=float,
        default=None,
        help="slice thickness = spacing in mm (default: 240 mm / slices)",
    )
    parser.add_argument(
        "--transfer-syntax",
        default=TransferSyntax.EXPLICIT.value,
        choices=[t.value for t in TransferSyntax],
    )
    parser.add_argument(
        "--noise", type=float, default=DEFAULT_NOISE_HU, help="noise standard deviation in HU"
    )
    parser.add_argument("--no-nodules", action="store_true", help="draw no nodules")
    args = parser.parse_args(argv)
    truth = generate_study(
        args.out,
        n_slices=args.slices,
        rows=args.rows,
        seed=args.seed,
        slice_thickness_mm=args.thickness,
        transfer_syntax=args.transfer_syntax,
        nodules=[] if args.no_nodules else None,
        noise_hu=args.noise,
    )
    size = sum(p.stat().st_size for p in Path(args.out).iterdir() if p.is_file())
    print(
        f"wrote {truth.n_slices} slices and {GROUND_TRUTH_FILE} to {args.out} "
        f"({size / 1e6:.2f} MB); nodules: "
        + ", ".join(f"{n.lung} {n.diameter_mm:g} mm {n.volume_ml:.3f} mL" for n in truth.nodules)
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
