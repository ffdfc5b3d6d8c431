"""The one slice numbering rule: key slice and its number, for a lesion (its long-axis
slice, even when its centroid lies elsewhere) and an organ, from the measurement object
and from findings.json as older nodes wrote it."""

from __future__ import annotations

import numpy as np

from medvision.findings import key_slice, key_slice_number, measure, slice_number
from tests.findings.test_measure import make_volume


def test_lesion_key_slice_is_its_long_axis_slice_not_its_centroid() -> None:
    vol = make_volume()
    mask = np.zeros(vol.shape, dtype=bool)
    mask[10, 40:60, 30:80] = True  # one wide slice: the long axis is measured here
    mask[11:16, 45:55, 50:60] = True  # a narrow tail pulls the centroid upwards
    m = measure(mask, vol, lesion=True)
    assert m.long_axis_slice == 10 and m.centroid_slice != 10
    assert key_slice(m) == 10 and key_slice_number(m) == 11 == slice_number(10)
    doc = m.to_json()
    assert doc["key_slice_number"] == 11
    # A findings.json written before key_slice_number existed gives the same number.
    old = {k: v for k, v in doc.items() if k != "key_slice_number"}
    assert key_slice(old) == 10 and key_slice_number(old) == 11


def test_organ_key_slice_is_its_centroid_slice() -> None:
    vol = make_volume()
    mask = np.zeros(vol.shape, dtype=bool)
    mask[0:5, 10:20, 10:20] = True
    m = measure(mask, vol, lesion=False)
    assert m.long_axis_slice is None
    assert key_slice(m) == m.centroid_slice == 2
    assert m.to_json()["key_slice_number"] == 3
    assert key_slice_number({}) is None
