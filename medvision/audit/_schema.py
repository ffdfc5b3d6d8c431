"""Validation against the DICOM Audit Message Schema (PS3.15 A.5.1).

The schema is published in RELAX NG compact syntax (``schema/dicom-audit-message.rnc``,
kept as published). lxml validates only the XML syntax, so ``dicom-audit-message.rng`` is
generated from it (:func:`rng_from_rnc`) and committed; a test regenerates it and fails if
the two drift apart. Every message medvision exports or forwards passes through
:func:`validate` first (AUD-01), so an invalid message is a bug caught at the source rather
than a silent drop at the audit repository.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from lxml import etree

SCHEMA_DIR = Path(__file__).parent / "schema"
RNC_PATH = SCHEMA_DIR / "dicom-audit-message.rnc"
RNG_PATH = SCHEMA_DIR / "dicom-audit-message.rng"

_RNG_HEADER = (
    "<!-- Generated from dicom-audit-message.rnc (DICOM PS3.15 A.5.1.1, DICOM Audit Message\n"
    "     Schema) by medvision.audit._schema.rng_from_rnc; do not edit by hand. -->\n"
)


class InvalidAuditMessage(ValueError):
    """A message that the A.5.1 schema rejects; ``errors`` says where and why."""

    def __init__(self, errors: list[str]) -> None:
        super().__init__(
            "audit message does not validate against DICOM PS3.15 A.5.1: " + "; ".join(errors)
        )
        self.errors = errors


@lru_cache(maxsize=1)
def _relaxng() -> etree.RelaxNG:
    from lxml import etree

    return etree.RelaxNG(etree.parse(str(RNG_PATH)))


def validation_errors(xml: bytes) -> list[str]:
    """Schema errors of one serialised ``AuditMessage``; empty when it is valid."""
    from lxml import etree

    try:
        doc = etree.fromstring(xml)
    except etree.XMLSyntaxError as err:
        return [f"not well-formed XML: {err}"]
    schema = _relaxng()
    if schema.validate(doc):
        return []
    return [f"line {e.line}: {e.message}" for e in schema.error_log]


def validate(xml: bytes) -> None:
    """Raise :class:`InvalidAuditMessage` unless ``xml`` is a valid DICOM audit message."""
    errors = validation_errors(xml)
    if errors:
        raise InvalidAuditMessage(errors)


def rng_from_rnc(rnc_text: str) -> str:
    """The XML-syntax schema for ``rnc_text`` (needs the ``rnc2rng`` package).

    The published schema puts ``##`` documentation comments after the items they describe,
    which the RELAX NG compact grammar only allows before them; they carry no meaning, so
    they are turned into plain comments before conversion.
    """
    import rnc2rng

    text = rnc_text.replace("##", "#")
    xml = rnc2rng.dumps(rnc2rng.loads(text), indent="  ")
    head, sep, body = xml.partition("?>\n")
    return head + sep + _RNG_HEADER + body if sep else _RNG_HEADER + xml


__all__ = [
    "InvalidAuditMessage",
    "RNC_PATH",
    "RNG_PATH",
    "rng_from_rnc",
    "validate",
    "validation_errors",
]
