"""``medvision train`` and ``medvision evaluate``, wired into ``medvision/cli.py``.

Kept beside the training code so that ``cli.py`` only adds the sub-commands; torch and
MONAI are imported when a command runs, not when the parser is built.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

TASK_CHOICES = ("lungs", "lesions")
#: ``lesions``: the learned false-positive filter; ``lesions-unet``: the first, voxel-wise
#: lesion UNet on synthetic chests (kept so that its card's command still runs).
TRAIN_CHOICES = ("lungs", "lesions", "lesions-unet")


def add_training_parsers(sub: Any) -> None:
    """Add ``train`` and ``evaluate`` to the ``medvision`` sub-parsers ``sub``."""
    train = sub.add_parser(
        "train",
        help="train a default CT model into a MONAI bundle",
        description="lesions: the learned false-positive filter of lung-ct, by "
        "leave-one-patient-out over the three real chest CTs (folds, calibration, then the "
        "final bundle; see docs/accuracy.md). lungs, lesions-unet: voxel-wise UNets.",
    )
    train.add_argument("task", choices=TRAIN_CHOICES)
    train.add_argument("--steps", type=int, default=None, help="training steps (default 1500)")
    train.add_argument(
        "--out",
        type=Path,
        default=None,
        help="bundle folder (default ~/.cache/medvision/train/TASK/bundle/...)",
    )
    train.add_argument(
        "--resume",
        action="store_true",
        help="continue from the checkpoint in ~/.cache/medvision/train/TASK",
    )
    train.add_argument(
        "--smoke", action="store_true", help="a few steps on 2 tiny synthetic volumes (CI)"
    )
    train.add_argument(
        "--work-dir",
        type=Path,
        default=None,
        help="checkpoints, log and data list (default ~/.cache/medvision/train/TASK)",
    )
    train.add_argument(
        "--time-budget",
        type=float,
        default=None,
        metavar="SECONDS",
        help="bound the training loop: after 20 steps, cut the step count to what fits",
    )
    train.add_argument("--seed", type=int, default=None, help="lesions: seed (default 12)")
    train.add_argument(
        "--variants",
        type=int,
        default=None,
        help="lesions: copies per patient, the first as acquired (default 6)",
    )
    train.add_argument(
        "--fold",
        action="append",
        default=None,
        help="lesions: run only this held-out patient's fold (repeatable)",
    )
    train.add_argument(
        "--no-final",
        action="store_true",
        help="lesions: stop after the folds (no bundle trained on all three)",
    )
    train.set_defaults(func=cmd_train)

    ev = sub.add_parser(
        "evaluate",
        help="measure a pipeline or bundle on the real test data in ../shared/data",
        description="lungs: a bundle's Dice on TotalSegmentator's example CTs. lesions: any "
        "pipeline (default lung-ct) or bundle on the three real chest CTs with expert marks "
        "(LIDC-IDRI-0001, LIDC-IDRI-0002, A0001); prints one row per patient.",
    )
    ev.add_argument("task", choices=TASK_CHOICES)
    ev.add_argument(
        "--bundle",
        type=Path,
        default=None,
        help="bundle folder (lesions: a pipeline bundle, or a lung-ct lesion filter bundle "
        "made by medvision train lesions, measured as lung-ct's lesion stage)",
    )
    ev.add_argument(
        "--pipeline",
        default=None,
        help="lesions: a registered pipeline by name (default lung-ct; see medvision pipelines)",
    )
    ev.add_argument(
        "--case",
        action="append",
        default=None,
        help="lesions: only this patient (repeatable; default all three)",
    )
    ev.add_argument(
        "--run-refused",
        action="store_true",
        help="lesions: run the pipeline on a series it refuses too (the row says so)",
    )
    ev.add_argument("--json-out", type=Path, default=None, help="also write the figures here")
    ev.add_argument(
        "--write-card",
        action="store_true",
        help="rewrite the bundle's docs/README.md (model card) with these figures",
    )
    ev.set_defaults(func=cmd_evaluate)


def cmd_train(args: argparse.Namespace) -> int:
    from medvision.training._train import train

    if args.task == "lesions":
        return cmd_train_lesions(args)
    try:
        bundle = train(
            args.task,
            steps=args.steps,
            out=args.out,
            resume=args.resume,
            smoke=args.smoke,
            work_dir=args.work_dir,
            time_budget_s=args.time_budget,
        )
    except NotImplementedError as exc:
        print(f"medvision train: {exc}", file=sys.stderr)
        return 2
    print(bundle)
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from medvision.training._evaluate import evaluate

    if args.task == "lesions" and (args.bundle is None or is_filter_bundle(args.bundle)):
        return cmd_evaluate_lesions(args)
    if args.bundle is None:
        print(f"medvision evaluate {args.task}: --bundle is required", file=sys.stderr)
        return 2
    if not (args.bundle / "configs" / "inference.json").is_file():
        print(f"medvision evaluate: {args.bundle} is not a bundle folder", file=sys.stderr)
        return 2
    if args.task == "lesions":
        return cmd_evaluate_lesions(args)
    try:
        figures = evaluate(args.task, args.bundle)
    except NotImplementedError as exc:
        print(f"medvision evaluate: {exc}", file=sys.stderr)
        return 2
    text = json.dumps(figures, indent=2)
    print(text)
    if args.json_out:
        args.json_out.write_text(text + "\n")
    if args.write_card:
        from medvision.training._card import lesion_card, lung_card

        card = lung_card if args.task == "lungs" else lesion_card
        (args.bundle / "docs").mkdir(exist_ok=True)
        (args.bundle / "docs" / "README.md").write_text(card(args.bundle, figures))
    return 0


def is_filter_bundle(folder: Path) -> bool:
    """A lung-ct lesion filter bundle (``medvision train lesions``), not a pipeline."""
    meta = folder / "configs" / "metadata.json"
    return meta.is_file() and "medvision_filter" in json.loads(meta.read_text())


def cmd_evaluate_lesions(args: argparse.Namespace) -> int:
    """``evaluate lesions``: the per-patient table of any pipeline, or of a bundle folder."""
    from medvision.errors import UnknownPipeline
    from medvision.pipelines import Pipeline, get
    from medvision.training._lesion_cases import CASES, get_case
    from medvision.training._lesion_eval import HEADER, evaluate_lesions, format_row, format_table

    pipeline: Pipeline
    chosen_filter = None
    try:
        if args.bundle is not None and is_filter_bundle(args.bundle):
            # A lesion filter bundle is a stage of lung-ct: measure lung-ct with it.
            pipeline = get(args.pipeline or "lung-ct")
            chosen_filter = str(args.bundle.resolve())
        elif args.bundle is not None:
            from medvision.pipelines.bundle import BundlePipeline

            pipeline = BundlePipeline(args.bundle, device=None)
        else:
            pipeline = get(args.pipeline or "lung-ct")
        cases = [get_case(c) for c in args.case] if args.case else list(CASES)
    except (KeyError, UnknownPipeline) as exc:  # an unknown case or pipeline name
        print(f"medvision evaluate: {exc.args[0]}", file=sys.stderr)
        return 2
    print(f"lesions: {pipeline.name} {pipeline.version}; one row per patient as it ends")
    print(HEADER)
    before = os.environ.get("MEDVISION_LESION_FILTER")
    if chosen_filter:
        os.environ["MEDVISION_LESION_FILTER"] = chosen_filter
    try:
        figures = evaluate_lesions(
            pipeline,
            cases,
            on_row=lambda row: print(format_row(row), flush=True),
            run_refused=args.run_refused,
        )
    finally:
        if before is None:
            os.environ.pop("MEDVISION_LESION_FILTER", None)
        else:
            os.environ["MEDVISION_LESION_FILTER"] = before
    print()
    print(format_table(figures))
    if args.json_out:
        args.json_out.write_text(json.dumps(figures, indent=2) + "\n")
    if args.write_card and args.bundle is not None and not is_filter_bundle(args.bundle):
        from medvision.training._card import lesion_card

        (args.bundle / "docs").mkdir(exist_ok=True)
        (args.bundle / "docs" / "README.md").write_text(lesion_card(args.bundle, figures))
    return 0


def cmd_train_lesions(args: argparse.Namespace) -> int:
    """``train lesions``: folds, calibration and the final filter bundle."""
    from dataclasses import replace

    from medvision.training._data import cache_root
    from medvision.training._lesion_filter_train import FilterHP, train_lesions

    hp = FilterHP()
    changes = {
        k: v
        for k, v in (("steps", args.steps), ("seed", args.seed), ("variants", args.variants))
        if v is not None
    }
    hp = replace(hp, **changes)
    work = args.work_dir or cache_root() / "lesion-filter"
    try:
        bundle = train_lesions(work, hp, args.out, folds=args.fold, final=not args.no_final)
    except KeyError as exc:
        print(f"medvision train lesions: {exc.args[0]}", file=sys.stderr)
        return 2
    print(bundle or work / "folds")
    return 0
