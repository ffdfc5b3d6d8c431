"""A DICOM audit message as A.5.1 XML, validated against the schema before it leaves."""

from __future__ import annotations

import base64
import xml.etree.ElementTree as ET
from datetime import UTC, datetime

from medvision.audit._messages import (
    SOURCE_TYPE_APPLICATION_SERVER,
    AuditMessage,
    Code,
    ExportContext,
    access_point_type,
)
from medvision.audit._schema import validate


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
            attrs["NetworkAccessPointTypeCode"] = access_point_type(p.access_point)
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
