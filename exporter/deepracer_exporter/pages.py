"""HTML pages for people: `/` lists the watched models, `/models/<name>` charts one of them.

The console's reward graph and the notebook's progress chart (deepracer-utils `plotProgress`)
are drawn here as inline SVG from the same snapshot as /metrics, so a user beside a training or
behind an SSH tunnel sees them without Grafana, JavaScript or anything fetched from elsewhere.
A page is rendered at most once per snapshot (the charts once per derived result, the expensive
part) and then served as ready bytes, plain or gzip, whoever asks and however many at once; a
request never touches S3. What is kept is bounded in bytes (`PAGE_CACHE_BYTES`, least recently
used first out), however many models are visited. Every name shown comes from a bucket prefix
or the config, so all text is escaped, and the pages' Content-Security-Policy allows no script.

The layout is mobile-first: tables and charts scroll sideways inside their box instead of
widening the page, chart text stays at least 10 CSS px (svgchart.MIN_WIDTH), numbers and names
never wrap.
"""

from __future__ import annotations

import gzip
import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from html import escape
from urllib.parse import quote, unquote

import numpy as np
import numpy.typing as npt

from . import trackview
from .derive import Derived, FloatArray, IterationTable
from .parse import PHASES
from .sidefiles import Checkpoints
from .snapshot import ModelSnapshot, Snapshot
from .svgchart import MIN_WIDTH, Axis, Live, Rule, Series, chart

MODELS_PATH = "/models/"
PAGE_CACHE_BYTES = 32 * 2**20  # rendered pages (plain + gzip) and charts kept, all models
_GZIP_LEVEL = 6
_MIN_REFRESH_SECONDS = 5
# DeepRacerTrainingStalled (prometheus/rules/deepracer.yml; a test keeps them equal): no metrics
# written for this long, and some written within the window (older: idle, not stalled).
STALL_SECONDS = 900
STALL_WINDOW_SECONDS = 6 * 3600
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
NBSP = "\u00a0"

