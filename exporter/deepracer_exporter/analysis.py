"""Simtrace -> the training-analysis notebook's figures, live: per-episode aggregates, action
usage per iteration, and where the latest iteration's cars drove.

Per-episode aggregates equal deepracer-utils 1.5.6's `AnalysisUtils.simulation_agg` on the trace
`DeepRacerLog.load_training_trace()` loads, grouped by iteration and `unique_episode` (one
episode of one worker; with several workers grouping by `episode` would merge different workers'
episodes, which simulation_agg warns about):

- rows ordered by episode and steps;
- `time` and `dist`: sums over the episode's rows of the difference of `tstamp` and of the (X, Y)
  distance to the previous row, 0 at every `prepare` row (the first row of an episode, and a reset
  inside one);
- `steps` max - min + 1, `start_at` the first row's closest waypoint, `progress` the maximum,
  `speed` the mean of `throttle`, `reward` the sum; `time_if_complete` = time x 100 / progress,
  `reward_if_complete` likewise; `complete` = progress is 100; `quintile` (`quintiles`): the
  episode numbers cut into five equal-width bins, as pandas.cut.

One choice differs where deepracer-utils depends on its whole frame: a first row of an episode
that is not `prepare` adds nothing here, where simulation_agg would add the gap to whatever row
precedes it in its frame (the previous episode, maybe another worker's). Every episode of the
sdist samples starts with `prepare`, so the figures are equal there.

Action usage counts every row of the iteration by its `action` (as ActionBreakdownUtils slices the
frame by action, prepare rows included); a continuous action space writes no index (`action` is
`[steering speed]`, read as -1), so its rows are counted in a coarse steering x speed grid.

A file is reduced once, right after parsing (`reduce_file`): a few numbers per episode, its action
counts, and the rows' positions, which the model cache keeps only for the files the track view
draws (`analyse` says which).
"""

from __future__ import annotations

import itertools
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, replace

import numpy as np
import numpy.typing as npt
import yaml

from .parse import FloatArray, IntArray, MetricsFileError
from .simtrace import STATUSES, StepColumns
from .track import Track

Float32Array = npt.NDArray[np.float32]

# Columns of `FileEpisodes.table`, one row per episode.
FIELDS = ("episode", "steps", "start_at", "progress", "time", "dist", "speed", "reward",
          "end_x", "end_y", "end_status")
_F = {name: i for i, name in enumerate(FIELDS)}
# A malformed action index must not make a huge count array; real action spaces are small.
MAX_ACTIONS = 256
# The coarse grid of a continuous action space: steering angle (degrees) x speed (m/s), each
# value clamped into the outer cells.
STEERING_EDGES = (-30.0, -18.0, -6.0, 6.0, 18.0, 30.0)
SPEED_EDGES = (0.0, 1.0, 2.0, 3.0, 4.0)
ENDINGS = ("off_track", "crashed")  # the end points the track view marks
_WORLD_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")


def _cell_labels(edges: tuple[float, ...]) -> tuple[str, ...]:
    return tuple(f"{lo:g}..{hi:g}" for lo, hi in itertools.pairwise(edges))


STEERING_CELLS = _cell_labels(STEERING_EDGES)
SPEED_CELLS = _cell_labels(SPEED_EDGES)


@dataclass(frozen=True, eq=False)
class Path:
    """Every row of a file's episodes in episode and step order; float32, for drawing."""

    starts: IntArray  # each episode's first row, then the number of rows
    x: Float32Array
    y: Float32Array
    speed: Float32Array
    reward: Float32Array


@dataclass(frozen=True, eq=False)
class FileEpisodes:
    """One simtrace file (a worker's iteration) reduced: what the model cache keeps of it."""

    table: FloatArray  # (episodes, FIELDS), episodes ascending
    actions: IntArray  # rows per discrete action index; empty for a continuous action space
    grid: IntArray | None  # (steering cells, speed cells) rows, continuous action spaces only
    path: Path | None  # None once the track view no longer needs it

    def column(self, name: str) -> FloatArray:
        out: FloatArray = self.table[:, _F[name]]
        return out

    def without_path(self) -> FileEpisodes:
        return self if self.path is None else replace(self, path=None)


