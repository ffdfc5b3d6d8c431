"""Our audit events as DICOM audit messages (PS3.15 A.5, the IHE ATNA format).

The hash-chained log keeps medvision's own events (``instances.received``, ``job.started``,
...), rich enough to rebuild any result. An Audit Record Repository (ARR) understands only
the DICOM/IHE messages, so this module maps each event type to the A.5.3 message that
describes it (:data:`EVENT_MAP`); a few types are internal bookkeeping with no A.5
counterpart and stay in the chain only (``None`` in the map, with the reason in
:data:`INTERNAL_EVENTS`).

Patients: the events deliberately carry no patient identifiers (no PHI in a log that QA
staff, developers and support read), so the Patient participant object that A.5.3.x asks
for is left out and the ARR joins on the Study Instance UID, which the PACS resolves to the
patient under its own access control. If an event ever carries ``patient_pseudonym`` (a
keyed hash made where the key lives, never a plain hash of the ID, which a dictionary
attack would reverse) that value becomes the Patient object.

Every message is validated against the A.5.1 schema before it leaves this module.
"""

from __future__ import annotations

import base64
import fnmatch
import ipaddress
import socket
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from medvision.audit._schema import validate

Event = Mapping[str, Any]


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


def _access_point_type(address: str) -> str:
    """NetworkAccessPointTypeCode: 2 for an IP address, 1 for a machine name."""
    try:
        ipaddress.ip_address(address)
    except ValueError:
        return "1"
    return "2"


def _aet_participant(
    aet: str | None, host: str | None, requestor: bool, role: Code | None
) -> Participant:
    """A DICOM peer or the node: A.5.2.1 puts AE titles in AlternativeUserID."""
    name = aet or host or "unknown"
    return Participant(
        user_id=name,
        requestor=requestor,
        role=role,
        alternative_user_id=f"AETITLES={aet}" if aet else None,
        access_point=host,
    )


def _node(ctx: ExportContext, requestor: bool, role: Code | None = None) -> Participant:
    return _aet_participant(ctx.node_aet, ctx.node_host, requestor, role)


def _study(
    uid: str,
    sop_classes: Sequence[SopClassEntry] = (),
    details: Sequence[tuple[str, str]] = (),
) -> ParticipantObject:
    """A Study object (TypeCode 2 system object, role 3 report, ID type 110180).

    The strictest edition of the schema requires a ParticipantObjectName or Query; a study
    has no non-PHI name, so its UID is repeated there.
    """
    return ParticipantObject(
        object_id=uid,
        type_code="2",
        role="3",
        id_type=ID_STUDY,
        name=uid,
        details=list(details),
        sop_classes=list(sop_classes),
    )


def _patient(event: Event) -> list[ParticipantObject]:
    """The Patient object, only where the event carries a keyed pseudonym (never PHI)."""
    pseudonym = event.get("patient_pseudonym")
    if not pseudonym:
        return []
    return [
        ParticipantObject(
            object_id=str(pseudonym),
            type_code="1",
            role="1",
            id_type=ID_PATIENT,
            name="pseudonymised",
        )
    ]


def _outcome(event: Event, failure: int = MINOR_FAILURE) -> int:
    return SUCCESS if event.get("outcome", "success") == "success" else failure


def _message(
    event: Event,
    event_id: Code,
    action: str | None,
    participants: list[Participant],
    objects: list[ParticipantObject] | None = None,
    type_codes: Sequence[Code] = (),
    failure: int = MINOR_FAILURE,
) -> AuditMessage:
    reason = event.get("reason")
    return AuditMessage(
        event_id=event_id,
        action=action,
        time=str(event["time"]),
        outcome=_outcome(event, failure),
        participants=participants,
        objects=list(objects or []),
        type_codes=list(type_codes),
        outcome_description=str(reason) if reason else None,
        seq=event.get("seq"),
        event_type=str(event.get("type", "")),
    )


def _studies(
    event: Event, entry: SopClassEntry | None = None, **details: Any
) -> list[ParticipantObject]:
    uid = event.get("study_instance_uid")
    if not uid:
        return []
    detail_list = [(k, str(v)) for k, v in details.items() if v not in (None, "", [])]
    return [_study(str(uid), [entry] if entry else [], detail_list), *_patient(event)]


