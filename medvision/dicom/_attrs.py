"""Fast reads of the few text attributes that scanning and stacking need (UIDs, DS, IS).

Why: pydicom converts an element on first access, with validation, at ~20-100 us each; a
series costs ~20 such reads per file, which was a quarter of load time on a 64-slice CT.
UIDs, decimal and integer strings are plain ASCII in every character set, so while an
element is still raw we decode its bytes directly. Anything else goes through pydicom.
"""

from __future__ import annotations

from pydicom import Dataset
from pydicom.datadict import tag_for_keyword
from pydicom.dataelem import RawDataElement


def _raw_or_value(ds: Dataset, keyword: str) -> object:
    tag = tag_for_keyword(keyword)
    if tag is None or tag not in ds:
        return None
    element = ds.get_item(tag)
    if isinstance(element, RawDataElement):
        value = element.value
        if isinstance(value, bytes):
            return value.decode("ascii", errors="replace")
    return ds[tag].value


def text(ds: Dataset, keyword: str) -> str:
    """A UI/CS/DS/IS attribute as stripped text ("" if absent or empty)."""
    value = _raw_or_value(ds, keyword)
    if value is None:
        return ""
    if isinstance(value, str):
        return value.strip(" \x00")
    return str(value).strip()


def numbers(ds: Dataset, keyword: str) -> tuple[float, ...] | None:
    """A DS/IS (or numeric) attribute as floats, or None if absent, empty or unreadable."""
    value = _raw_or_value(ds, keyword)
    if value is None or value == "":
        return None
    try:
        if isinstance(value, str):
            parts = [p for p in value.strip(" \x00").split("\\")]
            return tuple(float(p) for p in parts) if parts != [""] else None
        if isinstance(value, list | tuple) or hasattr(value, "__iter__"):
            return tuple(float(v) for v in value)  # type: ignore[union-attr]
        return (float(value),)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None


def number(ds: Dataset, keyword: str) -> float | None:
    """The first value of a numeric attribute, or None."""
    values = numbers(ds, keyword)
    return values[0] if values else None


__all__ = ["number", "numbers", "text"]