_STYLE = f"""
body{{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0 auto;
max-width:1100px;padding:.6em .8em 2em;color:#16191f;background:#fff;line-height:1.35}}
h1{{font-size:1.45em;margin:.2em 0;overflow-wrap:anywhere}}
h2{{font-size:1.15em;margin:1.4em 0 .4em}}h3{{font-size:1em;margin:.8em 0 .2em}}
p.note{{color:#545b64;margin:.2em 0 .7em;font-size:.92em}}
.scroll{{overflow-x:auto;max-width:100%}}
table{{border-collapse:collapse;font-size:.92em;margin:.3em 0}}
th,td{{padding:.3em .6em;border-bottom:1px solid #d5dbdb;text-align:right;white-space:nowrap}}
th:first-child,td:first-child{{text-align:left}}th{{background:#f2f3f3}}
td.name{{text-align:left}}
.n{{white-space:nowrap}}.path{{overflow-wrap:anywhere}}
.ok{{color:#1d8102}}.bad{{color:#d13212}}.warn{{color:#8d6605}}.muted{{color:#687078}}
dl{{display:grid;grid-template-columns:minmax(0,1fr);gap:0 1em;margin:.5em 0}}
dt{{color:#545b64;margin-top:.35em}}dd{{margin:0}}
@media (min-width:600px){{dl{{grid-template-columns:max-content minmax(0,1fr);gap:.25em 1em}}
dt{{margin:0}}}}
details summary{{cursor:pointer;color:#0073bb}}
svg.chart{{display:block;box-sizing:border-box;width:100%;min-width:{MIN_WIDTH}px;height:auto;
border:1px solid #d5dbdb;border-radius:4px;margin:.3em 0}}
svg .grid{{stroke:#e9ebed}}svg .frame,svg .tickmark{{stroke:#879596}}
svg text{{font-size:14px;fill:#545b64}}svg .axis,svg .legend text{{font-size:15px;fill:#16191f}}
svg .series polyline{{stroke-width:2}}svg .series circle{{stroke:none}}
svg .series.dots circle{{opacity:.6}}svg .series.rolling polyline{{stroke-width:2.5}}
svg .series.faint{{opacity:.45}}svg .series.faint polyline{{stroke-width:1.2}}
svg .series polyline.unfinished{{stroke-dasharray:5 4}}
svg .series circle.unfinished{{stroke:inherit;stroke-width:2;opacity:1}}
svg .rule line{{stroke-width:1.2;stroke-dasharray:6 4}}
svg .rule.round line{{stroke:#687078}}svg .rule.checkpoint line{{stroke:#8d6605}}
svg .rule-label{{fill:#16191f;paint-order:stroke;stroke:#fff;stroke-width:3px}}
svg .rule-label.checkpoint{{fill:#8d6605}}
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

    @property
    def nbytes(self) -> int:
        return len(self.plain) + len(self.gzipped)


_NOT_FOUND = Page.html(404, "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
                       "<title>Unknown model</title><link rel=\"icon\" href=\"data:,\"></head>"
                       "<body><h1>Unknown model</h1><p>This exporter does not watch a model of "
                       "that name. <a href=\"/\">All models</a></p></body></html>\n")


_NO_DATA = '<p class="muted">No data yet.</p>'


def model_path(name: str) -> str:
    """The page of a model; every character of the name that is not plain is %-encoded."""
    return MODELS_PATH + quote(name, safe="")


class _Cache:
    """Values by key, each valid for one `version` (compared by identity), bounded in bytes:
    the least recently used go first. A value larger than the bound is not kept."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.nbytes = 0
        self._items: OrderedDict[object, tuple[tuple[object, ...], object, int]] = OrderedDict()

    def get(self, key: object, version: tuple[object, ...]) -> object | None:
        item = self._items.get(key)
        if item is None or len(item[0]) != len(version) or any(
                a is not b for a, b in zip(item[0], version, strict=True)):
            return None
        self._items.move_to_end(key)
        return item[1]

    def put(self, key: object, version: tuple[object, ...], value: object, size: int) -> None:
        self.drop(key)
        if size > self.limit:
            return
        self._items[key] = (version, value, size)
        self.nbytes += size
        while self.nbytes > self.limit:
            _, (_, _, freed) = self._items.popitem(last=False)
            self.nbytes -= freed

    def drop(self, key: object) -> None:
        old = self._items.pop(key, None)
        if old is not None:
            self.nbytes -= old[2]

    def keep(self, wanted: Callable[[object, tuple[object, ...]], bool]) -> None:
        """Drop every entry `wanted(key, version)` rejects."""
        for key, (version, _, _) in list(self._items.items()):
            if not wanted(key, version):
                self.drop(key)


@dataclass(frozen=True)
class _Seen:
    """A model's training episodes in its latest round when first seen by this process."""

    round: int
    episodes: int
    at: float  # the model's last_update then


