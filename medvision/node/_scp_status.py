"""What the SCP answers, in DICOM's numbers: C-STORE statuses (PS3.4 B.2.3), the result
and source of an A-ASSOCIATE-RJ (PS3.8 9.3.4; the service user's diagnostics are
``_admission``'s), and which status a failure to store maps to.

Kept in one place so that the handlers (``_scp_associations``, ``_cstore``) say *why* they
refuse and this module says how that reads on the wire: a sender retries on Out of
Resources (A7xx), and must not on Cannot Understand (Cxxx).
"""

from __future__ import annotations

from pydicom import Dataset
from pydicom.tag import BaseTag

from medvision.node._spool_errors import InvalidUID, SpoolError

SUCCESS = 0x0000
OUT_OF_RESOURCES = 0xA700
CANNOT_UNDERSTAND = 0xC000

#: A-ASSOCIATE-RJ results.
REJECTED_PERMANENT = 0x01
REJECTED_TRANSIENT = 0x02
#: A-ASSOCIATE-RJ sources: the service user (diagnostics in ``_admission``), and the
#: service provider's presentation layer, whose diagnostic here is "local limit exceeded".
SERVICE_USER = 0x01
SERVICE_PROVIDER_PRESENTATION = 0x03
LOCAL_LIMIT_EXCEEDED = 0x02


def store_failure_status(err: SpoolError) -> int:
    """A UID that is not a whole UI value is the sender's data (Cannot Understand);
    anything else the spool raises is the node's resources (Out of Resources: retry)."""
    return CANNOT_UNDERSTAND if isinstance(err, InvalidUID) else OUT_OF_RESOURCES


def conflict_status(offending: BaseTag) -> Dataset:
    """The response to an instance whose SOP Instance UID the node holds elsewhere:
    Cannot Understand, with the related fields Cxxx allows (Offending Element, Error
    Comment; see ``_cstore``)."""
    status = Dataset()
    status.Status = CANNOT_UNDERSTAND
    status.OffendingElement = [offending]
    status.ErrorComment = "SOP Instance UID already held elsewhere"
    return status


__all__ = [
    "CANNOT_UNDERSTAND",
    "LOCAL_LIMIT_EXCEEDED",
    "OUT_OF_RESOURCES",
    "REJECTED_PERMANENT",
    "REJECTED_TRANSIENT",
    "SERVICE_PROVIDER_PRESENTATION",
    "SERVICE_USER",
    "SUCCESS",
    "conflict_status",
    "store_failure_status",
]
