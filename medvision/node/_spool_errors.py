"""What the spool raises when it cannot take an instance.

Kept apart from the spool's file layout (``_spool``) and its write-ahead journal
(``_journal``) because both raise them, and the SCP maps them to C-STORE statuses
(``_scp_status``): a bad UID is the sender's fault, anything else the node's resources.
"""

from __future__ import annotations


class SpoolError(Exception):
    """The instance could not be stored (disk full, unwritable spool, bad UID)."""


class InvalidUID(SpoolError):
    """A UID of the instance is missing or not a valid UID: the sender's data is at fault
    (C-STORE Cannot Understand), not the node's resources (Out of Resources, retry)."""


__all__ = ["InvalidUID", "SpoolError"]
