"""Server-rendered SVG charts (bars with axes, gridlines and values), drawn in Python.

Why SVG from the server and not a chart library: the panel works without JavaScript and its content
security policy allows no inline script; a chart is a few hundred bytes of markup that prints,
scales to any width and needs nothing fetched. Every bar can link to the calls behind it and carries
a <title> (its exact value) for hover and screen readers.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from html import escape

from markupsafe import Markup


def _nice_max(peak: float) -> float:
    """A round axis top at or above `peak` (1, 2, 2.5, 5 x 10^n)."""
    if peak <= 0:
        return 1.0
    exp = 10 ** math.floor(math.log10(peak))
    for step in (1, 2, 2.5, 5, 10):
        if peak <= step * exp:
            return step * exp
    return 10 * exp  # pragma: no cover


def bars(title: str, labels: Sequence[str], values: Sequence[float], fmt: Callable[[float], str] = str,
         links: Sequence[str] | None = None, chart_id: str = "", width: int = 720, height: int = 220,
         compare: Sequence[float] | None = None, compare_label: str = "") -> Markup:
    """A bar chart: y axis with 4 gridlines and their values, x labels (thinned when crowded), the value
    above each bar when bars are wide enough, optional thin comparison bars (the previous period)."""
    n = len(values)
    left, right, top, bottom = 64, 8, 22, 34
    plot_w, plot_h = width - left - right, height - top - bottom
    peak = max([*values, *(compare or [])], default=0)
    axis_top = _nice_max(float(peak))
    out = [f'<svg class="chart" viewBox="0 0 {width} {height}" role="img" aria-label="{escape(title)}"'
           + (f' id="{escape(chart_id)}"' if chart_id else "") + '>',
           f'<title>{escape(title)}</title>']
    for k in range(5):
        v = axis_top * k / 4
        y = top + plot_h - plot_h * k / 4
        out.append(f'<line class="grid" x1="{left}" x2="{width - right}" y1="{y:.1f}" y2="{y:.1f}"/>')
        out.append(f'<text class="axis" x="{left - 6}" y="{y + 3:.1f}" text-anchor="end">{escape(fmt(v))}</text>')
    if n:
        slot = plot_w / n
        bar_w = max(1.0, slot * 0.7)
        every = max(1, math.ceil(n / max(1, plot_w // 42)))
        show_values = slot >= 26
        for i, (label, v) in enumerate(zip(labels, values)):
            x = left + i * slot + (slot - bar_w) / 2
            h = plot_h * (float(v) / axis_top) if axis_top else 0
            y = top + plot_h - h
            tip = f"{label}: {fmt(v)}"
            if compare is not None and i < len(compare):
                ch = plot_h * (float(compare[i]) / axis_top) if axis_top else 0
                tip += f" ({compare_label}: {fmt(compare[i])})"
                out.append(f'<rect class="prev" x="{x - 3:.1f}" y="{top + plot_h - ch:.1f}" width="3" '
                           f'height="{ch:.1f}"/>')
            bar = (f'<rect class="bar" x="{x:.1f}" y="{y:.1f}" width="{bar_w:.1f}" height="{h:.1f}">'
                   f'<title>{escape(tip)}</title></rect>')
            if links:
                bar = f'<a href="{escape(links[i])}">{bar}</a>'
            out.append(bar)
            if show_values and v:
                out.append(f'<text class="value" x="{x + bar_w / 2:.1f}" y="{y - 3:.1f}" '
                           f'text-anchor="middle">{escape(fmt(v))}</text>')
            if i % every == 0:
                out.append(f'<text class="axis" x="{x + bar_w / 2:.1f}" y="{height - bottom + 14}" '
                           f'text-anchor="middle">{escape(str(label))}</text>')
    out.append(f'<line class="axis-line" x1="{left}" x2="{width - right}" y1="{top + plot_h}" y2="{top + plot_h}"/>')
    out.append("</svg>")
    return Markup("".join(out))


def hbars(title: str, labels: Sequence[str], values: Sequence[float], fmt: Callable[[float], str] = str,
          links: Sequence[str] | None = None, chart_id: str = "", width: int = 520, row: int = 22) -> Markup:
    """Horizontal bars for named things (buyers, publishers...): name, bar, value; longest first."""
    n = len(values)
    label_w, value_w, top = 150, 84, 6
    height = top * 2 + max(1, n) * row
    plot_w = width - label_w - value_w
    peak = max(values, default=0) or 1
    out = [f'<svg class="chart hchart" viewBox="0 0 {width} {height}" role="img" aria-label="{escape(title)}"'
           + (f' id="{escape(chart_id)}"' if chart_id else "") + f'><title>{escape(title)}</title>']
    if not n:
        out.append(f'<text class="axis" x="{label_w}" y="{top + 14}">No calls.</text>')
    for i, (label, v) in enumerate(zip(labels, values)):
        y = top + i * row
        text = str(label)
        short = text if len(text) <= 22 else text[:21] + "…"
        w = plot_w * float(v) / peak if peak else 0
        out.append(f'<text class="axis" x="{label_w - 6}" y="{y + 15}" text-anchor="end"><title>{escape(text)}</title>'
                   f'{escape(short)}</text>')
        bar = (f'<rect class="bar" x="{label_w}" y="{y + 3}" width="{max(w, 0.5):.1f}" height="{row - 6}">'
               f'<title>{escape(text)}: {escape(fmt(v))}</title></rect>')
        if links:
            bar = f'<a href="{escape(links[i])}">{bar}</a>'
        out.append(bar)
        out.append(f'<text class="value" x="{label_w + w + 4:.1f}" y="{y + 15}">{escape(fmt(v))}</text>')
    out.append("</svg>")
    return Markup("".join(out))
