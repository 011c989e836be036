"""The model page's training analysis: the track view and action usage, as inline SVG.

The track view draws, in the track's own metres (y up), the track's borders when its waypoint file
is known (`tracks_dir`), the latest iteration's episodes as paths, a mark where an episode went
off the track or crashed, the fastest lap's rows coloured by speed, and a reward heat map by
position (mean reward of the latest iteration's rows per cell), as deepracer-utils'
`plot_selected_laps`, `plot_track` and `plot_evaluations` do in the notebook. Without a track file
the paths alone are drawn, scaled to fit. Every drawn element carries what it shows (`data-*`) so
the page can be checked against the data. Action usage is a stacked bar per iteration: the share
of the iteration's rows per action (or steering x speed cell), so a policy that collapses onto
one action shows as one colour taking over.
"""

from __future__ import annotations

import math
from html import escape

import numpy as np

from .analysis import (
    ENDINGS,
    SPEED_CELLS,
    STEERING_CELLS,
    EpisodePath,
    IterationAnalysis,
    ModelAnalysis,
    action_name,
)

WIDTH = 960
MAX_HEIGHT = 720
_PAD = 16
_HEAT_CELLS = 48  # along the longer side
_USAGE_ITERATIONS = 60  # bars shown: the latest iterations
# Sequential colours (low -> high): speed (viridis stops), reward (light yellow -> dark red).
_SPEED = ((68, 1, 84), (59, 82, 139), (33, 145, 140), (94, 201, 98), (253, 231, 37))
_REWARD = ((255, 255, 204), (254, 217, 118), (253, 141, 60), (227, 26, 28), (128, 0, 38))
END_COLOUR = "#e6007e"  # the off-track / crash marks: a colour nothing else on the page uses
_PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2",
            "#7f7f7f", "#bcbd22", "#17becf", "#aec7e8", "#ffbb78", "#98df8a", "#ff9896",
            "#c5b0d5", "#c49c94", "#f7b6d2", "#c7c7c7", "#dbdb8d", "#9edae5")

STYLE = """
svg.track{width:100%;height:auto;border:1px solid #d5dbdb;border-radius:4px;margin:.3em 0;
background:#fbfbfb}
svg.track .border{fill:none;stroke:#879596;stroke-width:1.5}
svg.track .centre{fill:none;stroke:#c3c9cc;stroke-width:1;stroke-dasharray:4 4}
svg.track .path{fill:none;stroke:#1f77b4;stroke-width:1.2;opacity:.45}
svg.track .end{stroke-width:3;vector-effect:non-scaling-stroke}
svg.track .end line{vector-effect:non-scaling-stroke}
svg.usage{width:100%;height:auto;border:1px solid #d5dbdb;border-radius:4px;margin:.3em 0}
ul.keys{list-style:none;padding:0;margin:.2em 0;display:flex;flex-wrap:wrap;gap:.2em 1em;
font-size:.88em}
ul.keys span{display:inline-block;width:.9em;height:.9em;margin-right:.3em;
vertical-align:-.1em}
"""


def _colour(stops: tuple[tuple[int, int, int], ...], t: float) -> str:
    t = min(max(t if math.isfinite(t) else 0.0, 0.0), 1.0) * (len(stops) - 1)
    i = min(int(t), len(stops) - 2)
    f = t - i
    r, g, b = (round(a + (c - a) * f) for a, c in zip(stops[i], stops[i + 1], strict=True))
    return f"#{r:02x}{g:02x}{b:02x}"


