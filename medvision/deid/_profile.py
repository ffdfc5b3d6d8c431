"""The PS3.15 Annex E Basic Application Level Confidentiality Profile, with three options.

Why a table from a library: Table E.1-1 has some 650 rows and grows with every edition; a
hand-copied list goes stale. ``dicomanonymizer`` (Kitware) ships the table generated from
the standard (module ``dicomfields_2026c``: PS3.15 2026c), grouped by action code. We use
only that table; the engine is ours, because its own engine maps UIDs at random through a
process-global dictionary, while a research destination needs the same UID (and the same
patient pseudonym) every time, for every study, from any process: keyed HMACs.

How the combined actions are resolved without knowing each IOD's attribute types (every
choice is allowed by the action and keeps the IOD valid whatever the type):

* ``X/D``, ``X/Z/D``: D, a dummy value (a Type 1 attribute stays present).
* ``Z/D``: D for dates and times (Content Date and Time are Type 1 in SEG and SR), Z for
  the others (Contrast/Bolus Agent, Content Creator's Name: Type 2 wherever used).
* ``X/Z``: Z, an empty value (a Type 2 attribute stays present; a Type 3 one may be empty),
  except for a sequence, which is removed (a present Type 3 sequence must have items).
* ``X/Z/U*`` and sequences under ``D``: the sequence is kept and the profile applied to
  every item recursively, so references to other instances are remapped with the same
  keys (a SEG still points at its source images) and nothing inside keeps a listed value.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import cache

from pydicom import Dataset
from pydicom.dataelem import DataElement
from pydicom.sequence import Sequence
from pydicom.sr.codedict import codes
from pydicom.tag import BaseTag, Tag

from medvision.deid._tables import CLEAN_DESCRIPTORS, SAFE_PRIVATE

#: The edition of PS3.15 whose Table E.1-1 gives the basic profile's actions.
TABLE_EDITION = "2026c"

_DUMMY_TEXT = "ANONYMIZED"
_DUMMY_BY_VR: dict[str, object] = {
    "DA": "19000101",
    "TM": "000000",
    "DT": "19000101000000",
    "PN": "ANONYMOUS",
    "AS": "000Y",
    "DS": "0",
    "IS": "0",
    "FL": 0.0,
    "FD": 0.0,
    "SL": 0,
    "SS": 0,
    "UL": 0,
    "US": 0,
    "SV": 0,
    "UV": 0,
}


@dataclass(frozen=True)
class DeidOptions:
    """The options of PS3.15 E.3 chosen by configuration (all off: the basic profile)."""

    #: Retain Safe Private Option (E.3.10): keep private attributes of Table E.3.10-1.
    retain_safe_private: bool = False
    #: Retain UIDs Option (E.3.9): keep UIDs as they are. Off (the default), every UID is
    #: replaced by a keyed mapping: the same input UID always gives the same output UID.
    retain_uids: bool = False
    #: Clean Descriptors Option (E.3.5): keep free-text descriptions (series, protocol...)
    #: after removing identifying values from them, instead of removing them.
    clean_descriptors: bool = False


@cache
def _actions() -> dict[tuple[int, ...], str]:
    """Tag (or (group, element, group mask, element mask)) -> action code of Table E.1-1."""
    from dicomanonymizer.dicom_anonymization_databases import dicomfields_2026c as table

    names = {
        "D_TAGS": "D",
        "Z_TAGS": "Z",
        "X_TAGS": "X",
        "U_TAGS": "U",
        "Z_D_TAGS": "Z/D",
        "X_Z_TAGS": "X/Z",
        "X_D_TAGS": "X/D",
        "X_Z_D_TAGS": "X/Z/D",
        "X_Z_U_STAR_TAGS": "X/Z/U*",
    }
    out: dict[tuple[int, ...], str] = {}
    for attr, code in names.items():
        for tag in getattr(table, attr):
            out[tuple(tag)] = code
    return out


def listed_action(tag: BaseTag) -> str | None:
    """The basic profile's action for ``tag`` in Table E.1-1, or None if it is not listed."""
    code = _actions().get((tag.group, tag.element))
    if code is not None:
        return code
    for key, code in _masked():  # the few masked rows (curves, overlay data/comments)
        if (tag.group & key[2]) == key[0] and (tag.element & key[3]) == key[1]:
            return code
    return None


@cache
def _masked() -> list[tuple[tuple[int, ...], str]]:
    return [(key, code) for key, code in _actions().items() if len(key) == 4]


def listed_tags() -> list[tuple[int, ...]]:
    """Every row of Table E.1-1 as the library gives it (for tests and documentation)."""
    return list(_actions())


def _hmac(secret: bytes, purpose: str, value: str) -> bytes:
    return hmac.new(secret, f"{purpose}\0{value}".encode(), hashlib.sha256).digest()


