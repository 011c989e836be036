"""Pure derivation: workers' columns of every round -> per-iteration statistics.

Numbers follow deepracer-utils' `TrainingMetrics` (`_loadRound`, `addRound`, `getSummary`,
`plotProgress`) except where it is wrong, which is documented in README.md ("How numbers are
derived"):
- episodes per iteration come from `num_episodes_between_training` split over the workers (the
  lowest worker indexes take the extra episodes of an uneven split) when hyperparameters are
  known; otherwise from `max(trial)` of worker 0, as deepracer-utils does;
- lap time is taken over completed laps only, beside deepracer-utils' `time` over all episodes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from .parse import LAP_COMPLETE, PHASES, STATUSES, Columns

STATS = ("mean", "median", "min", "max")
FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]


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
    iterations: tuple[IterationStats, ...]  # sorted by (iteration, phase); capped
    latest_iteration: int  # -1 when there is no training episode
    latest_round: int
    episodes_per_iteration: int
    episodes_per_iteration_source: str  # hyperparameters | trial | none
    workers: int
    finished: bool
    best_lap: dict[str, float]  # phase -> seconds
    best_laps: tuple[Lap, ...]  # (phase-major) top-k per phase, fastest first
    episodes_by_status: dict[tuple[str, str], int]  # (phase, status) -> count
    rolling_completion: dict[str, float]  # phase -> rolling mean completion at latest row
    rolling_reward: dict[str, float]
    plateau: dict[tuple[str, str], int]  # (phase, metric) -> iterations since best rolling
    skipped_records: int


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
    """pandas `Series.rolling(window, min_periods=1).mean()`: mean of the non-NaN values."""
    n = values.size
    if n == 0:
        return np.zeros(0)
    w = min(window, n)
    padded = np.concatenate((np.full(w - 1, np.nan), values))
    # Row i holds values[i-w+1 .. i]; each window is summed on its own, as pandas does.
    windows = np.lib.stride_tricks.sliding_window_view(padded, w)
    present = ~np.isnan(windows)
    counts = present.sum(axis=1)
    sums = np.where(present, windows, 0.0).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        out: FloatArray = np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)
    return out


def _group_stats(gid: IntArray, ngroups: int, values: FloatArray) -> FloatArray:
    """mean, median, min, max of `values` per group id; shape (ngroups, 4); NaN for empty."""
    out = np.full((ngroups, 4), np.nan)
    if values.size == 0:
        return out
    counts = np.bincount(gid, minlength=ngroups)
    order = np.lexsort((values, gid))
    sorted_vals = values[order]
    starts = np.concatenate(([0], np.cumsum(counts)[:-1]))
    has = counts > 0
    s, c = starts[has], counts[has]
    sums = np.add.reduceat(sorted_vals, s) if s.size else np.zeros(0)
    out[has, 0] = sums / c
    out[has, 1] = (sorted_vals[s + (c - 1) // 2] + sorted_vals[s + c // 2]) / 2.0
    out[has, 2] = sorted_vals[s]
    out[has, 3] = sorted_vals[s + c - 1]
    return out


def _stats_tuple(row: FloatArray) -> tuple[float, float, float, float]:
    return (float(row[0]), float(row[1]), float(row[2]), float(row[3]))


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
        if round_max >= 0:
            # deepracer-utils: master_iteration = max(previous rounds' master_iteration) + 1 + it
            offset += round_max + 1
    cat = {k: (np.concatenate(v) if v else np.zeros(0, np.int64 if k in (
        "round", "iter", "episode", "worker", "phase", "status") else np.float64))
        for k, v in parts.items()}
    return _summarise(cat, rolling_window, max_iterations, top_laps, latest_round, epi_total,
                      epi_source, workers, finished, skipped)


def _summarise(cat: dict[str, np.ndarray], window: int, max_iterations: int, top_laps: int,
               latest_round: int, epi_total: int, epi_source: str, workers: int,
               finished: bool, skipped: int) -> Derived:
    iters = cat["iter"]
    phase = cat["phase"]
    status = cat["status"]
    # Rows of the summary: every master iteration present in any phase (getSummary's index).
    keys, inverse = np.unique(iters, return_inverse=True)
    nrows = keys.size
    round_of = np.zeros(nrows, np.int64)
    if nrows:
        round_of[inverse] = cat["round"]
    complete = (status == LAP_COMPLETE)
    per_phase: dict[int, dict[str, np.ndarray]] = {}
    for p in range(len(PHASES)):
        sel = phase == p
        gid = inverse[sel]
        counts = np.bincount(gid, minlength=nrows)
        comp = complete[sel]
        stats = {
            "count": counts,
            "reward": _group_stats(gid, nrows, cat["reward"][sel]),
            "completion": _group_stats(gid, nrows, cat["completion"][sel]),
            "time": _group_stats(gid, nrows, cat["time"][sel]),
            "lap": _group_stats(gid[comp], nrows, cat["time"][sel][comp]),
            "completed": np.bincount(gid[comp], minlength=nrows),
            "status": np.stack([np.bincount(gid[status[sel] == s], minlength=nrows)
                                for s in range(len(STATUSES))], axis=1),
        }
        stats["rolling_reward"] = np.stack(
            [_rolling(np.where(counts > 0, stats["reward"][:, k], np.nan), window)
             for k in range(4)], axis=1)
        stats["rolling_completion"] = np.stack(
            [_rolling(np.where(counts > 0, stats["completion"][:, k], np.nan), window)
             for k in range(4)], axis=1)
        per_phase[p] = stats

    first_row = max(0, nrows - max_iterations)
    out: list[IterationStats] = []
    for row in range(first_row, nrows):
        for p, name in enumerate(PHASES):
            st = per_phase[p]
            n = int(st["count"][row])
            if n == 0:
                continue
            lap_n = int(st["completed"][row])
            out.append(IterationStats(
                phase=name,
                round=int(round_of[row]),
                iteration=int(keys[row]),
                episodes=n,
                reward=_stats_tuple(st["reward"][row]),
                completion=_stats_tuple(st["completion"][row]),
                episode_seconds=_stats_tuple(st["time"][row]),
                lap_seconds=_stats_tuple(st["lap"][row]) if lap_n else None,
                completed_ratio=lap_n / n,
                status_episodes=tuple((STATUSES[s], int(st["status"][row, s]))
                                      for s in range(len(STATUSES)) if st["status"][row, s]),
                rolling_reward=_stats_tuple(st["rolling_reward"][row]),
                rolling_completion=_stats_tuple(st["rolling_completion"][row]),
            ))

    training_iters = iters[phase == 0]
    best_lap: dict[str, float] = {}
    laps: list[Lap] = []
    by_status: dict[tuple[str, str], int] = {}
    rolling_c: dict[str, float] = {}
    rolling_r: dict[str, float] = {}
    plateau: dict[tuple[str, str], int] = {}
    times = cat["time"]
    for p, name in enumerate(PHASES):
        sel = phase == p
        for s, sname in enumerate(STATUSES):
            by_status[(name, sname)] = int(np.count_nonzero(sel & (status == s)))
        if not np.any(sel):
            continue
        done = np.flatnonzero(sel & complete)
        if done.size:
            order = done[np.lexsort((cat["worker"][done], cat["episode"][done], iters[done],
                                     times[done]))]
            best_lap[name] = float(times[order[0]])
            laps.extend(Lap(float(times[i]), name, int(cat["round"][i]), int(iters[i]),
                            int(cat["episode"][i]), int(cat["worker"][i]))
                        for i in order[:top_laps])
        st = per_phase[p]
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
        iterations=tuple(out),
        latest_iteration=int(training_iters.max()) if training_iters.size else -1,
        latest_round=latest_round,
        episodes_per_iteration=epi_total,
        episodes_per_iteration_source=epi_source,
        workers=workers,
        finished=finished,
        best_lap=best_lap,
        best_laps=tuple(laps),
        episodes_by_status=by_status,
        rolling_completion=rolling_c,
        rolling_reward=rolling_r,
        plateau=plateau,
        skipped_records=skipped,
    )