# -- one builder per A.5.3 message ------------------------------------------------------


def _application_activity(type_code: Code) -> Callable[[Event, ExportContext], AuditMessage]:
    """A.5.3.1: the node (or the offline ``run``) started or stopped."""

    def build(event: Event, ctx: ExportContext) -> AuditMessage:
        aet = event.get("ae_title") or ctx.node_aet
        app = _aet_participant(
            str(aet), str(event.get("host") or ctx.node_host), False, ROLE_APPLICATION
        )
        return _message(
            event, APPLICATION_ACTIVITY, "E", [app], type_codes=[type_code], failure=SERIOUS_FAILURE
        )

    return build


def _run_stop(event: Event, ctx: ExportContext) -> AuditMessage:
    """``run.done/failed/refused``: the offline run ended; a refusal is a minor failure."""
    failure = MINOR_FAILURE if event.get("type") == "run.refused" else SERIOUS_FAILURE
    app = _node(ctx, False, ROLE_APPLICATION)
    msg = _message(
        event, APPLICATION_ACTIVITY, "E", [app], type_codes=[APPLICATION_STOP], failure=failure
    )
    msg.objects = _studies(event, pipeline=event.get("pipeline"))
    return msg


def _instances_received(event: Event, ctx: ExportContext) -> AuditMessage:
    """A.5.3.7: a PACS (Source) stored instances on the node (Destination), action Create."""
    source = _aet_participant(
        event.get("calling_aet"), event.get("calling_host"), True, ROLE_SOURCE
    )
    dest = _node(ctx, False, ROLE_DESTINATION)
    count = event.get("instances")
    entry = SopClassEntry(count=int(count)) if isinstance(count, int) else None
    return _message(event, INSTANCES_TRANSFERRED, "C", [source, dest], _studies(event, entry))


def _results_send_started(event: Event, ctx: ExportContext) -> AuditMessage:
    """A.5.3.3: the node (Source) begins pushing SEG/SR to a destination, action Execute."""
    source = _node(ctx, True, ROLE_SOURCE)
    dest = _aet_participant(event.get("destination"), event.get("host"), False, ROLE_DESTINATION)
    objects: list[ParticipantObject] = []
    for study in event.get("studies") or []:
        entries = [
            SopClassEntry(count=int(c["instances"]), uid=c.get("sop_class_uid"))
            for c in study.get("sop_classes", [])
        ]
        objects.append(_study(str(study["study_instance_uid"]), entries))
    if not objects:  # an older event without the per-study breakdown
        objects = _studies(
            event,
            SopClassEntry(
                count=len(event.get("instances") or []),
                instances=list(event.get("instances") or []),
            ),
        )
    return _message(event, BEGIN_TRANSFERRING, "E", [source, dest], objects)


def _results_sent(event: Event, ctx: ExportContext) -> AuditMessage:
    """A.5.3.7 from the sending side: one SEG or SR delivered (or, failed, not delivered)."""
    source = _node(ctx, True, ROLE_SOURCE)
    aet = event.get("ae_title") or event.get("destination")
    dest = _aet_participant(aet, event.get("host"), False, ROLE_DESTINATION)
    sop = event.get("sop_instance_uid")
    entry = SopClassEntry(count=1, uid=event.get("sop_class_uid"), instances=[sop] if sop else [])
    objects = _studies(
        event, entry, destination=event.get("destination"), attempt=event.get("attempt")
    )
    return _message(event, INSTANCES_TRANSFERRED, "C", [source, dest], objects)


def _exported(event: Event, ctx: ExportContext) -> AuditMessage:
    """A.5.3.5: ``medvision export`` wrote de-identified copies of these studies to a folder
    (the media); the node is the source and the requestor (a user ran it on the node)."""
    source = _node(ctx, True, ROLE_SOURCE)
    media = Participant(
        user_id=str(event.get("destination") or "export folder"),
        requestor=False,
        role=ROLE_DESTINATION_MEDIA,
    )
    objects = [
        _study(str(uid), details=[("deidentified", "true")]) for uid in event.get("studies") or []
    ]
    return _message(event, EXPORT, "R", [source, media], objects)