class _Frame:
    """Track metres -> SVG pixels: the bounds scaled to WIDTH, aspect kept, y flipped."""

    def __init__(self, xs: np.ndarray, ys: np.ndarray) -> None:
        self.x0, self.x1 = float(np.min(xs)), float(np.max(xs))
        self.y0, self.y1 = float(np.min(ys)), float(np.max(ys))
        span_x = max(self.x1 - self.x0, 1e-6)
        span_y = max(self.y1 - self.y0, 1e-6)
        self.scale = min((WIDTH - 2 * _PAD) / span_x, (MAX_HEIGHT - 2 * _PAD) / span_y)
        self.height = math.ceil(span_y * self.scale + 2 * _PAD)

    def x(self, v: float) -> float:
        return round(_PAD + (v - self.x0) * self.scale, 1)

    def y(self, v: float) -> float:
        return round(self.height - _PAD - (v - self.y0) * self.scale, 1)

    def points(self, xs: np.ndarray, ys: np.ndarray) -> str:
        return " ".join(f"{self.x(float(a))},{self.y(float(b))}"
                        for a, b in zip(xs, ys, strict=True))


def _heat(a: ModelAnalysis, frame: _Frame) -> str:
    xs = np.concatenate([p.x for p in a.latest_paths]).astype(np.float64)
    ys = np.concatenate([p.y for p in a.latest_paths]).astype(np.float64)
    rewards = np.concatenate([p.reward for p in a.latest_paths]).astype(np.float64)
    keep = np.isfinite(xs) & np.isfinite(ys) & np.isfinite(rewards)
    xs, ys, rewards = xs[keep], ys[keep], rewards[keep]
    if not xs.size:
        return ""
    size = max(frame.x1 - frame.x0, frame.y1 - frame.y0) / _HEAT_CELLS
    cx = np.floor((xs - frame.x0) / size).astype(np.int64)
    cy = np.floor((ys - frame.y0) / size).astype(np.int64)
    cells: dict[tuple[int, int], list[float]] = {}
    for i, j, r in zip(cx.tolist(), cy.tolist(), rewards.tolist(), strict=True):
        cells.setdefault((i, j), []).append(r)
    means = {k: sum(v) / len(v) for k, v in cells.items()}
    lo, hi = min(means.values()), max(means.values())
    px = size * frame.scale
    out = [f'<g id="reward-heat" data-cell-metres="{size!r}" data-min="{lo!r}" '
           f'data-max="{hi!r}">']
    for (i, j), mean in sorted(means.items()):
        out.append(f'<rect x="{frame.x(frame.x0 + i * size)}" '
                   f'y="{frame.y(frame.y0 + (j + 1) * size)}" width="{px:.1f}" '
                   f'height="{px:.1f}" fill="{_colour(_REWARD, (mean - lo) / (hi - lo or 1))}" '
                   f'opacity=".55" data-reward="{mean!r}" data-rows="{len(cells[(i, j)])}"/>')
    out.append("</g>")
    return "".join(out)


def _end_mark(p: EpisodePath, frame: _Frame) -> str:
    x, y = frame.x(float(p.x[-1])), frame.y(float(p.y[-1]))
    common = (f'data-worker="{p.worker}" data-episode="{p.episode}" data-status="{p.end}" '
              f'data-x="{float(p.x[-1])!r}" data-y="{float(p.y[-1])!r}"')
    if p.end == "crashed":
        return (f'<g class="end" {common} stroke="{END_COLOUR}" data-cx="{x}" data-cy="{y}">'
                f'<line x1="{x - 7}" y1="{y - 7}" x2="{x + 7}" y2="{y + 7}"/>'
                f'<line x1="{x - 7}" y1="{y + 7}" x2="{x + 7}" y2="{y - 7}"/></g>')
    return (f'<circle class="end" {common} cx="{x}" cy="{y}" r="7" fill="{END_COLOUR}" '
            f'data-cx="{x}" data-cy="{y}"/>')


