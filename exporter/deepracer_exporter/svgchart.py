"""Line and scatter charts as inline SVG text, drawn on the server so a page needs no script.

Every plotted point is an element carrying what it shows (`data-iteration`, `data-value`, the
value as the exposition writes it) inside a group naming its series (`data-series`), so the
numbers on a page can be read back and checked against /metrics; its `<title>` is what a
browser shows on hover. The unfinished iteration (`Live`) is drawn hollow at the end of a
dashed segment, round boundaries and markers (checkpoints) as labelled vertical lines.

Text is sized for a chart at least `MIN_WIDTH` CSS px wide (the page scrolls a narrower chart
sideways instead of shrinking it): at that width the smallest text is still 10 CSS px.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from html import escape
from typing import Literal

Mark = Literal["line", "dots", "rolling"]
Scale = Callable[[float], float]

WIDTH = 960
HEIGHT = 380
MIN_WIDTH = 700  # CSS px: the page keeps a chart at least this wide (see FONT_PX)
FONT_PX = 14  # the smallest text, in chart units: 14 * 700 / 960 = 10.2 CSS px at MIN_WIDTH
_LINE = 20  # height of one legend row
_BOTTOM = 48
_SIDE = 74
_CHAR = 0.56 * FONT_PX  # average advance of a character of the UI font, for the legend


@dataclass(frozen=True)
class Series:
    key: str  # data-series, e.g. "training:reward:mean"
    label: str  # legend text
    color: str
    points: tuple[tuple[int, float], ...]  # (iteration, value), ascending iteration
    axis: Literal["left", "right"] = "left"
    mark: Mark = "line"  # line: line and dots; dots: scatter; rolling: line, small dots
    faint: bool = False  # drawn thin and light, under the others (a noisy series)
    percent: bool = False  # values are ratios, shown as percent in the hover text


@dataclass(frozen=True)
class Axis:
    label: str
    percent: bool = False  # values are ratios 0..1, labelled 0..100 %


@dataclass(frozen=True)
class Live:
    """The unfinished iteration: its points are hollow and `label` says how far it is."""

    iteration: int
    label: str  # e.g. "6 of 20 episodes"


@dataclass(frozen=True)
class Rule:
    """A labelled vertical line at an iteration: a round's start, a checkpoint."""

    iteration: int
    label: str
    kind: str  # css class and data-kind: "round", "checkpoint"


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


def five_ticks(lo: float, hi: float) -> list[float]:
    """Six round ticks (five intervals) covering lo..hi: they fall on the lines of a 0..100 %
    axis beside them."""
    if not hi > lo:
        hi = lo + 1.0
    power = 10.0 ** math.floor(math.log10((hi - lo) / 5))
    for m in (1.0, 2.0, 2.5, 5.0, 10.0, 20.0, 25.0, 50.0, 100.0):
        step = m * power
        first = math.floor(lo / step) * step
        if first + 5 * step >= hi:
            return [round(first + k * step, 10) for k in range(6)]
    raise AssertionError("unreachable: a step of 100x the raw step always covers")


def _range(series: list[Series], axis: Axis, aligned: bool) -> tuple[float, float, list[float]]:
    if axis.percent:
        ticks = [i / 5 for i in range(6)]
        return 0.0, 1.0, ticks
    values = [v for s in series for _, v in s.points if math.isfinite(v)]
    lo = min([0.0, *values])
    hi = max([lo + 1.0, *values])
    ticks = five_ticks(lo, hi) if aligned else nice_ticks(lo, hi)
    return ticks[0], ticks[-1], ticks


def _label(value: float, percent: bool) -> str:
    if percent:
        return f"{value * 100:g}%"
    return f"{value:g}"


def _shown(value: float, percent: bool) -> str:
    """A value as the hover text gives it."""
    return f"{value * 100:.1f}%" if percent else f"{value:.4g}" if abs(value) < 1e4 \
        else f"{value:.0f}"


