"""The DICOM audit message (PS3.15 A.5.1) as plain values: codes, participants, objects.

Kept apart from the event mapping (``_export``) and the XML (``_xml``) so each reads alone.
"""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Code:
    """A coded value: ``csd-code``, ``codeSystemName`` and ``originalText`` (Code Meaning)."""

    code: str
    system: str
    meaning: str


def _dcm(code: str, meaning: str) -> Code:
    return Code(code, "DCM", meaning)


# EventID (DCID 400)
APPLICATION_ACTIVITY = _dcm("110100", "Application Activity")
AUDIT_LOG_USED = _dcm("110101", "Audit Log Used")
BEGIN_TRANSFERRING = _dcm("110102", "Begin Transferring DICOM Instances")
EXPORT = _dcm("110106", "Export")
INSTANCES_ACCESSED = _dcm("110103", "DICOM Instances Accessed")
INSTANCES_TRANSFERRED = _dcm("110104", "DICOM Instances Transferred")
QUERY = _dcm("110112", "Query")
SECURITY_ALERT = _dcm("110113", "Security Alert")
USER_AUTHENTICATION = _dcm("110114", "User Authentication")
# EventTypeCode (DCID 401)
APPLICATION_START = _dcm("110120", "Application Start")
APPLICATION_STOP = _dcm("110121", "Application Stop")
LOGIN = _dcm("110122", "Login")
LOGOUT = _dcm("110123", "Logout")
NODE_AUTHENTICATION = _dcm("110126", "Node Authentication")
SECURITY_ROLES_CHANGED = _dcm("110136", "Security Roles Changed")
USER_SECURITY_ATTRIBUTES_CHANGED = _dcm("110137", "User security Attributes Changed")
# RoleIDCode (DCID 402)
ROLE_APPLICATION = _dcm("110150", "Application")
ROLE_LAUNCHER = _dcm("110151", "Application Launcher")
ROLE_DESTINATION = _dcm("110152", "Destination Role ID")
ROLE_SOURCE = _dcm("110153", "Source Role ID")
ROLE_DESTINATION_MEDIA = _dcm("110154", "Destination Media")
# ParticipantObjectIDTypeCode (DCID 404 and RFC 3881)
ID_STUDY = _dcm("110180", "Study Instance UID")
ID_SOP_CLASS = _dcm("110181", "SOP Class UID")
ID_NODE = _dcm("110182", "Node ID")
ID_PATIENT = Code("2", "RFC-3881", "Patient Number")
ID_URI = Code("12", "RFC-3881", "URI")
ID_USER = Code("11", "RFC-3881", "User Identifier")

#: EventOutcomeIndicator values (A.5.1): success, minor, serious and major failure.
SUCCESS, MINOR_FAILURE, SERIOUS_FAILURE, MAJOR_FAILURE = 0, 4, 8, 12

#: Audit source type (A.5.1.2.1): 4 = application server process.
SOURCE_TYPE_APPLICATION_SERVER = "4"


@dataclass(frozen=True)
class ExportContext:
    """Facts about the reporting node that events do not repeat on every line."""

    #: AuditSourceID: which system reported the events.
    audit_source_id: str = field(default_factory=socket.gethostname)
    #: AuditEnterpriseSiteID: the site (hospital, department) that runs it.
    site_id: str = "medvision"
    #: The node's own AE title and host, for the node's ActiveParticipant.
    node_aet: str = "MEDVISION"
    node_host: str = field(default_factory=socket.gethostname)


@dataclass
class Participant:
    """An ActiveParticipant (A.5.2.1): who or what took part, and from where."""

    user_id: str
    requestor: bool
    role: Code | None = None
    alternative_user_id: str | None = None
    user_name: str | None = None
    access_point: str | None = None


@dataclass
class SopClassEntry:
    """One ``SOPClass`` of a study's ParticipantObjectDescription."""

    count: int
    uid: str | None = None
    instances: list[str] = field(default_factory=list)


@dataclass
class ParticipantObject:
    """A ParticipantObjectIdentification: the study, patient, log or peer concerned."""

    object_id: str
    type_code: str
    role: str
    id_type: Code
    name: str | None = None
    query: bytes | None = None
    details: list[tuple[str, str]] = field(default_factory=list)
    sop_classes: list[SopClassEntry] = field(default_factory=list)
    lifecycle: str | None = None


@dataclass
class AuditMessage:
    """One DICOM audit message, before serialisation."""

    event_id: Code
    action: str | None
    time: str
    outcome: int
    participants: list[Participant]
    objects: list[ParticipantObject] = field(default_factory=list)
    type_codes: list[Code] = field(default_factory=list)
    outcome_description: str | None = None
    #: The chain position it came from (not part of the XML; for watermarks and file names).
    seq: int | None = None
    event_type: str = ""


# -- building blocks --------------------------------------------------------------------


def access_point_type(address: str) -> str:
    """NetworkAccessPointTypeCode: 2 for an IP address, 1 for a machine name."""
    try:
        ipaddress.ip_address(address)
    except ValueError:
        return "1"
    return "2"
