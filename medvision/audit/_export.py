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

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from medvision.audit._messages import (
    APPLICATION_ACTIVITY,
    APPLICATION_START,
    APPLICATION_STOP,
    AUDIT_LOG_USED,
    BEGIN_TRANSFERRING,
    EXPORT,
    ID_NODE,
    ID_PATIENT,
    ID_SOP_CLASS,
    ID_STUDY,
    ID_URI,
    ID_USER,
    INSTANCES_ACCESSED,
    INSTANCES_TRANSFERRED,
    LOGIN,
    LOGOUT,
    MINOR_FAILURE,
    NODE_AUTHENTICATION,
    QUERY,
    ROLE_APPLICATION,
    ROLE_DESTINATION,
    ROLE_DESTINATION_MEDIA,
    ROLE_SOURCE,
    SECURITY_ALERT,
    SECURITY_ROLES_CHANGED,
    SERIOUS_FAILURE,
    SUCCESS,
    USER_AUTHENTICATION,
    USER_SECURITY_ATTRIBUTES_CHANGED,
    AuditMessage,
    Code,
    ExportContext,
    Participant,
    ParticipantObject,
    SopClassEntry,
)

Event = Mapping[str, Any]


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


__all__ = [
    "EVENT_MAP",
    "INTERNAL_EVENTS",
    "Event",
    "to_message",
]
