"""Simtrace CSV bytes -> simulator step timing, real-time factor and where an iteration's time went.

The simulator writes one CSV per iteration and worker (and one per evaluation run) when the
iteration ends, one row per step. The figures equal deepracer-utils 1.5.6's
`SimtraceStabilityAnalyzer.analyze()` and `analyze_timing()`, in seconds instead of milliseconds:

- step intervals: per episode, rows ordered by `steps`, the differences of `tstamp` (simulated
  seconds), without the interval that arrives at a `prepare` row (the reset between episodes) and
  without negative ones (clock resets);
- real-time factor: simulated over wall-clock seconds between consecutive rows ordered by
  `tstamp`, summed over the pairs where both clocks moved forward (wall clock strictly);
- timing (worker 0): training time is the wall-clock span of an iteration's rows, policy time the
  gap from its last row to the first row of the next iteration.

Workers of one iteration are merged as deepracer-utils' OVERALL line merges rows: counts added,
mean weighted by count, standard deviation pooled (law of total variance), maximum of maxima, p95
the mean of the workers' p95 (not a p95 of the pooled intervals: that would need every interval
of every worker kept; `p95_worst` is the slowest worker's), real-time factor the mean of the
workers'. Two choices differ from deepracer-utils where it is ambiguous: rows with equal `tstamp`
are ordered by wall clock (pandas' unstable sort leaves their order, and so the wall-clock sum, to
chance), and policy time is only the gap to the *next* iteration (deepracer-utils takes the next
one present, so a missing file would add a whole iteration to it).

A file is reduced to a `WorkerSteps` (a few numbers) and, from the same parse, to its episodes'
aggregates (analysis.py) right after parsing, so the model cache keeps no rows.
"""

from __future__ import annotations

import csv
import io
import math
import operator
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from .parse import FloatArray, IntArray, MetricsFileError

BoolArray = npt.NDArray[np.bool_]

REQUIRED_COLUMNS = ("episode", "steps", "tstamp", "episode_status")
WALL_CLOCK = "wall_clock"
# What the training analysis (analysis.py) reads beside step timing; every simulator since 2019
# writes them. A file without one of them still gives its step timing.
TRACE_COLUMNS = ("X", "Y", "steer", "throttle", "action", "reward", "progress",
                 "closest_waypoint")
# episode_status values, as small codes (`TraceColumns.status`); anything else is OTHER.
STATUSES = ("in_progress", "prepare", "off_track", "crashed", "lap_complete", "reversed",
            "immobilized", "time_up", "pause")
OTHER_STATUS = len(STATUSES)

# ---------------------------------------------------------------------------------------------
# Parsing


@dataclass(frozen=True, eq=False)
class TraceColumns:
    """Where the car was and what it did at each row (the analysis' input), in file order."""

    x: FloatArray  # metres
    y: FloatArray
    steering_angle: FloatArray  # degrees (`steer`)
    speed: FloatArray  # metres per second (`throttle`)
    action: IntArray  # index into a discrete action space; -1 for a continuous one
    reward: FloatArray
    progress: FloatArray  # percent of the lap
    closest_waypoint: FloatArray
    status: npt.NDArray[np.int8]  # index into STATUSES, OTHER_STATUS for anything else


@dataclass(frozen=True, eq=False)
class StepColumns:
    """The rows of one simtrace file, reduced to what step timing needs, in file order."""

    episode: IntArray
    steps: FloatArray
    tstamp: FloatArray  # simulated seconds
    prepare: BoolArray  # episode_status is `prepare` (the first row after a reset)
    wall_clock: FloatArray | None  # Unix seconds, NaN where empty; None without the column
    trace: TraceColumns | None = None  # None when a TRACE_COLUMNS column is missing


def _malformed(message: str) -> MetricsFileError:
    return MetricsFileError("malformed", f"simtrace CSV: {message}")


def _numbers(values: list[str], column: str, allow_empty: bool = False) -> FloatArray:
    try:
        out = np.array([float(v) if v.strip() or not allow_empty else math.nan for v in values],
                       dtype=np.float64)
    except ValueError as exc:
        raise _malformed(f"column {column}: {str(exc)[:80]}") from None
    if not allow_empty and not np.all(np.isfinite(out)):
        raise _malformed(f"column {column} has a value that is not a finite number")
    return out