def reduce_file(cols: StepColumns) -> FileEpisodes | None:
    """A file's episodes (simulation_agg's per-episode figures and where each ended), its action
    counts and its rows' positions; None when the file lacks the columns (`cols.trace`)."""
    t = cols.trace
    if t is None or len(cols.episode) == 0:
        return None
    order = np.lexsort((cols.steps, cols.episode))
    episode = cols.episode[order]
    first = np.ones(len(order), dtype=np.bool_)
    first[1:] = episode[1:] != episode[:-1]
    starts = np.flatnonzero(first)
    ends = np.append(starts[1:], len(order)) - 1
    zero = first | cols.prepare[order]
    x, y = t.x[order], t.y[order]
    delta_time = np.diff(cols.tstamp[order], prepend=np.nan)
    delta_dist = np.sqrt(np.diff(x, prepend=np.nan) ** 2 + np.diff(y, prepend=np.nan) ** 2)
    delta_time[zero] = 0.0
    delta_dist[zero] = 0.0
    steps = cols.steps[order]
    speed = t.speed[order]
    reward = t.reward[order]
    rows = np.diff(np.append(starts, len(order)))
    table = np.empty((len(starts), len(FIELDS)), dtype=np.float64)
    table[:, _F["episode"]] = episode[starts]
    table[:, _F["steps"]] = (np.maximum.reduceat(steps, starts)
                             - np.minimum.reduceat(steps, starts) + 1)
    table[:, _F["start_at"]] = t.closest_waypoint[order][starts]
    table[:, _F["progress"]] = np.maximum.reduceat(t.progress[order], starts)
    table[:, _F["time"]] = np.add.reduceat(delta_time, starts)
    table[:, _F["dist"]] = np.add.reduceat(delta_dist, starts)
    table[:, _F["speed"]] = np.add.reduceat(speed, starts) / rows
    table[:, _F["reward"]] = np.add.reduceat(reward, starts)
    table[:, _F["end_x"]] = x[ends]
    table[:, _F["end_y"]] = y[ends]
    table[:, _F["end_status"]] = t.status[order][ends]
    actions, grid = _action_counts(t.action, t.steering_angle, t.speed)
    path = Path(np.append(starts, len(order)).astype(np.int64), x.astype(np.float32),
                y.astype(np.float32), speed.astype(np.float32), reward.astype(np.float32))
    return FileEpisodes(table, actions, grid, path)


def _action_counts(action: IntArray, steering: FloatArray, speed: FloatArray
                   ) -> tuple[IntArray, IntArray | None]:
    if len(action) and np.all(action >= 0):
        if int(action.max()) >= MAX_ACTIONS:
            return np.zeros(0, dtype=np.int64), None
        return np.bincount(action).astype(np.int64), None
    if len(action) and np.all(action == -1):
        s = np.clip(np.searchsorted(STEERING_EDGES, steering, side="right") - 1,
                    0, len(STEERING_CELLS) - 1)
        v = np.clip(np.searchsorted(SPEED_EDGES, speed, side="right") - 1,
                    0, len(SPEED_CELLS) - 1)
        grid = np.zeros((len(STEERING_CELLS), len(SPEED_CELLS)), dtype=np.int64)
        np.add.at(grid, (s, v), 1)
        return np.zeros(0, dtype=np.int64), grid
    return np.zeros(0, dtype=np.int64), None  # a mix: neither reading is right


