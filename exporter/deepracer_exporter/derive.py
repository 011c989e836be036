"""Pure derivation: workers' columns of every round -> per-iteration statistics.

Numbers follow deepracer-utils' `TrainingMetrics` (`_loadRound`, `addRound`, `getSummary`,
`plotProgress`) except where it is wrong, which is documented in docs/metrics.md ("How numbers are
derived"):
- episodes per iteration come from `num_episodes_between_training` split over the workers (the
  lowest worker indexes take the extra episodes of an uneven split) when hyperparameters are
  known; otherwise from `max(trial)` of worker 0, as deepracer-utils does;
- lap time is taken over completed laps only, beside deepracer-utils' `time` over all episodes.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from functools import cached_property

import numpy as np
import numpy.typing as npt

from .parse import LAP_COMPLETE, PHASES, STATUSES, Columns

STATS = ("mean", "median", "min", "max")
FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]


@dataclass(frozen=True)
class RoundInput:
    """One round: its workers' columns (index -> columns) and what its hyperparameters say."""

    workers: dict[int, Columns]
    episodes_between_training: int | None = None
    max_episodes: int | None = None


@dataclass(frozen=True)
class IterationStats:
    phase: str
    round: int
    iteration: int  # master iteration
    episodes: int
    reward: tuple[float, float, float, float]  # mean, median, min, max
    completion: tuple[float, float, float, float]  # ratio 0..1
    episode_seconds: tuple[float, float, float, float]
    lap_seconds: tuple[float, float, float, float] | None  # completed laps only
    completed_ratio: float
    status_episodes: tuple[tuple[str, int], ...]
    rolling_reward: tuple[float, float, float, float]
    rolling_completion: tuple[float, float, float, float]


@dataclass(frozen=True, eq=False)
class IterationTable:
    """The per-iteration statistics as columns, one row per (master iteration, phase) that has
    episodes, sorted by (iteration, phase) and capped to the latest `max_iterations` iterations.

    render.py fills its templates straight from these arrays, so a big model costs no Python
    object per row; `rows()` gives the same data as `IterationStats` for readers that want
    them. Stats are (rows, 4): mean, median, min, max; NaN where there is no value (`lap_seconds`
    of a row without a completed lap)."""

    phase: IntArray  # index into PHASES
    round: IntArray
    iteration: IntArray
    episodes: IntArray
    reward: FloatArray
    completion: FloatArray  # ratio 0..1
    episode_seconds: FloatArray
    lap_seconds: FloatArray  # completed laps only
    completed: IntArray  # episodes that completed the lap
    status_episodes: IntArray  # (rows, len(STATUSES))
    rolling_reward: FloatArray
    rolling_completion: FloatArray

    def __len__(self) -> int:
        return int(self.phase.size)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, IterationTable):
            return NotImplemented
        return all(np.array_equal(getattr(self, f.name), getattr(other, f.name), equal_nan=True)
                   for f in fields(self))

    def rows(self) -> tuple[IterationStats, ...]:
        """One `IterationStats` per row (built on demand; the arrays are the data)."""
        def quads(a: FloatArray) -> list[tuple[float, float, float, float]]:
            return [(r[0], r[1], r[2], r[3]) for r in a.tolist()]
        laps = quads(self.lap_seconds)
        return tuple(
            IterationStats(
                phase=PHASES[p], round=r, iteration=i, episodes=n, reward=rw, completion=c,
                episode_seconds=t, lap_seconds=lap if done else None,
                completed_ratio=done / n,
                status_episodes=tuple((s, k) for s, k in zip(STATUSES, st, strict=True) if k),
                rolling_reward=rr, rolling_completion=rc)
            for p, r, i, n, rw, c, t, lap, done, st, rr, rc in zip(
                self.phase.tolist(), self.round.tolist(), self.iteration.tolist(),
                self.episodes.tolist(), quads(self.reward), quads(self.completion),
                quads(self.episode_seconds), laps, self.completed.tolist(),
                self.status_episodes.tolist(), quads(self.rolling_reward),
                quads(self.rolling_completion), strict=True))


@dataclass(frozen=True)
class Lap:
    seconds: float
    phase: str
    round: int
    iteration: int
    episode: int
    worker: int


