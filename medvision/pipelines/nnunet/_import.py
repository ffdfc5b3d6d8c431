"""``medvision models import nnunet RESULTS_DIR``: an nnU-Net v2 trained model as a pipeline.

nnU-Net writes (and TotalSegmentator ships) a trained model as one folder:
``dataset.json`` (label names, channels), ``plans.json`` (pre-processing, network) and
``fold_*/checkpoint_final.pth``. The import copies exactly those files, unchanged, into
``<models>/<name>/nnunet/`` so that nnU-Net's own predictor loads them at run time, and
writes what nnU-Net does not say: ``pipeline.yaml`` (which DICOM series the model accepts,
SNOMED CT codes for its labels, the array orientation it was trained on) and a model card
with the source files' SHA-256 digests. Weights stay outside the repository.
"""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from medvision._hashing import sha256_file
from medvision.pipelines._model_folder import replacing
from medvision.pipelines.nnunet._labels import label_entry, read_mapping, shipped_mapping
from medvision.pipelines.nnunet._orient import check_code

CHECKPOINT = "checkpoint_final.pth"
_MR_NAMES = re.compile(r"^(MR|MRI|T1|T2|FLAIR|ADC|DWI|T1C|T1CE|T2W|T1W|PD)", re.IGNORECASE)


def default_out_dir() -> Path:
    """The user's model folder (``MEDVISION_MODELS_DIR`` or ``~/.cache/medvision/models``)."""
    from medvision.pipelines.bundle import user_models_dir

    return user_models_dir()


def available_folds(results: Path, checkpoint: str = CHECKPOINT) -> list[str]:
    """Folds with a checkpoint: ``0``, ``1``, ... and ``all``, in nnU-Net's naming."""
    folds = [p.name[len("fold_") :] for p in results.glob("fold_*") if (p / checkpoint).is_file()]
    return sorted(folds, key=lambda f: (not f.isdigit(), int(f) if f.isdigit() else 0, f))


def _modality(dataset: dict[str, Any]) -> str:
    channels = dataset.get("channel_names") or dataset.get("modality") or {}
    if len(channels) != 1:
        raise ValueError(
            f"The model takes {len(channels)} input channels ({', '.join(channels.values())}); "
            "only single-series nnU-Net models can be imported so far."
        )
    name = str(next(iter(channels.values())))
    if name.upper() == "CT":
        return "CT"
    if _MR_NAMES.match(name):
        return "MR"
    raise ValueError(f"Cannot tell the modality of input channel {name!r}; pass --modality.")


def _default_name(results: Path, dataset: dict[str, Any]) -> str:
    raw = (
        results.parent.name
        if results.parent.name.startswith("Dataset")
        else str(dataset.get("name") or results.name)
    )
    raw = re.sub(r"^Dataset\d+_", "", raw)
    slug = re.sub(r"[^a-z0-9._-]+", "-", raw.lower()).strip("-._")
    return f"nnunet-{slug or 'model'}"


def _target_spacing(plans: dict[str, Any], configuration: str) -> list[float]:
    cfg = plans.get("configurations", {}).get(configuration, {})
    return [float(s) for s in cfg.get("spacing", [])]


@dataclass(frozen=True)
class _Part:
    """One nnU-Net results folder, checked, with the folds to copy."""

    results: Path
    folds: list[str]
    configuration: str
    dataset: dict[str, Any]
    spacing: list[float]


def _part(results: Path, folds: Sequence[str] | None, checkpoint: str) -> _Part:
    results = Path(results)
    for needed in ("dataset.json", "plans.json"):
        if not (results / needed).is_file():
            raise FileNotFoundError(f"{results / needed} not found: not an nnU-Net results folder.")
    found = available_folds(results, checkpoint)
    chosen = [str(f) for f in folds] if folds else found
    missing = [f for f in chosen if f not in found]
    if not chosen or missing:
        raise FileNotFoundError(
            f"No {checkpoint} for fold(s) {', '.join(missing) or '(any)'} under {results}; "
            f"found: {', '.join(found) or 'none'}."
        )
    configuration = results.name.split("__")[-1] if "__" in results.name else "3d_fullres"
    plans = json.loads((results / "plans.json").read_text())
    return _Part(
        results,
        chosen,
        configuration,
        json.loads((results / "dataset.json").read_text()),
        _target_spacing(plans, configuration),
    )