def parse_simtrace(body: bytes | bytearray) -> StepColumns:
    """One simtrace CSV -> its step columns. Raises MetricsFileError("malformed") for anything
    the simulator does not write: not UTF-8, no header or a required column missing, a row with
    the wrong number of fields, a non-numeric value, no rows, or a last row without its line end
    (the simulator ends every row with one, so a body that stops mid-row was cut)."""
    if not body.endswith(b"\n"):
        raise _malformed("empty" if not body else "truncated: the last row has no line end")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _malformed(f"not UTF-8 ({exc.reason} at byte {exc.start})") from None
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = [name.strip() for name in next(reader, [])]
        index = {name: i for i, name in enumerate(header)}
        missing = [c for c in REQUIRED_COLUMNS if c not in index]
        if missing:
            raise _malformed(f"no column {', '.join(missing)} in the header")
        traced = all(c in index for c in TRACE_COLUMNS)
        names = [*REQUIRED_COLUMNS, *([WALL_CLOCK] if WALL_CLOCK in index else []),
                 *(TRACE_COLUMNS if traced else ())]
        pick = operator.itemgetter(*(index[n] for n in names))
        width = len(header)
        kept: list[tuple[str, ...]] = []  # only the needed fields of each row
        for row in reader:
            if len(row) != width:
                if not row:
                    continue
                raise _malformed(f"row {reader.line_num} has {len(row)} fields, the header "
                                 f"{width}")
            kept.append(pick(row))
    except csv.Error as exc:
        raise _malformed(str(exc)) from None
    if not kept:
        raise _malformed("no rows")
    column = {n: list(v) for n, v in zip(names, zip(*kept, strict=True), strict=True)}
    del kept
    episode = _numbers(column["episode"], "episode")
    if not np.all(episode == np.floor(episode)):
        raise _malformed("column episode has a value that is not a whole number")
    wall = _numbers(column[WALL_CLOCK], WALL_CLOCK, allow_empty=True) \
        if WALL_CLOCK in index else None
    codes = {name: i for i, name in enumerate(STATUSES)}
    status = np.array([codes.get(s.strip().lower(), OTHER_STATUS)
                       for s in column["episode_status"]], dtype=np.int8)
    return StepColumns(episode=episode.astype(np.int64), steps=_numbers(column["steps"], "steps"),
                       tstamp=_numbers(column["tstamp"], "tstamp"),
                       prepare=status == codes["prepare"], wall_clock=wall,
                       trace=_trace(column, status) if traced else None)


def _actions(values: list[str]) -> IntArray:
    """Discrete action indices; all -1 when any is not a whole number (a continuous action
    space writes `[steering speed]`), as deepracer-utils does for a non-numeric column."""
    try:
        numbers = np.array([float(v) for v in values], dtype=np.float64)
    except ValueError:
        return np.full(len(values), -1, dtype=np.int64)
    if not np.all(np.isfinite(numbers) & (numbers == np.floor(numbers))):
        return np.full(len(values), -1, dtype=np.int64)
    return numbers.astype(np.int64)


def _trace(column: dict[str, list[str]], status: npt.NDArray[np.int8]) -> TraceColumns:
    return TraceColumns(
        x=_numbers(column["X"], "X"), y=_numbers(column["Y"], "Y"),
        steering_angle=_numbers(column["steer"], "steer"),
        speed=_numbers(column["throttle"], "throttle"), action=_actions(column["action"]),
        reward=_numbers(column["reward"], "reward"),
        progress=_numbers(column["progress"], "progress"),
        closest_waypoint=_numbers(column["closest_waypoint"], "closest_waypoint"),
        status=status)


# ---------------------------------------------------------------------------------------------
# One file


@dataclass(frozen=True)
class StepStats:
    """Statistics of step intervals, in simulated seconds."""

    count: int
    mean: float
    std: float  # population standard deviation, as numpy's default
    max: float
    p95: float  # linear interpolation, as numpy's default


@dataclass(frozen=True)
class WorkerSteps:
    """One simtrace file (a worker's iteration, or an evaluation run) reduced to its figures."""

    steps: StepStats | None  # None when the file has no step interval
    real_time_factor: float | None  # None without wall-clock data
    wall_start: float | None  # earliest and latest wall clock (Unix seconds) of the rows
    wall_end: float | None


def step_intervals(cols: StepColumns) -> FloatArray:
    """The kept step intervals (seconds), episode by episode, each episode ordered by `steps`."""
    order = np.lexsort((cols.steps, cols.episode))
    episode = cols.episode[order]
    deltas = np.diff(cols.tstamp[order])
    keep = (episode[1:] == episode[:-1]) & ~cols.prepare[order][1:] & (deltas >= 0)
    kept: FloatArray = deltas[keep]
    return kept