def _legend(series: list[Series], x0: float, x1: float, live: Live | None
            ) -> tuple[list[str], int]:
    """Legend entries flowed into rows between x0 and x1; the SVG and the rows used."""
    entries = [(s.label, s.color, s.mark, False) for s in series]
    if live is not None:
        entries.append((f"unfinished iteration {live.iteration}: {live.label}", "#545b64",
                        "dots", True))
    out, x, row = [], x0, 0
    for label, color, mark, hollow in entries:
        width = 24 + _CHAR * len(label) + 18
        if x > x0 and x + width > x1:
            x, row = x0, row + 1
        y = 8 + row * _LINE
        sym = (f'<circle cx="{x + 7:.0f}" cy="{y + 6}" r="4" fill="#fff" stroke="{color}" '
               'stroke-width="1.5"/>' if hollow else
               f'<circle cx="{x + 7:.0f}" cy="{y + 6}" r="4" fill="{color}" opacity=".6"/>'
               if mark == "dots" else
               f'<rect x="{x:.0f}" y="{y + 4}" width="16" height="4" fill="{color}"/>')
        out.append(f'<g class="legend">{sym}<text x="{x + 22:.0f}" y="{y + 11}">'
                   f"{escape(label)}</text></g>")
        x += width
    return out, row + 1


def chart(title: str, series: list[Series], left: Axis, right: Axis | None = None,
          x_label: str = "Iteration", *, live: Live | None = None,
          rules: Sequence[Rule] = ()) -> str:
    """One chart: iterations on x, `left` (and optionally `right`) value axes."""
    series = [s for s in series if s.points]
    x0, x1 = _SIDE, WIDTH - (_SIDE if right is not None else 28)
    legend, rows = _legend(series, x0, x1, live if series else None)
    top = 14 + rows * _LINE + 8  # legend rows (rule labels go inside the plot)
    height = HEIGHT + (rows - 1) * _LINE
    y0, y1 = height - _BOTTOM, top
    iterations = [i for s in series for i, _ in s.points]
    i_lo, i_hi = (min(iterations), max(iterations)) if iterations else (0, 1)
    if i_hi == i_lo:
        i_lo, i_hi = i_lo - 1, i_hi + 1

    def sx(iteration: float) -> float:
        return x0 + (iteration - i_lo) / (i_hi - i_lo) * (x1 - x0)

    out = [f'<svg class="chart" viewBox="0 0 {WIDTH} {height}" role="img" '
           f'aria-label="{escape(title)}" xmlns="http://www.w3.org/2000/svg">',
           f"<title>{escape(title)}</title>"]
    scales: dict[str, Scale] = {}
    for side, axis, edge in (("left", left, x0), ("right", right, x1)):
        if axis is None:
            continue
        lo, hi, ticks = _range([s for s in series if s.axis == side], axis, right is not None)

        def sy(v: float, lo: float = lo, hi: float = hi) -> float:
            return y0 - (v - lo) / (hi - lo) * (y0 - y1)

        scales[side] = sy
        anchor, dx = ("end", -6) if side == "left" else ("start", 6)
        for t in ticks:
            y = sy(t)
            if side == "left":
                out.append(f'<line class="grid" x1="{x0}" x2="{x1}" y1="{y:.1f}" y2="{y:.1f}"/>')
            out.append(f'<text class="tick" x="{edge + dx}" y="{y + 5:.1f}" '
                       f'text-anchor="{anchor}">{_label(t, axis.percent)}</text>')
        ax = 18 if side == "left" else WIDTH - 18
        out.append(f'<text class="axis" transform="translate({ax},{(y0 + y1) / 2:.0f}) '
                   f'rotate(-90)" text-anchor="middle">{escape(axis.label)}</text>')
    for tick in nice_ticks(i_lo, i_hi, 8):
        if i_lo <= tick <= i_hi and tick == int(tick):
            x = sx(tick)
            out.append(f'<line class="tickmark" x1="{x:.1f}" x2="{x:.1f}" y1="{y0}" '
                       f'y2="{y0 + 5}"/><text class="tick" x="{x:.1f}" y="{y0 + 20}" '
                       f'text-anchor="middle">{int(tick)}</text>')
    out.append(f'<line class="frame" x1="{x0}" x2="{x1}" y1="{y0}" y2="{y0}"/>')
    out.append(f'<text class="axis" x="{(x0 + x1) / 2:.0f}" y="{height - 6}" '
               f'text-anchor="middle">{escape(x_label)}</text>')
    out.extend(legend)
    if not series:
        out.append(f'<text class="empty" x="{(x0 + x1) / 2:.0f}" y="{(y0 + y1) / 2:.0f}" '
                   f'text-anchor="middle">no data yet</text>')
    taken: list[list[tuple[float, float]]] = []  # label extents per row, top row first
    labels: list[str] = []
    for rule in sorted(rules, key=lambda r: r.iteration):
        if not series or not i_lo <= rule.iteration <= i_hi:
            continue
        x = sx(rule.iteration)
        anchor = "end" if x > (x0 + x1) / 2 else "start"
        dx = -4 if anchor == "end" else 4
        width = _CHAR * len(rule.label)
        span = (x + dx - width, x + dx) if anchor == "end" else (x + dx, x + dx + width)
        # Labels of nearby lines go one row lower instead of over each other.
        row = next((i for i, used in enumerate(taken)
                    if all(span[1] < a or span[0] > b for a, b in used)), len(taken))
        if row == len(taken):
            taken.append([])
        taken[row].append(span)
        y = y1 + 14 + row * (FONT_PX + 4)
        out.append(f'<g class="rule {rule.kind}" data-kind="{rule.kind}" '
                   f'data-iteration="{rule.iteration}"><line x1="{x:.1f}" x2="{x:.1f}" '
                   f'y1="{y1}" y2="{y0}"/>'
                   f"<title>{escape(rule.label)} (iteration {rule.iteration})</title></g>")
        labels.append(f'<text class="rule-label {rule.kind}" data-iteration="{rule.iteration}" '
                      f'x="{x + dx:.1f}" y="{y}" text-anchor="{anchor}">{escape(rule.label)}'
                      "</text>")
    for s in sorted(series, key=lambda s: not s.faint):
        out.append(_series(s, sx, scales[s.axis], live))
    out.extend(labels)  # over the points, so that they stay readable
    out.append("</svg>")
    return "\n".join(out)


