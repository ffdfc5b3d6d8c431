"""Segment colours are drawn over grey CT and MR slices: none may be white, grey or black."""

from __future__ import annotations

import math

import pytest
from highdicom.color import CIELabColor

from medvision.pipelines.brainchop._import import KNOWN
from medvision.results._codes import _PALETTE, display_color, visible_on_grey

WHITE = (65535, 32896, 32896)
LIGHT_GREY = (62000, 32896, 32896)


def _chroma(color: CIELabColor) -> float:
    return math.hypot(*color.lab[1:])


def test_every_palette_entry_shows_on_grey_and_they_differ() -> None:
    colours = [CIELabColor.from_rgb(*rgb) for rgb in _PALETTE]
    assert all(visible_on_grey(c) for c in colours)
    assert min(_chroma(c) for c in colours) >= 40
    for i, a in enumerate(colours):
        for b in colours[i + 1 :]:
            assert math.dist(a.lab, b.lab) > 25  # CIE76: clearly different colours


@pytest.mark.parametrize("lab", [WHITE, LIGHT_GREY, (0, 32896, 32896), (30000, 32896, 32896)])
def test_an_achromatic_label_colour_is_replaced_by_the_palette(lab: tuple[int, int, int]) -> None:
    assert not visible_on_grey(CIELabColor.from_dicom_value(lab))
    for number in (1, 2, 11):
        shown = display_color(lab, number)
        assert shown.to_rgb(clip=True) == _PALETTE[(number - 1) % len(_PALETTE)]


def test_a_visible_label_colour_is_kept() -> None:
    red = CIELabColor.from_rgb(234, 60, 84).value
    assert display_color(red, 5).value == red


def test_imported_brainchop_labels_have_visible_colours() -> None:
    """White matter used to be recommended white (L* 95, no chroma)."""
    for known in KNOWN.values():
        for label in known.labels.values():
            color = CIELabColor.from_dicom_value(tuple(label["cielab"]))
            assert visible_on_grey(color), (label["name"], color.to_rgb(clip=True))
