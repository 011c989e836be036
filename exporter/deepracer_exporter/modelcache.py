"""One model's cache: list its objects, fetch only what changed, derive, report health.

A failed refresh never replaces the last good data: the model keeps serving it with
`refresh_success` 0, the failure is counted by reason and logged in one line.

Simtrace files (the simulator's per-iteration step log) are read beside the metrics: each
object once per ETag (the simulator writes it once), reduced at once to a few numbers; a bad one
is counted and logged like a side document and never fails the model's training data.

What is requested when (this model's refresh interval, when side files and simtrace folders are
read again) is decided by polling.py; this class does the reading.

A refresh that overruns its deadline (each store call's `budget`) is shown as failing with
reason `timeout` by the refresher's watchdog (`overdue`, `timed_out`) even while its thread is
still stuck in the call.
"""

from __future__ import annotations

import contextlib
import logging
import math
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from . import analysis, layouts, polling, sidefiles, simtrace, tail, track
from .config import ModelConfig
from .derive import Derived, RoundInput, _episodes_per_worker, derive
from .lograte import LogLimiter
from .logreader import TrainerLog
from .parse import Columns, MetricsFileError
from .snapshot import Health, ModelExtras, ModelSnapshot, Simulator, SimulatorIteration
from .sources import REASONS, Fetched, ObjectInfo, ObjectStore, SourceError
from .tail import Mark

log = logging.getLogger("deepracer_exporter")

_SIDE_MAX_BYTES = 1024 * 1024
# A simtrace row is about 150 bytes: 16 MiB is over 100,000 steps (two hours simulated at 15 Hz)
# for one worker's iteration, far more than a simulator writes, and parsing that takes about
# 125 MB beside the body. Below LargeReads' threshold, so it never waits for the large-read slot.
SIMTRACE_MAX_BYTES = 16 * 1024**2
_GETS_PER_LIST = 12  # S3 bills a LIST like 12.5 GETs
# A tail read trusts that the bytes before the new records did not change. That is checked by a
# full read: of the next growth after VERIFY_TAILS tail reads in a row, and at the first refresh
# VERIFY_SECONDS after the last full read of an object tail-read since (changed or not).
VERIFY_TAILS = 20
VERIFY_SECONDS = 600.0


@dataclass(frozen=True)
class DeriveSettings:
    rolling_window: int = 5
    max_iterations: int = 1000
    top_laps: int = 10
    max_object_bytes: int = 256 * 1024**2
    max_evaluation_runs: int = 10
    history_max_age: float = math.inf  # the global one; a model's own setting wins
    refresh_interval: float = 15.0
    max_refresh_interval: float = 600.0  # a finished or idle model's (polling.py)
    tracks_dir: str | None = None  # track waypoint files (<WORLD_NAME>.npy) for the track view

    def derivation(self) -> tuple[int, int, int]:
        """The settings the derived numbers depend on: a change re-derives cached models."""
        return self.rolling_window, self.max_iterations, self.top_laps


class LargeReads:
    """Caps how many large objects are read and parsed at once, process-wide.

    A full read of a metrics object peaks at several times its size (body, decoded records,
    columns), so with `refresh_workers` 8 concurrent large reads could take several GB;
    objects of `threshold` bytes or more take one of `slots`."""

    def __init__(self, threshold: int = 16 * 1024**2, slots: int = 1) -> None:
        self.threshold = threshold
        self._slots = threading.BoundedSemaphore(slots)

    @contextlib.contextmanager
    def hold(self, size: int) -> Iterator[None]:
        if size < self.threshold:
            yield
            return
        with self._slots:
            yield


