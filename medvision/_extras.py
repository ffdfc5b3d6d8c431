"""Optional parts of medvision are pip extras (pyproject ``[project.optional-dependencies]``).

The core install runs ``medvision run`` and a one-machine node on SQLite. A module that
needs an extra imports its library through :func:`require`, so that a missing extra is
reported as the one ``pip install`` line that fixes it, not as a bare ``No module named``.
"""

from __future__ import annotations

import importlib
from types import ModuleType

#: extra -> what it is for, in the words of the error message.
EXTRAS = {
    "postgres": "a PostgreSQL database",
    "scale": "the scale-out role (medvision worker, serve --role receiver, broker_url)",
    "training": "medvision train / evaluate",
}


class ExtraMissing(ModuleNotFoundError):
    """An optional library is not installed; the message names the extra to install."""


def require(module: str, extra: str) -> ModuleType:
    """Import ``module`` or raise :class:`ExtraMissing` naming ``extra``."""
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as err:
        if err.name is None or module.split(".")[0] != err.name.split(".")[0]:
            raise  # something inside the library is broken: not a missing extra
        raise ExtraMissing(
            f"{EXTRAS[extra]} needs {module!r}, which is not installed: "
            f"pip install 'medvision[{extra}]'",
            name=err.name,
        ) from err


__all__ = ["EXTRAS", "ExtraMissing", "require"]