def track_svg(a: ModelAnalysis) -> str:
    """The latest iteration on the track (see the module's docstring)."""
    t = a.track
    paths = [p for p in a.latest_paths if len(p.x)]
    xs = [p.x for p in paths] + ([t.inner[:, 0], t.outer[:, 0]] if t is not None else [])
    ys = [p.y for p in paths] + ([t.inner[:, 1], t.outer[:, 1]] if t is not None else [])
    if a.fastest is not None:
        xs.append(a.fastest.x)
        ys.append(a.fastest.y)
    if not xs:
        return ""
    frame = _Frame(np.concatenate(xs), np.concatenate(ys))
    title = f"Iteration {a.latest_iteration} on " + (t.name if t is not None else
                                                      "the track (no track file)")
    out = [f'<svg class="track" id="track-view" viewBox="0 0 {WIDTH} {frame.height}" '
           f'role="img" aria-label="{escape(title)}" xmlns="http://www.w3.org/2000/svg" '
           f'data-iteration="{a.latest_iteration}">', f"<title>{escape(title)}</title>"]
    if t is not None:
        out.append(f'<g class="borders" data-track="{escape(t.name)}">')
        out.extend(f'<polyline class="{cls}" points="{frame.points(line[:, 0], line[:, 1])}"/>'
                   for cls, line in (("border", t.outer), ("border", t.inner),
                                     ("centre", t.centre)))
        out.append("</g>")
    out.append(_heat(a, frame))
    out.append('<g id="episode-paths">')
    out.extend(f'<polyline class="path" data-worker="{p.worker}" data-episode="{p.episode}" '
               f'data-steps="{p.steps}" data-end="{p.end}" data-progress="{p.progress!r}" '
               f'points="{frame.points(p.x, p.y)}"/>' for p in paths)
    out.append("</g>")
    lap = a.fastest
    if lap is not None:
        lo, hi = float(np.min(lap.speed)), float(np.max(lap.speed))
        out.append(f'<g id="fastest-lap" data-iteration="{lap.iteration}" '
                   f'data-worker="{lap.worker}" data-episode="{lap.episode}" '
                   f'data-seconds="{lap.seconds!r}" data-steps="{lap.steps}" '
                   f'data-speed-min="{lo!r}" data-speed-max="{hi!r}">')
        out.extend(f'<circle cx="{frame.x(float(x))}" cy="{frame.y(float(y))}" r="2.6" '
                   f'fill="{_colour(_SPEED, (float(v) - lo) / (hi - lo or 1))}" '
                   f'data-speed="{float(v)!r}"/>'
                   for x, y, v in zip(lap.x, lap.y, lap.speed, strict=True))
        out.append("</g>")
    out.append('<g id="episode-ends">')
    out.extend(_end_mark(p, frame) for p in paths if p.end in ENDINGS)
    out.append("</g></svg>")
    return "".join(out)


def _usage_keys(a: ModelAnalysis, last: IterationAnalysis) -> list[tuple[str, str]]:
    """(key, label) of each stacked part: discrete actions by index, or grid cells."""
    if last.grid is not None:
        return [(f"{s}|{v}", f"steering {s}\u00b0, speed {v} m/s")
                for s in STEERING_CELLS for v in SPEED_CELLS]
    named = {act.index: act for act in a.actions}
    width = max([len(it.actions) for it in a.iterations] + [len(named)])
    return [(str(i), f"{i}: {action_name(named[i])}" if i in named else f"action {i}")
            for i in range(width)]


def _shares(it: IterationAnalysis, keys: list[tuple[str, str]]) -> list[float]:
    if (it.grid is not None) != ("|" in keys[0][0]):
        return [0.0] * len(keys)  # the other kind of action space (a new training): no bar
    if it.grid is not None:
        total = it.grid.sum()
        flat = it.grid.reshape(-1)
        return [float(v / total) if total else 0.0 for v in flat]
    shares = it.shares()
    return [float(shares[i]) if i < len(shares) else 0.0 for i in range(len(keys))]