@dataclass(frozen=True)
class Derived:
    table: IterationTable  # per-iteration statistics, sorted by (iteration, phase); capped
    latest_iteration: int  # -1 when there is no training episode
    latest_iteration_episodes: int  # training episodes the latest iteration has so far
    unfinished_iteration: int  # the latest iteration while it lacks episodes; else -1
    latest_round: int
    episodes_per_iteration: int
    episodes_per_iteration_source: str  # hyperparameters | trial | none
    workers: int
    finished: bool
    round_training_episodes: int  # training episodes of the latest round
    max_episodes: int | None  # term_cond_max_episodes of the latest round, when known
    round_starts: tuple[tuple[int, int], ...]  # (round, its first master iteration), in order
    best_lap: dict[str, float]  # phase -> seconds
    best_laps: tuple[Lap, ...]  # (phase-major) top-k per phase, fastest first
    episodes_by_status: dict[tuple[str, str], int]  # (phase, status) -> count
    rolling_completion: dict[str, float]  # phase -> rolling mean at the latest finished row
    rolling_reward: dict[str, float]
    plateau: dict[tuple[str, str], int]  # (phase, metric) -> finished iterations since best
    skipped_records: int

    @cached_property
    def iterations(self) -> tuple[IterationStats, ...]:
        """`table` as one object per row, built on first use."""
        return self.table.rows()


def split_episodes(total: int, workers: int) -> list[int]:
    """Episodes each worker plays per iteration; extra episodes go to the lowest indexes."""
    base, extra = divmod(total, max(workers, 1))
    return [base + (1 if w < extra else 0) for w in range(max(workers, 1))]


def _episodes_per_worker(rnd: RoundInput) -> tuple[dict[int, int], str]:
    indexes = sorted(rnd.workers)
    w0 = rnd.workers.get(0)
    observed = int(w0.trial.max()) if w0 is not None and len(w0) else 0
    # Worker 0 restarts `trial` every iteration; once it has, max(trial) is its exact share.
    reset_seen = w0 is not None and len(w0) > 1 and bool(np.any(np.diff(w0.trial) < 0))
    if rnd.episodes_between_training:
        count = (max(indexes) + 1) if indexes else 1
        split = split_episodes(rnd.episodes_between_training, count)
        # Hyperparameters that contradict the data (e.g. a worker file missing) are not used.
        if all(s > 0 for s in split) and not (reset_seen and split[0] != observed):
            return {w: split[w] for w in indexes}, "hyperparameters"
    if observed > 0:
        return {w: observed for w in indexes}, "trial"
    return {w: 0 for w in indexes}, "none"


def _rolling(values: FloatArray, window: int) -> FloatArray:
    """pandas `Series.rolling(window, min_periods=1).mean()` of each column of `values`
    (rows, columns): mean of the non-NaN values.

    O(rows) in time and memory whatever the window: the rows are cut into blocks of `window`,
    and a window ending in block k is a suffix of block k-1 plus a prefix of block k, both
    cumulative sums inside their block. Rounding therefore grows with the window, not with the
    number of rows (a running sum over every row would lose digits on long trainings)."""
    n, c = values.shape
    if n == 0:
        return np.zeros(values.shape)
    w = min(window, n)
    blocks = -(-n // w)
    present = ~np.isnan(values)
    pad = ((0, blocks * w - n), (0, 0))
    x = np.pad(np.where(present, values, 0.0), pad).reshape(blocks, w, c)
    k = np.pad(present.astype(np.int64), pad).reshape(blocks, w, c)
    sums = np.cumsum(x, axis=1)
    counts = np.cumsum(k, axis=1)
    # Row j of block b also takes rows j+1.. of block b-1 (its suffix sums).
    sums[1:, :-1] += np.cumsum(x[:-1, :0:-1], axis=1)[:, ::-1]
    counts[1:, :-1] += np.cumsum(k[:-1, :0:-1], axis=1)[:, ::-1]
    sums, counts = sums.reshape(-1, c)[:n], counts.reshape(-1, c)[:n]
    with np.errstate(invalid="ignore", divide="ignore"):
        out: FloatArray = np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)
    return out


def _group_stats(gid: IntArray, ngroups: int, values: FloatArray) -> FloatArray:
    """mean, median, min, max of `values` per group id; shape (ngroups, 4); NaN for empty.

    Each group is sorted (NaN last, ties in input order) and the mean sums it in that order,
    so every figure is a pure function of the group's sorted values."""
    out = np.full((ngroups, 4), np.nan)
    if values.size == 0:
        return out
    counts = np.bincount(gid, minlength=ngroups)
    order = np.lexsort((values, gid))
    _fill_stats(out, values[order], _starts(counts), counts)
    return out