def _job_accessed(action: str) -> Callable[[Event, ExportContext], AuditMessage]:
    """A.5.3.6: inference reads the source images (R) or creates SEG and SR (C)."""

    def build(event: Event, ctx: ExportContext) -> AuditMessage:
        app = _node(ctx, True, ROLE_APPLICATION)
        results = [r for r in event.get("results") or [] if r]
        entry = SopClassEntry(count=len(results), instances=results) if results else None
        algorithm = event.get("algorithm") or {}
        objects = _studies(
            event,
            entry,
            job_id=event.get("job_id"),
            pipeline=event.get("pipeline"),
            series_instance_uid=event.get("series_instance_uid"),
            algorithm_name=algorithm.get("name"),
            algorithm_version=algorithm.get("version"),
            algorithm_weights_sha256=algorithm.get("weights_sha256"),
        )
        failure = MINOR_FAILURE if event.get("type") == "job.refused" else SERIOUS_FAILURE
        return _message(event, INSTANCES_ACCESSED, action, [app], objects, failure=failure)

    return build


def _series_read(event: Event, ctx: ExportContext) -> AuditMessage:
    """A.5.3.6 for ``run``: the source series was read (action R), instance by instance."""
    app = _node(ctx, True, ROLE_APPLICATION)
    uids = [str(i["sop_instance_uid"]) for i in event.get("instances") or []]
    entry = SopClassEntry(count=len(uids), instances=uids)
    objects = _studies(event, entry, series_instance_uid=event.get("series_instance_uid"))
    return _message(event, INSTANCES_ACCESSED, "R", [app], objects, failure=SERIOUS_FAILURE)


def _results_written(event: Event, ctx: ExportContext) -> AuditMessage:
    """A.5.3.6 for ``run``: SEG and SR were created (action C)."""
    app = _node(ctx, True, ROLE_APPLICATION)
    uids = [
        str(f["sop_instance_uid"]) for f in event.get("files") or [] if f.get("sop_instance_uid")
    ]
    entry = SopClassEntry(count=len(uids), instances=uids)
    return _message(
        event, INSTANCES_ACCESSED, "C", [app], _studies(event, entry), failure=SERIOUS_FAILURE
    )


def _association_rejected(event: Event, ctx: ExportContext) -> AuditMessage:
    """A.5.3.11: an unknown AE title or host tried to connect (Node Authentication)."""
    reporter = _node(ctx, False, ROLE_APPLICATION)
    offender = _aet_participant(event.get("calling_aet"), event.get("calling_host"), True, None)
    subject = ParticipantObject(
        object_id=str(event.get("calling_host") or event.get("calling_aet") or "unknown"),
        type_code="2",
        role="13",  # Security Resource
        id_type=ID_NODE,
        name=str(event.get("calling_aet") or "unknown"),
        details=[
            ("Alert Description", str(event.get("reason", ""))),
            *([("Called AE Title", str(event["called_aet"]))] if event.get("called_aet") else []),
        ],
    )
    return _message(
        event,
        SECURITY_ALERT,
        "E",
        [reporter, offender],
        [subject],
        type_codes=[NODE_AUTHENTICATION],
    )


def _query(event: Event, ctx: ExportContext) -> AuditMessage:
    """A.5.3.10: a C-FIND/QIDO the node sent (no such event yet; mapped for when it comes)."""
    source = _node(ctx, True, ROLE_SOURCE)
    dest = _aet_participant(event.get("destination"), event.get("host"), False, ROLE_DESTINATION)
    query = str(event.get("query", "")).encode()
    subject = ParticipantObject(
        object_id=str(event.get("sop_class_uid", "")),
        type_code="2",
        role="24",  # Query
        id_type=ID_SOP_CLASS,
        query=query,
    )
    return _message(event, QUERY, "E", [source, dest], [subject])


