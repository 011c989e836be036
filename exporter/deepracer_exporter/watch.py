"""One model's refresh: list its metrics objects, fetch only what changed, derive, report health.

A failed refresh never replaces the last good data: the model keeps serving it with
`refresh_success` 0, the failure is counted by reason and logged in one line.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from . import append, extras
from .append import Mark
from .config import ModelConfig
from .derive import Derived, RoundInput, derive
from .parse import Columns, MetricsFileError, parse_records
from .snapshot import Health, ModelExtras, ModelSnapshot
from .sources import REASONS, ObjectInfo, ObjectStore, SourceError
from .throttle import LogLimiter

log = logging.getLogger("deepracer_exporter")

_SIDE_MAX_BYTES = 1024 * 1024


@dataclass(frozen=True)
class DeriveSettings:
    rolling_window: int = 5
    max_iterations: int = 1000
    top_laps: int = 10
    max_object_bytes: int = 256 * 1024**2
    max_evaluation_runs: int = 10


@dataclass
class _Cached:
    etag: str
    last_modified: float
    columns: Columns
    mark: Mark | None  # where new records would go, for reading only the tail next time


@dataclass(frozen=True)
class _Hyper:
    episodes: int | None = None
    max_episodes: int | None = None
    values: tuple[tuple[str, float], ...] = ()
    info: tuple[tuple[str, str], ...] = ()


def _whole(value: float | None, limit: float) -> int | None:
    return int(value) if value is not None and value == int(value) and 0 < value < limit else None


def _parse_hyper(body: bytes) -> _Hyper:
    values = extras.hyperparameter_values(body)
    return _Hyper(_whole(values.get("num_episodes_between_training"), 1e6),
                  _whole(values.get("term_cond_max_episodes"), 1e12),
                  tuple(sorted(values.items())),
                  tuple(sorted(extras.hyperparameter_info_labels(body).items())))


Metadata = tuple[tuple[tuple[str, str], ...], tuple[tuple[str, float], ...]]


def _parse_metadata(body: bytes) -> Metadata:
    return (tuple(extras.model_info_labels(body).items()),
            tuple(extras.action_space_bounds(body).items()))


@dataclass
class _Side:
    """A small object read with conditional GETs: its ETag, LastModified and parsed value."""

    etag: str | None
    last_modified: float | None
    value: Any


class ModelWatcher:
    """Keeps one model's cache between refreshes; `refresh()` returns its new snapshot."""

    def __init__(self, model: ModelConfig, store: ObjectStore, settings: DeriveSettings,
                 clock: Callable[[], float] = time.time,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self.model = model
        self._store = store
        self._settings = settings
        self._clock = clock
        self._monotonic = monotonic
        self._objects: dict[str, _Cached] = {}
        self._side: dict[str, _Side] = {}
        self._runs: dict[str, tuple[str, extras.EvaluationRun]] = {}
        self._extras = ModelExtras()
        self._derived: Derived | None = None
        self._last_update: float | None = None
        self._last_success: float | None = None
        self._errors = dict.fromkeys(REASONS, 0)
        self._downloaded = 0
        self._not_modified = 0
        self._unchanged = 0
        self._tail = 0
        self._bytes = 0
        self._log = LogLimiter(clock=monotonic)

    @property
    def source(self) -> str:
        return "s3" if self.model.bucket is not None else "directory"

    def refresh(self) -> ModelSnapshot:
        started = self._monotonic()
        error: str | None = None
        try:
            self._refresh()
            self._last_success = self._clock()
            if self._log.recovered("refresh"):
                log.info("model %s: refresh recovered", self.model.name)
        except (SourceError, MetricsFileError) as exc:
            self._errors[exc.reason] += 1
            error = f"{exc.reason}: {exc}"
            self._log_failure(exc.reason, error)
        except Exception as exc:  # a bug on one model's data must not stop the others
            self._errors["other"] += 1
            error = f"other: {type(exc).__name__}: {exc}"
            if self._log.failed("refresh", "other"):
                log.exception("model %s: unexpected refresh failure (keeping last good data)",
                              self.model.name)
        return self._snapshot(error, self._monotonic() - started)

    def placeholder(self) -> ModelSnapshot:
        """What is served for a model whose first refresh has not finished yet."""
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
            health=Health(
                success=error is None,
                duration_seconds=duration,
                last_success=self._last_success,
                errors=tuple(self._errors.items()),
                downloaded=self._downloaded,
                not_modified=self._not_modified,
                unchanged=self._unchanged,
                tail=self._tail,
                downloaded_bytes=self._bytes,
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
        changed = self._derived is None
        fresh: dict[str, _Cached] = {}
        runs: dict[str, tuple[str, extras.EvaluationRun]] = {}
        rounds: list[RoundInput] = []
        newest = 0.0
        hyper = _Hyper()
        for prefix in self.model.rounds:
            metrics_prefix = f"{prefix}/metrics/"
            listing = {o.key: o for o in self._store.list_objects(metrics_prefix)}
            selected = extras.select_training_keys(listing, metrics_prefix)
            if not selected:
                raise SourceError("not_found", f"no metrics/TrainingMetrics*.json (or console "
                                  f"training/ export) under {self._store.describe(prefix)}")
            workers: dict[int, Columns] = {}
            for index, key in sorted(selected.items()):
                obj = listing[key]
                cached = self._objects.get(key)
                if cached is not None and cached.etag == obj.etag:
                    self._unchanged += 1
                else:
                    cached = self._fetch(obj, cached)
                    changed = True
                fresh[key] = cached
                newest = max(newest, obj.last_modified)
                workers[index] = cached.columns
            runs.update(self._evaluation_runs(listing, metrics_prefix))
            hyper_side, hyper_changed = self._read_side(f"{prefix}/ip/hyperparameters.json",
                                                        _parse_hyper)
            hyper = hyper_side.value if isinstance(hyper_side.value, _Hyper) else _Hyper()
            changed = changed or hyper_changed
            rounds.append(RoundInput(workers, hyper.episodes, hyper.max_episodes))
        if set(fresh) != set(self._objects):
            changed = True
        if changed:
            self._derived = derive(rounds, rolling_window=self._settings.rolling_window,
                                   max_iterations=self._settings.max_iterations,
                                   top_laps=self._settings.top_laps)
        self._objects = fresh
        self._runs = runs
        self._last_update = newest or self._last_update
        self._extras = self._build_extras(self.model.rounds[-1], hyper)

    def _evaluation_runs(self, listing: dict[str, Any], metrics_prefix: str
                         ) -> dict[str, tuple[str, extras.EvaluationRun]]:
        """Evaluation run files of one round, each parsed once per ETag; a bad one is skipped."""
        out: dict[str, tuple[str, extras.EvaluationRun]] = {}
        for key, obj in listing.items():
            run_id = extras.evaluation_run_key(key, metrics_prefix)
            if run_id is None:
                continue
            cached = self._runs.get(key)
            if cached is not None and cached[0] == obj.etag:
                self._unchanged += 1
                out[key] = cached
                continue
            try:
                got = self._store.get(key, None, self._settings.max_object_bytes)
                self._downloaded += 1
                self._bytes += len(got.body or b"")
                out[key] = (got.etag, extras.parse_evaluation(run_id, got.body or b""))
            except (SourceError, MetricsFileError) as exc:
                self._side_failure(key, exc)
                if cached is not None:
                    out[key] = cached
        return out

    def _build_extras(self, prefix: str, hyper: _Hyper) -> ModelExtras:
        metadata, _ = self._read_side(f"{prefix}/model/model_metadata.json", _parse_metadata)
        checkpoints, _ = self._read_side(f"{prefix}/model/deepracer_checkpoints.json",
                                         extras.parse_checkpoints)
        all_runs = [run for _, run in self._runs.values()]
        labels, bounds = metadata.value if metadata.value is not None else ((), ())
        return ModelExtras(
            evaluation_runs=extras.latest_runs(all_runs, self._settings.max_evaluation_runs),
            evaluation_run_count=len(all_runs),
            best_evaluation_lap=extras.best_evaluated_lap(all_runs),
            metadata=labels,
            action_space=bounds,
            hyperparameters=hyper.values,
            hyperparameter_info=hyper.info,
            checkpoints=checkpoints.value,
            checkpoints_updated=checkpoints.last_modified if checkpoints.value else None,
        )

    def _side_failure(self, key: str, exc: SourceError | MetricsFileError) -> None:
        """A side object (evaluation run, metadata, checkpoints) that cannot be read is counted
        and logged, but does not fail the model: its training numbers are still good."""
        self._errors[exc.reason] += 1
        if self._log.failed(("side", key), exc.reason):
            log.warning("model %s: %s: %s: %s; its last good value is kept", self.model.name,
                        exc.reason, self._store.describe(key), exc)

    def _read_side(self, key: str, parse: Callable[[bytes], Any]) -> tuple[_Side, bool]:
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
        if cached is not None and cached.mark is not None and obj.size > cached.mark.size:
            grown = self._fetch_tail(obj, cached, cached.mark)
            if grown is not None:
                return grown
        got = self._store.get(key, cached.etag if cached else None,
                              self._settings.max_object_bytes)
        if got.body is None and cached is not None:
            self._not_modified += 1
            return cached
        self._downloaded += 1
        body = got.body or b""
        self._bytes += len(body)
        try:
            records, mark = append.decode(body)
        except MetricsFileError as exc:
            raise MetricsFileError(exc.reason, f"{self._store.describe(key)}: {exc}") from None
        columns = parse_records(records)
        if (cached is not None and len(columns) and len(cached.columns)
                and int(columns.episode.max()) < int(cached.columns.episode.max())):
            log.info("model %s: %s went back to episode %d (training restarted on this "
                     "prefix); starting over from the new data", self.model.name,
                     self._store.describe(key), int(columns.episode.max()))
        return _Cached(got.etag, got.last_modified, columns, mark)

    def _fetch_tail(self, obj: ObjectInfo, cached: _Cached, mark: append.Mark) -> _Cached | None:
        """Read only what was appended since the last read; None when a full read is needed."""
        got = self._store.get_range(obj.key, mark.range_start, obj.etag)
        if got is None or got.body is None:
            return None
        self._bytes += len(got.body)
        found = append.appended(got.body, mark)
        if found is None:
            return None
        self._tail += 1
        records, new_mark = found
        return _Cached(got.etag, got.last_modified, append.concat(cached.columns, records),
                       new_mark)