def pseudonym(secret: bytes, patient_id: str) -> str:
    """Keyed pseudonym of a patient: HMAC-SHA256(site secret, Patient ID), 20 base32 chars.

    Without the secret it cannot be reversed by a dictionary of patient IDs, and the same
    patient gets the same pseudonym in every study and export (research linkage).
    """
    digest = base64.b32encode(_hmac(secret, "patient", patient_id.strip())).decode()
    return "MV" + digest[:20]


def keyed_uid(secret: bytes, uid: str) -> str:
    """A UID derived from ``uid`` by HMAC: ``2.25.<128-bit integer>`` (PS3.5 B.2)."""
    return "2.25." + str(int.from_bytes(_hmac(secret, "uid", uid.strip())[:16], "big"))


@dataclass
class _Context:
    secret: bytes
    options: DeidOptions
    identifiers: list[str]
    pseudonym: str


def deidentify(ds: Dataset, secret: bytes, options: DeidOptions = DeidOptions()) -> Dataset:
    """De-identify ``ds`` in place (and return it): Table E.1-1 plus ``options``.

    Sets Patient Identity Removed = YES and the De-identification Method (Code Sequence)
    naming the profile and options (CID 7050), and replaces the file meta information so
    that the original SOP Instance UID does not survive there.
    """
    if len(secret) < 16:
        raise ValueError("the de-identification secret must be at least 16 bytes")
    patient_id = str(ds.get("PatientID", "") or "").strip()
    # No Patient ID: key the pseudonym on the study, so that patients without an ID are
    # never merged into one pseudonym (their studies are then not linked either).
    key = patient_id or "study:" + str(ds.get("StudyInstanceUID", "") or "")
    ctx = _Context(secret, options, _identifiers(ds), pseudonym(secret, key))
    _walk(ds, ctx)
    ds.PatientID = ctx.pseudonym
    ds.PatientName = ctx.pseudonym
    ds.PatientIdentityRemoved = "YES"
    used = _method_codes(options)
    ds.DeidentificationMethod = [
        f"medvision PS3.15 E.1-1 ({TABLE_EDITION}) basic profile",
        *[code.meaning[:64] for code in used[1:]],
        *([] if options.retain_uids else ["UIDs replaced by keyed HMAC mapping"]),
    ]
    items = []
    for code in used:
        item = Dataset()
        item.CodeValue = code.value
        item.CodingSchemeDesignator = code.scheme_designator
        item.CodeMeaning = code.meaning
        items.append(item)
    ds.DeidentificationMethodCodeSequence = Sequence(items)
    meta = getattr(ds, "file_meta", None)
    if meta is not None:
        if "SOPInstanceUID" in ds:
            meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        for keyword in (
            "SourceApplicationEntityTitle",
            "SendingApplicationEntityTitle",
            "ReceivingApplicationEntityTitle",
            "PrivateInformation",
            "PrivateInformationCreatorUID",
        ):
            if keyword in meta:
                delattr(meta, keyword)
        meta.ImplementationVersionName = "MEDVISION_DEID"
    if hasattr(ds, "preamble"):
        ds.preamble = b"\0" * 128
    return ds


def _method_codes(options: DeidOptions) -> list:
    used = [codes.DCM.BasicApplicationConfidentialityProfile]
    if options.retain_safe_private:
        used.append(codes.DCM.RetainSafePrivateOption)
    if options.retain_uids:
        used.append(codes.DCM.RetainUidsOption)
    if options.clean_descriptors:
        used.append(codes.DCM.CleanDescriptorsOption)
    return used


def _identifiers(ds: Dataset) -> list[str]:
    """Values that must not survive inside cleaned free text (names, IDs, birth date)."""
    found: list[str] = []
    for keyword in (
        "PatientName",
        "PatientID",
        "OtherPatientIDs",
        "PatientBirthDate",
        "AccessionNumber",
        "InstitutionName",
        "ReferringPhysicianName",
        "OperatorsName",
        "PerformingPhysicianName",
        "StudyID",
    ):
        value = ds.get(keyword)
        if value is None:
            continue
        parts = value if isinstance(value, Iterable) and not isinstance(value, str) else [value]
        for part in parts:
            text = str(part)
            found.append(text)
            found.extend(re.split(r"[\^ ,.=]+", text))
    return sorted({t for t in found if len(t.strip()) >= 2}, key=len, reverse=True)


_DATE = re.compile(r"\b(19|20)\d{2}[-./]?\d{2}[-./]?\d{2}\b")
_LONG_NUMBER = re.compile(r"\d{5,}")


