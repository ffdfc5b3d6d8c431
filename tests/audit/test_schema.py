"""The A.5.1 schema is what every exported message is held to, so it must be the
published one, and it must actually reject broken messages (or the tests that rely on it
would prove nothing)."""

from __future__ import annotations

import pytest

from medvision.audit import ExportContext, to_message, to_xml, validation_errors
from medvision.audit._schema import RNC_PATH, RNG_PATH, rng_from_rnc

GOOD = {
    "seq": 0,
    "time": "2026-01-02T03:04:05.123456Z",
    "type": "instances.received",
    "outcome": "success",
    "study_instance_uid": "1.2.826.0.1.3680043.8.498.1",
    "calling_aet": "ORTHANC",
    "calling_host": "10.0.0.5",
    "instances": 3,
}


def _good_xml() -> bytes:
    msg = to_message(GOOD, ExportContext(audit_source_id="node1", node_host="node1"))
    assert msg is not None
    return to_xml(msg, ExportContext(audit_source_id="node1", node_host="node1"))


def test_the_committed_rng_is_generated_from_the_published_rnc() -> None:
    pytest.importorskip("rnc2rng")
    assert RNG_PATH.read_text() == rng_from_rnc(RNC_PATH.read_text()), (
        "regenerate: python -c 'from medvision.audit._schema import *; "
        "RNG_PATH.write_text(rng_from_rnc(RNC_PATH.read_text()))'"
    )


def test_the_schema_names_its_source() -> None:
    header = RNC_PATH.read_text()[:800]
    assert "PS3.15" in header and "A.5.1" in header


def test_a_mapped_message_validates() -> None:
    assert validation_errors(_good_xml()) == []


@pytest.mark.parametrize(
    ("broken", "why"),
    [
        (
            lambda x: x.replace(b'EventOutcomeIndicator="0"', b'EventOutcomeIndicator="3"'),
            "outcome 3",
        ),
        (lambda x: x.replace(b"2026-01-02T03:04:05.123456Z", b"yesterday"), "not a dateTime"),
        (
            lambda x: x.replace(b' originalText="DICOM Instances Transferred"', b""),
            "no originalText",
        ),
        (lambda x: x.replace(b'UserIsRequestor="true"', b'UserIsRequestor="maybe"'), "not boolean"),
        (lambda x: x.replace(b'EventActionCode="C"', b'EventActionCode="X"'), "action X"),
        (lambda x: x.replace(b'NumberOfInstances="3"', b'NumberOfInstances="three"'), "count"),
        (
            lambda x: (
                x[: x.index(b"<AuditSourceIdentification")]
                + x[x.index(b"</AuditSourceIdentification>") + 28 :]
            ),
            "no source",
        ),
        (
            lambda x: x.replace(b"<ActiveParticipant ", b"<Participant ").replace(
                b"</ActiveParticipant>", b"</Participant>"
            ),
            "unknown element",
        ),
        (lambda x: x.replace(b"AuditMessage>", b"AuditMessage"), "not well-formed"),
    ],
)
def test_a_broken_message_fails_validation(broken, why: str) -> None:
    xml = _good_xml()
    bad = broken(xml)
    assert bad != xml, f"the mutation for {why!r} did not apply"
    assert validation_errors(bad), f"{why}: the schema accepted a broken message"


def test_the_event_id_is_required() -> None:
    xml = _good_xml()
    start = xml.index(b"<EventID ")
    end = xml.index(b"/>", start) + 2
    assert validation_errors(xml[:start] + xml[end:])
