"""Package names served from a module imported on first use (PEP 562).

Why: ``medvision run`` is an offline command on a laptop; packages whose public face also
holds the node's database side (``audit``, ``auth``) must not make it import SQLAlchemy or
argon2 just to be named. A package lists which of its names live where, and hands this
module's ``__getattr__`` to Python.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Mapping
from typing import Any


def lazy_exports(package: str, where: Mapping[str, str]) -> Callable[[str], Any]:
    """A module ``__getattr__`` for ``package``: ``where`` maps a name to the module that
    defines it; the first use imports that module and keeps the value in the package."""

    def __getattr__(name: str) -> Any:  # noqa: ANN401 - whatever the named export is
        module = where.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module), name)
        setattr(sys.modules[package], name, value)
        return value

    return __getattr__


__all__ = ["lazy_exports"]
