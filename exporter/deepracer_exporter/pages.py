"""HTML pages for people: `/` lists the watched models, `/models/<name>` charts one of them.

The console's reward graph and the notebook's progress chart (deepracer-utils `plotProgress`)
are drawn here as inline SVG from the same snapshot as /metrics, so a user beside a training or
behind an SSH tunnel sees them without Grafana, JavaScript or anything fetched from elsewhere.
A page is rendered once per snapshot (the charts once per derived result, the expensive part)
and then served as ready bytes, plain or gzip, whoever asks and however many at once; a
request never touches S3. Every name shown comes from a bucket prefix or the config, so all
text is escaped, and the pages' Content-Security-Policy allows no script at all.
"""

from __future__ import annotations

import gzip
import math
import threading
import time
from dataclasses import dataclass
from html import escape
from urllib.parse import quote, unquote

import numpy as np
import numpy.typing as npt

from . import trackview
from .derive import Derived, FloatArray, IterationTable
from .parse import PHASES
from .sidefiles import EvaluationRun
from .snapshot import ModelSnapshot, Snapshot
from .svgchart import Axis, Series, chart

MODELS_PATH = "/models/"
_GZIP_LEVEL = 6
_MIN_REFRESH_SECONDS = 5
HEADERS = (
    ("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'; "
     "img-src data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"),
    ("X-Content-Type-Options", "nosniff"),
    ("Cache-Control", "no-cache"),
    ("Vary", "Accept-Encoding"),
)
# Colours of the DeepRacer console (reward green, training blue, evaluation orange).
REWARD = "#2ca02c"
TRAINING = "#1f77b4"
EVALUATION = "#ff7f0e"