class Pages:
    """Renders each page at most once per snapshot and hands out the same bytes afterwards,
    keeping at most `cache_bytes` of pages and charts."""

    def __init__(self, cache_bytes: int = PAGE_CACHE_BYTES) -> None:
        self._lock = threading.Lock()
        self._snapshot: Snapshot | None = None
        self._cache = _Cache(cache_bytes)
        self._seen: dict[str, _Seen] = {}  # for the estimated finish

    @property
    def cached_bytes(self) -> int:
        """Bytes of the pages and charts kept now (never more than the bound)."""
        return self._cache.nbytes

    def get(self, snapshot: Snapshot | None, path: str) -> Page | None:
        """The page at `path` (without query) for this snapshot; None when `path` is no page."""
        key: str | None
        if path == "/":
            key = None
        elif path.startswith(MODELS_PATH):
            key = unquote(path[len(MODELS_PATH):])
        else:
            return None
        if snapshot is None:
            return Page.html(503, _document("DeepRacer models", "<p>Starting up.</p>",
                                            _MIN_REFRESH_SECONDS))
        model = next((m for m in snapshot.models if m.name == key), None)
        if key is not None and model is None:
            return _NOT_FOUND  # not kept: made-up names must not fill the cache
        with self._lock:  # one render; concurrent viewers wait for it instead of repeating it
            if self._snapshot is not snapshot:
                self._new_snapshot(snapshot)
            found = self._cache.get(("page", key), (snapshot,))
            if isinstance(found, Page):
                return found
            page = (Page.html(200, index_html(snapshot)) if model is None else
                    Page.html(200, model_html(snapshot, model, self._charts_of(snapshot, model),
                                              self._seen.get(model.name))))
            self._cache.put(("page", key), (snapshot,), page, page.nbytes)
            return page

    def _new_snapshot(self, snapshot: Snapshot) -> None:
        """Forget pages of older snapshots and charts of data that is gone; note progress."""
        self._snapshot = snapshot
        derived = {m.name: m.derived for m in snapshot.models}
        self._cache.keep(lambda key, version: isinstance(key, tuple) and (
            version[0] is snapshot if key[0] == "page"
            else key[1] in derived and version[0] is derived[key[1]]))
        seen = {}
        for m in snapshot.models:
            d, before = m.derived, self._seen.get(m.name)
            if d is None or m.last_update is None:
                continue
            if (before is None or before.round != d.latest_round
                    or before.episodes > d.round_training_episodes):
                before = _Seen(d.latest_round, d.round_training_episodes, m.last_update)
            seen[m.name] = before
        self._seen = seen

    def _charts_of(self, snapshot: Snapshot, model: ModelSnapshot) -> str:
        derived = model.derived
        if derived is None:
            return "<p class=\"muted\">No training data yet.</p>"
        version = (derived, snapshot.rolling_window, model.extras.checkpoints)
        cached = self._cache.get(("charts", model.name), version)
        if isinstance(cached, str):
            return cached
        svg = charts_html(derived, snapshot.rolling_window, model.extras.checkpoints)
        self._cache.put(("charts", model.name), version, svg, len(svg))
        return svg


# -- formatting --------------------------------------------------------------------------------

def _utc_text(t: float) -> str:
    return time.strftime(f"%Y-%m-%d{NBSP}%H:%M:%S{NBSP}UTC", time.gmtime(t))


def _utc(t: float | None) -> str:
    """A time, kept on one line."""
    if t is None:
        return "\u2014"
    return f'<span class="n">{_utc_text(t)}</span>'


def _duration(seconds: float) -> str:
    s = max(0, int(seconds))
    if s >= 86400:
        return f"{s // 86400}{NBSP}d {s % 86400 // 3600}{NBSP}h"
    if s >= 3600:
        return f"{s // 3600}{NBSP}h {s % 3600 // 60}{NBSP}min"
    if s >= 60:
        return f"{s // 60}{NBSP}min"
    return f"{s}{NBSP}s"


def _age(seconds: float) -> str:
    return f"{_duration(seconds)} ago"


def _seconds(value: float | None) -> str:
    return "\u2014" if value is None or not math.isfinite(value) else f"{value:.3f}{NBSP}s"


def _percent(value: float | None) -> str:
    return "\u2014" if value is None or not math.isfinite(value) else f"{value * 100:.1f}%"


def _plural(n: int, word: str) -> str:
    return f"{n}{NBSP}{word}{'' if n == 1 else 's'}"


def _health(model: ModelSnapshot) -> str:
    if model.health.success:
        return '<span class="ok">ok</span>'
    return f'<span class="bad">failing: {escape(model.health.last_error or "error")}</span>'


def _last_update(snapshot: Snapshot, model: ModelSnapshot) -> str:
    if model.last_update is None:
        return '<span class="muted">no metrics read yet</span>'
    return (f'<span class="n" title="{_utc_text(model.last_update)}">'
            f"{_age(snapshot.created - model.last_update)}</span>")


