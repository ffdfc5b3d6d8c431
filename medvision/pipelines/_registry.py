"""Name → pipeline factory. Built-in pipelines register here; bundles will too."""

from __future__ import annotations

from collections.abc import Callable

from medvision.pipelines._contract import Pipeline

_FACTORIES: dict[str, Callable[[], Pipeline]] = {}


def register(name: str, factory: Callable[[], Pipeline]) -> None:
    """Make ``factory`` available as pipeline ``name`` (a later call replaces it)."""
    _FACTORIES[name] = factory


def available() -> list[str]:
    _load_builtins()
    return sorted(_FACTORIES)


def get(name: str) -> Pipeline:
    """Build the pipeline called ``name``; a KeyError names the ones that exist."""
    _load_builtins()
    try:
        factory = _FACTORIES[name]
    except KeyError:
        raise KeyError(
            f"Unknown pipeline '{name}'; available: {', '.join(sorted(_FACTORIES)) or 'none'}."
        ) from None
    return factory()


def _load_builtins() -> None:
    # Imported lazily so that listing pipelines does not import torch/monai at start-up
    # unless a pipeline module needs it.
    from medvision.pipelines import lung_ct  # noqa: F401


__all__ = ["available", "get", "register"]