def _series(s: Series, sx: Scale, sy: Scale, live: Live | None) -> str:
    coords = [(sx(i), sy(v), i, v) for i, v in s.points if math.isfinite(v)]
    at_live = bool(coords) and live is not None and coords[-1][2] == live.iteration
    done = coords[:-1] if at_live else coords
    cls = f"series {s.mark}{' faint' if s.faint else ''}"
    parts = [f'<g class="{cls}" data-series="{escape(s.key)}" data-axis="{s.axis}" '
             f'stroke="{s.color}" fill="{s.color}">']
    if s.mark != "dots":
        if len(done) > 1:
            line = " ".join(f"{x:.1f},{y:.1f}" for x, y, _, _ in done)
            parts.append(f'<polyline fill="none" points="{line}"/>')
        if at_live and done:
            (xa, ya, _, _), (xb, yb, _, _) = done[-1], coords[-1]
            parts.append(f'<polyline class="unfinished" fill="none" '
                         f'points="{xa:.1f},{ya:.1f} {xb:.1f},{yb:.1f}"/>')
    radius = {"line": 3, "dots": 3, "rolling": 1.5}[s.mark]
    label = escape(s.label)
    parts.extend(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="{radius}" data-iteration="{i}" '
                 f'data-value="{v!r}"><title>Iteration {i}: {label} '
                 f"{_shown(v, s.percent)}</title></circle>" for x, y, i, v in done)
    if at_live and live is not None:
        x, y, i, v = coords[-1]
        parts.append(f'<circle class="unfinished" cx="{x:.1f}" cy="{y:.1f}" r="4.5" '
                     f'fill="#fff" data-iteration="{i}" data-value="{v!r}" '
                     f'data-unfinished="{escape(live.label)}"><title>Iteration {i} '
                     f"(unfinished, {escape(live.label)}): {label} {_shown(v, s.percent)}"
                     "</title></circle>")
    parts.append("</g>")
    return "".join(parts)
