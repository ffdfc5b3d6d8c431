"""``medvision models list`` and ``medvision models import brainchop SRC_DIR``.

Kept beside the bundle code so that ``medvision/cli.py`` only wires the sub-command in.
Errors a user can cause print one line and return exit code 2, like the other commands.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any


def add_models_parser(sub: Any) -> None:
    """Add the ``models`` command to the ``medvision`` sub-parsers ``sub``."""
    models = sub.add_parser("models", help="list model bundles, import brainchop/nnU-Net models")
    actions = models.add_subparsers(metavar="ACTION")
    listing = actions.add_parser("list", help="bundles found in models/ and the user folder")
    listing.set_defaults(func=cmd_models_list)
    imp = actions.add_parser("import", help="convert third-party models into MONAI bundles")
    imp.add_argument(
        "source",
        choices=["brainchop", "nnunet", "totalsegmentator"],
        help="where the models come from",
    )
    imp.add_argument(
        "src_dir",
        type=Path,
        nargs="?",
        help="brainchop folder (with public/models/), or an nnU-Net v2 results folder "
        "(dataset.json, plans.json, fold_*/checkpoint_final.pth); not for totalsegmentator",
    )
    imp.add_argument(
        "--out",
        type=Path,
        default=None,
        help="output folder (default: $MEDVISION_MODELS_DIR or ~/.cache/medvision/models)",
    )
    imp.add_argument("--model", default=None, help="one model, e.g. model5_gw_ae or mindgrab")
    from medvision.pipelines.nnunet._cli import add_nnunet_import_options

    add_nnunet_import_options(imp)
    imp.set_defaults(func=cmd_models_import)


def cmd_models_list(args: argparse.Namespace) -> int:
    from medvision.pipelines.bundle import find_bundles, model_dirs, read_spec
    from medvision.pipelines.nnunet._cli import list_nnunet

    print("searched: " + ", ".join(str(d) for d in model_dirs()))
    bundles = find_bundles()
    nnunet = list_nnunet()
    if not bundles and not nnunet:
        print("no bundles found")
    for name, (root, spec_path) in sorted(bundles.items()):
        spec = read_spec(spec_path)
        weights = any((root / "models" / f).is_file() for f in ("model.pt", "model.ts"))
        inputs = ", ".join(f"{i.key}:{i.modality}" for i in spec.inputs)
        labels = ", ".join(s.label.name for s in spec.labels)
        state = "weights" if weights else "NO WEIGHTS"
        print(f"{name}\t{root}\t[{state}]\tinputs {inputs}\tlabels {labels}")
    for line in nnunet:
        print(line)
    return 0


def cmd_models_import(args: argparse.Namespace) -> int:
    if args.source in ("nnunet", "totalsegmentator"):
        from medvision.pipelines.nnunet._cli import cmd_import_nnunet

        return cmd_import_nnunet(args)
    if args.src_dir is None:
        print("error: give the brainchop folder (SRC_DIR).", file=sys.stderr)
        return 2
    from medvision.pipelines.brainchop import default_out_dir, import_brainchop

    out = args.out or default_out_dir()
    try:
        written = import_brainchop(args.src_dir, out, model=args.model)
    except (OSError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    for path in written:
        print(f"wrote {path}")
    return 0


__all__ = ["add_models_parser", "cmd_models_import", "cmd_models_list"]
