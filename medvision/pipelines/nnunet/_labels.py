"""nnU-Net label names -> SNOMED CT codes for ``pipeline.yaml``.

An nnU-Net model names its labels only in ``dataset.json`` (``"kidney_left": 2``). What a
label means for the DICOM SEG and the SR comes from a mapping file shipped with medvision
(``totalsegmentator_total.yaml`` for TotalSegmentator's ``total`` task) or given by the
user. A name found in no mapping is never guessed: it gets medvision's private "no code"
coding (scheme ``99MEDVISION``, the label's own name as meaning) and the pipeline raises a
quality flag whenever such a label appears in a result.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

HERE = Path(__file__).resolve().parent
#: Mapping files shipped with medvision, tried in this order.
SHIPPED = (HERE / "totalsegmentator_total.yaml", HERE / "totalsegmentator_lung.yaml")
#: Private coding scheme of labels with no known code (DICOM: designators starting "99").
NO_CODE_SCHEME = "99MEDVISION"
ANATOMICAL_STRUCTURE = {"value": "91723000", "scheme": "SCT", "meaning": "Anatomical Structure"}
NO_CODE_CATEGORY = {"value": "unmapped", "scheme": NO_CODE_SCHEME, "meaning": "Unmapped label"}
LATERALITY = {
    "left": {"value": "7771000", "scheme": "SCT", "meaning": "Left"},
    "right": {"value": "24028007", "scheme": "SCT", "meaning": "Right"},
}


def read_mapping(path: Path) -> dict[str, dict[str, Any]]:
    """Label name -> entry of one mapping file (``labels:`` as in the shipped files)."""
    raw = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    labels = raw.get("labels")
    if not isinstance(labels, dict):
        raise ValueError(f"{path}: a mapping file needs 'labels:' mapping names to codes.")
    for name, entry in labels.items():
        if not isinstance(entry, dict) or ("type" not in entry and entry.get("code") != "none"):
            raise ValueError(f"{path}: label {name!r} needs type: [code, meaning] or code: none.")
        if entry.get("laterality") not in (None, "left", "right"):
            raise ValueError(f"{path}: label {name!r}: laterality must be left or right.")
    return labels


def shipped_mapping() -> dict[str, dict[str, Any]]:
    merged: dict[str, dict[str, Any]] = {}
    for path in SHIPPED:
        merged.update(read_mapping(path))
    return merged


def _sct(pair: Any) -> dict[str, str]:
    value, meaning = pair
    return {"value": str(value), "scheme": "SCT", "meaning": str(meaning)}


def no_code(name: str, value: int) -> dict[str, Any]:
    """The clear "no code" label: private scheme, the model's own name, flagged when found."""
    return {
        "name": name,
        "kind": "organ",
        "category": dict(NO_CODE_CATEGORY),
        "type": {"value": f"label-{value}", "scheme": NO_CODE_SCHEME, "meaning": name[:64]},
        "coded": False,
    }


def label_entry(name: str, value: int, mapping: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The ``pipeline.yaml`` label for ``name`` (``value`` in the model's label map)."""
    entry = mapping.get(name)
    if entry is None or entry.get("code") == "none":
        return no_code(name, value)
    out: dict[str, Any] = {
        "name": name,
        "kind": str(entry.get("kind", "organ")),
        "category": _sct(entry["category"]) if "category" in entry else dict(ANATOMICAL_STRUCTURE),
        "type": _sct(entry["type"]),
    }
    if "site" in entry:
        out["site"] = _sct(entry["site"])
    if entry.get("laterality"):
        out["laterality"] = dict(LATERALITY[entry["laterality"]])
    return out


def is_uncoded(code_scheme: str) -> bool:
    return code_scheme == NO_CODE_SCHEME


__all__ = [
    "NO_CODE_SCHEME",
    "SHIPPED",
    "is_uncoded",
    "label_entry",
    "no_code",
    "read_mapping",
    "shipped_mapping",
]
