"""The background loop: discover models, refresh each, build a Snapshot, swap it in.

Models refresh in a thread pool and a cycle waits for them at most refresh_interval, so one slow
or broken model never holds back the others' new data. The snapshot is replaced with one
assignment; readers never see half of one.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor, wait

from .config import Config, DiscoverConfig, ModelConfig, ShardConfig
from .extras import select_training_keys
from .snapshot import ModelSnapshot, Snapshot
from .sources import ObjectStore, SourceError
from .throttle import LogLimiter
from .watch import DeriveSettings, ModelWatcher

log = logging.getLogger("deepracer_exporter")

StoreFactory = Callable[[ModelConfig | DiscoverConfig], ObjectStore]


def shard_owner(key: str, total: int) -> int:
    """Replica that owns `key`: rendezvous hashing, so adding a replica moves only its share."""
    def score(replica: int) -> bytes:
        return hashlib.sha256(f"{replica}\0{key}".encode()).digest()

    return max(range(total), key=score)


def model_key(model: ModelConfig) -> str:
    return f"{model.bucket or model.directory}/{model.rounds[0]}"


def owned(model: ModelConfig, shard: ShardConfig) -> bool:
    return shard.total <= 1 or shard_owner(model_key(model), shard.total) == shard.index


def discover_models(entry: DiscoverConfig, store: ObjectStore,
                    known: set[tuple[str | None, str | None, str]]) -> list[ModelConfig]:
    """Prefixes directly under `entry.prefix` holding training metrics (DRfC or console)."""
    base = f"{entry.prefix}/" if entry.prefix else ""
    found = []
    for child in store.list_children(base):
        prefix = child.rstrip("/")
        if (entry.bucket, entry.directory, prefix) in known:
            found.append(ModelConfig(name=prefix, rounds=(prefix,), bucket=entry.bucket,
                                     directory=entry.directory))
            continue
        metrics = f"{prefix}/metrics/"
        if select_training_keys((o.key for o in store.list_objects(metrics)), metrics):
            found.append(ModelConfig(name=prefix, rounds=(prefix,), bucket=entry.bucket,
                                     directory=entry.directory))
    return found


class Refresher:
    def __init__(self, config: Config, make_store: StoreFactory,
                 clock: Callable[[], float] = time.time,
                 on_snapshot: Callable[[Snapshot], None] | None = None) -> None:
        self._make_store = make_store
        self._clock = clock
        self._on_snapshot = on_snapshot
        self._watchers: dict[str, ModelWatcher] = {}
        self._discovered: set[tuple[str | None, str | None, str]] = set()
        self._pool: ThreadPoolExecutor | None = None
        self._inflight: dict[str, tuple[ModelWatcher, Future[ModelSnapshot]]] = {}
        self._published: dict[str, ModelSnapshot] = {}
        self._log = LogLimiter(clock=time.monotonic)
        self.config = config
        self.snapshot = Snapshot((), (), config.refresh_interval, config.rolling_window, clock())

    def reconfigure(self, config: Config) -> None:
        """Use a new configuration from the next refresh on; watchers of kept models stay."""
        self.config = config

    def _settings(self) -> DeriveSettings:
        c = self.config
        return DeriveSettings(c.rolling_window, c.max_iterations, c.top_laps, c.max_object_bytes,
                              c.max_evaluation_runs)

    def _wanted(self) -> tuple[list[ModelConfig], list[tuple[str, bool]]]:
        config = self.config
        models = list(config.models)
        configured = {(m.bucket, m.directory, p) for m in models for p in m.rounds}
        names = {m.name for m in models}
        discovery: list[tuple[str, bool]] = []
        for entry in config.discover:
            try:
                found = discover_models(entry, self._make_store(entry),
                                        configured | self._discovered)
                discovery.append((entry.source_label, True))
                if self._log.recovered(("discovery", entry.source_label)):
                    log.info("discovery of %s recovered", entry.source_label)
            except SourceError as exc:
                if self._log.failed(("discovery", entry.source_label), exc.reason):
                    log.warning("discovery of %s failed (%s: %s); keeping models found before",
                                entry.source_label, exc.reason, exc)
                discovery.append((entry.source_label, False))
                found = [w.model for w in self._watchers.values()
                         if (w.model.bucket, w.model.directory) == (entry.bucket, entry.directory)
                         and (w.model.bucket, w.model.directory, w.model.rounds[0])
                         in self._discovered]
            for m in found:
                key = (m.bucket, m.directory, m.rounds[0])
                if key in configured or m.name in names:
                    continue
                if key not in self._discovered:
                    log.info("discovered model %s in %s", m.name, entry.source_label)
                self._discovered.add(key)
                names.add(m.name)
                models.append(m)
        return [m for m in models if owned(m, config.shard)], discovery

    def refresh_once(self, timeout: float | None = None) -> Snapshot:
        """Refresh every model in parallel and publish a new snapshot.

        Waits at most `timeout` (default: refresh_interval) for the models; one still running
        then (a slow endpoint, its timeouts) keeps its previous data in this snapshot and goes
        on in the background, so it never holds back the others' new data.
        """
        models, discovery = self._wanted()
        settings = self._settings()
        watchers: dict[str, ModelWatcher] = {}
        for m in models:
            w = self._watchers.get(m.name)
            if w is None or w.model != m:
                w = ModelWatcher(m, self._make_store(m), settings, clock=self._clock)
            watchers[m.name] = w
        self._watchers = watchers
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self.config.refresh_workers,
                                            thread_name_prefix="refresh")
        for name, w in watchers.items():
            running = self._inflight.get(name)
            if running is None or running[0] is not w:
                self._inflight[name] = (w, self._pool.submit(w.refresh))
        wait([f for _, f in self._inflight.values()],
             timeout=self.config.refresh_interval if timeout is None else timeout)
        for name, (w, future) in list(self._inflight.items()):
            if future.done():
                del self._inflight[name]
                if watchers.get(name) is w:
                    self._published[name] = future.result()
        self._published = {n: m for n, m in self._published.items() if n in watchers}
        slow = sorted(n for n in self._inflight if n in watchers)
        if slow and self._log.failed(("slow",), "slow"):
            log.warning("refresh of %d model(s) (%s) takes longer than refresh_interval %gs; "
                        "their previous data is served until they finish (logged again in 10 "
                        "minutes if it goes on)", len(slow), ", ".join(slow[:5]),
                        self.config.refresh_interval)
        snap = Snapshot(tuple(self._published.get(n) or w.placeholder()
                              for n, w in watchers.items()),
                        tuple(discovery), self.config.refresh_interval,
                        self.config.rolling_window, self._clock())
        self.snapshot = snap
        if self._on_snapshot is not None:
            self._on_snapshot(snap)
        return snap

    def run(self, stop: threading.Event) -> None:
        """Refresh every interval until `stop` is set; the interval counts from each start."""
        while not stop.is_set():
            started = time.monotonic()
            try:
                self.refresh_once()
            except Exception:  # a bug must not kill the loop that keeps the data fresh
                log.exception("refresh cycle failed unexpectedly; retrying next interval")
            elapsed = time.monotonic() - started
            interval = self.config.refresh_interval
            if elapsed > interval and self._log.failed(("overrun",), "overrun"):
                log.warning("refresh took %.1fs, longer than refresh_interval %gs (logged again "
                            "in 10 minutes if it goes on)", elapsed, interval)
            stop.wait(max(0.0, interval - elapsed))

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