def _stats(deltas: FloatArray) -> StepStats | None:
    if deltas.size == 0:
        return None
    return StepStats(count=int(deltas.size), mean=float(np.mean(deltas)),
                     std=float(np.std(deltas)), max=float(np.max(deltas)),
                     p95=float(np.percentile(deltas, 95)))


def real_time_factor(tstamp: FloatArray, wall: FloatArray) -> float | None:
    """Simulated over wall-clock seconds between rows ordered by simulated time (ties by wall
    clock), over the pairs where simulated time did not go back and wall-clock time went on."""
    known = np.isfinite(tstamp) & np.isfinite(wall)
    ts, wc = tstamp[known], wall[known]
    if ts.size < 2:
        return None
    order = np.lexsort((wc, ts))
    ds, dw = np.diff(ts[order]), np.diff(wc[order])
    ok = (ds >= 0) & (dw > 0)
    wall_sum = float(np.sum(dw[ok]))
    return float(np.sum(ds[ok])) / wall_sum if wall_sum > 0 else None


def worker_steps(cols: StepColumns) -> WorkerSteps:
    """The figures of one file; what the model cache keeps per worker and iteration."""
    stats = _stats(step_intervals(cols))
    wall = cols.wall_clock
    if wall is None or not np.any(np.isfinite(wall)):
        return WorkerSteps(stats, None, None, None)
    return WorkerSteps(stats, real_time_factor(cols.tstamp, wall),
                       float(np.nanmin(wall)), float(np.nanmax(wall)))


# ---------------------------------------------------------------------------------------------
# One iteration, workers merged; timing across iterations


@dataclass(frozen=True)
class IterationSteps:
    """Step timing of one iteration, all workers merged (deepracer-utils' OVERALL rules)."""

    iteration: int
    workers: int  # workers with at least one step interval
    count: int
    mean: float  # seconds
    std: float
    max: float
    p95: float  # mean of the workers' p95
    p95_worst: float  # the slowest worker's p95
    real_time_factor: float | None  # mean of the workers' that have one


def iteration_steps(iteration: int, workers: Iterable[WorkerSteps]) -> IterationSteps | None:
    """Merge the files of one iteration; None when none has a step interval. A worker without
    step intervals is left out entirely, its real-time factor too, as analyze() drops its row."""
    rows = [(w.steps, w.real_time_factor) for w in workers if w.steps is not None]
    if not rows:
        return None
    stats = [s for s, _ in rows]
    n = np.array([s.count for s in stats], dtype=np.float64)
    mu = np.array([s.mean for s in stats])
    sd = np.array([s.std for s in stats])
    mean = float(np.average(mu, weights=n))
    variance = float(np.average(sd ** 2 + mu ** 2, weights=n) - mean ** 2)
    rtfs = [r for _, r in rows if r is not None]
    return IterationSteps(
        iteration=iteration, workers=len(stats), count=int(n.sum()), mean=mean,
        std=math.sqrt(variance) if variance > 0 else 0.0, max=max(s.max for s in stats),
        p95=float(np.mean([s.p95 for s in stats])), p95_worst=max(s.p95 for s in stats),
        real_time_factor=float(np.mean(rtfs)) if rtfs else None)


@dataclass(frozen=True)
class IterationTiming:
    """Where one iteration's wall-clock time went (worker 0), in seconds."""

    iteration: int
    training_seconds: float  # simulating: first to last row of the iteration
    policy_seconds: float | None  # updating the policy and evaluating: up to the next iteration
    ratio: float | None  # training_seconds / policy_seconds


def timing(worker0: Mapping[int, WorkerSteps]) -> tuple[IterationTiming, ...]:
    """Per iteration (worker 0's files by iteration), in iteration order, for the iterations with
    wall-clock data. Policy time needs the next iteration's file; it is None for the latest, when
    the next iteration is missing, or when the clocks disagree (a negative gap)."""
    spans = sorted((it, w.wall_start, w.wall_end) for it, w in worker0.items()
                   if w.wall_start is not None and w.wall_end is not None)
    out = []
    for i, (iteration, start, end) in enumerate(spans):
        policy: float | None = None
        if i + 1 < len(spans) and spans[i + 1][0] == iteration + 1:
            gap = spans[i + 1][1] - end
            policy = gap if gap >= 0 else None
        train = end - start
        out.append(IterationTiming(iteration, train, policy,
                                   train / policy if policy else None))
    return tuple(out)