def state(snapshot: Snapshot, model: ModelSnapshot) -> tuple[str, str]:
    """(state, css class): training, finished, stalled (as DeepRacerTrainingStalled), idle
    (nothing written for longer than the alert's window) or waiting (no data yet)."""
    d = model.derived
    if d is None or model.last_update is None:
        return "waiting", "muted"
    if d.finished:
        return "finished", "ok"
    quiet = snapshot.created - model.last_update
    if quiet > STALL_WINDOW_SECONDS:
        return "idle", "muted"
    if quiet > STALL_SECONDS:
        return "stalled", "bad"
    return "training", ""


def _state_html(snapshot: Snapshot, model: ModelSnapshot) -> str:
    name, css = state(snapshot, model)
    return f'<span class="{css}">{name}</span>' if css else name


def _refresh_seconds(snapshot: Snapshot) -> int:
    return max(_MIN_REFRESH_SECONDS, math.ceil(snapshot.refresh_interval))


def _document(title: str, body: str, refresh: int | None) -> str:
    meta = f'<meta http-equiv="refresh" content="{refresh}">' if refresh else ""
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">{meta}'
            f'<title>{escape(title)}</title><link rel="icon" href="data:,">'
            f"<style>{_STYLE}</style></head>\n<body>\n{body}\n</body></html>\n")


def _table(table_id: str, head: list[str], rows: list[str]) -> str:
    """A table in a box that scrolls sideways on a narrow screen."""
    return (f'<div class="scroll"><table id="{table_id}"><thead><tr>'
            + "".join(f"<th>{h}</th>" for h in head) + "</tr></thead><tbody>" + "".join(rows)
            + "</tbody></table></div>")


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
            f'<tr><td class="name"><a href="{escape(model_path(m.name))}">{escape(m.name)}</a>'
            f"</td><td>{_state_html(snapshot, m)}</td><td>{_health(m)}</td>"
            f"<td>{iteration}</td><td>{_percent(rolling)}</td>"
            f"<td>{_seconds(best.get('training'))}</td><td>{_seconds(best.get('evaluation'))}"
            f"</td><td>{_last_update(snapshot, m)}</td></tr>")
    table = (_table("models", ["Model", "State", "Health", "Iteration",
                               f"Rolling completion ({snapshot.rolling_window}{NBSP}it.)",
                               "Best lap (training)", "Best lap (evaluation)", "Last update"],
                    rows) if rows else "<p>No model found yet.</p>")
    body = (f"<h1>DeepRacer models</h1><p class=\"note\">{len(snapshot.models)} watched; "
            f"data of {_utc(snapshot.created)}, refreshed every "
            f"{snapshot.refresh_interval:g}{NBSP}s. Stalled: nothing written for "
            f"{STALL_SECONDS // 60}{NBSP}min (as the DeepRacerTrainingStalled alert). "
            f'Prometheus metrics: <a href="/metrics">/metrics</a>.</p>{table}')
    return _document("DeepRacer models", body, _refresh_seconds(snapshot))


# -- one model: charts -------------------------------------------------------------------------

def _points(table: IterationTable, rows: npt.NDArray[np.bool_], field: str
            ) -> tuple[tuple[int, float], ...]:
    """(iteration, mean) of one statistic over the chosen rows; the mean is the first column."""
    means: FloatArray = getattr(table, field)[rows, 0]
    shown = np.isfinite(means)
    return tuple(zip(table.iteration[rows][shown].tolist(), means[shown].tolist(), strict=True))


def live_edge(derived: Derived) -> Live | None:
    """The unfinished iteration as the charts mark it."""
    if derived.unfinished_iteration < 0:
        return None
    return Live(derived.unfinished_iteration, f"{derived.latest_iteration_episodes} of "
                                              f"{derived.episodes_per_iteration} episodes")


def round_rules(derived: Derived) -> tuple[Rule, ...]:
    """A line where each round after the first starts (a clone round continues the iteration
    numbers; its completion drop is a new start, not a collapse)."""
    return tuple(Rule(first, f"round {r}", "round") for r, first in derived.round_starts
                 if r > 1 or first > 0)