_STYLE = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:1.5em auto;
max-width:1000px;padding:0 1em;color:#16191f;background:#fff}
h1{font-size:1.5em;margin:.2em 0}h2{font-size:1.15em;margin:1.6em 0 .4em}
h3{font-size:1em;margin:.8em 0 .2em}
p.note{color:#545b64;margin:.2em 0 .8em;font-size:.92em}
table{border-collapse:collapse;font-size:.92em;margin:.3em 0}
th,td{padding:.3em .7em;border-bottom:1px solid #d5dbdb;text-align:right}
th:first-child,td:first-child{text-align:left}th{background:#f2f3f3}
.ok{color:#1d8102}.bad{color:#d13212}.muted{color:#687078}
dl{display:grid;grid-template-columns:max-content auto;gap:.2em 1em;margin:.5em 0}
dt{color:#545b64}dd{margin:0}
svg.chart{width:100%;height:auto;border:1px solid #d5dbdb;border-radius:4px;margin:.3em 0}
svg .grid{stroke:#e9ebed}svg .frame,svg .tickmark{stroke:#879596}
svg text{font-size:12px;fill:#545b64}svg .axis{font-size:13px;fill:#16191f}
svg .legend text{font-size:13px;fill:#16191f}
svg .series polyline{stroke-width:2}svg .series circle{stroke:none}
svg .series.dots circle{opacity:.55}svg .series.rolling polyline{stroke-width:2.5}
"""


@dataclass(frozen=True)
class Page:
    """A response ready to send: its status and the body, plain and gzip."""

    status: int
    plain: bytes
    gzipped: bytes
    headers: tuple[tuple[str, str], ...] = HEADERS

    @classmethod
    def html(cls, status: int, text: str) -> Page:
        body = text.encode()
        return cls(status, body, gzip.compress(body, _GZIP_LEVEL))


_NOT_FOUND = Page.html(404, "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
                       "<title>Unknown model</title><link rel=\"icon\" href=\"data:,\"></head>"
                       "<body><h1>Unknown model</h1><p>This exporter does not watch a model of "
                       "that name. <a href=\"/\">All models</a></p></body></html>\n")


_NO_DATA = '<p class="muted">No data yet.</p>'


def model_path(name: str) -> str:
    """The page of a model; every character of the name that is not plain is %-encoded."""
    return MODELS_PATH + quote(name, safe="")


@dataclass(frozen=True)
class _Rendered:
    snapshot: Snapshot | None
    pages: dict[str | None, Page]  # model name -> page; None -> the list of models


class Pages:
    """Renders each page at most once per snapshot and hands out the same bytes afterwards."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._rendered = _Rendered(None, {})
        self._charts: dict[str, tuple[Derived, int, str]] = {}  # name -> (derived, window, svg)

    def get(self, snapshot: Snapshot | None, path: str) -> Page | None:
        """The page at `path` (without query) for this snapshot; None when `path` is no page."""
        key: str | None
        if path == "/":
            key = None
        elif path.startswith(MODELS_PATH):
            key = unquote(path[len(MODELS_PATH):])
        else:
            return None
        rendered = self._rendered
        if rendered.snapshot is not snapshot:
            with self._lock:
                if self._rendered.snapshot is not snapshot:
                    self._rendered = _Rendered(snapshot, {})
                    names = {m.name for m in snapshot.models} if snapshot is not None else set()
                    self._charts = {n: c for n, c in self._charts.items() if n in names}
                rendered = self._rendered
        page = rendered.pages.get(key)
        if page is not None:
            return page
        if snapshot is None:
            return Page.html(503, _document("DeepRacer models", "<p>Starting up.</p>",
                                            _MIN_REFRESH_SECONDS))
        model = next((m for m in snapshot.models if m.name == key), None)
        if key is not None and model is None:
            return _NOT_FOUND  # not kept: made-up names must not fill the cache
        with self._lock:  # one render; concurrent viewers wait for it instead of repeating it
            page = rendered.pages.get(key)
            if page is None:
                page = (Page.html(200, index_html(snapshot)) if model is None else
                        Page.html(200, model_html(snapshot, model,
                                                  self._charts_of(snapshot, model))))
                rendered.pages[key] = page
            return page

    def _charts_of(self, snapshot: Snapshot, model: ModelSnapshot) -> str:
        derived = model.derived
        if derived is None:
            return "<p class=\"muted\">No training data yet.</p>"
        cached = self._charts.get(model.name)
        if cached is not None and cached[0] is derived and cached[1] == snapshot.rolling_window:
            return cached[2]
        svg = charts_html(derived, snapshot.rolling_window)
        self._charts[model.name] = (derived, snapshot.rolling_window, svg)
        return svg


# -- formatting --------------------------------------------------------------------------------

def _utc(t: float | None) -> str:
    if t is None:
        return "\u2014"
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(t))


def _age(seconds: float) -> str:
    s = max(0, int(seconds))
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if s >= size:
            return f"{s // size} {unit} ago"
    return f"{s} s ago"


def _seconds(value: float | None) -> str:
    return "\u2014" if value is None or not math.isfinite(value) else f"{value:.3f} s"


def _percent(value: float | None) -> str:
    return "\u2014" if value is None or not math.isfinite(value) else f"{value * 100:.1f}%"


def _health(model: ModelSnapshot) -> str:
    if model.health.success:
        return '<span class="ok">ok</span>'
    return f'<span class="bad">failing: {escape(model.health.last_error or "error")}</span>'


def _last_update(snapshot: Snapshot, model: ModelSnapshot) -> str:
    if model.last_update is None:
        return "\u2014"
    return (f'<span title="{_utc(model.last_update)}">'
            f"{_age(snapshot.created - model.last_update)}</span>")


def _refresh_seconds(snapshot: Snapshot) -> int:
    return max(_MIN_REFRESH_SECONDS, math.ceil(snapshot.refresh_interval))


def _document(title: str, body: str, refresh: int | None) -> str:
    meta = f'<meta http-equiv="refresh" content="{refresh}">' if refresh else ""
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">{meta}'
            f'<title>{escape(title)}</title><link rel="icon" href="data:,">'
            f"<style>{_STYLE}</style></head>\n<body>\n{body}\n</body></html>\n")


# -- the list of models ------------------------------------------------------------------------

def index_html(snapshot: Snapshot) -> str:
    rows = []
    for m in snapshot.models:
        d = m.derived
        best = d.best_lap if d is not None else {}
        rolling = d.rolling_completion.get("training") if d is not None else None
        iteration = str(d.latest_iteration) if d is not None and d.latest_iteration >= 0 \
            else "\u2014"
        rows.append(
            f'<tr><td><a href="{escape(model_path(m.name))}">{escape(m.name)}</a></td>'
            f"<td>{iteration}</td><td>{_seconds(best.get('training'))}</td>"
            f"<td>{_seconds(best.get('evaluation'))}</td><td>{_percent(rolling)}</td>"
            f"<td>{_last_update(snapshot, m)}</td><td>{_health(m)}</td></tr>")
    table = ("<table id=\"models\"><thead><tr><th>Model</th><th>Iteration</th>"
             "<th>Best lap (training)</th><th>Best lap (evaluation)</th>"
             f"<th>Rolling completion ({snapshot.rolling_window} it.)</th><th>Last update</th>"
             "<th>Health</th></tr></thead><tbody>" + "".join(rows) + "</tbody></table>"
             if rows else "<p>No model found yet.</p>")
    body = (f"<h1>DeepRacer models</h1><p class=\"note\">{len(snapshot.models)} watched; "
            f"data of {_utc(snapshot.created)}, refreshed every {snapshot.refresh_interval:g} s. "
            f'Prometheus metrics: <a href="/metrics">/metrics</a>.</p>{table}')
    return _document("DeepRacer models", body, _refresh_seconds(snapshot))


# -- one model ---------------------------------------------------------------------------------

def _points(table: IterationTable, rows: npt.NDArray[np.bool_], field: str
            ) -> tuple[tuple[int, float], ...]:
    """(iteration, mean) of one statistic over the chosen rows; the mean is the first column."""
    means: FloatArray = getattr(table, field)[rows, 0]
    shown = np.isfinite(means)
    return tuple(zip(table.iteration[rows][shown].tolist(), means[shown].tolist(), strict=True))


def charts_html(derived: Derived, window: int) -> str:
    """The console chart and the notebook's progress chart (completion, reward)."""
    table = derived.table
    train = table.phase == PHASES.index("training")
    evaluation = table.phase == PHASES.index("evaluation")
    console = chart(
        "Reward graph (DeepRacer console)",
        [Series("training:reward:mean", "Average reward (training)", REWARD,
                _points(table, train, "reward")),
         Series("training:completion:mean", "Average completion (training)", TRAINING,
                _points(table, train, "completion"), axis="right"),
         Series("evaluation:completion:mean", "Average completion (evaluation)", EVALUATION,
                _points(table, evaluation, "completion"), axis="right")],
        Axis("Average reward"), Axis("Average completion", percent=True))
    rolling = f"rolling mean of {window}"
    def progress(name: str, title: str, axis: Axis) -> str:
        """plotProgress' view of one statistic: each iteration's mean as dots, the rolling line."""
        series = []
        for phase, label, colour, rows in (("evaluation", "Evaluation", EVALUATION, evaluation),
                                           ("training", "Training", TRAINING, train)):
            series += [Series(f"{phase}:{name}:mean", label, colour, _points(table, rows, name),
                              mark="dots"),
                       Series(f"{phase}:rolling_{name}:mean", f"{label}, {rolling}", colour,
                              _points(table, rows, f"rolling_{name}"), mark="rolling")]
        return chart(title, series, axis)

    completion = progress("completion", "Completion per iteration (mean)",
                          Axis("Percent complete (mean)", percent=True))
    reward = progress("reward", "Reward per iteration (mean)", Axis("Reward (mean)"))
    return (
        '<h2>Reward graph</h2><p class="note">As in the DeepRacer console: average reward of '
        "the training episodes of each iteration (left axis) and the average track completion "
        "of its training and evaluation episodes (right axis).</p>"
        f'<div id="console-chart">{console}</div>'
        '<h2>Training progress</h2><p class="note">As deepracer-utils\' <code>plotProgress'
        "</code>: each dot is one iteration's mean, the line its rolling mean over the last "
        f"{window} iterations.</p>"
        f'<h3>Completion</h3><div id="completion-chart">{completion}</div>'
        f'<h3>Reward</h3><div id="reward-chart">{reward}</div>')


def _laps_html(derived: Derived) -> str:
    if not derived.best_laps:
        return "<p class=\"muted\">No completed lap yet.</p>"
    rows = []
    rank: dict[str, int] = {}
    for lap in derived.best_laps:
        rank[lap.phase] = rank.get(lap.phase, 0) + 1
        rows.append(f"<tr><td>{lap.phase}</td><td>{rank[lap.phase]}</td>"
                    f"<td>{_seconds(lap.seconds)}</td><td>{lap.round}</td>"
                    f"<td>{lap.iteration}</td><td>{lap.episode}</td><td>{lap.worker}</td></tr>")
    return ('<table id="laps"><thead><tr><th>Phase</th><th>Rank</th><th>Lap time</th>'
            "<th>Round</th><th>Iteration</th><th>Episode</th><th>Worker</th></tr></thead>"
            "<tbody>" + "".join(rows) + "</tbody></table>")


def _runs_html(runs: tuple[EvaluationRun, ...], total: int) -> str:
    if not runs:
        return "<p class=\"muted\">No evaluation run yet.</p>"
    rows = [f"<tr><td>{escape(r.run_id)}</td><td>{_utc(r.timestamp)}</td><td>{r.trials}</td>"
            f"<td>{r.completed_laps}</td><td>{_percent(r.completion_ratio)}</td>"
            f"<td>{_seconds(r.lap_seconds_best)}</td><td>{_seconds(r.lap_seconds_mean)}</td>"
            f"<td>{r.resets}</td><td>{r.off_track}</td><td>{r.crashes}</td></tr>"
            for r in sorted(runs, key=lambda r: (r.timestamp or 0.0, r.run_id), reverse=True)]
    shown = "" if total <= len(runs) else f'<p class="note">The latest {len(runs)} of {total}.</p>'
    return (shown + '<table id="evaluations"><thead><tr><th>Run</th><th>Time</th>'
            "<th>Trials</th><th>Laps completed</th><th>Completion</th><th>Best lap</th>"
            "<th>Mean lap</th><th>Resets</th><th>Off track</th><th>Crashes</th></tr></thead>"
            "<tbody>" + "".join(rows) + "</tbody></table>")


def _summary_html(snapshot: Snapshot, model: ModelSnapshot) -> str:
    d = model.derived
    where = (f"s3://{model.bucket}/{model.prefix}" if model.source == "s3"
             else f"{model.bucket}/{model.prefix}")
    items = [("Source", escape(where)), ("Health", _health(model)),
             ("Last update", f"{_last_update(snapshot, model)} ({_utc(model.last_update)})")]
    if d is not None:
        state = "finished (reached its episode limit)" if d.finished else "training"
        rolling = d.rolling_completion.get("training")
        since = d.plateau.get(("training", "completion"))
        items += [
            ("State", state),
            ("Iteration", f"{d.latest_iteration} (round {d.latest_round})"),
            ("Episodes per iteration", f"{d.episodes_per_iteration} over {d.workers} "
                                       f"worker{'s' if d.workers != 1 else ''}"),
            ("Rolling completion", f"{_percent(rolling)} (training; best "
                                   f"{'now' if since == 0 else f'{since} iterations ago'})"
             if rolling is not None else "\u2014"),
            ("Best lap", f"{_seconds(d.best_lap.get('training'))} training, "
                         f"{_seconds(d.best_lap.get('evaluation'))} evaluation"),
        ]
    return "<dl>" + "".join(f"<dt>{k}</dt><dd>{v}</dd>" for k, v in items) + "</dl>"


def model_html(snapshot: Snapshot, model: ModelSnapshot, charts: str) -> str:
    d = model.derived
    trains = d is not None and not d.finished
    body = (f'<p class="note"><a href="/">All models</a> \u00b7 <a href="/metrics">/metrics</a>'
            f" \u00b7 data of {_utc(snapshot.created)}"
            f"{f', reloads every {_refresh_seconds(snapshot)} s' if trains else ''}</p>"
            f"<h1 id=\"model-name\">{escape(model.name)}</h1>{_summary_html(snapshot, model)}"
            f"{charts}{trackview.section_html(model.extras.analysis)}<h2>Fastest laps</h2>"
            f"{_laps_html(d) if d is not None else _NO_DATA}"
            f"<h2>Evaluation runs</h2>"
            f"{_runs_html(model.extras.evaluation_runs, model.extras.evaluation_run_count)}")
    return _document(f"{model.name} \u2013 DeepRacer", body,
                     _refresh_seconds(snapshot) if trains or d is None else None)
