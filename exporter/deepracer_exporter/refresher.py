"""The background loop: discover models, refresh each, build a Snapshot, swap it in.

Models refresh on a pool of daemon threads and a cycle waits for them at most refresh_interval,
so one slow or broken model never holds back the others' new data. A refresh stuck in a store
call past that call's deadline is shown as failing (reason `timeout`) by a watchdog, its thread
is not waited for (another takes its place in the pool) and never delays the exit. The snapshot
is replaced with one assignment; readers never see half of one.
"""

from __future__ import annotations

import hashlib
import itertools
import logging
import queue
import re
import threading
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, wait
from typing import Any, TypeVar

from .config import Config, DiscoverConfig, ModelConfig, ShardConfig
from .layouts import select_training_keys
from .lograte import LogLimiter
from .modelcache import DeriveSettings, LargeReads, ModelCache
from .polling import DiscoveryPolling
from .snapshot import ModelSnapshot, Snapshot
from .sources import ObjectStore, SourceError
from .telegraf_listener import PushState

log = logging.getLogger("deepracer_exporter")

StoreFactory = Callable[[ModelConfig | DiscoverConfig], ObjectStore]
T = TypeVar("T")
Location = tuple[str | None, str | None]  # (bucket, directory)
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_NOT_UTF8 = re.compile(r"[\ud800-\udfff]")  # bytes of a folder name that did not decode
_POLL = 1.0  # seconds between watchdog checks while a refresh runs outside a store call


def shard_owner(key: str, total: int) -> int:
    """Replica that owns `key`: rendezvous hashing, so adding a replica moves only its share."""
    def score(replica: int) -> bytes:
        return hashlib.sha256(f"{replica}\0{key}".encode()).digest()

    return max(range(total), key=score)


def model_key(model: ModelConfig) -> str:
    return f"{model.bucket or model.directory}/{model.rounds[0]}"


def owned(model: ModelConfig, shard: ShardConfig) -> bool:
    return shard.total <= 1 or shard_owner(model_key(model), shard.total) == shard.index


def discover_prefixes(entry: DiscoverConfig, store: ObjectStore, known: set[str],
                      polling: DiscoveryPolling | None = None) -> list[str]:
    """Prefixes directly under `entry.prefix` holding training metrics (DRfC or console).

    Prefixes in `known` are taken as they are, without listing their metrics again; of the
    others, `polling` chooses which to check now (the rest stay what they were). Without it
    (a one-off look) every other prefix is checked."""
    polling = polling or DiscoveryPolling(time.monotonic)
    base = f"{entry.prefix}/" if entry.prefix else ""
    children = [child.rstrip("/") for child in store.list_children(base)]
    for prefix in polling.to_check(children, known):
        metrics = f"{prefix}/metrics/"
        polling.checked(prefix, bool(select_training_keys(
            (o.key for o in store.list_objects(metrics)), metrics)))
    return [p for p in children if p in known or polling.is_model(p)]


def qualified_name(entry: DiscoverConfig, prefix: str) -> str:
    """The name of a discovered training whose prefix is already another model's name."""
    return f"{entry.bucket}/{prefix}" if entry.bucket is not None else (
        f"{entry.directory}/{prefix}")