def import_nnunet(
    results: Path | Sequence[Path],
    out_dir: Path,
    *,
    name: str | None = None,
    folds: Sequence[str] | None = None,
    checkpoint: str = CHECKPOINT,
    orientation: str = "RAS",
    modality: str | None = None,
    body_parts: Sequence[str] = (),
    max_slice_thickness_mm: float | None = None,
    mapping: Path | None = None,
    licence: str | None = None,
    use_mirroring: bool = True,
) -> Path:
    """Copy the model under ``out_dir/<name>`` with its ``pipeline.yaml``; return that folder.

    ``results``: one results folder, or several models of one task (TotalSegmentator's
    ``total``: five models of 1.5 mm, each with its part of the 117 labels) to be run on the
    same series and merged into one label map, so that a study gets one SEG, as from
    TotalSegmentator itself. Their labels are numbered in the order given; a later model's
    label wins a voxel two of them claim (TotalSegmentator's order of merging).
    ``use_mirroring``: nnU-Net's test-time mirroring (its default; 8x the work in 3-D).
    TotalSegmentator runs its models without it.
    """
    several = not isinstance(results, str | Path)
    sources = [Path(results)] if isinstance(results, str | Path) else [Path(r) for r in results]
    if not sources:
        raise ValueError("No nnU-Net results folder given.")
    out_dir = Path(out_dir)
    from medvision.pipelines.bundle import bundled_models_dir

    # The folder that ships with medvision (package data) is not the user's model folder.
    if out_dir.resolve().is_relative_to(bundled_models_dir().resolve()):
        raise ValueError(
            f"Refusing to write model weights into the bundled models ({out_dir}); "
            "choose a folder outside it (default ~/.cache/medvision/models)."
        )
    parts = [_part(r, folds, checkpoint) for r in sources]
    name = name or _default_name(sources[0], parts[0].dataset)
    if not re.fullmatch(r"[a-z0-9][a-z0-9._-]*", name):
        raise ValueError(
            f"--name must be lower-case letters, digits, '.', '_' or '-', got {name!r}."
        )
    modality = (modality or _modality(parts[0].dataset)).upper()
    orientation = check_code(orientation)
    codes = read_mapping(mapping) if mapping else shipped_mapping()
    thickness = max_slice_thickness_mm or min(
        max([5.0, *(2.0 * s for s in part.spacing)]) for part in parts
    )
    shared = {
        "checkpoint": checkpoint,
        "orientation": orientation,
        "use_mirroring": bool(use_mirroring),
        "tile_step_size": 0.5,
    }
    if several:
        labels, value_maps = _merged_labels([p.dataset for p in parts], codes)
        folders = [f"nnunet/{_part_folder(p.results)}" for p in parts]
        nnunet: dict[str, Any] = {
            "parts": [
                {
                    "folder": folder,
                    "configuration": part.configuration,
                    "folds": part.folds,
                    "labels": value_map,
                }
                for folder, part, value_map in zip(folders, parts, value_maps, strict=True)
            ],
            **shared,
        }
        what = f"nnU-Net v2 models {', '.join(_source_name(p.results) for p in parts)}, merged"
    else:
        labels = _labels(parts[0].dataset, codes)
        folders = ["nnunet"]
        nnunet = {
            "folder": "nnunet",
            "configuration": parts[0].configuration,
            "folds": parts[0].folds,
            **shared,
        }
        what = f"nnU-Net v2 model {_source_name(parts[0].results)}"
    spec = {
        "name": name,
        "description": f"{what} ({len(labels)} labels), imported by medvision.",
        "model_card": "docs/README.md",
        "inputs": [
            {
                "key": "image",
                "modality": modality,
                **({"body_parts": [b.upper() for b in body_parts]} if body_parts else {}),
                "min_slices": 10,
                "max_slice_thickness_mm": round(float(thickness), 2),
            }
        ],
        "labels": labels,
        "explain": {"tta_passes": 0},
        "nnunet": nnunet,
    }
    # Written aside and renamed into place: a node running meanwhile sees the old model or
    # the new one, never a part of either (pipelines/_model_folder.py).
    with replacing(out_dir / name) as target:
        copied: list[Path] = []
        for folder, part in zip(folders, parts, strict=True):
            copied += _copy_model(part, checkpoint, target / folder)
        (target / "pipeline.yaml").write_text(
            "# Written by `medvision models import nnunet`; see docs/models.md.\n"
            + yaml.safe_dump(spec, sort_keys=False)
        )
        (target / "docs").mkdir()
        licence_file = next(
            (p.results / "LICENSE" for p in parts if (p.results / "LICENSE").is_file()), None
        )
        if licence_file is not None:
            shutil.copyfile(licence_file, target / "LICENSE")
        (target / "docs" / "README.md").write_text(
            _card(parts, name, copied, labels, orientation, licence)
        )
    return out_dir / name


def _source_name(results: Path) -> str:
    return f"{results.parent.name}/{results.name}"