def time_if_complete(time: FloatArray, progress: FloatArray) -> FloatArray:
    """simulation_agg's projected lap time: time x 100 / progress (inf or NaN at progress 0)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        out: FloatArray = time * 100 / progress
    return out


def quintiles(episodes: FloatArray) -> IntArray:
    """1..5: which of five equal-width bins of the episode numbers each falls in, as
    `pd.cut(episodes, 5)` (the range widened by 0.1 % below, or by 0.1 % of the value on both
    sides when all are equal)."""
    mn, mx = float(np.min(episodes)), float(np.max(episodes))
    if mn == mx:
        mn -= 0.001 * abs(mn) if mn != 0 else 0.001
        mx += 0.001 * abs(mx) if mx != 0 else 0.001
        bins = np.linspace(mn, mx, 6, endpoint=True)
    else:
        bins = np.linspace(mn, mx, 6, endpoint=True)
        bins[0] -= (mx - mn) * 0.001
    ids = np.searchsorted(bins, episodes, side="left")
    ids[episodes == bins[0]] = 1
    out: IntArray = ids.astype(np.int64)
    return out


# ---------------------------------------------------------------------------------------------
# Side files: the action space's names, the track's name


@dataclass(frozen=True)
class Action:
    index: int
    steering_angle: float  # degrees
    speed: float  # metres per second


def discrete_actions(body: bytes | bytearray) -> tuple[Action, ...]:
    """model_metadata.json's discrete action space by index; () for a continuous one (a
    mapping of bounds) or anything unreadable."""
    try:
        space = json.loads(body).get("action_space")
    except (ValueError, AttributeError):
        return ()
    if not isinstance(space, list):
        return ()
    out = []
    for i, a in enumerate(space[:MAX_ACTIONS]):
        if not isinstance(a, dict):
            return ()
        try:
            index = int(a.get("index", i))
            out.append(Action(index, float(a["steering_angle"]), float(a["speed"])))
        except (KeyError, TypeError, ValueError):
            return ()
    return tuple(sorted(out, key=lambda a: a.index))


def world_name(body: bytes | bytearray) -> str | None:
    """The track (`WORLD_NAME`, the simulator's `routes/<name>.npy`) of DRfC's
    training_params.yaml; None without one. Raises MetricsFileError("malformed") for a file
    that is not a YAML mapping or names something that is not a plain file name."""
    try:
        params = yaml.safe_load(bytes(body))
    except yaml.YAMLError as exc:
        raise MetricsFileError("malformed", f"training_params.yaml: {str(exc)[:80]}") from None
    if not isinstance(params, dict):
        raise MetricsFileError("malformed", "training_params.yaml is not a mapping")
    name = params.get("WORLD_NAME")
    if name is None:
        return None
    if not isinstance(name, str) or not _WORLD_NAME.fullmatch(name):
        raise MetricsFileError("malformed", f"training_params.yaml: WORLD_NAME {name!r} is not "
                               "a track name")
    return name


# ---------------------------------------------------------------------------------------------
# A model's files -> per-iteration summaries and the track view's data


@dataclass(frozen=True)
class IterationAnalysis:
    """One training iteration, all workers' episodes."""

    iteration: int  # master iteration
    episodes: int
    speed: float  # mean of the episodes' mean speed (m/s)
    distance: float  # mean distance driven per episode (m)
    projected_min: float | None  # fastest finite time_if_complete (s)
    projected_median: float | None
    actions: IntArray  # rows per discrete action index, workers summed
    grid: IntArray | None  # continuous: rows per steering x speed cell

    def shares(self) -> FloatArray:
        total = self.actions.sum()
        out: FloatArray = self.actions / total if total else self.actions.astype(np.float64)
        return out


@dataclass(frozen=True, eq=False)
class EpisodePath:
    worker: int
    episode: int
    steps: int  # simulation_agg's steps
    progress: float
    end: str  # the last row's episode_status
    x: Float32Array
    y: Float32Array
    reward: Float32Array


@dataclass(frozen=True, eq=False)
class FastestLap:
    iteration: int  # master iteration
    worker: int
    episode: int
    seconds: float  # simulation_agg's time of a complete episode
    steps: int
    x: Float32Array
    y: Float32Array
    speed: Float32Array


@dataclass(frozen=True, eq=False)
class ModelAnalysis:
    """What `ModelExtras.analysis` holds: None for a model without simtrace positions."""

    iterations: tuple[IterationAnalysis, ...]  # ascending, the simtrace window
    actions: tuple[Action, ...]  # model_metadata.json's discrete action space, or ()
    latest_iteration: int
    latest_paths: tuple[EpisodePath, ...]  # the latest iteration's episodes
    fastest: FastestLap | None  # fastest complete episode whose positions are kept
    track_name: str | None = None
    track: Track | None = None

    def latest(self) -> IterationAnalysis:
        return self.iterations[-1]


def _median(values: FloatArray) -> float | None:
    finite = values[np.isfinite(values)]
    return float(np.median(finite)) if finite.size else None


def _iteration(iteration: int, files: list[FileEpisodes]) -> IterationAnalysis:
    table = np.concatenate([f.table for f in files])
    projected = time_if_complete(table[:, _F["time"]], table[:, _F["progress"]])
    finite = projected[np.isfinite(projected)]
    width = max(len(f.actions) for f in files)
    actions = np.zeros(width, dtype=np.int64)
    grids = [f.grid for f in files if f.grid is not None]
    for f in files:
        actions[:len(f.actions)] += f.actions
    return IterationAnalysis(
        iteration=iteration, episodes=len(table),
        speed=float(np.mean(table[:, _F["speed"]])),
        distance=float(np.mean(table[:, _F["dist"]])),
        projected_min=float(finite.min()) if finite.size else None,
        projected_median=_median(projected), actions=actions,
        grid=np.sum(grids, axis=0) if grids else None)


def _paths(worker: int, f: FileEpisodes) -> list[EpisodePath]:
    path = f.path
    if path is None:
        return []
    out = []
    for i, row in enumerate(f.table):
        a, b = int(path.starts[i]), int(path.starts[i + 1])
        status = int(row[_F["end_status"]])
        out.append(EpisodePath(worker, int(row[_F["episode"]]), int(row[_F["steps"]]),
                               float(row[_F["progress"]]),
                               STATUSES[status] if status < len(STATUSES) else "other",
                               path.x[a:b], path.y[a:b], path.reward[a:b]))
    return out


def analyse(offset: int, files: Mapping[tuple[int, int], FileEpisodes],
            actions: tuple[Action, ...] = (), track_name: str | None = None,
            track: Track | None = None) -> tuple[ModelAnalysis | None, set[tuple[int, int]]]:
    """The model's analysis from its files by (iteration, worker) (the latest round's own
    iteration numbers; `offset` makes them master iterations), and the files whose positions
    are still needed: the latest iteration's and the fastest lap's."""
    if not files:
        return None, set()
    by_iteration: dict[int, list[tuple[int, FileEpisodes]]] = {}
    for (iteration, worker), f in sorted(files.items()):
        by_iteration.setdefault(iteration, []).append((worker, f))
    latest = max(by_iteration)
    keep = {(latest, w) for w, _ in by_iteration[latest]}
    fastest: FastestLap | None = None
    best_file: tuple[int, int] | None = None
    for (iteration, worker), f in sorted(files.items()):
        if f.path is None:
            continue
        complete = np.flatnonzero(f.column("progress") == 100)
        if not complete.size:
            continue
        i = int(complete[np.argmin(f.column("time")[complete])])
        seconds = float(f.column("time")[i])
        if fastest is None or seconds < fastest.seconds:
            a, b = int(f.path.starts[i]), int(f.path.starts[i + 1])
            fastest = FastestLap(offset + iteration, worker, int(f.column("episode")[i]),
                                 seconds, int(f.column("steps")[i]), f.path.x[a:b],
                                 f.path.y[a:b], f.path.speed[a:b])
            best_file = (iteration, worker)
    if best_file is not None:
        keep.add(best_file)
    return ModelAnalysis(
        iterations=tuple(_iteration(offset + it, [f for _, f in fs])
                         for it, fs in sorted(by_iteration.items())),
        actions=actions, latest_iteration=offset + latest,
        latest_paths=tuple(p for w, f in by_iteration[latest] for p in _paths(w, f)),
        fastest=fastest, track_name=track_name, track=track), keep


def action_name(action: Action) -> str:
    """As the console lists an action: steering angle and speed."""
    return f"{action.steering_angle:g}\u00b0 {action.speed:g} m/s"