def _user_authentication(type_code: Code) -> Callable[[Event, ExportContext], AuditMessage]:
    """A.5.3.12: a QA/admin user logged in or out of the API (or failed to)."""

    def build(event: Event, ctx: ExportContext) -> AuditMessage:
        user = str(event.get("user") or event.get("username") or event.get("user_id") or "unknown")
        client = event.get("client_host") or event.get("remote_addr") or event.get("host")
        person = Participant(
            user_id=user, requestor=True, access_point=str(client) if client else None
        )
        node = _node(ctx, False, ROLE_APPLICATION)
        return _message(event, USER_AUTHENTICATION, "E", [person, node], type_codes=[type_code])

    return build


def _audit_log_used(event: Event, ctx: ExportContext) -> AuditMessage:
    """A.5.3.2: someone read the audit trail (verify, export) - AUD-10."""
    user = Participant(
        user_id=str(event.get("user") or "unknown"),
        requestor=True,
        access_point=str(event.get("host")) if event.get("host") else None,
    )
    app = _node(ctx, False, ROLE_APPLICATION)
    log = ParticipantObject(
        object_id=str(event.get("log_uri") or "medvision-audit"),
        type_code="2",
        role="13",  # Security Resource
        id_type=ID_URI,
        name="medvision audit trail",
        details=[("action", str(event.get("action", "")))],
    )
    return _message(event, AUDIT_LOG_USED, "R", [user, app], [log])


def _api_read(event: Event, ctx: ExportContext) -> AuditMessage:
    """A.5.3.6 (action R): a user read a study's findings or results through the API."""
    user = Participant(
        user_id=str(event.get("user") or "unknown"),
        requestor=True,
        access_point=str(event.get("client_host")) if event.get("client_host") else None,
    )
    app = _node(ctx, False, ROLE_APPLICATION)
    objects = _studies(event, None, route=event.get("route"), job_id=event.get("job_id"))
    return _message(event, INSTANCES_ACCESSED, "R", [user, app], objects)


def _user_security_change(type_code: Code) -> Callable[[Event, ExportContext], AuditMessage]:
    """A.5.3.11: an administrator added or disabled a user, or issued an API token."""

    def build(event: Event, ctx: ExportContext) -> AuditMessage:
        actor = Participant(user_id=str(event.get("user") or "unknown"), requestor=True)
        app = _node(ctx, False, ROLE_APPLICATION)
        subject = ParticipantObject(
            object_id=str(event.get("subject_user") or "unknown"),
            type_code="1",  # Person
            role="11",  # Security User Entity
            id_type=ID_USER,
            name=str(event.get("subject_user") or "unknown"),
            details=[("Alert Description", str(event.get("type", "")))],
        )
        return _message(event, SECURITY_ALERT, "E", [actor, app], [subject], [type_code])

    return build


Builder = Callable[[Event, ExportContext], AuditMessage]

#: Event type -> A.5.3 message builder, or ``None`` where the event has no A.5 counterpart.
EVENT_MAP: dict[str, Builder | None] = {
    # node
    "application.start": _application_activity(APPLICATION_START),
    "application.stop": _application_activity(APPLICATION_STOP),
    "association.accepted": None,
    "audit.checkpoint": None,
    "association.rejected": _association_rejected,
    "instances.received": _instances_received,
    "instances.refused": _instances_received,
    "study.complete": None,
    "study.refused": None,
    "job.started": _job_accessed("R"),
    "job.finished": _job_accessed("C"),
    "job.failed": _job_accessed("R"),
    "job.refused": _job_accessed("R"),
    "results.send_started": _results_send_started,
    "results.sent": _results_sent,
    "results.send_failed": _results_sent,
    "export.deidentified": _exported,
    # offline run (and each node job's own audit.jsonl)
    "run.started": _application_activity(APPLICATION_START),
    "series.selected": None,
    "series.read": _series_read,
    "model.ran": None,
    "results.written": _results_written,
    "run.done": _run_stop,
    "run.failed": _run_stop,
    "run.refused": _run_stop,
    # API users (recorded by the API once it has users)
    "user.login": _user_authentication(LOGIN),
    "user.login_failed": _user_authentication(LOGIN),
    "user.locked_out": _user_authentication(LOGIN),
    "user.logout": _user_authentication(LOGOUT),
    "user.added": _user_security_change(SECURITY_ROLES_CHANGED),
    "user.disabled": _user_security_change(USER_SECURITY_ATTRIBUTES_CHANGED),
    "user.token_issued": _user_security_change(USER_SECURITY_ATTRIBUTES_CHANGED),
    "api.read": _api_read,
    # reviewers' decisions (kept in the chain and the feedback table)
    "review.decision": None,
    "review.missed_lesion": None,
    # anticipated
    "query.sent": _query,
    # the audit tools themselves
    "audit.log_used": _audit_log_used,
}

