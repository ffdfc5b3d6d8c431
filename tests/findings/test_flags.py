"""A finding's quality flags are typed codes: normalised on construction, unknown ones refused."""

from __future__ import annotations

import numpy as np
import pytest

from medvision.findings import Code, Finding, FindingKind, Label, Measurements, QualityFlag

LESION = Label(
    "Lung lesion",
    Code("49755003", "SCT", "Morphologically Abnormal Structure"),
    Code("52988006", "SCT", "Lesion"),
    FindingKind.LESION,
)


def _finding(flags: tuple) -> Finding:
    m = Measurements(1.0, 20.0, 40.0, (0.0, 0.0, 0.0), 0, "1.2.3")
    mask = np.ones((1, 2, 2), bool)
    return Finding(1, LESION, mask, "Lesion 1", "1.2.4", m, 0.5, "x", flags=flags)


def test_flags_are_normalised_and_written() -> None:
    finding = _finding(("thick-slices",))
    assert finding.flags == (QualityFlag.THICK_SLICES,)
    assert finding.to_json()["flags"] == ["thick-slices"]
    assert _finding(()).to_json()["flags"] == []


def test_an_unknown_flag_fails_early() -> None:
    with pytest.raises(ValueError, match="not a valid QualityFlag"):
        _finding(("blurry",))
