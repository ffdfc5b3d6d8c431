"""Check and repair the patient/study attributes a SEG or SR inherits from its source.

highdicom copies every root attribute of the source's Patient and Study modules into the
objects it builds. Real archives hold defects there: the public chest CT A0001 has a
``ReferencedStudySequence`` item without ``ReferencedSOPClassUID``, and a SEG that copies it
fails ``dciodvfy``. So before highdicom sees a source header we copy it and, in the copy:

* drop items of SOP-reference sequences that lack a class or instance UID (we cannot know
  the missing class, so inventing one would be worse than leaving the reference out);
* drop items of code sequences that lack a value, a scheme or a meaning;
* remove a sequence left empty unless the module makes it Type 2 (then it stays, empty);
* add the Type 2 attributes (PatientName, PatientID, ...) that are missing, empty;
* blank a PatientSex that is not one of the defined terms;
* for an Enhanced multi-frame source whose Pixel Measures or Plane Orientation sit in every
  per-frame item (Philips does this) but are the same for all frames, copy them into the
  shared functional groups, where highdicom looks for them. The copy is only ever read as
  a source, so this changes no geometry.

The Volume's own headers are never touched. Each repair is reported by attribute keyword
only, never by value, so the log never carries PHI.
"""

from __future__ import annotations

import copy
import logging
import warnings
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from functools import cache

from pydicom import Dataset
from pydicom.datadict import dictionary_VR, tag_for_keyword

from medvision.errors import ResultError

logger = logging.getLogger(__name__)

#: Sequences whose items follow the SOP Instance Reference Macro (Table 10-11).
_SOP_REFERENCE_SEQUENCES = {"ReferencedStudySequence", "ReferencedPatientSequence"}

#: Type 2 attributes that highdicom reads straight from the first source header.
_REQUIRED_TYPE2 = (
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "PatientSex",
    "AccessionNumber",
    "StudyID",
    "StudyDate",
    "StudyTime",
    "ReferringPhysicianName",
)
_PATIENT_SEX = {"M", "F", "O", ""}

#: Used when highdicom's module tables do not know the source's SOP class.
_FALLBACK_TYPES = {"ReferencedStudySequence": "3", "ReferencedPatientSequence": "3"}


@cache
def _inherited_attribute_types(sop_class_uid: str) -> dict[str, str]:
    """Keyword -> Type of the root attributes of the source IOD's Patient/Study modules.

    highdicom's module tables are private API; if they move we fall back to checking the
    known sequences only, which still covers the defect we have seen.
    """
    try:
        from highdicom._standard_utils import (
            get_iod_module_map,
            get_module_attribute_map,
            get_sop_class_iod_map,
        )

        iod = get_sop_class_iod_map()[sop_class_uid]
        modules = [m["key"] for m in get_iod_module_map()[iod] if m["ie"] in ("Patient", "Study")]
        attributes = get_module_attribute_map()
        return {
            str(item["keyword"]): str(item["type"])
            for key in modules
            for item in attributes[key]
            if len(item["path"]) == 0
        }
    except Exception:  # noqa: BLE001 - private API or unknown SOP class
        return dict(_FALLBACK_TYPES)


def _valid_code_item(item: Dataset) -> bool:
    value = item.get("CodeValue") or item.get("LongCodeValue") or item.get("URNCodeValue")
    return (
        bool(value)
        and bool(item.get("CodeMeaning"))
        and (bool(item.get("CodingSchemeDesignator")) or bool(item.get("URNCodeValue")))
    )


def _valid_sop_reference(item: Dataset) -> bool:
    return bool(item.get("ReferencedSOPClassUID")) and bool(item.get("ReferencedSOPInstanceUID"))


def _repair_sequences(ds: Dataset, types: dict[str, str]) -> list[str]:
    repairs: list[str] = []
    for keyword, attr_type in types.items():
        if keyword not in ds or dictionary_VR(tag_for_keyword(keyword)) != "SQ":
            continue
        if keyword in _SOP_REFERENCE_SEQUENCES:
            valid = _valid_sop_reference
        elif keyword.endswith("CodeSequence"):
            valid = _valid_code_item
        else:
            continue
        items = list(ds[keyword].value or [])
        kept = [item for item in items if valid(item)]
        # An empty sequence is only allowed where the attribute is Type 2; a present but
        # empty Type 3 sequence is an error in the SEG/SR that inherits it.
        if len(kept) == len(items) and (items or attr_type.startswith("2")):
            continue
        if kept or attr_type.startswith("2"):
            _replace(ds, keyword, kept)
            repairs.append(f"{keyword}: dropped {len(items) - len(kept)} invalid item(s)")
        else:
            del ds[keyword]
            repairs.append(f"{keyword}: removed (no valid item)")
    return repairs


