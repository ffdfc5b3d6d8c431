"""Name → pipeline factory: the built-in pipelines, bundle folders and imported nnU-Net models."""

from __future__ import annotations

import logging
from collections.abc import Callable

from medvision.errors import UnknownPipeline
from medvision.pipelines._contract import Pipeline

_FACTORIES: dict[str, Callable[[], Pipeline]] = {}
#: Names registered from bundle folders (re-discovered on each listing).
_BUNDLES: set[str] = set()


def register(name: str, factory: Callable[[], Pipeline]) -> None:
    """Make ``factory`` available as pipeline ``name`` (a later call replaces it)."""
    _FACTORIES[name] = factory


def available() -> list[str]:
    _load_builtins()
    return sorted(_FACTORIES)


def get(name: str) -> Pipeline:
    """Build the pipeline called ``name``; :class:`UnknownPipeline` names the ones that exist."""
    _load_builtins()
    factory = _FACTORIES.get(name)
    if factory is None:
        raise UnknownPipeline(name, sorted(_FACTORIES))
    return factory()


def _load_builtins() -> None:
    # Imported lazily so that listing pipelines does not import torch/monai at start-up
    # unless a pipeline module needs it.
    from medvision.pipelines import lung_ct  # noqa: F401

    _load_bundles()
    _load_nnunet()


def _load_bundles() -> None:
    """Register every bundle folder found in the repository's ``models/`` and in the user's
    model folder (``MEDVISION_MODELS_DIR``, default ``~/.cache/medvision/models``).

    Only ``pipeline.yaml`` is read here; a bundle's network loads on its first run. A
    built-in pipeline keeps its name: a bundle cannot silently replace it.
    """
    try:
        from medvision.pipelines.bundle import BundlePipeline, find_bundles
    except ImportError as exc:  # e.g. PyYAML missing: built-in pipelines still work
        logging.getLogger(__name__).warning("Model bundles not loaded: %s", exc)
        return
    for name, (root, spec_path) in find_bundles().items():
        if name in _FACTORIES and name not in _BUNDLES:
            continue
        _BUNDLES.add(name)
        register(name, lambda r=root, s=spec_path: BundlePipeline(r, s))


def _load_nnunet() -> None:
    """Register every imported nnU-Net model folder (``medvision models import nnunet``).

    Only ``pipeline.yaml`` is read here; nnU-Net itself (the optional extra) loads on the
    first run, so a node without it still lists the model and refuses it with a clear error.
    """
    from medvision.pipelines.nnunet import NnunetPipeline, find_nnunet_pipelines

    for name, (root, spec_path) in find_nnunet_pipelines().items():
        if name in _FACTORIES and name not in _BUNDLES:
            continue
        _BUNDLES.add(name)
        register(name, lambda r=root, s=spec_path: NnunetPipeline(r, s))


__all__ = ["available", "get", "register"]