class _Tracked:
    """The model's store as its watcher uses it: notes until when the current call may run
    (`busy_until`, monotonic): the store's `budget` for the object's listed size plus a quarter
    (at least 1 s), so the store's own deadline ends a slow read before the watchdog acts."""

    def __init__(self, store: ObjectStore, monotonic: Callable[[], float]) -> None:
        self._store = store
        self._monotonic = monotonic
        self._sizes: dict[str, int] = {}
        self.busy_until: float | None = None
        self.busy_with = ""

    @contextlib.contextmanager
    def _call(self, what: str, size: int) -> Iterator[None]:
        budget = self._store.budget(size)  # the store's own deadline ends the call first
        self.busy_with = what
        self.busy_until = self._monotonic() + budget + max(1.0, budget / 4)
        try:
            yield
        finally:
            self.busy_until = None

    def describe(self, key: str) -> str:
        return self._store.describe(key)

    def budget(self, size: int) -> float:
        return self._store.budget(size)

    def list_objects(self, prefix: str) -> list[ObjectInfo]:
        with self._call(f"listing {self.describe(prefix)}", 0):
            found = self._store.list_objects(prefix)
        self._sizes.update((o.key, o.size) for o in found)
        return found

    def list_children(self, prefix: str) -> list[str]:
        with self._call(f"listing {self.describe(prefix)}", 0):
            return self._store.list_children(prefix)

    def get(self, key: str, etag: str | None, max_bytes: int) -> Fetched:
        with self._call(f"reading {self.describe(key)}", self._sizes.get(key, max_bytes)):
            return self._store.get(key, etag, max_bytes)

    def get_range(self, key: str, start: int, etag: str) -> Fetched | None:
        with self._call(f"reading {self.describe(key)}", self._sizes.get(key, 0) - start):
            return self._store.get_range(key, start, etag)


def _covers(full: Columns, built: Columns) -> bool:
    """Whether a full read starts with the records tail reads built: the object may have grown
    since (more records after them, skipped ones included), nothing before them changed."""
    n = len(built)
    return len(full) >= n and full.skipped >= built.skipped and all(
        np.array_equal(x[:n], y, equal_nan=True) for x, y in (
            (full.episode, built.episode), (full.trial, built.trial), (full.phase, built.phase),
            (full.status, built.status), (full.reward, built.reward),
            (full.completion, built.completion), (full.elapsed_ms, built.elapsed_ms)))


@dataclass
class _Cached:
    etag: str
    last_modified: float
    columns: Columns
    mark: Mark | None  # where new records would go, for reading only the tail next time
    tails: int = 0  # tail reads since the last full read
    verified: float = 0.0  # monotonic time of the last full read


@dataclass(frozen=True)
class _Hyper:
    episodes: int | None = None
    max_episodes: int | None = None
    values: tuple[tuple[str, float], ...] = ()
    info: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class _Trace:
    """One simtrace object as last listed: its figures are None until a read of it succeeded
    (a failed read of a new ETag keeps the previous figures and is never tried again)."""

    etag: str
    key: layouts.SimtraceKey
    folder: str  # the folder listed to find it
    steps: simtrace.WorkerSteps | None
    episodes: analysis.FileEpisodes | None = None