def _repair_values(ds: Dataset) -> list[str]:
    repairs: list[str] = []
    for keyword in _REQUIRED_TYPE2:
        if keyword not in ds:
            setattr(ds, keyword, None)
            repairs.append(f"{keyword}: added empty (Type 2)")
    sex = str(ds.get("PatientSex") or "")
    if sex not in _PATIENT_SEX:
        _replace(ds, "PatientSex", None)
        repairs.append("PatientSex: blanked (not M, F or O)")
    return repairs


_SHARED_GEOMETRY = ("PixelMeasuresSequence", "PlaneOrientationSequence")


def _hoist_shared_geometry(ds: Dataset) -> list[str]:
    if "PerFrameFunctionalGroupsSequence" not in ds:
        return []
    old = ds.get("SharedFunctionalGroupsSequence")
    # ``ds`` shares its elements with the source, so the shared item is copied before
    # anything is added to it.
    shared = _own_elements(old[0]) if old else Dataset()
    repairs = []
    for keyword in _SHARED_GEOMETRY:
        if keyword in shared:
            continue
        values = [item.get(keyword) for item in ds.PerFrameFunctionalGroupsSequence]
        if not values or any(v is None or len(v) != 1 for v in values):
            continue
        first = values[0][0]
        if all(v[0] == first for v in values[1:]):
            setattr(shared, keyword, [copy.deepcopy(first)])
            repairs.append(f"{keyword}: identical in every frame, copied to shared groups")
    if repairs or not old:
        _replace(ds, "SharedFunctionalGroupsSequence", [shared])
    return repairs


#: The last sanitised header set: the SEG, the SR and the overlays of one result are built
#: from the same source headers; repairing them once is enough.
_last: tuple[Sequence[Dataset], list[Dataset], list[str]] | None = None


def sanitize_headers(headers: Sequence[Dataset]) -> tuple[list[Dataset], list[str]]:
    """Copies of ``headers`` that are safe to inherit from, and what was repaired.

    The list of repairs is deduplicated across instances (the same study-level defect is
    usually in every slice). Callers must not modify the returned datasets: the SEG and the
    SR of one Findings share them.
    """
    global _last
    last = _last
    if last is not None and last[0] is headers:
        return last[1], last[2]
    cleaned, repairs = _sanitize(headers)
    _last = (headers, cleaned, repairs)
    return cleaned, repairs


def _replace(ds: Dataset, keyword: str, value: object) -> None:
    """Set ``keyword`` in a new data element: pydicom's ``setattr`` on an existing element
    changes that element's value in place, which would reach the source header it shares."""
    if keyword in ds:
        del ds[keyword]
    setattr(ds, keyword, value)


def _own_elements(header: Dataset) -> Dataset:
    """A new dataset holding the same data elements as ``header``, in its own element table.

    The repairs only add, replace or delete root elements of the copy and copy the one nested
    item they change (``_hoist_shared_geometry``), always through new data elements
    (``_replace``), so the elements themselves can be shared and ``header`` stays as it was.
    ``Dataset.copy()`` would not do: it shares the element table itself. A deep copy did, but
    cost ~7 ms per header (most of the time spent here).
    """
    ds = Dataset(dict(header))
    if "file_meta" in header.__dict__:
        ds.file_meta = header.file_meta
    return ds


def _sanitize(headers: Sequence[Dataset]) -> tuple[list[Dataset], list[str]]:
    cleaned: list[Dataset] = []
    repairs: dict[str, None] = {}
    for header in headers:
        ds = _own_elements(header)
        if "PixelData" in ds:
            del ds.PixelData
        types = _inherited_attribute_types(str(ds.get("SOPClassUID", "")))
        fixes = (*_repair_sequences(ds, types), *_repair_values(ds), *_hoist_shared_geometry(ds))
        for repair in fixes:
            repairs[repair] = None
        cleaned.append(ds)
    for repair in repairs:
        logger.info("Inherited attribute repaired: %s", repair)
    return cleaned, list(repairs)


@contextmanager
def no_phi_warnings() -> Iterator[None]:
    """Silence highdicom's person-name warning, which quotes the patient's name verbatim.

    The inherited name is copied unchanged on purpose (SEG-03), so the warning tells the
    operator nothing they can act on, and it would put PHI into the node's logs.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*intended person name.*")
        yield


def check_same_study(headers: Iterable[Dataset]) -> str:
    """The one StudyInstanceUID shared by all headers (a SEG/SR belongs to one study)."""
    studies = {str(h.get("StudyInstanceUID", "")) for h in headers}
    if len(studies) != 1 or "" in studies:
        raise ResultError(
            f"Source instances belong to {len(studies)} studies (or lack a Study UID); "
            "a SEG/SR must reference one study."
        )
    return studies.pop()


__all__ = ["check_same_study", "no_phi_warnings", "sanitize_headers"]