def checkpoint_iteration(derived: Derived, number: int | None) -> int | None:
    """The master iteration of checkpoint `<number>_Step-...` of the latest round: the
    trainer saves checkpoint N after the round's iteration N (counted from 0)."""
    start = dict(derived.round_starts).get(derived.latest_round)
    if number is None or start is None:
        return None
    iteration = start + number
    return iteration if iteration <= max(derived.latest_iteration, 0) else None


def checkpoint_rules(derived: Derived, checkpoints: Checkpoints | None) -> tuple[Rule, ...]:
    """The best and last checkpoint, where they fall among the iterations shown."""
    if checkpoints is None:
        return ()
    best, last = checkpoints.best, checkpoints.last
    out = []
    for label, cp in (("best", best), ("last", last)):
        if cp is None:
            continue
        at = checkpoint_iteration(derived, cp.number)
        if at is None:
            continue
        if label == "last" and best is not None and best.number == cp.number:
            continue  # the same checkpoint: one line, labelled "best = last"
        same = label == "best" and last is not None and last.number == cp.number
        out.append(Rule(at, f"{'best = last' if same else label} checkpoint {cp.number}",
                        "checkpoint"))
    return tuple(out)


def charts_html(derived: Derived, window: int, checkpoints: Checkpoints | None = None) -> str:
    """The console chart and the notebook's progress chart (completion, reward)."""
    table = derived.table
    train = table.phase == PHASES.index("training")
    evaluation = table.phase == PHASES.index("evaluation")
    live = live_edge(derived)
    rounds = round_rules(derived)
    console = chart(
        "Reward graph (DeepRacer console)",
        [Series("training:reward:mean", "Average reward (training)", REWARD,
                _points(table, train, "reward")),
         Series("training:completion:mean", "Average completion (training)", TRAINING,
                _points(table, train, "completion"), axis="right", percent=True),
         Series("evaluation:completion:mean", "Average completion (evaluation)", EVALUATION,
                _points(table, evaluation, "completion"), axis="right", faint=True,
                percent=True)],
        Axis("Average reward"), Axis("Average completion", percent=True),
        live=live, rules=rounds + checkpoint_rules(derived, checkpoints))
    rolling = f"rolling mean of {window}"

    def progress(name: str, title: str, axis: Axis) -> str:
        """plotProgress' view of one statistic: each iteration's mean as dots, the rolling line."""
        series = []
        for phase, label, colour, rows in (("evaluation", "Evaluation", EVALUATION, evaluation),
                                           ("training", "Training", TRAINING, train)):
            series += [Series(f"{phase}:{name}:mean", label, colour, _points(table, rows, name),
                              mark="dots", percent=axis.percent),
                       Series(f"{phase}:rolling_{name}:mean", f"{label}, {rolling}", colour,
                              _points(table, rows, f"rolling_{name}"), mark="rolling",
                              percent=axis.percent)]
        return chart(title, series, axis, live=live, rules=rounds)

    completion = progress("completion", "Completion per iteration (mean)",
                          Axis("Percent complete (mean)", percent=True))
    reward = progress("reward", "Reward per iteration (mean)", Axis("Reward (mean)"))
    unfinished = ("" if live is None else
                  f" The hollow point is iteration {live.iteration}, still being played "
                  f"({live.label}): its mean will move, and no rolling mean counts it yet.")
    return (
        '<h2>Reward graph</h2><p class="note">As in the DeepRacer console: average reward of '
        "the training episodes of each iteration (left axis) and the average track completion "
        "of its training and evaluation episodes (right axis; evaluation has few episodes an "
        "iteration, so it is drawn faint). Dashed vertical lines: where a round starts and "
        f"the best and last checkpoint.{unfinished}</p>"
        f'<div id="console-chart" class="scroll">{console}</div>'
        '<h2>Training progress</h2><p class="note">As deepracer-utils\' <code>plotProgress'
        "</code>: each dot is one iteration's mean, the line its rolling mean over the last "
        f"{window} finished iterations. Hover a point for its value.</p>"
        f'<h3>Completion</h3><div id="completion-chart" class="scroll">{completion}</div>'
        f'<h3>Reward</h3><div id="reward-chart" class="scroll">{reward}</div>')


