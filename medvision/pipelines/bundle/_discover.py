"""Where bundle folders are found: the bundled models and the user's model folder.

The bundled models are the repository's top-level ``models/``, shipped inside the package as
its data folder ``medvision/bundled_models`` (a link to ``../models`` in a source checkout,
copied into the wheel by ``pip install``), and found through :mod:`importlib.resources`,
never through the layout of a checkout: an installed medvision finds the same bundles.

A bundle folder is one with ``configs/inference.json`` and a ``pipeline.yaml`` (its own, or
one medvision ships for a known zoo bundle). The user folder is ``MEDVISION_MODELS_DIR``,
else ``~/.cache/medvision/models``, where ``medvision models import`` writes by default:
converted weights live there, never in the repository.
"""

from __future__ import annotations

import logging
import os
from importlib.resources import files
from pathlib import Path

from medvision.pipelines._model_folder import is_staging
from medvision.pipelines.bundle._spec import SpecError, read_spec, spec_path_for

logger = logging.getLogger(__name__)

DEFAULT_USER_MODELS = Path("~/.cache/medvision/models")


def user_models_dir() -> Path:
    """``MEDVISION_MODELS_DIR`` or ``~/.cache/medvision/models``."""
    return Path(os.environ.get("MEDVISION_MODELS_DIR") or DEFAULT_USER_MODELS).expanduser()


def bundled_models_dir() -> Path:
    """The models that ship with medvision (package data ``medvision/bundled_models``)."""
    return Path(str(files("medvision") / "bundled_models"))


def model_dirs() -> list[Path]:
    """The folders searched for bundles, the bundled ones first."""
    return [bundled_models_dir(), user_models_dir()]


def find_bundles(dirs: list[Path] | None = None) -> dict[str, tuple[Path, Path]]:
    """Pipeline name -> (bundle folder, pipeline.yaml) for every usable bundle found.

    A broken ``pipeline.yaml`` is logged and skipped so one bad bundle does not hide the
    others; a later folder's bundle of the same name replaces an earlier one's.
    """
    found: dict[str, tuple[Path, Path]] = {}
    for base in dirs if dirs is not None else model_dirs():
        if not base.is_dir():
            continue
        for child in sorted(base.iterdir()):
            if is_staging(child) or not (child / "configs" / "inference.json").is_file():
                continue  # an import still being written (or replaced) is not a model yet
            spec_path = spec_path_for(child)
            if spec_path is None:
                logger.warning("Bundle %s has no pipeline.yaml; skipped", child)
                continue
            try:
                spec = read_spec(spec_path)
            except SpecError as exc:
                logger.warning("Bundle %s skipped: %s", child, exc)
                continue
            found[spec.name] = (child, spec_path)
    return found


__all__ = [
    "DEFAULT_USER_MODELS",
    "bundled_models_dir",
    "find_bundles",
    "model_dirs",
    "user_models_dir",
]
