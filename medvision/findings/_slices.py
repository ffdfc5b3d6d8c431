"""Slice numbering: the one rule that the terminal table, findings.json, the SR, the viewer
and the QA reports all follow, so a reader told "slice 31" finds the same image everywhere.

The rule:

* **Slice number** = 1 + the slice's index ``k`` in the volume, where the volume's slices
  are sorted along the slice normal (row × column of ImageOrientationPatient), lowest
  position first (``medvision.dicom._geometry.stack_planes``). For an axial CT that is feet to
  head: slice 1 is the most inferior image. The viewer's slider runs in the same order,
  so the number is what the viewer shows ("slice 31 / 64").
* It is **not** the DICOM InstanceNumber. Scanners number instances in acquisition order,
  often head to foot (on the sample chest CT, slice N is InstanceNumber 65 − N), and some
  leave gaps or repeat numbers; a position along the patient axis is the one order every
  series has. A PACS finds the image through the SR instead: it references the key slice
  by its SOP Instance UID (and frame number).
* Secondary Capture overlays burn the same number in ("Slice 31/64").
* Each finding has one **key slice**, the one "Go to slice" opens and every table lists:
  for a lesion the slice on which its long and short axis were measured (the slice the SR
  names as the measurements' source image), for an organ (no axes) the occupied slice
  nearest its centre of mass.

findings.json keeps the 0-based indices it always had (``centroid_slice``,
``long_axis_slice``) and adds ``key_slice_number``, the number to show.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # _model imports this module: no runtime import back
    from medvision.findings._model import Measurements


def slice_number(k: int) -> int:
    """The number shown to people for the volume's slice index ``k`` (0-based)."""
    return int(k) + 1


def key_slice(measurements: Measurements | Mapping[str, Any]) -> int | None:
    """0-based index of a finding's key slice: the long-axis slice, else the centroid slice.

    Takes a :class:`Measurements` or its ``to_json`` form, so pages reading a findings.json
    written before ``key_slice_number`` existed still show the same number.
    """
    if isinstance(measurements, Mapping):
        long_k = measurements.get("long_axis_slice")
        centre_k = measurements.get("centroid_slice")
    else:
        long_k, centre_k = measurements.long_axis_slice, measurements.centroid_slice
    k = long_k if long_k is not None else centre_k
    return None if k is None else int(k)


def key_slice_number(measurements: Measurements | Mapping[str, Any]) -> int | None:
    """The key slice as people see it numbered (see the module docstring), or None."""
    if isinstance(measurements, Mapping):
        stored = measurements.get("key_slice_number")
        if stored is not None:
            return int(stored)
    k = key_slice(measurements)
    return None if k is None else slice_number(k)


__all__ = ["key_slice", "key_slice_number", "slice_number"]