#: Why each unmapped event stays in the hash chain only.
INTERNAL_EVENTS: dict[str, str] = {
    "audit.checkpoint": "the chain's own checkpoint (its head anchored outside the database); "
    "forwarded over syslog as the signed checkpoint line, MSGID MEDVISION-ANCHOR",
    "association.accepted": "an association alone moves no data; the transfer it carries is "
    "reported as instances.received (110104)",
    "study.complete": "workflow state (quiet period over); no instance is accessed",
    "study.refused": "workflow decision (no pipeline accepts the study); recorded with its "
    "reason in the chain for REG-05, no DICOM instance is accessed",
    "series.selected": "the series-selection decision; provenance for REG-02, not a DICOM access",
    "review.decision": "a reviewer's assessment of an AI finding; PS3.15 A.5 has no event for "
    "it (IHE AIRA records assessments as DICOM objects); kept in the chain and the feedback "
    "table, where QA reads it",
    "review.missed_lesion": "a reviewer's mark of a missed lesion; as review.decision",
    "model.ran": "model provenance (AUD-08: name, version, weights hash); joined to 110103 "
    "messages by study and time",
}


def to_message(event: Event, ctx: ExportContext | None = None) -> AuditMessage | None:
    """The A.5 message for one event; ``None`` for internal or unknown event types."""
    builder = EVENT_MAP.get(str(event.get("type", "")))
    return builder(event, ctx or ExportContext()) if builder else None


# -- serialisation ----------------------------------------------------------------------


def _code(parent: ET.Element, tag: str, code: Code) -> ET.Element:
    return ET.SubElement(
        parent,
        tag,
        {"csd-code": code.code, "codeSystemName": code.system, "originalText": code.meaning},
    )


def _xml_datetime(value: str) -> str:
    """EventDateTime as xsd:dateTime with an explicit zone (AUD-06): naive times are UTC."""
    dt = datetime.fromisoformat(value.replace("Z", "+00:00"))
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    text = dt.isoformat()
    return text.replace("+00:00", "Z")