# -- one model: tables -------------------------------------------------------------------------

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
    phases = len(rank)
    return (f"<details><summary>The {len(derived.best_laps)} fastest laps "
            f"({'per phase, ' if phases > 1 else ''}with where to find them in the logs)"
            "</summary>"
            + _table("laps", ["Phase", "Rank", "Lap time", "Round", "Iteration", "Episode",
                              "Worker"], rows) + "</details>")


def run_time(run_id: str) -> str:
    """The time a run's file name gives, as written there (YYYY-mm-dd HH:MM:SS)."""
    t = run_id[:14]
    if len(t) < 14 or not t.isdigit():
        return "\u2014"
    return f"{t[:4]}-{t[4:6]}-{t[6:8]}{NBSP}{t[8:10]}:{t[10:12]}:{t[12:14]}"


def _runs_html(model: ModelSnapshot) -> str:
    runs, total = model.extras.evaluation_runs, model.extras.evaluation_run_count
    if not runs:
        return "<p class=\"muted\">No evaluation run yet.</p>"
    steps = dict(model.extras.simulator.evaluation_runs) if model.extras.simulator else {}
    job = any(len(r.run_id) > 15 for r in runs)  # console/DRoA names carry a job id
    head = ["Started (file name)", *(["Job"] if job else []), "Trials", "Laps completed",
            "Completion", "Best lap", "Mean lap", "Mean step", "Resets", "Off track", "Crashes"]
    rows = []
    for r in sorted(runs, key=lambda r: (r.timestamp or 0.0, r.run_id), reverse=True):
        step = steps.get(r.run_id)
        step_text = "\u2014" if step is None else f"{step.mean * 1000:.1f}{NBSP}ms"
        rows.append(
            f'<tr data-run="{escape(r.run_id)}"><td>{run_time(r.run_id)}</td>'
            + (f"<td>{escape(r.run_id[15:])}</td>" if job else "")
            + f"<td>{r.trials}</td><td>{r.completed_laps}</td>"
            f"<td>{_percent(r.completion_ratio)}</td><td>{_seconds(r.lap_seconds_best)}</td>"
            f"<td>{_seconds(r.lap_seconds_mean)}</td>"
            f"<td>{step_text}</td>"
            f"<td>{r.resets}</td><td>{r.off_track}</td><td>{r.crashes}</td></tr>")
    shown = "" if total <= len(runs) else f"The latest {len(runs)} of {total}. "
    return (f'<p class="note">{shown}Newest first. The start time is the one in the file '
            "name, as written: deepracer-for-cloud names the file with its host's local time "
            "(<code>datetime.now()</code> in its "
            "<code>scripts/evaluation/prepare-config.py</code>) "
            "and records no time zone; console and DeepRacer-on-AWS names are UTC. Lap times "
            "are the simulator's elapsed time of completed laps, so they include the time lost "
            "to resets and off-track penalties. Mean step: simulated time between two steps "
            "(target 66.7\u00a0ms), from the run's simtrace.</p>"
            + _table("evaluations", head, rows))


# -- one model: the summary --------------------------------------------------------------------

def _best_text(since: int | None) -> str:
    if since is None:
        return ""
    return "best now" if since == 0 else f"best {_plural(since, 'iteration')} ago"