def _latest_round_offset(rounds: list[RoundInput]) -> int:
    """What derive adds to the latest round's own iteration numbers to make master iterations
    (a clone round's simulator counts from 0 again): one more than each earlier round's last."""
    offset = 0
    for rnd in rounds[:-1]:
        per_worker, _ = _episodes_per_worker(rnd)
        last = max((int(((cols.episode - 1) // per_worker[w]).max())
                    for w, cols in rnd.workers.items() if len(cols) and per_worker[w] > 0),
                   default=-1)
        offset += last + 1
    return offset


def _whole(value: float | None, limit: float) -> int | None:
    return int(value) if value is not None and value == int(value) and 0 < value < limit else None


def _parse_hyper(body: bytes | bytearray) -> _Hyper:
    values = sidefiles.hyperparameter_values(body)
    return _Hyper(_whole(values.get("num_episodes_between_training"), 1e6),
                  _whole(values.get("term_cond_max_episodes"), 1e12),
                  tuple(sorted(values.items())),
                  tuple(sorted(sidefiles.hyperparameter_info_labels(body).items())))


Metadata = tuple[tuple[tuple[str, str], ...], tuple[tuple[str, float], ...],
                 tuple[analysis.Action, ...]]


def _parse_metadata(body: bytes | bytearray) -> Metadata:
    return (tuple(sidefiles.model_info_labels(body).items()),
            tuple(sidefiles.action_space_bounds(body).items()), analysis.discrete_actions(body))


@dataclass
class _Side:
    """A small object read with conditional GETs: its ETag, LastModified and parsed value."""

    etag: str | None
    last_modified: float | None
    value: Any


class ModelCache:
    """Keeps one model's cache between refreshes; `refresh()` returns its new snapshot."""

    def __init__(self, model: ModelConfig, store: ObjectStore, settings: DeriveSettings,
                 clock: Callable[[], float] = time.time,
                 monotonic: Callable[[], float] = time.monotonic,
                 large_reads: LargeReads | None = None) -> None:
        self.model = model
        self._tracked = _Tracked(store, monotonic)
        self._store: ObjectStore = self._tracked
        self._settings = settings
        self._rederive = False
        self._clock = clock
        self._monotonic = monotonic
        self._large = large_reads or LargeReads()
        self._lock = threading.Lock()
        self._polling = polling.ModelPolling(monotonic, clock)
        self._started: float | None = None
        self._overdue_counted = False
        self._objects: dict[str, _Cached] = {}
        self._side: dict[str, _Side] = {}
        self._runs: dict[str, tuple[str, sidefiles.EvaluationRun]] = {}
        self._traces: dict[str, _Trace] = {}
        self._simulator: Simulator | None = None
        self._analysis: tuple[object, analysis.ModelAnalysis | None] = (None, None)
        self._world: _Side = _Side(None, None, None)  # training_params.yaml's WORLD_NAME
        self._tracks: track.TrackFiles | None = None
        self._simulator_basis: object = None  # what `_simulator` was computed from
        self._folders: dict[str, tuple[str, ...]] = {}  # round prefix -> its simtrace folders
        self._extras = ModelExtras()
        self._trainer_log = TrainerLog(settings.max_iterations, monotonic)  # console/DRoA exports
        self._derived: Derived | None = None
        self._last_update: float | None = None
        self._last_success: float | None = None
        self._errors = dict.fromkeys(REASONS, 0)
        self._downloaded = 0
        self._not_modified = 0
        self._tail = 0
        self._bytes = 0
        self._log = LogLimiter(clock=monotonic)

    @property
    def source(self) -> str:
        return "s3" if self.model.bucket is not None else "directory"

    def reconfigure(self, settings: DeriveSettings) -> None:
        """New settings from the next refresh on; a change of a derivation setting re-derives
        the cached columns then, without downloading anything again."""
        if settings.derivation() != self._settings.derivation():
            self._rederive = True
            self._polling.wake()
        self._settings = settings

    def due(self) -> bool:
        """Whether the model is to be refreshed this cycle (polling.py decides)."""
        return self._polling.due()

    def wake(self) -> None:
        """Refresh at the next cycle, whatever its polling interval (a reload)."""
        self._polling.wake()

    def refresh(self) -> ModelSnapshot:
        started = self._monotonic()
        with self._lock:
            self._started, self._overdue_counted = started, False
        error: str | None = None
        try:
            self._refresh()
            self._last_success = self._clock()
            if self._log.recovered("refresh"):
                log.info("model %s: refresh recovered", self.model.name)
        except (SourceError, MetricsFileError) as exc:
            self._count(exc.reason)
            error = f"{exc.reason}: {exc}"
            self._log_failure(exc.reason, error)
        except Exception as exc:  # a bug on one model's data must not stop the others
            self._count("other")
            error = f"other: {type(exc).__name__}: {exc}"
            if self._log.failed("refresh", "other"):
                log.exception("model %s: unexpected refresh failure (keeping last good data)",
                              self.model.name)
        settings = self._settings
        self._polling.scheduled(error is None, self._derived is not None and self._derived.finished,
                                self._last_update, settings.refresh_interval,
                                settings.max_refresh_interval)
        with self._lock:
            self._started = None
            return self._snapshot(error, self._monotonic() - started)

    def _count(self, reason: str) -> None:
        with self._lock:
            self._errors[reason] += 1

    def deadline_in(self) -> float | None:
        """Seconds left for the store call running now (None: none is running)."""
        until = self._tracked.busy_until
        return None if until is None else until - self._monotonic()

    def overdue(self) -> bool:
        """True while a refresh is stuck in a store call past that call's deadline."""
        left = self.deadline_in()
        return left is not None and left < 0

    def timed_out(self) -> ModelSnapshot:
        """The snapshot of a refresh past its deadline: failing with reason `timeout` (counted
        once per stuck refresh), the last good data kept, while its thread is still stuck."""
        with self._lock:
            started = self._started if self._started is not None else self._monotonic()
            elapsed = self._monotonic() - started
            error = (f"timeout: refresh stuck for {elapsed:.0f}s, past the deadline of "
                     f"{self._tracked.busy_with}")
            if not self._overdue_counted:
                self._overdue_counted = True
                self._errors["timeout"] += 1
            snap = self._snapshot(error, elapsed)
        self._log_failure("timeout", error)
        return snap

    def placeholder(self) -> ModelSnapshot:
        """What is served for a model whose first refresh has not finished yet."""
        with self._lock:
            return self._snapshot("pending: first refresh still running", 0.0)

    def _snapshot(self, error: str | None, duration: float) -> ModelSnapshot:
        return ModelSnapshot(
            name=self.model.name,
            bucket=self.model.bucket or self.model.directory or "",
            prefix=self.model.rounds[-1],
            source=self.source,
            derived=self._derived,
            last_update=self._last_update,
            extras=self._extras,
            history_max_age=(self.model.history_max_age if self.model.history_max_age is not None
                             else self._settings.history_max_age),
            health=Health(
                success=error is None,
                duration_seconds=duration,
                last_success=self._last_success,
                errors=tuple(self._errors.items()),
                downloaded=self._downloaded,
                not_modified=self._not_modified,
                tail=self._tail,
                downloaded_bytes=self._bytes,
                poll_interval=self._polling.interval,
                last_error=error,
            ),
        )

    def _log_failure(self, reason: str, error: str) -> None:
        """One line per outage: a reason is logged again only after 10 minutes."""
        if self._log.failed("refresh", reason):
            kept = "keeping last good data" if self._derived is not None else "no data yet"
            log.warning("model %s: refresh failed (%s); %s, retrying every refresh",
                        self.model.name, error, kept)

    def _refresh(self) -> None:
        """List and read the metrics, then what polling.py says is due beside them: side files,
        the checkpoint index, simtrace folders."""
        listed, changed = self._read_metrics()
        side = self._polling.side_files()
        rounds: list[RoundInput] = []
        hyper = _Hyper()
        for prefix, workers in listed:
            key = f"{prefix}/ip/hyperparameters.json"
            if side or key not in self._side:
                changed = self._read_side(key, _parse_hyper)[1] or changed
            value = self._side[key].value
            hyper = value if isinstance(value, _Hyper) else _Hyper()
            rounds.append(RoundInput(workers, hyper.episodes, hyper.max_episodes))
        if changed or self._derived is None or self._rederive:
            self._rederive = False
            self._derived = derive(rounds, rolling_window=self._settings.rolling_window,
                                   max_iterations=self._settings.max_iterations,
                                   top_laps=self._settings.top_laps)
        exported = {run.run_id for run in sidefiles.latest_runs(
            (run for _, run in self._runs.values()), self._settings.max_evaluation_runs)}
        missing = exported - {t.key.run for t in self._traces.values()
                              if t.key.kind == layouts.EVALUATION}
        per_iteration = self._polling.per_iteration(self._derived.latest_iteration, side,
                                                    missing)
        offset = _latest_round_offset(rounds)
        self._read_simtrace(offset, side or (per_iteration and bool(missing)), per_iteration,
                            self._derived.latest_iteration - offset, exported, missing)
        self._extras = self._build_extras(self.model.rounds[-1], hyper, side, per_iteration)

    def _read_metrics(self) -> tuple[list[tuple[str, dict[int, Columns]]], bool]:
        """List every round's `metrics/`, read the worker files whose ETag changed (a grown one
        by its tail) and the new evaluation runs; returns each round's workers' columns and
        whether any worker file changed. The listing goes to the polling policy."""
        changed = False
        fresh: dict[str, _Cached] = {}
        runs: dict[str, tuple[str, sidefiles.EvaluationRun]] = {}
        listed: list[tuple[str, dict[int, Columns]]] = []
        newest = 0.0
        state: list[polling.ObjectState] = []
        for prefix in self.model.rounds:
            metrics_prefix = f"{prefix}/metrics/"
            listing = {o.key: o for o in self._store.list_objects(metrics_prefix)}
            state.extend((o.key, o.etag, o.size) for o in listing.values())
            selected = layouts.select_training_keys(listing, metrics_prefix)
            if not selected:
                raise SourceError("not_found", f"no metrics/TrainingMetrics*.json (or console "
                                  f"training/ export) under {self._store.describe(prefix)}")
            workers: dict[int, Columns] = {}
            for index, key in sorted(selected.items()):
                obj = listing[key]
                cached = self._objects.get(key)
                if (cached is None or cached.etag != obj.etag
                        or self._verification_due(cached)):
                    with self._large.hold(obj.size):
                        cached = self._fetch(obj, cached)
                    changed = True
                fresh[key] = cached
                newest = max(newest, obj.last_modified)
                workers[index] = cached.columns
            runs.update(self._evaluation_runs(listing, metrics_prefix))
            listed.append((prefix, workers))
        self._polling.listed(state)
        changed = changed or set(fresh) != set(self._objects)
        self._objects = fresh
        self._runs = runs
        self._last_update = newest or self._last_update
        return listed, changed

    def _evaluation_runs(self, listing: dict[str, Any], metrics_prefix: str
                         ) -> dict[str, tuple[str, sidefiles.EvaluationRun]]:
        """Evaluation run files of one round, each parsed once per ETag; a bad one is skipped."""
        out: dict[str, tuple[str, sidefiles.EvaluationRun]] = {}
        for key, obj in listing.items():
            run_id = layouts.evaluation_run_key(key, metrics_prefix)
            if run_id is None:
                continue
            cached = self._runs.get(key)
            if cached is not None and cached[0] == obj.etag:
                out[key] = cached
                continue
            try:
                # An evaluation file is parsed into dicts, several times its size at the peak:
                # a large one waits for the large-read slot like a metrics file.
                with self._large.hold(obj.size):
                    got = self._store.get(key, None, self._settings.max_object_bytes)
                    self._downloaded += 1
                    self._bytes += len(got.body or b"")
                    out[key] = (got.etag, sidefiles.parse_evaluation(run_id, got.body or b""))
                    del got
            except (SourceError, MetricsFileError) as exc:
                self._side_failure(key, exc)
                if cached is not None:
                    out[key] = cached
        return out

    def _build_extras(self, prefix: str, hyper: _Hyper, side: bool, per_iteration: bool
                      ) -> ModelExtras:
        metadata = self._side_value(f"{prefix}/model/model_metadata.json", _parse_metadata,
                                    side)
        checkpoints = self._side_value(f"{prefix}/model/deepracer_checkpoints.json",
                                       sidefiles.parse_checkpoints, per_iteration)
        all_runs = [run for _, run in self._runs.values()]
        labels, bounds, actions = metadata.value if metadata.value is not None else ((), (), ())
        return ModelExtras(
            evaluation_runs=sidefiles.latest_runs(all_runs, self._settings.max_evaluation_runs),
            evaluation_run_count=len(all_runs),
            best_evaluation_lap=sidefiles.best_evaluated_lap(all_runs),
            metadata=labels,
            action_space=bounds,
            hyperparameters=hyper.values,
            hyperparameter_info=hyper.info,
            checkpoints=checkpoints.value,
            checkpoints_updated=checkpoints.last_modified if checkpoints.value else None,
            simulator=self._simulator,
            analysis=self._analysed(actions),
            policy=self._trainer_log.refresh(self._store, prefix, self._objects,
                                             self._settings.max_object_bytes, self._side_failure),
        )

    # -- simtrace ------------------------------------------------------------------------------

    def _read_simtrace(self, offset: int, relist: bool, next_iteration: bool, upto: int,
                       exported: set[str], missing: set[str]) -> None:
        """Find, read (new ETags only) and reduce the simtrace objects that are exported: the
        latest round's training iterations (the latest `max_iterations`) and the exported
        evaluation runs of every round.

        When to look is polling.py's: with `relist` (the training was replaced, a run's file is
        awaited, the safety net) the model's folders are listed (one delimiter LIST per round),
        then the latest round's training folders (`training-simtrace/`, one per worker `<n>/`,
        or `sim-trace/`), and an `evaluation-<time>/` folder or an earlier round only while an
        exported run's file is not found yet (each run writes one, once). With
        `next_iteration` alone (the latest iteration changed) the files of the iterations that
        ended since (the round's own iterations below `upto`) are read by GET at the keys the
        newest known one implies: a GET costs a twelfth of a LIST. Otherwise what was found
        before is kept."""
        latest = self.model.rounds[-1]
        found: dict[str, tuple[ObjectInfo, layouts.SimtraceKey, str]] = {}
        listed_folders: set[str] = set()
        probed: dict[str, _Trace] | None = {}
        if next_iteration and not relist:
            probed = self._read_next_iterations(latest, upto)
        for prefix in self.model.rounds if relist or probed is None else ():
            if prefix != latest and not (any(
                    run.run_id in missing and key.startswith(f"{prefix}/metrics/")
                    for key, (_, run) in self._runs.items())):
                continue
            for folder in self._simtrace_folders(prefix, prefix == latest, missing, relist):
                try:
                    objects = self._store.list_objects(folder)
                except SourceError as exc:
                    self._side_failure(folder, exc)
                    continue
                listed_folders.add(folder)
                for obj in objects:
                    key = layouts.simtrace_key(obj.key, prefix)
                    if key is not None and (key.kind == layouts.EVALUATION or prefix == latest):
                        found.setdefault(obj.key, (obj, key, folder))
        # What was not listed now (its folder skipped, or its listing failed) stays as it was.
        carried = {name: t for name, t in self._traces.items()
                   if t.folder not in listed_folders and name not in found}
        carried.update(probed or {})
        keys = {name: key for name, (_, key, _) in found.items()}
        keys.update((name, t.key) for name, t in carried.items())
        traces: dict[str, _Trace] = {}
        for name in self._choose_simtrace(keys, latest, exported):
            if name in carried:
                traces[name] = carried[name]
                continue
            obj, key, folder = found[name]
            cached = self._traces.get(name)
            if cached is not None and cached.etag == obj.etag:
                traces[name] = cached
                continue
            trace = self._read_trace(obj, key, folder, cached)
            if trace is not None:
                traces[name] = trace
        self._traces = traces
        basis = (offset, tuple((n, t.etag, t.steps is not None) for n, t in sorted(traces.items())))
        if basis != self._simulator_basis:
            self._simulator_basis = basis
            self._simulator = self._simulator_figures(offset) if traces else None
            for params in ("training_params.yaml", "training_params_1.yaml") if traces else ():
                # once per new simtrace file (the track may change with it); DRfC's multi-config
                # training writes only a file per worker, the first being worker 0's
                self._world, _ = self._read_side(f"{latest}/{params}", analysis.world_name)
                if self._world.etag is not None:
                    break

    def _read_next_iterations(self, latest: str, upto: int) -> dict[str, _Trace] | None:
        """The training files of the iterations from the newest known one of each worker folder
        up to `upto` (excluded), read by GET at the key that one implies; a file not there yet
        ends its folder's run (looked for again at the next change). None when that cannot
        replace a listing: no training file known yet, or more iterations missing than a LIST
        costs in GETs."""
        newest: dict[tuple[str, int, str | None], tuple[int, str]] = {}
        for name, t in self._traces.items():
            if t.key.kind == layouts.TRAINING and name.startswith(f"{latest}/"):
                group = (t.folder, t.key.worker, t.key.run)
                if group not in newest or t.key.iteration > newest[group][0]:
                    newest[group] = (t.key.iteration, name)
        if not newest or any(upto - it - 1 > _GETS_PER_LIST for it, _ in newest.values()):
            return None
        out: dict[str, _Trace] = {}
        for (folder, _, _), (known, name) in newest.items():
            head = name.rsplit("/", 1)[0]
            for it in range(known + 1, upto):
                key = f"{head}/{it}-iteration.csv"
                simtrace_key = layouts.simtrace_key(key, latest)
                trace = None if simtrace_key is None else self._read_trace(
                    ObjectInfo(key, "", 0.0, 0), simtrace_key, folder, None)
                if trace is None:
                    break
                out[key] = trace
        return out

    def _simtrace_folders(self, prefix: str, latest: bool, missing: set[str], children: bool
                          ) -> list[str]:
        """The folders of a round to list now (see `_read_simtrace`): its folders are listed
        first with `children`, else (or when that listing fails) those found before are used."""
        try:
            if children or prefix not in self._folders:
                found = self._store.list_children(f"{prefix}/")
                self._folders[prefix] = layouts.simtrace_folders(found, prefix)
        except SourceError as exc:
            self._side_failure(f"{prefix}/", exc)
        out = []
        for folder in self._folders.get(prefix, ()):
            run = layouts.simtrace_key(f"{folder}evaluation-simtrace/0-iteration.csv", prefix)
            if run is not None:  # an evaluation-<time>/ folder of DRfC
                if run.run in missing:
                    out.append(folder)
            elif latest or folder.endswith("/sim-trace/"):
                out.append(folder)
        return out

    def _choose_simtrace(self, keys: dict[str, layouts.SimtraceKey], latest: str,
                         exported: set[str]) -> list[str]:
        """The objects whose figures are exported: the exported evaluation runs, and the latest
        `max_iterations` training iterations of one layout. Of several DeepRacer on AWS job
        folders the latest (its name starts with the ISO time) is taken; where both a single
        worker's `training-simtrace/` and numbered worker folders exist, the numbered ones (the
        same prefix trained later with several workers)."""
        out = [n for n, k in keys.items() if k.kind == layouts.EVALUATION and k.run in exported]
        training = {n: k for n, k in keys.items() if k.kind == layouts.TRAINING}
        if not training:
            return out
        job = max(k.run or "" for k in training.values())
        training = {n: k for n, k in training.items() if (k.run or "") == job}
        head = f"{latest}/"
        numbered = {n: k for n, k in training.items() if n[len(head):].split("/", 1)[0].isdigit()}
        training = numbered or training
        iterations = sorted({k.iteration for k in training.values()})
        window = set(iterations[-self._settings.max_iterations:])
        out += [n for n, k in training.items() if k.iteration in window]
        return out

    def _read_trace(self, obj: ObjectInfo, key: layouts.SimtraceKey, folder: str,
                    cached: _Trace | None) -> _Trace | None:
        """Read and reduce one new simtrace object. A bad one (malformed, too large) is counted
        and logged once, keeps the previous figures and is not read again at this ETag; one
        that could not be read (timeout, unreachable) is tried again next refresh."""
        previous = cached.steps if cached is not None else None
        kept = cached.episodes if cached is not None else None
        bound = min(SIMTRACE_MAX_BYTES, self._settings.max_object_bytes)
        etag = obj.etag
        try:
            if obj.size > bound:
                raise SourceError("too_large", f"{self._store.describe(obj.key)}: {obj.size} "
                                  f"bytes is over the simtrace limit of {bound}")
            got = self._store.get(obj.key, None, bound)
            etag = got.etag
            self._downloaded += 1
            self._bytes += len(got.body or b"")
            cols = simtrace.parse_simtrace(got.body or b"")
            return _Trace(got.etag, key, folder, simtrace.worker_steps(cols),
                          analysis.reduce_file(cols) if key.kind == layouts.TRAINING else None)
        except MetricsFileError as exc:
            self._side_failure(obj.key, exc)
            return _Trace(etag, key, folder, previous, kept)
        except SourceError as exc:
            if exc.reason == "not_found":  # deleted since the listing
                return None
            self._side_failure(obj.key, exc)
            if exc.reason == "too_large":
                return _Trace(obj.etag, key, folder, previous, kept)
            return cached

    def _analysed(self, actions: tuple[analysis.Action, ...]) -> analysis.ModelAnalysis | None:
        """The training analysis, computed again only when its inputs changed; afterwards only
        the files the track view draws keep their positions."""
        name = self._world.value if isinstance(self._world.value, str) else None
        folder = self._settings.tracks_dir
        if folder is not None and (self._tracks is None or str(self._tracks.folder) != folder):
            self._tracks = track.TrackFiles(folder)
        try:
            shape = self._tracks.load(name) if self._tracks and folder and name else None
        except MetricsFileError as exc:
            self._side_failure(f"{folder}/{name}.npy", exc)
            shape = None
        basis = (self._simulator_basis, actions, name, shape)
        if basis != self._analysis[0]:
            files = {(t.key.iteration, t.key.worker): t.episodes for t in self._traces.values()
                     if t.key.kind == layouts.TRAINING and t.episodes is not None}
            offset = self._simulator_basis[0] if isinstance(self._simulator_basis, tuple) else 0
            result, keep = analysis.analyse(offset, files, actions, name, shape)
            self._analysis = (basis, result)
            self._traces = {n: t if t.episodes is None or (t.key.iteration, t.key.worker) in keep
                            else replace(t, episodes=t.episodes.without_path())
                            for n, t in self._traces.items()}
        return self._analysis[1]

    def _simulator_figures(self, offset: int) -> Simulator:
        training: dict[int, dict[int, simtrace.WorkerSteps]] = {}
        runs: dict[str, list[simtrace.WorkerSteps]] = {}
        for t in self._traces.values():
            if t.steps is None:
                continue
            if t.key.kind == layouts.TRAINING:
                training.setdefault(t.key.iteration, {})[t.key.worker] = t.steps
            elif t.key.run is not None:
                runs.setdefault(t.key.run, []).append(t.steps)
        timings = {tm.iteration: tm for tm in simtrace.timing(
            {it: ws[0] for it, ws in training.items() if 0 in ws})}
        iterations = []
        for it, workers in sorted(training.items()):
            steps = simtrace.iteration_steps(it, workers.values())
            if steps is not None or it in timings:
                iterations.append(SimulatorIteration(offset + it, steps, timings.get(it)))
        merged = ((run, simtrace.iteration_steps(0, ws)) for run, ws in sorted(runs.items()))
        return Simulator(tuple(iterations),
                         tuple((run, steps) for run, steps in merged if steps is not None))

    def _side_failure(self, key: str, exc: SourceError | MetricsFileError) -> None:
        """A side object (evaluation run, metadata, checkpoints) that cannot be read is counted
        and logged, but does not fail the model: its training numbers are still good."""
        self._count(exc.reason)
        self._polling.retry()
        if self._log.failed(("side", key), exc.reason):
            log.warning("model %s: %s: %s: %s; its last good value is kept", self.model.name,
                        exc.reason, self._store.describe(key), exc)

    def _side_value(self, key: str, parse: Callable[[bytes | bytearray], Any], due: bool
                    ) -> _Side:
        """The side object as last read; read again (a conditional GET) when `due`."""
        cached = self._side.get(key)
        if due or cached is None:
            return self._read_side(key, parse)[0]
        return cached

    def _read_side(self, key: str, parse: Callable[[bytes | bytearray], Any]
                   ) -> tuple[_Side, bool]:
        """Conditional GET of a small object; absent -> value None. Returns (entry, changed)."""
        cached = self._side.get(key)
        try:
            got = self._store.get(key, cached.etag if cached else None, _SIDE_MAX_BYTES)
        except SourceError as exc:
            if exc.reason == "not_found":
                self._side[key] = _Side(None, None, None)
                return self._side[key], cached is not None and cached.value is not None
            self._side_failure(key, exc)
            return cached or _Side(None, None, None), False
        if got.body is None and cached is not None:
            self._not_modified += 1
            return cached, False
        self._downloaded += 1
        self._bytes += len(got.body or b"")
        try:
            entry = _Side(got.etag, got.last_modified, parse(got.body or b""))
        except MetricsFileError as exc:
            self._side_failure(key, exc)
            entry = _Side(got.etag, got.last_modified, cached.value if cached else None)
        self._side[key] = entry
        return entry, True

    def _fetch(self, obj: ObjectInfo, cached: _Cached | None) -> _Cached:
        key = obj.key
        if obj.size > self._settings.max_object_bytes:
            raise SourceError("too_large", f"{self._store.describe(key)}: {obj.size} bytes is "
                              f"over the max_object_bytes limit of "
                              f"{self._settings.max_object_bytes}")
        if (cached is not None and cached.mark is not None and obj.size > cached.mark.size
                and cached.tails < VERIFY_TAILS):
            grown = self._fetch_tail(obj, cached, cached.mark)
            if grown is not None:
                return grown
        # An object built from tail reads is read in full, unconditionally: the verification.
        got = self._store.get(key, cached.etag if cached and not cached.tails else None,
                              self._settings.max_object_bytes)
        if got.body is None and cached is not None:
            self._not_modified += 1
            return cached
        self._downloaded += 1
        body = got.body or b""
        self._bytes += len(body)
        try:
            columns, mark = tail.decode(body)
        except MetricsFileError as exc:
            raise MetricsFileError(exc.reason, f"{self._store.describe(key)}: {exc}") from None
        if (cached is not None and len(columns) and len(cached.columns)
                and int(columns.episode.max()) < int(cached.columns.episode.max())):
            log.info("model %s: %s went back to episode %d (training restarted on this "
                     "prefix); starting over from the new data", self.model.name,
                     self._store.describe(key), int(columns.episode.max()))
        if cached is not None and cached.tails and not _covers(columns, cached.columns):
            log.info("model %s: %s differs from what its last %d tail read(s) built (rewritten "
                     "in place); replaced by this full read", self.model.name,
                     self._store.describe(key), cached.tails)
        return _Cached(got.etag, got.last_modified, columns, mark, 0, self._monotonic())

    def _verification_due(self, cached: _Cached) -> bool:
        return cached.tails > 0 and self._monotonic() - cached.verified >= VERIFY_SECONDS

    def _fetch_tail(self, obj: ObjectInfo, cached: _Cached, mark: tail.Mark) -> _Cached | None:
        """Read only what was appended since the last read; None when a full read is needed."""
        got = self._store.get_range(obj.key, mark.range_start, obj.etag)
        if got is None or got.body is None:
            return None
        self._bytes += len(got.body)
        found = tail.appended(got.body, mark)
        if found is None:
            return None
        self._tail += 1
        new, new_mark = found
        return _Cached(got.etag, got.last_modified, tail.concat(cached.columns, new),
                       new_mark, cached.tails + 1, cached.verified)
