"""The DICOM node: receive, spool, assemble studies, run jobs, send results back."""

from medvision.node._scp import STORAGE_SOP_CLASSES, StorageSCP
from medvision.node._sender import Sender
from medvision.node._service import Node
from medvision.node._spool import Spool, SpoolError, StoredFile

__all__ = [
    "STORAGE_SOP_CLASSES",
    "Node",
    "Sender",
    "Spool",
    "SpoolError",
    "StorageSCP",
    "StoredFile",
]