def _progress(snapshot: Snapshot, model: ModelSnapshot, seen: _Seen | None) -> str:
    """Training episodes of the round toward term_cond_max_episodes, and an estimated finish
    from the pace this process has seen (the files carry no wall-clock time)."""
    d = model.derived
    assert d is not None
    if not d.max_episodes:
        return (f"{d.round_training_episodes} training episodes in round {d.latest_round} "
                "(no term_cond_max_episodes in the hyperparameters)")
    done = f"{d.round_training_episodes} of {d.max_episodes} training episodes " \
           f"({d.round_training_episodes / d.max_episodes * 100:.0f}%) in round {d.latest_round}"
    if d.finished:
        return done + ", finished"
    if (seen is None or model.last_update is None or seen.round != d.latest_round
            or d.round_training_episodes <= seen.episodes or model.last_update <= seen.at):
        return done + "; estimated finish once this exporter has seen episodes arrive"
    rate = (d.round_training_episodes - seen.episodes) / (model.last_update - seen.at)
    left = (d.max_episodes - d.round_training_episodes) / rate
    return (f"{done}; estimated finish {_utc(model.last_update + left)} (in "
            f"{_duration(model.last_update + left - snapshot.created)}), at "
            f"{rate * 60:.1f} episodes/min seen since {_utc(seen.at)}")


def _summary_html(snapshot: Snapshot, model: ModelSnapshot, seen: _Seen | None) -> str:
    d = model.derived
    where = (f"s3://{model.bucket}/{model.prefix}" if model.source == "s3"
             else f"{model.bucket}/{model.prefix}")
    last = _last_update(snapshot, model)
    if model.last_update is not None:
        last += f" ({_utc(model.last_update)})"
    items = [("State", _state_html(snapshot, model)), ("Health", _health(model)),
             ("Source", f'<span class="path">{escape(where)}</span>'), ("Last update", last)]
    if d is not None:
        rolling = d.rolling_completion.get("training")
        since = d.plateau.get(("training", "completion"))
        iteration = f"{d.latest_iteration} (round {d.latest_round})"
        if d.unfinished_iteration >= 0:
            iteration += (f", unfinished: {d.latest_iteration_episodes} of "
                          f"{d.episodes_per_iteration} episodes played")
        cps = model.extras.checkpoints
        items += [
            ("Iteration", iteration),
            ("Progress", _progress(snapshot, model, seen)),
            ("Episodes per iteration", f"{d.episodes_per_iteration} over "
                                       f"{_plural(d.workers, 'worker')}"),
            ("Rolling completion", f"{_percent(rolling)} (training, finished iterations; "
                                   f"{_best_text(since)})" if rolling is not None else "\u2014"),
            ("Best lap", f"{_seconds(d.best_lap.get('training'))} training, "
                         f"{_seconds(d.best_lap.get('evaluation'))} evaluation"),
        ]
        if cps is not None and (cps.best or cps.last):
            named = (("best", cps.best), ("last", cps.last))
            items.append(("Checkpoints", ", ".join(
                f'{kind} <span class="n">{escape(cp.name)}</span>' for kind, cp in named if cp)))
    return "<dl>" + "".join(f"<dt>{k}</dt><dd>{v}</dd>" for k, v in items) + "</dl>"


def model_html(snapshot: Snapshot, model: ModelSnapshot, charts: str,
               seen: _Seen | None = None) -> str:
    """The model's page: summary, charts, evaluation runs, fastest laps (in that order)."""
    d = model.derived
    trains = d is not None and not d.finished
    sections = [
        f'<p class="note"><a href="/">All models</a> \u00b7 <a href="/metrics">/metrics</a>'
        f" \u00b7 data of {_utc(snapshot.created)}"
        f"{f', reloads every {_refresh_seconds(snapshot)}{NBSP}s' if trains else ''}</p>",
        f'<h1 id="model-name">{escape(model.name)}</h1>{_summary_html(snapshot, model, seen)}',
        charts,
        trackview.section_html(model.extras.analysis),
        f"<h2>Evaluation runs</h2>{_runs_html(model)}",
        f"<h2>Fastest laps</h2>{_laps_html(d) if d is not None else _NO_DATA}",
    ]
    return _document(f"{model.name} \u2013 DeepRacer", "".join(sections),
                     _refresh_seconds(snapshot) if trains or d is None else None)