def clean_text(text: str, identifiers: list[str]) -> str:
    """Clean action (C) on free text: remove known identifying values, dates, long numbers."""
    out = text
    for ident in identifiers:
        out = re.sub(re.escape(ident), "", out, flags=re.IGNORECASE)
    out = _LONG_NUMBER.sub("", _DATE.sub("", out))
    return re.sub(r"\s{2,}", " ", out).strip()


def _walk(ds: Dataset, ctx: _Context) -> None:
    safe_private = _safe_private_tags(ds) if ctx.options.retain_safe_private else set()
    for tag in list(ds.keys()):
        elem = ds[tag]
        if tag.is_private:
            if tag not in safe_private:
                del ds[tag]
            continue
        if tag.element == 0x0000:  # group lengths are retired and would be stale
            del ds[tag]
            continue
        action = listed_action(tag)
        clean = ctx.options.clean_descriptors and (tag.group, tag.element) in CLEAN_DESCRIPTORS
        if action is None:
            if elem.VR == "UI" and not ctx.options.retain_uids and _is_instance_uid(tag):
                _map_uids(elem, ctx)
            elif elem.VR == "SQ":
                for item in elem.value:
                    _walk(item, ctx)
            continue
        _apply(ds, elem, action, clean, ctx)


def _is_instance_uid(tag: BaseTag) -> bool:
    """Unlisted UI attributes: class and transfer syntax UIDs are safe, others are mapped."""
    from pydicom.datadict import keyword_for_tag

    keyword = keyword_for_tag(tag)
    return not (
        keyword.endswith("ClassUID")
        or "TransferSyntax" in keyword
        or keyword in ("CodingSchemeUID", "ContextUID", "MappingResourceUID")
    )


def _apply(ds: Dataset, elem: DataElement, action: str, clean: bool, ctx: _Context) -> None:
    tag = elem.tag
    if elem.VR == "SQ":
        if clean or action in ("D", "Z/D", "X/D", "X/Z/D", "X/Z/U*", "U"):
            for item in elem.value:
                _walk(item, ctx)
        elif action == "Z":
            elem.value = Sequence()
        else:  # X, and X/Z: an empty Type 3 sequence is invalid (no items where 1-n are due)
            del ds[tag]
        return
    if clean and isinstance(elem.value, str | bytes) and elem.VR not in ("UI",):
        text = elem.value.decode(errors="replace") if isinstance(elem.value, bytes) else elem.value
        elem.value = clean_text(text, ctx.identifiers)
        return
    if action == "U":
        if not ctx.options.retain_uids:
            _map_uids(elem, ctx)
        return
    if action == "X":
        del ds[tag]
    elif action in ("Z", "X/Z"):
        elem.value = None if elem.VR not in ("OB", "OW", "UN") else b""
    elif action == "Z/D" and elem.VR not in ("DA", "TM", "DT"):
        # Contrast/Bolus Agent, Content Creator's Name: Type 2 wherever used; a dummy
        # ("ANONYMIZED" contrast agent) would tell a model a contrast agent was given.
        elem.value = None
    else:  # D, X/D, X/Z/D, and Z/D dates and times (Content Date/Time: Type 1 in SEG, SR)
        elem.value = _dummy(elem, ctx)


def _dummy(elem: DataElement, ctx: _Context) -> object:
    if elem.VR == "UI":
        return keyed_uid(ctx.secret, str(elem.value)) if elem.value else elem.value
    if elem.VR in _DUMMY_BY_VR:
        return _DUMMY_BY_VR[elem.VR]
    if elem.VR in ("OB", "OW", "UN", "OD", "OF", "OL", "OV"):
        return b"\0\0"
    return _DUMMY_TEXT


def _map_uids(elem: DataElement, ctx: _Context) -> None:
    mapper: Callable[[str], str] = lambda uid: keyed_uid(ctx.secret, uid) if uid else uid  # noqa: E731
    if elem.VM > 1:
        elem.value = [mapper(str(v)) for v in elem.value]
    elif elem.value:
        elem.value = mapper(str(elem.value))


def _safe_private_tags(ds: Dataset) -> set[BaseTag]:
    """Private tags of this level listed in Table E.3.10-1, with their creator elements."""
    keep: set[BaseTag] = set()
    for tag in ds.keys():
        if not tag.is_private or tag.element < 0x1000:
            continue
        creator_tag = Tag(tag.group, tag.element >> 8)
        creator = ds.get(creator_tag)
        if creator is None:
            continue
        key = (str(creator.value).strip(), tag.group, tag.element & 0xFF)
        if key in SAFE_PRIVATE:
            keep.update((tag, creator_tag))
    return keep


__all__ = [
    "DeidOptions",
    "TABLE_EDITION",
    "clean_text",
    "deidentify",
    "keyed_uid",
    "listed_action",
    "listed_tags",
    "pseudonym",
]
