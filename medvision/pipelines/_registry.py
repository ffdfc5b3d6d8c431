"""Name → pipeline factory: the built-in pipelines, bundle folders and imported nnU-Net models."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

from medvision.errors import UnknownPipeline
from medvision.pipelines._contract import Pipeline

_FACTORIES: dict[str, Callable[[], Pipeline]] = {}
#: Names registered from bundle folders (re-discovered on each listing).
_BUNDLES: set[str] = set()
#: The folder and pipeline.yaml each of those names was last found at.
_SOURCES: dict[str, tuple[Path, Path]] = {}


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


def identity(name: str) -> tuple[object, ...]:
    """What :func:`get` would build for ``name`` now, told cheaply: for an imported model the
    files that say which model it is (``pipeline.yaml``, which every import writes anew, the
    bundle's ``configs/*.json`` and the files in its ``models/``: path, inode, size,
    modification time); for a built-in pipeline its name (code does not change under a
    running process).

    A process that keeps pipelines between jobs (a scale-out worker) compares it before each
    job, so that a model re-imported or replaced under the same name is the one that runs,
    as it is in the node, which builds its pipelines per study.
    """
    _load_builtins()
    if name not in _FACTORIES:
        raise UnknownPipeline(name, sorted(_FACTORIES))
    source = _SOURCES.get(name)
    if source is None:
        return ("built-in", name)
    root, spec = source
    files = [spec, *sorted((root / "configs").glob("*.json")), *sorted(_files(root / "models"))]
    return tuple(_stat(path) for path in files)


def _files(folder: Path) -> list[Path]:
    try:
        return [p for p in folder.iterdir() if p.is_file()]
    except OSError:  # no models/ folder (nnU-Net imports keep theirs elsewhere)
        return []


def _stat(path: Path) -> tuple[object, ...]:
    try:
        st = path.stat()
    except OSError:  # removed or being replaced: not what was built before, whatever it was
        return (str(path), None)
    return (str(path), st.st_ino, st.st_size, st.st_mtime_ns)


def _load_builtins() -> None:
    # Imported lazily so that listing pipelines does not import torch/monai at start-up
    # unless a pipeline module needs it.
    from medvision.pipelines import lung_ct  # noqa: F401

    found = _load_bundles() | _load_nnunet()
    # A model folder that is gone (deleted, or moved out of the model folders) is no longer
    # a pipeline: listed, it would fail every study sent to it with a missing-file error.
    for name in _BUNDLES - found:
        _BUNDLES.discard(name)
        _SOURCES.pop(name, None)
        _FACTORIES.pop(name, None)


def _load_bundles() -> set[str]:
    """Register every bundle folder found in the repository's ``models/`` and in the user's
    model folder (``MEDVISION_MODELS_DIR``, default ``~/.cache/medvision/models``).

    Only ``pipeline.yaml`` is read here; a bundle's network loads on its first run. A
    built-in pipeline keeps its name: a bundle cannot silently replace it.
    """
    try:
        from medvision.pipelines.bundle import BundlePipeline, find_bundles
    except ImportError as exc:  # e.g. PyYAML missing: built-in pipelines still work
        logging.getLogger(__name__).warning("Model bundles not loaded: %s", exc)
        return set()
    found = set()
    for name, (root, spec_path) in find_bundles().items():
        if name in _FACTORIES and name not in _BUNDLES:
            continue
        found.add(name)
        _BUNDLES.add(name)
        _SOURCES[name] = (root, spec_path)
        register(name, lambda r=root, s=spec_path: BundlePipeline(r, s))
    return found


def _load_nnunet() -> set[str]:
    """Register every imported nnU-Net model folder (``medvision models import nnunet``).

    Only ``pipeline.yaml`` is read here; nnU-Net itself (the optional extra) loads on the
    first run, so a node without it still lists the model and refuses it with a clear error.
    """
    from medvision.pipelines.nnunet import NnunetPipeline, find_nnunet_pipelines

    found = set()
    for name, (root, spec_path) in find_nnunet_pipelines().items():
        if name in _FACTORIES and name not in _BUNDLES:
            continue
        found.add(name)
        _BUNDLES.add(name)
        _SOURCES[name] = (root, spec_path)
        register(name, lambda r=root, s=spec_path: NnunetPipeline(r, s))
    return found


__all__ = ["available", "get", "identity", "register"]
