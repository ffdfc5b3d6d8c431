"""The DICOM node: receive, spool, assemble studies, run jobs, send results back.

The names below are imported on first use (PEP 562), not with the package: an acceptor
process (``_acceptors``) imports only the SCP's modules, not the worker pool's and the
pipelines' (about 55 MB less memory per process, and a faster start).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from medvision.node._scp import STORAGE_SOP_CLASSES, StorageSCP
    from medvision.node._sender import Sender
    from medvision.node._service import Node
    from medvision.node._spool import Spool, SpoolError, StoredFile

_WHERE = {
    "STORAGE_SOP_CLASSES": "_scp",
    "StorageSCP": "_scp",
    "Sender": "_sender",
    "Node": "_service",
    "Spool": "_spool",
    "SpoolError": "_spool",
    "StoredFile": "_spool",
}


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_WHERE[name]}"), name)


__all__ = [
    "STORAGE_SOP_CLASSES",
    "Node",
    "Sender",
    "Spool",
    "SpoolError",
    "StorageSCP",
    "StoredFile",
]
