"""One model's refresh: list its metrics objects, fetch only what changed, derive, report health.

A failed refresh never replaces the last good data: the model keeps serving it with
`refresh_success` 0, the failure is counted by reason and logged in one line.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass

from .config import ModelConfig
from .derive import Derived, RoundInput, derive
from .parse import (
    Columns,
    MetricsFileError,
    episodes_between_training,
    max_episodes,
    parse_document,
)
from .snapshot import Health, ModelSnapshot
from .sources import REASONS, ObjectStore, SourceError

log = logging.getLogger("deepracer_exporter")

WORKER_FILE = re.compile(r"^TrainingMetrics(?:_(\d+))?\.json$")
_LOG_REPEAT_SECONDS = 600.0


@dataclass(frozen=True)
class DeriveSettings:
    rolling_window: int = 5
    max_iterations: int = 1000
    top_laps: int = 10
    max_object_bytes: int = 256 * 1024**2


@dataclass
class _Cached:
    etag: str
    last_modified: float
    columns: Columns


@dataclass
class _Hyper:
    etag: str | None
    episodes: int | None
    max_episodes: int | None


def worker_index(key: str, metrics_prefix: str) -> int | None:
    """Worker number of `<prefix>/metrics/TrainingMetrics[_n].json`, None for other keys."""
    if not key.startswith(metrics_prefix):
        return None
    m = WORKER_FILE.match(key[len(metrics_prefix):])
    if not m:
        return None
    return int(m.group(1)) if m.group(1) else 0


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
        self._hyper: dict[str, _Hyper] = {}
        self._derived: Derived | None = None
        self._last_update: float | None = None
        self._last_success: float | None = None
        self._errors = dict.fromkeys(REASONS, 0)
        self._downloaded = 0
        self._not_modified = 0
        self._unchanged = 0
        self._bytes = 0
        self._logged: tuple[str, float] | None = None

    @property
    def source(self) -> str:
        return "s3" if self.model.bucket is not None else "directory"

    def refresh(self) -> ModelSnapshot:
        started = self._monotonic()
        error: str | None = None
        try:
            self._refresh()
            self._last_success = self._clock()
            if self._logged is not None:
                log.info("model %s: refresh recovered", self.model.name)
                self._logged = None
        except (SourceError, MetricsFileError) as exc:
            self._errors[exc.reason] += 1
            error = f"{exc.reason}: {exc}"
            self._log_failure(error)
        except Exception as exc:  # a bug on one model's data must not stop the others
            self._errors["other"] += 1
            error = f"other: {type(exc).__name__}: {exc}"
            if self._logged is None or self._logged[0] != error:
                log.exception("model %s: unexpected refresh failure", self.model.name)
            self._log_failure(error)
        return ModelSnapshot(
            name=self.model.name,
            bucket=self.model.bucket or self.model.directory or "",
            prefix=self.model.rounds[-1],
            source=self.source,
            derived=self._derived,
            last_update=self._last_update,
            health=Health(
                success=error is None,
                duration_seconds=self._monotonic() - started,
                last_success=self._last_success,
                errors=tuple(self._errors.items()),
                downloaded=self._downloaded,
                not_modified=self._not_modified,
                unchanged=self._unchanged,
                downloaded_bytes=self._bytes,
                last_error=error,
            ),
        )

    def _log_failure(self, error: str) -> None:
        now = self._monotonic()
        if (self._logged is None or self._logged[0] != error
                or now - self._logged[1] >= _LOG_REPEAT_SECONDS):
            kept = "keeping last good data" if self._derived is not None else "no data yet"
            log.warning("model %s: refresh failed (%s); %s, retrying every refresh",
                        self.model.name, error, kept)
            self._logged = (error, now)

    def _refresh(self) -> None:
        changed = self._derived is None
        fresh: dict[str, _Cached] = {}
        rounds: list[RoundInput] = []
        newest = 0.0
        for prefix in self.model.rounds:
            metrics_prefix = f"{prefix}/metrics/"
            listing = [o for o in self._store.list_objects(metrics_prefix)
                       if worker_index(o.key, metrics_prefix) is not None]
            if not listing:
                raise SourceError("not_found", f"no metrics/TrainingMetrics*.json under "
                                  f"{self._store.describe(prefix)}")
            workers: dict[int, Columns] = {}
            for obj in sorted(listing, key=lambda o: o.key):
                cached = self._objects.get(obj.key)
                if cached is not None and cached.etag == obj.etag:
                    self._unchanged += 1
                else:
                    cached = self._fetch(obj.key, cached)
                    changed = True
                fresh[obj.key] = cached
                newest = max(newest, cached.last_modified, obj.last_modified)
                index = worker_index(obj.key, metrics_prefix)
                assert index is not None
                workers[index] = cached.columns
            hyper, hyper_changed = self._hyperparameters(prefix)
            changed = changed or hyper_changed
            rounds.append(RoundInput(workers, hyper.episodes, hyper.max_episodes))
        if set(fresh) != set(self._objects):
            changed = True
        if changed:
            self._derived = derive(rounds, rolling_window=self._settings.rolling_window,
                                   max_iterations=self._settings.max_iterations,
                                   top_laps=self._settings.top_laps)
        self._objects = fresh
        self._last_update = newest or self._last_update

    def _fetch(self, key: str, cached: _Cached | None) -> _Cached:
        got = self._store.get(key, cached.etag if cached else None,
                              self._settings.max_object_bytes)
        if got.body is None and cached is not None:
            self._not_modified += 1
            return cached
        self._downloaded += 1
        body = got.body or b""
        self._bytes += len(body)
        try:
            columns = parse_document(body)
        except MetricsFileError as exc:
            raise MetricsFileError(exc.reason, f"{self._store.describe(key)}: {exc}") from None
        if (cached is not None and len(columns) and len(cached.columns)
                and int(columns.episode.max()) < int(cached.columns.episode.max())):
            log.info("model %s: %s went back to episode %d (training restarted on this "
                         "prefix); starting over from the new data", self.model.name,
                         self._store.describe(key), int(columns.episode.max()))
        return _Cached(got.etag, got.last_modified, columns)

    def _hyperparameters(self, prefix: str) -> tuple[_Hyper, bool]:
        key = f"{prefix}/ip/hyperparameters.json"
        cached = self._hyper.get(prefix)
        try:
            got = self._store.get(key, cached.etag if cached else None, 1024 * 1024)
        except SourceError as exc:
            if exc.reason != "not_found":
                raise
            hyper = _Hyper(None, None, None)
            self._hyper[prefix] = hyper
            return hyper, cached is not None and cached.etag is not None
        if got.body is None and cached is not None:
            self._not_modified += 1
            return cached, False
        self._downloaded += 1
        self._bytes += len(got.body or b"")
        body = got.body or b""
        hyper = _Hyper(got.etag, episodes_between_training(body), max_episodes(body))
        self._hyper[prefix] = hyper
        return hyper, True
