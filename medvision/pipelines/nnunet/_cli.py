"""The nnU-Net part of ``medvision models import`` and ``medvision models list``.

Kept here so ``medvision/pipelines/bundle/_cli.py`` only dispatches. Errors a user can
cause print one line and return exit code 2, like the other commands.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any


def add_nnunet_import_options(imp: Any) -> None:
    """Options of ``models import nnunet`` (ignored by ``models import brainchop``)."""
    group = imp.add_argument_group("nnunet")
    group.add_argument("--name", default=None, help="pipeline name (default: nnunet-<dataset>)")
    group.add_argument(
        "--folds", nargs="+", default=None, help="folds to ensemble, e.g. 0 1 2 3 4 or all "
        "(default: every fold_* with a checkpoint)",
    )  # fmt: skip
    group.add_argument(
        "--checkpoint", default="checkpoint_final.pth", help="checkpoint file name in each fold"
    )
    group.add_argument(
        "--orientation", default="RAS", help="voxel axes the model was trained on, as "
        "nnU-Net's SimpleITK reader saw them (RAS: TotalSegmentator's canonical NIfTI)",
    )  # fmt: skip
    group.add_argument("--modality", default=None, help="CT or MR (default: from dataset.json)")
    group.add_argument(
        "--body-part", action="append", default=[], dest="body_parts",
        help="accepted DICOM BodyPartExamined (repeat; default: any)",
    )  # fmt: skip
    group.add_argument(
        "--max-slice-mm", type=float, default=None, dest="max_slice_mm",
        help="thickest slices accepted (default: max(5, 2 x the plan's spacing))",
    )  # fmt: skip
    group.add_argument(
        "--labels", type=Path, default=None, dest="mapping",
        help="label-name -> SNOMED CT mapping YAML (default: the shipped TotalSegmentator one)",
    )  # fmt: skip
    group.add_argument("--licence", default=None, help="licence recorded in the model card")
    group.add_argument(
        "--no-mirroring", action="store_false", dest="use_mirroring",
        help="run without nnU-Net's test-time mirroring (8x less work in 3-D; "
        "TotalSegmentator runs its models so)",
    )  # fmt: skip
    total = imp.add_argument_group("totalsegmentator")
    total.add_argument(
        "--task", default="total", help="total (default), lung_vessels, lung_vessels_LEGACY, "
        "lung_nodules or pleural_pericard_effusion",
    )  # fmt: skip
    speed = total.add_mutually_exclusive_group()
    speed.add_argument(
        "--fast", action="store_const", const="fast", dest="mode", default="default",
        help="TotalSegmentator's lower-resolution model of the task (total: one 3 mm model, "
        "dataset 297)",
    )  # fmt: skip
    speed.add_argument(
        "--fastest", action="store_const", const="fastest", dest="mode",
        help="its 6 mm model (total: dataset 298)",
    )  # fmt: skip
    total.add_argument(
        "--weights", type=Path, default=None, help="TotalSegmentator's weights folder "
        "(default: $TOTALSEG_WEIGHTS_PATH or ~/.totalsegmentator/nnunet/results)",
    )  # fmt: skip


def cmd_import_nnunet(args: argparse.Namespace) -> int:
    from medvision.pipelines.nnunet import default_out_dir, import_nnunet

    if args.source == "totalsegmentator":
        return _import_totalsegmentator(args)
    if args.src_dir is None:
        print("error: give the nnU-Net results folder (RESULTS_DIR).", file=sys.stderr)
        return 2
    try:
        written = import_nnunet(
            args.src_dir,
            args.out or default_out_dir(),
            name=args.name,
            folds=args.folds,
            checkpoint=args.checkpoint,
            orientation=args.orientation,
            modality=args.modality,
            body_parts=args.body_parts,
            max_slice_thickness_mm=args.max_slice_mm,
            mapping=args.mapping,
            licence=args.licence,
            use_mirroring=args.use_mirroring,
        )
    except (OSError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"wrote {written}")
    return 0


def _import_totalsegmentator(args: argparse.Namespace) -> int:
    from medvision.pipelines.nnunet import default_out_dir
    from medvision.pipelines.nnunet._totalseg import default_weights_dir, import_totalsegmentator

    try:
        written = import_totalsegmentator(
            args.weights or default_weights_dir(),
            args.out or default_out_dir(),
            args.task,
            args.mode,
        )
    except (OSError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    for path in written:
        print(f"wrote {path}")
    return 0


def list_nnunet() -> list[str]:
    """One ``models list`` line per imported nnU-Net model."""
    from medvision.pipelines.bundle import read_spec
    from medvision.pipelines.nnunet import find_nnunet_pipelines

    lines = []
    for name, (root, spec_path) in sorted(find_nnunet_pipelines().items()):
        spec = read_spec(spec_path)
        folds = sorted(  # fold_0, or part-291/fold_0 ... for merged models
            str(p.relative_to(root / "nnunet")) for p in (root / "nnunet").glob("**/fold_*")
        )
        inputs = ", ".join(f"{i.key}:{i.modality}" for i in spec.inputs)
        labels = ", ".join(s.label.name for s in spec.labels)
        lines.append(
            f"{name}\t{root}\t[nnU-Net {', '.join(folds)}]\tinputs {inputs}\tlabels {labels}"
        )
    return lines


__all__ = ["add_nnunet_import_options", "cmd_import_nnunet", "list_nnunet"]
