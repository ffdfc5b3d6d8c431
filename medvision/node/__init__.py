"""The DICOM node: receive, spool, assemble studies, run jobs, send results back.

The names below are imported on first use (PEP 562, ``medvision._lazy``), not with the
package: an acceptor process (``_acceptor_process``) imports only the SCP's modules, not
the worker pool's and the pipelines' (about 55 MB less memory per process, and a faster
start).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from medvision._lazy import lazy_exports

#: Names served from a module imported on first use, and where they live.
_LAZY = {
    "ACCEPTOR_RUNNING_STATES": "medvision.node._acceptor_rows",
    "RECEIVER_STATES": "medvision.node._receivers",
    "receiver_state": "medvision.node._receivers",
    "STORAGE_SOP_CLASSES": "medvision.node._scp",
    "StorageSCP": "medvision.node._scp",
    "Sender": "medvision.node._sender",
    "Node": "medvision.node._service",
    "Spool": "medvision.node._spool",
    "SpoolError": "medvision.node._spool_errors",
    "StoredFile": "medvision.node._spool",
}

if TYPE_CHECKING:
    from medvision.node._acceptor_rows import ACCEPTOR_RUNNING_STATES
    from medvision.node._receivers import RECEIVER_STATES, receiver_state
    from medvision.node._scp import STORAGE_SOP_CLASSES, StorageSCP
    from medvision.node._sender import Sender
    from medvision.node._service import Node
    from medvision.node._spool import Spool, StoredFile
    from medvision.node._spool_errors import SpoolError

__getattr__ = lazy_exports(__name__, _LAZY)

__all__ = [
    "ACCEPTOR_RUNNING_STATES",
    "RECEIVER_STATES",
    "STORAGE_SOP_CLASSES",
    "Node",
    "Sender",
    "Spool",
    "SpoolError",
    "StorageSCP",
    "StoredFile",
    "receiver_state",
]
