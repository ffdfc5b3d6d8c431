"""Writing a bundle folder: the one layout that :class:`BundleRuntime` and
:func:`find_bundles` read, for every bundle medvision makes itself (``medvision train``,
``medvision models import brainchop``)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any


def write_bundle_folder(
    out: Path,
    *,
    inference: dict[str, Any],
    metadata: dict[str, Any],
    pipeline_yaml: str,
    state_dict: Mapping[str, Any],
    card: str,
) -> Path:
    """``configs/inference.json``, ``configs/metadata.json``, ``models/model.pt`` (a plain
    state dict, loadable with ``weights_only=True``), ``pipeline.yaml`` and the model card
    ``docs/README.md`` under ``out``, which may exist already."""
    import torch

    for folder in ("configs", "models", "docs"):
        (out / folder).mkdir(parents=True, exist_ok=True)
    (out / "configs" / "inference.json").write_text(json.dumps(inference, indent=2) + "\n")
    (out / "configs" / "metadata.json").write_text(json.dumps(metadata, indent=2) + "\n")
    (out / "pipeline.yaml").write_text(pipeline_yaml)
    torch.save(dict(state_dict), out / "models" / "model.pt")
    (out / "docs" / "README.md").write_text(card)
    return out


__all__ = ["write_bundle_folder"]