class WorkerPool:
    """Daemon threads that run submitted calls.

    Daemon threads never hold up the process's exit (a ThreadPoolExecutor's are joined at exit,
    a thread stuck in a read included). `lend(n)`: n threads are stuck past their deadline, so n
    more run; a thread retires when it comes back and the pool has more than it needs."""

    def __init__(self, size: int, name: str = "refresh") -> None:
        self._tasks: queue.SimpleQueue[Callable[[], None] | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._size = size
        self._lent = 0
        self._live = 0
        self._retire = 0
        self._closed = False
        self._name = name
        self._ids = itertools.count(1)
        with self._lock:
            self._apply()

    @property
    def size(self) -> int:
        return self._size

    @property
    def threads(self) -> int:
        """Threads that are, or will be, taking calls (retiring ones not counted)."""
        with self._lock:
            return self._live - self._retire

    def submit(self, fn: Callable[[], T]) -> Future[T]:
        future: Future[T] = Future()

        def task() -> None:
            if not future.set_running_or_notify_cancel():
                return
            try:
                result = fn()
            except BaseException as exc:  # handed to whoever waits for the future
                future.set_exception(exc)
            else:
                future.set_result(result)

        self._tasks.put(task)
        return future

    def resize(self, size: int) -> None:
        with self._lock:
            self._size = size
            self._apply()

    def lend(self, stuck: int) -> None:
        with self._lock:
            self._lent = stuck
            self._apply()

    def close(self) -> None:
        with self._lock:
            self._closed = True
            for _ in range(self._live):
                self._tasks.put(None)

    def _apply(self) -> None:
        if self._closed:
            return
        want = self._size + self._lent
        have = self._live - self._retire
        if want > have:
            kept = min(self._retire, want - have)
            self._retire -= kept
            for _ in range(want - have - kept):
                self._live += 1
                threading.Thread(target=self._work, name=f"{self._name}-{next(self._ids)}",
                                 daemon=True).start()
        elif want < have:
            self._retire += have - want
            for _ in range(have - want):
                self._tasks.put(None)

    def _work(self) -> None:
        while True:
            task = self._tasks.get()
            if task is not None and not self._closed:
                task()
            with self._lock:
                if self._closed or self._retire > 0:
                    if not self._closed:
                        self._retire -= 1
                    self._live -= 1
                    return


class Refresher:
    def __init__(self, config: Config, make_store: StoreFactory,
                 clock: Callable[[], float] = time.time,
                 on_snapshot: Callable[[Snapshot], None] | None = None,
                 monotonic: Callable[[], float] = time.monotonic,
                 large_reads: LargeReads | None = None,
                 push: Callable[[], PushState] | None = None,
                 requests: Callable[[], tuple[tuple[str, str, int], ...]] | None = None
                 ) -> None:
        self._make_store = make_store
        self._push = push
        self._requests = requests
        self._discovery: dict[DiscoverConfig, DiscoveryPolling] = {}
        self._clock = clock
        self._monotonic = monotonic
        self._on_snapshot = on_snapshot
        self._large_reads = large_reads or LargeReads()
        self._watchers: dict[str, ModelCache] = {}
        self._named: dict[tuple[str | None, str | None, str], str] = {}
        self._pool: WorkerPool | None = None
        self._inflight: dict[str, tuple[ModelCache, Future[ModelSnapshot]]] = {}
        self._published: dict[str, ModelSnapshot] = {}
        self._log = LogLimiter(clock=time.monotonic)
        self._kick = threading.Event()
        self._closing: Future[Any] = Future()
        self.config = config
        self.snapshot = Snapshot((), (), config.refresh_interval, config.rolling_window, clock(),
                                 iteration_stats=config.iteration_stats)

    def reconfigure(self, config: Config) -> None:
        """Use a new configuration now: the next cycle starts at once, applies the derivation
        settings to the models already watched (re-deriving their cached data without
        downloading it again) and the pool takes the new `refresh_workers`."""
        self.config = config
        if self._pool is not None:
            self._pool.resize(config.refresh_workers)
        for watcher in self._watchers.values():
            watcher.wake()
        for polling in self._discovery.values():
            polling.wake()
        self._kick.set()

    def pause(self, seconds: float) -> None:
        """Wait up to `seconds`; a reload or `close` ends the wait early."""
        self._kick.wait(seconds)
        self._kick.clear()

    def pending(self) -> list[str]:
        """Models with nothing published yet: their first refresh is still running."""
        return sorted(n for n in self._watchers if n not in self._published)

    @property
    def pool(self) -> WorkerPool | None:
        return self._pool

    def _settings(self) -> DeriveSettings:
        c = self.config
        return DeriveSettings(c.rolling_window, c.max_iterations, c.top_laps, c.max_object_bytes,
                              c.max_evaluation_runs, c.history_max_age, c.refresh_interval,
                              c.max_refresh_interval, tracks_dir=c.tracks_dir)

    def _discover(self, entry: DiscoverConfig) -> tuple[list[str], bool]:
        """The entry's models: listed again when its polling says so, else as last listed."""
        location = (entry.bucket, entry.directory)
        known = {p for (b, d, p) in self._named if (b, d) == location}
        polling = self._discovery.get(entry)
        if polling is None:
            polling = self._discovery[entry] = DiscoveryPolling(self._monotonic)
        elif not polling.due():
            return sorted(known | set(polling.models)), polling.ok
        try:
            found = discover_prefixes(entry, self._make_store(entry), known, polling)
        except SourceError as exc:
            polling.listed(False)
            if self._log.failed(("discovery", entry.source_label), exc.reason):
                log.warning("discovery of %s failed (%s: %s); keeping models found before",
                            entry.source_label, exc.reason, exc)
            return sorted(known), False
        polling.listed(True)
        polling.models = found
        if self._log.recovered(("discovery", entry.source_label)):
            log.info("discovery of %s recovered", entry.source_label)
        return found, True

    def _wanted(self) -> tuple[list[ModelConfig], list[tuple[str, bool]]]:
        """Configured models, then every discovered training under a unique name: configured
        names win, the first discover entry (in config order) holding a prefix gets the plain
        prefix, the same prefix elsewhere is named `<bucket>/<prefix>` (`<dir>/<prefix>`)."""
        config = self.config
        models = list(config.models)
        taken = {(m.bucket, m.directory, p) for m in models for p in m.rounds}
        names = {m.name for m in models}
        named: dict[tuple[str | None, str | None, str], str] = {}
        discovery: list[tuple[str, bool]] = []
        self._discovery = {e: p for e, p in self._discovery.items() if e in config.discover}
        for entry in config.discover:
            found, ok = self._discover(entry)
            discovery.append((entry.source_label, ok))
            for prefix in found:
                key = (entry.bucket, entry.directory, prefix)
                if key in taken:
                    continue
                taken.add(key)
                if _NOT_UTF8.search(prefix):
                    if self._log.failed(("utf-8", key), "utf-8"):
                        log.warning("discovery of %s: skipping folder %r: its name is not "
                                    "UTF-8, which a model name must be", entry.source_label,
                                    prefix.encode("utf-8", "surrogateescape"))
                    continue
                if _CONTROL.search(prefix):
                    if self._log.failed(("control", key), "control"):
                        log.warning("discovery of %s: skipping prefix %r: it holds control "
                                    "characters, which cannot be a model name",
                                    entry.source_label, prefix)
                    continue
                name = prefix if prefix not in names else qualified_name(entry, prefix)
                if name in names:
                    if self._log.failed(("clash", key), "clash"):
                        log.warning("discovery of %s: skipping prefix %s: both %r and %r are "
                                    "names of other models", entry.source_label, prefix, prefix,
                                    name)
                    continue
                names.add(name)
                named[key] = name
                if self._named.get(key) != name:
                    if name == prefix:
                        log.info("discovered model %s in %s", name, entry.source_label)
                    else:
                        log.info("discovered model %s in %s: its prefix %s is already the name "
                                 "of another model, so it is exported as %s", name,
                                 entry.source_label, prefix, name)
                models.append(ModelConfig(name=name, rounds=(prefix,), bucket=entry.bucket,
                                          directory=entry.directory))
        self._named = named
        return [m for m in models if owned(m, config.shard)], discovery

    def refresh_once(self, timeout: float | None = None) -> Snapshot:
        """Refresh every model in parallel and publish a new snapshot.

        Waits at most `timeout` (default: refresh_interval) for the models; one still running
        then (a slow endpoint, its timeouts) keeps its previous data in this snapshot and goes
        on in the background, so it never holds back the others' new data. One stuck past its
        deadline is published as failing with reason `timeout`.
        """
        models, discovery = self._wanted()
        settings = self._settings()
        watchers: dict[str, ModelCache] = {}
        for m in models:
            w = self._watchers.get(m.name)
            if w is None or w.model != m:
                w = ModelCache(m, self._make_store(m), settings, clock=self._clock,
                                 monotonic=self._monotonic, large_reads=self._large_reads)
            else:
                w.reconfigure(settings)
            watchers[m.name] = w
        self._watchers = watchers
        if self._pool is None:
            self._pool = WorkerPool(self.config.refresh_workers)
        for name, w in watchers.items():
            running = self._inflight.get(name)
            due = w.due() or name not in self._published  # else it keeps what it published
            if (running is None or running[0] is not w) and due:
                self._inflight[name] = (w, self._pool.submit(w.refresh))
        self._wait(self.config.refresh_interval if timeout is None else timeout)
        stuck = 0
        for name, (w, future) in list(self._inflight.items()):
            if future.done():
                del self._inflight[name]
                if watchers.get(name) is w:
                    self._published[name] = future.result()
            elif w.overdue():
                stuck += 1
                if watchers.get(name) is w:
                    self._published[name] = w.timed_out()
        self._pool.lend(stuck)
        self._published = {n: m for n, m in self._published.items() if n in watchers}
        slow = sorted(n for n, (w, _) in self._inflight.items()
                      if n in watchers and not w.overdue())
        if slow and self._log.failed(("slow",), "slow"):
            log.warning("refresh of %d model(s) (%s) takes longer than refresh_interval %gs; "
                        "their previous data is served until they finish (logged again in 10 "
                        "minutes if it goes on)", len(slow), ", ".join(slow[:5]),
                        self.config.refresh_interval)
        snap = Snapshot(tuple(self._published.get(n) or w.placeholder()
                              for n, w in watchers.items()),
                        tuple(discovery), self.config.refresh_interval,
                        self.config.rolling_window, self._clock(),
                        iteration_stats=self.config.iteration_stats,
                        push=self._push() if self._push is not None else None,
                        s3_requests=self._requests() if self._requests is not None else ())
        self.snapshot = snap
        if self._on_snapshot is not None:
            self._on_snapshot(snap)
        return snap

    def _wait(self, timeout: float) -> None:
        """Until every running refresh has finished or is stuck past its deadline, at most
        `timeout`; `close` ends it at once."""
        deadline = time.monotonic() + timeout
        while not self._closing.done():
            running = [(w, f) for w, f in self._inflight.values() if not f.done()]
            left = deadline - time.monotonic()
            if not running or left <= 0 or all(w.overdue() for w, _ in running):
                return
            due = [w.deadline_in() for w, _ in running]
            nap = min([left, _POLL, *(max(d, 0.0) + 0.01 for d in due if d is not None)])
            waited: list[Future[Any]] = [f for _, f in running]
            wait([*waited, self._closing], timeout=nap, return_when=FIRST_COMPLETED)

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
            if not stop.is_set():
                self.pause(max(0.0, interval - elapsed))

    def close(self) -> None:
        """Stop waiting for refreshes; stuck ones are left to their daemon threads."""
        if not self._closing.done():
            self._closing.set_result(None)
        self._kick.set()
        if self._pool is not None:
            self._pool.close()