def _fill_stats(out: FloatArray, sorted_vals: FloatArray, starts: IntArray,
                counts: IntArray) -> None:
    """Stats of groups laid out one after another, each sorted, into `out` (ngroups, 4)."""
    has = counts > 0
    s, c = starts[has], counts[has]
    if not s.size:
        return
    out[has, 0] = np.add.reduceat(sorted_vals, s) / c
    out[has, 1] = (sorted_vals[s + (c - 1) // 2] + sorted_vals[s + c // 2]) / 2.0
    out[has, 2] = sorted_vals[s]
    out[has, 3] = sorted_vals[s + c - 1]


def _starts(counts: IntArray) -> IntArray:
    """Where each group starts when the groups lie one after another."""
    starts: IntArray = np.concatenate(([0], np.cumsum(counts)[:-1]))
    return starts


def _ranks(gid: IntArray, counts: IntArray) -> IntArray:
    """Position of each element within its group, for group ids in ascending order."""
    ranks: IntArray = np.arange(gid.size) - _starts(counts)[gid]
    return ranks


def _phase_stats(gid: IntArray, ngroups: int, values: FloatArray, complete: BoolArray
                 ) -> FloatArray:
    """`_group_stats` of each row of `values` (k, n) and of the last row over `complete`
    episodes only (lap times); shape (k + 1, ngroups, 4).

    When the groups are about equally large (iterations are), the values go into one
    (k + 1, ngroups, longest group) grid padded with NaN and each grid row is sorted on its own,
    which gives `lexsort`'s order (NaN last, ties in input order) at a fraction of its cost. The
    padding sorts after every value, a NaN value included."""
    k, n = values.shape
    counts = np.bincount(gid, minlength=ngroups)
    longest = int(counts.max()) if n else 0
    if ngroups * longest > 4 * n + 4096:
        return np.stack([*(_group_stats(gid, ngroups, v) for v in values),
                         _group_stats(gid[complete], ngroups, values[-1][complete])])
    order = None if n < 2 or bool(np.all(gid[1:] >= gid[:-1])) else np.argsort(
        gid, kind="stable")
    if order is not None:
        gid, values, complete = gid[order], values[:, order], complete[order]
    lap_counts = np.bincount(gid[complete], minlength=ngroups)
    # Cell (group, j) of the flattened grid rows: the j-th value of the group in input order.
    cells = gid * longest + _ranks(gid, counts)
    lap_cells = gid[complete] * longest + _ranks(gid[complete], lap_counts)
    grid = np.full((k + 1, ngroups * longest), np.nan)
    grid[:k, cells] = values
    grid[k, lap_cells] = values[-1][complete]
    # Only -0.0 and 0.0 are equal yet print differently: without both, an unstable sort gives
    # the same rows, and it is several times faster.
    grid.reshape(k + 1, ngroups, longest).sort(
        axis=2, kind="stable" if np.signbit(values[values == 0]).any() else "quicksort")
    # The same cells, read in order, are the sorted groups one after another.
    out = np.full((k + 1, ngroups, 4), np.nan)
    for j in range(k):
        _fill_stats(out[j], grid[j, cells], _starts(counts), counts)
    _fill_stats(out[k], grid[k, lap_cells], _starts(lap_counts), lap_counts)
    return out


def derive(rounds: list[RoundInput], *, rolling_window: int = 5, max_iterations: int = 1000,
           top_laps: int = 10) -> Derived:
    """Merge workers and rounds into per-(phase, master iteration) statistics."""
    parts: dict[str, list[np.ndarray]] = {k: [] for k in (
        "round", "iter", "episode", "worker", "phase", "status", "reward", "completion", "time")}
    offset = 0
    skipped = 0
    epi_total = 0
    epi_source = "none"
    workers = 0
    finished = False
    latest_round = 0
    round_episodes = 0
    max_episodes: int | None = None
    starts: list[tuple[int, int]] = []
    for rnum, rnd in enumerate(rounds, start=1):
        per_worker, source = _episodes_per_worker(rnd)
        round_max = -1
        round_training = 0
        for w, cols in sorted(rnd.workers.items()):
            skipped += cols.skipped
            if not len(cols) or per_worker[w] <= 0:
                continue
            local = (cols.episode - 1) // per_worker[w]
            round_max = max(round_max, int(local.max()))
            round_training += int(np.count_nonzero(cols.phase == 0))
            n = len(cols)
            parts["round"].append(np.full(n, rnum, np.int64))
            parts["iter"].append(local + offset)
            parts["episode"].append(cols.episode)
            parts["worker"].append(np.full(n, w, np.int64))
            parts["phase"].append(cols.phase.astype(np.int64))
            parts["status"].append(cols.status.astype(np.int64))
            parts["reward"].append(cols.reward)
            parts["completion"].append(cols.completion / 100.0)
            parts["time"].append(cols.elapsed_ms / 1000.0)
        if rnd.workers:
            latest_round = rnum
            epi_total = sum(per_worker.values())
            epi_source = source
            workers = len(rnd.workers)
            finished = bool(rnd.max_episodes and round_training >= rnd.max_episodes)
            round_episodes = round_training
            max_episodes = rnd.max_episodes
        if round_max >= 0:
            starts.append((rnum, offset))
            # deepracer-utils: master_iteration = max(previous rounds' master_iteration) + 1 + it
            offset += round_max + 1
    # One worker of one round (the usual case) is used as it is, not copied by concatenate.
    cat = {k: (v[0] if len(v) == 1 else np.concatenate(v) if v else np.zeros(0, np.int64 if k in (
        "round", "iter", "episode", "worker", "phase", "status") else np.float64))
        for k, v in parts.items()}
    summary = _summarise(cat, rolling_window, max_iterations, top_laps, latest_round,
                         epi_total, epi_source, workers, finished, skipped)
    return replace(summary, round_training_episodes=round_episodes, max_episodes=max_episodes,
                   round_starts=tuple(starts))


def _status_counts(gid: IntArray, status: IntArray, ngroups: int) -> IntArray:
    """Episodes per (group, status); shape (ngroups, len(STATUSES))."""
    known = (status >= 0) & (status < len(STATUSES))
    flat = np.bincount(gid[known] * len(STATUSES) + status[known],
                       minlength=ngroups * len(STATUSES))
    counts: IntArray = flat.reshape(ngroups, len(STATUSES))
    return counts


def _table(per_phase: dict[int, dict[str, np.ndarray]], keys: IntArray, round_of: IntArray,
           first_row: int) -> IterationTable:
    """Rows (iteration, phase) with episodes, from `first_row` on, out of per-phase columns."""
    def take(name: str) -> np.ndarray:
        return np.stack([per_phase[p][name] for p in range(len(PHASES))], axis=1)[rows, phases]
    present = np.stack([per_phase[p]["count"] for p in range(len(PHASES))], axis=1) > 0
    present[:first_row] = False
    rows, phases = np.nonzero(present)  # row-major: sorted by (iteration, phase)
    return IterationTable(
        phase=phases.astype(np.int64), round=round_of[rows], iteration=keys[rows],
        episodes=take("count"), reward=take("reward"), completion=take("completion"),
        episode_seconds=take("time"), lap_seconds=take("lap"), completed=take("completed"),
        status_episodes=take("status"), rolling_reward=take("rolling_reward"),
        rolling_completion=take("rolling_completion"))


def _unique(iters: IntArray) -> tuple[IntArray, IntArray]:
    """`np.unique(iters, return_inverse=True)`; without a sort when `iters` never decreases
    (one worker of one round, the usual case)."""
    if iters.size < 2 or not bool(np.all(iters[1:] >= iters[:-1])):
        keys, inverse = np.unique(iters, return_inverse=True)
        return keys, inverse.reshape(-1)
    first = np.concatenate(([True], iters[1:] != iters[:-1]))
    return iters[first], np.cumsum(first) - 1


def _summarise(cat: dict[str, np.ndarray], window: int, max_iterations: int, top_laps: int,
               latest_round: int, epi_total: int, epi_source: str, workers: int,
               finished: bool, skipped: int) -> Derived:
    iters = cat["iter"]
    phase = cat["phase"]
    status = cat["status"]
    # Rows of the summary: every master iteration present in any phase (getSummary's index).
    keys, inverse = _unique(iters)
    nrows = keys.size
    round_of = np.zeros(nrows, np.int64)
    if nrows:
        round_of[inverse] = cat["round"]
    complete = (status == LAP_COMPLETE)
    # The latest iteration is unfinished while it has fewer training episodes than an iteration
    # plays: its mean would move as episodes arrive, so no rolling mean or "best" counts it (its
    # own rows are still exported and drawn, marked as such).
    trained = np.bincount(inverse[phase == 0], minlength=nrows)
    latest_row = int(np.flatnonzero(trained)[-1]) if trained.any() else -1
    unfinished = np.zeros(nrows, np.bool_)
    if latest_row >= 0 and not finished and trained[latest_row] < epi_total:
        unfinished[latest_row] = True
    values = np.stack((cat["reward"], cat["completion"], cat["time"]))
    per_phase: dict[int, dict[str, np.ndarray]] = {}
    for p in range(len(PHASES)):
        sel = phase == p
        gid = inverse[sel]
        counts = np.bincount(gid, minlength=nrows)
        comp = complete[sel]
        reward, completion, time, lap = _phase_stats(gid, nrows, values[:, sel], comp)
        occurred = (counts > 0) & ~unfinished
        per_phase[p] = {
            "count": counts,
            "reward": reward,
            "completion": completion,
            "time": time,
            "lap": lap,
            "completed": np.bincount(gid[comp], minlength=nrows),
            "status": _status_counts(gid, status[sel], nrows),
            "rolling_reward": _rolling(np.where(occurred[:, None], reward, np.nan), window),
            "rolling_completion": _rolling(np.where(occurred[:, None], completion, np.nan),
                                           window),
        }
        per_phase[p]["rolling_reward"][unfinished] = np.nan
        per_phase[p]["rolling_completion"][unfinished] = np.nan
    table = _table(per_phase, keys, round_of, max(0, nrows - max_iterations))

    training_iters = iters[phase == 0]
    best_lap: dict[str, float] = {}
    laps: list[Lap] = []
    by_status: dict[tuple[str, str], int] = {}
    rolling_c: dict[str, float] = {}
    rolling_r: dict[str, float] = {}
    plateau: dict[tuple[str, str], int] = {}
    times = cat["time"]
    for p, name in enumerate(PHASES):
        st = per_phase[p]
        for s, total in enumerate(st["status"].sum(axis=0).tolist()):
            by_status[(name, STATUSES[s])] = total
        if not st["count"].any():
            continue
        done = np.flatnonzero((phase == p) & complete)
        keep = max(top_laps, 1)
        if done.size > keep:
            # Only laps as fast as the keep-th fastest can rank: sort those, not every lap.
            kth = np.partition(times[done], keep - 1)[keep - 1]
            if not np.isnan(kth):
                done = done[times[done] <= kth]
        if done.size:
            order = done[np.lexsort((cat["worker"][done], cat["episode"][done], iters[done],
                                     times[done]))]
            best_lap[name] = float(times[order[0]])
            laps.extend(Lap(float(times[i]), name, int(cat["round"][i]), int(iters[i]),
                            int(cat["episode"][i]), int(cat["worker"][i]))
                        for i in order[:top_laps])
        for metric, series in (("completion", st["rolling_completion"][:, 0]),
                               ("reward", st["rolling_reward"][:, 0])):
            valid = np.flatnonzero(~np.isnan(series))
            if not valid.size:
                continue
            if metric == "completion":
                rolling_c[name] = float(series[valid[-1]])
            else:
                rolling_r[name] = float(series[valid[-1]])
            best_at = valid[int(np.argmax(series[valid]))]
            plateau[(name, metric)] = int(valid[-1] - best_at)
    return Derived(
        table=table,
        latest_iteration=int(training_iters.max()) if training_iters.size else -1,
        latest_iteration_episodes=int(trained[latest_row]) if latest_row >= 0 else 0,
        unfinished_iteration=int(keys[latest_row]) if unfinished.any() else -1,
        latest_round=latest_round,
        episodes_per_iteration=epi_total,
        episodes_per_iteration_source=epi_source,
        workers=workers,
        finished=finished,
        round_training_episodes=0,
        max_episodes=None,
        round_starts=(),
        best_lap=best_lap,
        best_laps=tuple(laps),
        episodes_by_status=by_status,
        rolling_completion=rolling_c,
        rolling_reward=rolling_r,
        plateau=plateau,
        skipped_records=skipped,
    )
