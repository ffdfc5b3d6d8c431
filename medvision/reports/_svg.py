"""Small charts as hand-written SVG: no plotting library, no JavaScript, no CDN.

matplotlib is not a dependency of the node (and is not installed here); the dashboard needs
only bar charts, which are a few rectangles and labels. SVG inlines into the HTML page and
the report, scales without blur, is searchable text (tests read the values back from the
``<title>`` of each bar) and prints.
"""

from __future__ import annotations

from collections.abc import Sequence
from html import escape

_FONT = 'font-family="DejaVu Sans, Arial, sans-serif" font-size="11"'
_BAR = "#3b82c4"


def _fmt(value: float) -> str:
    return f"{value:g}" if isinstance(value, int) or value == int(value) else f"{value:.2f}"


def hbar_chart(
    items: Sequence[tuple[str, float]],
    *,
    title: str,
    unit: str = "",
    width: int = 520,
    colour: str = _BAR,
    label_width: int = 200,
) -> str:
    """Horizontal bars, one row per (label, value); long labels are shortened visibly."""
    row, top = 22, 26
    height = top + row * max(len(items), 1) + 8
    peak = max((v for _, v in items), default=0) or 1
    span = width - label_width - 60
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" role="img" '
        f'width="{width}" height="{height}" viewBox="0 0 {width} {height}" '
        f'aria-label="{escape(title)}">',
        f'<text x="0" y="15" {_FONT} font-weight="bold">{escape(title)}</text>',
    ]
    if not items:
        parts.append(
            f'<text x="0" y="{top + 14}" {_FONT} fill="#666">no data in this period</text>'
        )
    for n, (label, value) in enumerate(items):
        y = top + n * row
        short = label if len(label) <= 32 else label[:31] + "…"
        length = max(1.0, span * value / peak) if value else 0.0
        parts.append(
            f"<g><title>{escape(label)}: {_fmt(value)}{escape(unit)}</title>"
            f'<text x="{label_width - 6}" y="{y + 14}" text-anchor="end" {_FONT}>'
            f"{escape(short)}</text>"
            f'<rect x="{label_width}" y="{y + 3}" width="{length:.1f}" height="{row - 8}" '
            f'fill="{colour}"/>'
            f'<text x="{label_width + length + 4:.1f}" y="{y + 14}" {_FONT}>'
            f"{_fmt(value)}{escape(unit)}</text></g>"
        )
    parts.append("</svg>")
    return "".join(parts)


def column_chart(
    items: Sequence[tuple[str, float]],
    *,
    title: str,
    width: int = 520,
    height: int = 180,
    colour: str = _BAR,
) -> str:
    """Vertical columns over time (e.g. studies per day); x labels thinned to fit."""
    left, bottom, top = 30, 34, 24
    plot_w, plot_h = width - left - 6, height - top - bottom
    n = max(len(items), 1)
    step = plot_w / n
    peak = max((v for _, v in items), default=0) or 1
    every = max(1, int(n / (plot_w / 46)) + 1)
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" role="img" '
        f'width="{width}" height="{height}" viewBox="0 0 {width} {height}" '
        f'aria-label="{escape(title)}">',
        f'<text x="0" y="15" {_FONT} font-weight="bold">{escape(title)}</text>',
        f'<line x1="{left}" y1="{top + plot_h}" x2="{width - 6}" y2="{top + plot_h}" '
        'stroke="#999"/>',
        f'<text x="{left - 4}" y="{top + 8}" text-anchor="end" {_FONT}>{_fmt(peak)}</text>',
        f'<text x="{left - 4}" y="{top + plot_h}" text-anchor="end" {_FONT}>0</text>',
    ]
    for i, (label, value) in enumerate(items):
        x = left + i * step
        h = plot_h * value / peak
        parts.append(
            f"<g><title>{escape(label)}: {_fmt(value)}</title>"
            f'<rect x="{x + step * 0.15:.1f}" y="{top + plot_h - h:.1f}" '
            f'width="{max(step * 0.7, 1):.1f}" height="{h:.1f}" fill="{colour}"/></g>'
        )
        if i % every == 0:
            parts.append(
                f'<text x="{x + step / 2:.1f}" y="{top + plot_h + 14}" text-anchor="middle" '
                f"{_FONT}>{escape(label[5:] if len(label) == 10 else label)}</text>"
            )
    parts.append("</svg>")
    return "".join(parts)


__all__ = ["column_chart", "hbar_chart"]
