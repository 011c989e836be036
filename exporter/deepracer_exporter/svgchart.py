"""Line and scatter charts as inline SVG text, drawn on the server so a page needs no script.

Every plotted point is an element carrying what it shows (`data-iteration`, `data-value`, the
value as the exposition writes it) inside a group naming its series (`data-series`), so the
numbers on a page can be read back and checked against /metrics.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from html import escape
from typing import Literal

Mark = Literal["line", "dots", "rolling"]
Scale = Callable[[float], float]

WIDTH = 960
HEIGHT = 340
_TOP = 40  # the legend row
_BOTTOM = 44
_SIDE = 70


@dataclass(frozen=True)
class Series:
    key: str  # data-series, e.g. "training:reward:mean"
    label: str  # legend text
    color: str
    points: tuple[tuple[int, float], ...]  # (iteration, value), ascending iteration
    axis: Literal["left", "right"] = "left"
    mark: Mark = "line"  # line: line and dots; dots: scatter; rolling: line, small dots


@dataclass(frozen=True)
class Axis:
    label: str
    percent: bool = False  # values are ratios 0..1, labelled 0..100 %


def nice_ticks(lo: float, hi: float, count: int = 6) -> list[float]:
    """Round tick values (1, 2, 5 x 10^k apart) covering lo..hi."""
    if not hi > lo:
        hi = lo + 1.0
    raw = (hi - lo) / max(count - 1, 1)
    power = 10.0 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1.0, 2.0, 5.0, 10.0) if m * power >= raw)
    first = math.floor(lo / step) * step
    last = math.ceil(hi / step) * step
    return [round(first + k * step, 10) for k in range(round((last - first) / step) + 1)]


def _range(series: list[Series], axis: Axis) -> tuple[float, float, list[float]]:
    if axis.percent:
        ticks = [i / 5 for i in range(6)]
        return 0.0, 1.0, ticks
    values = [v for s in series for _, v in s.points]
    lo = min([0.0, *values])
    hi = max([lo + 1.0, *values])
    ticks = nice_ticks(lo, hi)
    return ticks[0], ticks[-1], ticks


def _label(value: float, percent: bool) -> str:
    if percent:
        return f"{value * 100:g}%"
    return f"{value:g}"


def chart(title: str, series: list[Series], left: Axis, right: Axis | None = None,
          x_label: str = "Iteration") -> str:
    """One chart: iterations on x, `left` (and optionally `right`) value axes."""
    series = [s for s in series if s.points]
    x0, x1 = _SIDE, WIDTH - (_SIDE if right is not None else 24)
    y0, y1 = HEIGHT - _BOTTOM, _TOP
    iterations = [i for s in series for i, _ in s.points]
    i_lo, i_hi = (min(iterations), max(iterations)) if iterations else (0, 1)
    if i_hi == i_lo:
        i_lo, i_hi = i_lo - 1, i_hi + 1

    def sx(iteration: float) -> float:
        return x0 + (iteration - i_lo) / (i_hi - i_lo) * (x1 - x0)

    out = [f'<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" '
           f'aria-label="{escape(title)}" xmlns="http://www.w3.org/2000/svg">',
           f"<title>{escape(title)}</title>"]
    scales: dict[str, Scale] = {}
    for side, axis, edge in (("left", left, x0), ("right", right, x1)):
        if axis is None:
            continue
        lo, hi, ticks = _range([s for s in series if s.axis == side], axis)

        def sy(v: float, lo: float = lo, hi: float = hi) -> float:
            return y0 - (v - lo) / (hi - lo) * (y0 - y1)

        scales[side] = sy
        anchor, dx = ("end", -6) if side == "left" else ("start", 6)
        for t in ticks:
            y = sy(t)
            if side == "left":
                out.append(f'<line class="grid" x1="{x0}" x2="{x1}" y1="{y:.1f}" y2="{y:.1f}"/>')
            out.append(f'<text class="tick" x="{edge + dx}" y="{y + 4:.1f}" text-anchor="{anchor}">'
                       f"{_label(t, axis.percent)}</text>")
        ax = 16 if side == "left" else WIDTH - 16
        out.append(f'<text class="axis" transform="translate({ax},{(y0 + y1) / 2:.0f}) '
                   f'rotate(-90)" text-anchor="middle">{escape(axis.label)}</text>')
    for tick in nice_ticks(i_lo, i_hi, 10):
        if i_lo <= tick <= i_hi and tick == int(tick):
            x = sx(tick)
            out.append(f'<line class="tickmark" x1="{x:.1f}" x2="{x:.1f}" y1="{y0}" '
                       f'y2="{y0 + 5}"/><text class="tick" x="{x:.1f}" y="{y0 + 18}" '
                       f'text-anchor="middle">{int(tick)}</text>')
    out.append(f'<line class="frame" x1="{x0}" x2="{x1}" y1="{y0}" y2="{y0}"/>')
    out.append(f'<text class="axis" x="{(x0 + x1) / 2:.0f}" y="{HEIGHT - 6}" '
               f'text-anchor="middle">{escape(x_label)}</text>')
    legend_x = x0
    for s in series:
        mark = (f'<circle cx="{legend_x + 7}" cy="14" r="3.5" fill="{s.color}" opacity=".6"/>'
                if s.mark == "dots" else
                f'<rect x="{legend_x}" y="12" width="14" height="4" fill="{s.color}"/>')
        out.append(f'<g class="legend">{mark}<text x="{legend_x + 20}" y="19">'
                   f"{escape(s.label)}</text></g>")
        legend_x += 28 + 7 * len(s.label)
    if not series:
        out.append(f'<text class="empty" x="{(x0 + x1) / 2:.0f}" y="{(y0 + y1) / 2:.0f}" '
                   f'text-anchor="middle">no data yet</text>')
    for s in series:
        out.append(_series(s, sx, scales[s.axis]))
    out.append("</svg>")
    return "\n".join(out)


def _series(s: Series, sx: Scale, sy: Scale) -> str:
    coords = [(sx(i), sy(v), i, v) for i, v in s.points if math.isfinite(v)]
    parts = [f'<g class="series {s.mark}" data-series="{escape(s.key)}" data-axis="{s.axis}" '
             f'stroke="{s.color}" fill="{s.color}">']
    if s.mark != "dots" and len(coords) > 1:
        line = " ".join(f"{x:.1f},{y:.1f}" for x, y, _, _ in coords)
        parts.append(f'<polyline fill="none" points="{line}"/>')
    radius = {"line": 2.5, "dots": 2.5, "rolling": 1.2}[s.mark]
    parts.extend(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="{radius}" data-iteration="{i}" '
                 f'data-value="{v!r}"/>' for x, y, i, v in coords)
    parts.append("</g>")
    return "".join(parts)
