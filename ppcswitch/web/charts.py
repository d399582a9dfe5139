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
         links: Sequence[str] | None = None, chart_id: str = "", width: int = 720, height: int = 230,
         compare: Sequence[float] | None = None, compare_label: str = "", integer: bool = False) -> Markup:
    """A bar chart: y axis with gridlines and their values (below zero too, for a negative margin), x
    labels (thinned when crowded), the value above each bar when bars are wide enough, and optional
    thin grey bars for the period before."""
    n = len(values)
    left, right, top, bottom = 70, 8, 24, 36
    plot_w, plot_h = width - left - right, height - top - bottom
    everything = [float(v) for v in [*values, *(compare or [])]]
    axis_top = _nice_max(max(everything, default=0))
    axis_low = -_nice_max(-min(everything)) if everything and min(everything) < 0 else 0.0
    if integer:  # counts: whole-number gridlines (0, 1, 2, 3, 4 ...)
        axis_top = max(4, math.ceil(axis_top / 4) * 4)
    span = axis_top - axis_low

    def y_of(v: float) -> float:
        return top + plot_h * (axis_top - v) / span

    zero = y_of(0)
    out = [f'<svg class="chart" viewBox="0 0 {width} {height}" role="img" aria-label="{escape(title)}"'
           + (f' id="{escape(chart_id)}"' if chart_id else "") + '>',
           f'<title>{escape(title)}</title>']
    ticks = 4
    for k in range(ticks + 1):
        v = axis_low + span * k / ticks
        y = y_of(v)
        out.append(f'<line class="grid" x1="{left}" x2="{width - right}" y1="{y:.1f}" y2="{y:.1f}"/>')
        out.append(f'<text class="axis" x="{left - 6}" y="{y + 4:.1f}" text-anchor="end">{escape(fmt(v))}</text>')
    if n:
        slot = plot_w / n
        bar_w = max(1.0, slot * 0.7)
        every = max(1, math.ceil(n / max(1, plot_w // 48)))
        # A value above each bar when it fits (about 7 units per character at this font size).
        show_values = slot >= max(14, 7 * max(len(fmt(float(v))) for v in values))
        for i, (label, v) in enumerate(zip(labels, values)):
            v = float(v)
            x = left + i * slot + (slot - bar_w) / 2
            y0, y1 = sorted((zero, y_of(v)))
            tip = f"{label}: {fmt(v)}"
            if compare is not None and i < len(compare):
                c0, c1 = sorted((zero, y_of(float(compare[i]))))
                tip += f" ({compare_label}: {fmt(compare[i])})"
                out.append(f'<rect class="prev" x="{x - 4:.1f}" y="{c0:.1f}" width="4" height="{c1 - c0:.1f}"/>')
            bar = (f'<rect class="bar{" neg" if v < 0 else ""}" x="{x:.1f}" y="{y0:.1f}" width="{bar_w:.1f}" '
                   f'height="{y1 - y0:.1f}"><title>{escape(tip)}</title></rect>')
            if links:
                bar = f'<a href="{escape(links[i])}">{bar}</a>'
            out.append(bar)
            if show_values and v:
                ty = y0 - 4 if v > 0 else y1 + 12
                out.append(f'<text class="value" x="{x + bar_w / 2:.1f}" y="{ty:.1f}" '
                           f'text-anchor="middle">{escape(fmt(v))}</text>')
            if i % every == 0:
                out.append(f'<text class="axis" x="{x + bar_w / 2:.1f}" y="{height - bottom + 16}" '
                           f'text-anchor="middle">{escape(str(label))}</text>')
    out.append(f'<line class="axis-line" x1="{left}" x2="{width - right}" y1="{zero:.1f}" y2="{zero:.1f}"/>')
    out.append("</svg>")
    return Markup("".join(out))


def hbars(title: str, labels: Sequence[str], values: Sequence[float], fmt: Callable[[float], str] = str,
          links: Sequence[str] | None = None, chart_id: str = "", width: int = 520, row: int = 22,
          empty: str = "No calls.") -> Markup:
    """Horizontal bars for named things (buyers, publishers...): name, bar, value; longest first."""
    n = len(values)
    label_w, value_w, top = 150, 84, 6
    height = top * 2 + max(1, n) * row
    plot_w = width - label_w - value_w
    peak = max(values, default=0) or 1
    out = [f'<svg class="chart hchart" viewBox="0 0 {width} {height}" role="img" aria-label="{escape(title)}"'
           + (f' id="{escape(chart_id)}"' if chart_id else "") + f'><title>{escape(title)}</title>']
    if not n:
        out.append(f'<text class="axis" x="{label_w}" y="{top + 14}">{escape(empty)}</text>')
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