def _part_folder(results: Path) -> str:
    """``part-291`` for ``Dataset291_*``: where one model of a merged import lives."""
    match = re.match(r"Dataset(\d+)_", results.parent.name)
    return f"part-{match.group(1)}" if match else f"part-{results.parent.name.lower()}"


def _copy_model(part: _Part, checkpoint: str, model: Path) -> list[Path]:
    """Copy nnU-Net's files, unchanged; returns the source files (for the model card)."""
    model.mkdir(parents=True)
    sources = [part.results / "dataset.json", part.results / "plans.json"]
    for f in ("dataset.json", "plans.json"):
        shutil.copyfile(part.results / f, model / f)
    for fold in part.folds:
        (model / f"fold_{fold}").mkdir()
        src = part.results / f"fold_{fold}" / checkpoint
        shutil.copyfile(src, model / f"fold_{fold}" / checkpoint)
        sources.append(src)
    return sources


def _merged_labels(
    datasets: list[dict[str, Any]], codes: dict[str, dict[str, Any]]
) -> tuple[dict[int, Any], list[dict[int, int]]]:
    """The merged label map's labels, numbered in model order, and per model its
    ``{model value: merged value}``. A name two models share is one label."""
    merged: dict[str, int] = {}
    labels: dict[int, Any] = {}
    value_maps: list[dict[int, int]] = []
    for dataset in datasets:
        value_map: dict[int, int] = {}
        for value, entry in _labels(dataset, codes).items():
            label_name = entry["name"]
            if label_name not in merged:
                merged[label_name] = len(merged) + 1
                labels[merged[label_name]] = label_entry(label_name, merged[label_name], codes)
            value_map[value] = merged[label_name]
        value_maps.append(value_map)
    return labels, value_maps


def _labels(dataset: dict[str, Any], mapping: dict[str, dict[str, Any]]) -> dict[int, Any]:
    out: dict[int, Any] = {}
    for label_name, value in (dataset.get("labels") or {}).items():
        if isinstance(value, list | tuple):  # region-based models: not a plain label map
            raise ValueError(
                f"Label {label_name!r} is a region ({value}); region-based nnU-Net models are "
                "not supported yet."
            )
        if int(value) == 0:
            continue
        out[int(value)] = label_entry(str(label_name), int(value), mapping)
    if not out:
        raise ValueError("dataset.json names no foreground label.")
    return dict(sorted(out.items()))


def _card(
    parts: list[_Part],
    name: str,
    sources: list[Path],
    labels: dict[int, Any],
    orientation: str,
    licence: str | None,
) -> str:
    def shown(path: Path) -> str:
        for part in parts:
            if path.is_relative_to(part.results):
                inside = path.relative_to(part.results)
                return str(inside) if len(parts) == 1 else f"{part.results.parent.name}/{inside}"
        return str(path)

    rows = "\n".join(f"| `{shown(p)}` | `{sha256_file(p)}` |" for p in sources)
    uncoded = [v["name"] for v in labels.values() if v.get("coded") is False]
    source = "; ".join(
        f"`{p.results}` (nnU-Net results folder `{_source_name(p.results)}`), folds "
        f"{', '.join(p.folds)}"
        for p in parts
    )
    spacing = "; ".join(str(p.spacing) for p in parts)
    merged = (
        ""
        if len(parts) == 1
        else f"""
**Merged**: the {len(parts)} models run one after the other on the same series; their label
maps are merged into one ({len(labels)} labels, numbered in model order), a later model's
label winning a voxel that two of them claim, as TotalSegmentator merges them. One SEG and
one SR per study.
"""
    )
    title = "nnU-Net v2 model" if len(parts) == 1 else f"{len(parts)} nnU-Net v2 models"
    return f"""# {name}: {title} imported by medvision

**Source**: {source}. **Licence**: {licence or "as stated by the model's publisher"}.
The weights are third-party (or the site's own) and are not part of medvision.

| source file | sha256 |
| --- | --- |
{rows}

**Run**: nnU-Net's own `nnUNetPredictor` in process (CUDA when present, else CPU), on the
series re-ordered (permutations and flips only, no resampling) to `{orientation}` voxel axes
as nnU-Net was trained; nnU-Net resamples to its target spacing {spacing} mm and back, and
the label map is re-ordered back onto the source grid voxel for voxel.
{merged}
**Labels**: {len(labels)}; without a SNOMED CT code (private 99MEDVISION coding, flagged in
every result that contains them): {", ".join(uncoded) or "none"}.

**Intended use**: research; not a medical device, not for diagnosis.
"""


__all__ = ["CHECKPOINT", "available_folds", "default_out_dir", "import_nnunet"]