def to_xml(msg: AuditMessage, ctx: ExportContext | None = None) -> bytes:
    """Serialise and validate one message (UTF-8, with XML declaration)."""
    ctx = ctx or ExportContext()
    root = ET.Element("AuditMessage")
    ev_attrs = {"EventDateTime": _xml_datetime(msg.time), "EventOutcomeIndicator": str(msg.outcome)}
    if msg.action:
        ev_attrs["EventActionCode"] = msg.action
    ev = ET.SubElement(root, "EventIdentification", ev_attrs)
    _code(ev, "EventID", msg.event_id)
    for type_code in msg.type_codes:
        _code(ev, "EventTypeCode", type_code)
    if msg.outcome_description:
        ET.SubElement(ev, "EventOutcomeDescription").text = msg.outcome_description
    for p in msg.participants:
        attrs = {"UserID": p.user_id, "UserIsRequestor": "true" if p.requestor else "false"}
        if p.alternative_user_id:
            attrs["AlternativeUserID"] = p.alternative_user_id
        if p.user_name:
            attrs["UserName"] = p.user_name
        if p.access_point:
            attrs["NetworkAccessPointID"] = p.access_point
            attrs["NetworkAccessPointTypeCode"] = _access_point_type(p.access_point)
        el = ET.SubElement(root, "ActiveParticipant", attrs)
        if p.role:
            _code(el, "RoleIDCode", p.role)
    source = ET.SubElement(
        root,
        "AuditSourceIdentification",
        {"AuditSourceID": ctx.audit_source_id, "AuditEnterpriseSiteID": ctx.site_id},
    )
    ET.SubElement(source, "AuditSourceTypeCode", {"csd-code": SOURCE_TYPE_APPLICATION_SERVER})
    for obj in msg.objects:
        attrs = {
            "ParticipantObjectID": obj.object_id,
            "ParticipantObjectTypeCode": obj.type_code,
            "ParticipantObjectTypeCodeRole": obj.role,
        }
        if obj.lifecycle:
            attrs["ParticipantObjectDataLifeCycle"] = obj.lifecycle
        el = ET.SubElement(root, "ParticipantObjectIdentification", attrs)
        _code(el, "ParticipantObjectIDTypeCode", obj.id_type)
        if obj.query is not None:
            ET.SubElement(el, "ParticipantObjectQuery").text = base64.b64encode(obj.query).decode()
        else:
            ET.SubElement(el, "ParticipantObjectName").text = obj.name or obj.object_id
        for key, value in obj.details:
            ET.SubElement(
                el,
                "ParticipantObjectDetail",
                {"type": key, "value": base64.b64encode(value.encode()).decode()},
            )
        if obj.sop_classes:
            desc = ET.SubElement(el, "ParticipantObjectDescription")
            for entry in obj.sop_classes:
                sop_attrs = {"NumberOfInstances": str(entry.count)}
                if entry.uid:
                    sop_attrs["UID"] = entry.uid
                sop = ET.SubElement(desc, "SOPClass", sop_attrs)
                for uid in entry.instances:
                    ET.SubElement(sop, "Instance", {"UID": uid})
    xml = ET.tostring(root, encoding="utf-8", xml_declaration=True)
    validate(xml)
    return xml


# -- selecting events -------------------------------------------------------------------


def parse_time(value: str, *, end: bool = False) -> datetime:
    """A ``--since``/``--until`` bound: an ISO date or date-time (naive means UTC).

    A bare date as an upper bound means "through the end of that day".
    """
    dt = datetime.fromisoformat(value.replace("Z", "+00:00"))
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    if end and len(value) == 10:
        dt += timedelta(days=1)
    return dt


@dataclass(frozen=True)
class EventFilter:
    """Which events to export: a time window, a study and event-type patterns."""

    since: datetime | None = None
    until: datetime | None = None
    study: str | None = None
    types: tuple[str, ...] = ()

    def matches(self, event: Event, study: str | None) -> bool:
        if self.since or self.until:
            t = parse_time(str(event["time"]))
            if self.since and t < self.since:
                return False
            if self.until and t >= self.until:
                return False
        if self.study and study != self.study:
            return False
        return not self.types or any(fnmatch.fnmatchcase(str(event["type"]), p) for p in self.types)


def with_study_context(events: Iterable[Event]) -> Iterator[dict[str, Any]]:
    """Fill in ``study_instance_uid`` where a run's later events leave it implicit.

    ``medvision run`` names the study once, in ``run.started``; the events after it belong
    to that study until the next ``run.started``.
    """
    current: str | None = None
    for event in events:
        if event.get("type") == "run.started":
            current = event.get("study_instance_uid")
        if current and not event.get("study_instance_uid"):
            yield {**event, "study_instance_uid": current}
        else:
            yield dict(event)


def export_messages(
    events: Iterable[Event],
    ctx: ExportContext | None = None,
    selection: EventFilter | None = None,
) -> Iterator[tuple[AuditMessage, bytes]]:
    """Each selected, mappable event as (message, validated XML)."""
    ctx = ctx or ExportContext()
    selection = selection or EventFilter()
    for event in with_study_context(events):
        if not selection.matches(event, event.get("study_instance_uid")):
            continue
        msg = to_message(event, ctx)
        if msg is not None:
            yield msg, to_xml(msg, ctx)


__all__ = [
    "EVENT_MAP",
    "INTERNAL_EVENTS",
    "AuditMessage",
    "Code",
    "EventFilter",
    "ExportContext",
    "export_messages",
    "parse_time",
    "to_message",
    "to_xml",
    "with_study_context",
]