def usage_svg(a: ModelAnalysis) -> tuple[str, str]:
    """The stacked bars (SVG) and their legend (HTML list)."""
    shown = a.iterations[-_USAGE_ITERATIONS:]
    keys = _usage_keys(a, shown[-1])
    height, left, bottom, top = 260, 50, 30, 10
    step = (WIDTH - left - 10) / len(shown)
    out = [f'<svg class="usage" id="action-usage" viewBox="0 0 {WIDTH} {height}" role="img" '
           f'aria-label="Action usage per iteration" xmlns="http://www.w3.org/2000/svg">',
           "<title>Action usage per iteration</title>"]
    span = height - bottom - top
    for frac in (0.0, 0.25, 0.5, 0.75, 1.0):
        y = height - bottom - frac * span
        out.append(f'<line class="grid" x1="{left}" x2="{WIDTH - 10}" y1="{y:.1f}" '
                   f'y2="{y:.1f}"/><text class="tick" x="{left - 6}" y="{y + 4:.1f}" '
                   f'text-anchor="end">{frac * 100:g}%</text>')
    for n, it in enumerate(shown):
        x = left + n * step
        base = 0.0
        out.append(f'<g data-iteration="{it.iteration}">')
        for k, ((key, _), share) in enumerate(zip(keys, _shares(it, keys), strict=True)):
            if share <= 0:
                continue
            y = height - bottom - (base + share) * span
            out.append(f'<rect x="{x + step * 0.1:.1f}" y="{y:.1f}" width="{step * 0.8:.1f}" '
                       f'height="{share * span:.1f}" fill="{_PALETTE[k % len(_PALETTE)]}" '
                       f'data-action="{escape(key)}" data-value="{share!r}"/>')
            base += share
        out.append("</g>")
        if n == 0 or n == len(shown) - 1 or n % max(1, len(shown) // 8) == 0:
            out.append(f'<text class="tick" x="{x + step / 2:.1f}" y="{height - 10}" '
                       f'text-anchor="middle">{it.iteration}</text>')
    out.append("</svg>")
    legend = "".join(f'<li data-action="{escape(key)}"><span style="background:'
                     f'{_PALETTE[k % len(_PALETTE)]}"></span>{escape(label)}</li>'
                     for k, (key, label) in enumerate(keys))
    return "".join(out), f'<ul class="keys" id="action-keys">{legend}</ul>'


def section_html(a: ModelAnalysis | None) -> str:
    """The page's training-analysis section; empty for a model without simtrace positions."""
    if a is None:
        return ""
    track = track_svg(a)
    lap = a.fastest
    ends = sum(1 for p in a.latest_paths if p.end in ENDINGS)
    where = (f"on <b>{escape(a.track.name)}</b>" if a.track is not None else
             f"(no track file for <b>{escape(a.track_name)}</b> in <code>tracks_dir</code>: "
             "paths only)" if a.track_name else
             "(track unknown: paths only, scaled to fit)")
    note = (f"The {len(a.latest_paths)} episodes of iteration {a.latest_iteration} {where}. "
            f"Each blue line is an episode; a magenta dot marks where one left the track (a "
            f"cross a crash; {ends} here); squares are the "
            "mean reward of the steps in them (light: low, dark red: high). ")
    if lap is not None:
        note += (f"Coloured dots: the fastest lap kept ({lap.seconds:.3f} s, iteration "
                 f"{lap.iteration}, worker {lap.worker}, episode {lap.episode}), one per step, "
                 "purple slow to yellow fast.")
    usage, legend = usage_svg(a)
    return (f"<style>{STYLE}</style>"
            '<h2 id="training-analysis">Where the car goes</h2>'
            f'<p class="note">{note}</p><div id="track-chart">{track}</div>'
            '<h2>Action usage</h2><p class="note">Share of each iteration\'s steps per action '
            "(as deepracer-utils' action breakdown counts them). One colour taking over the "
            "bars means the policy collapsed onto one action.</p>"
            f'<div id="usage-chart">{usage}</div>{legend}')
