"""Wiring: config -> stores -> refresher -> exposition -> HTTP server."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry

from .cloudwatchlogs import CloudWatchLogs
from .cloudwatchlogs import make_client as make_logs_client
from .config import Config, DiscoverConfig, ModelConfig, S3Settings
from .dockerlogs import DockerLogs, Engine
from .exposition import Exposition
from .refresher import Refresher
from .snapshot import Snapshot
from .sources import DirectoryStore, ObjectStore
from .telegraf_listener import PushReceiver, UdpListener, trainer_state

if TYPE_CHECKING:
    from .server import MetricsServer
    from .webconfig import WebConfig

log = logging.getLogger("deepracer_exporter")


def make_s3_client(s3: S3Settings) -> Any:
    """An S3 client with bounded timeouts and retries. botocore is imported only here and in
    s3store, on the first S3 model: a directory-only exporter starts without it."""
    from .s3store import make_client

    return make_client(s3)


class StoreFactory:
    """Creates stores for models and discover entries; one S3 client is shared by all."""

    def __init__(self, s3_client: Callable[[], Any]) -> None:
        self._s3_client = s3_client
        self._client: Any = None
        self._request_seconds = 60.0
        self._lock = threading.Lock()
        self._requests: Any = None  # s3store.RequestCounter, with the client

    def requests(self) -> tuple[tuple[str, str, int], ...]:
        """S3 requests sent so far by (operation, status); none before the first S3 store."""
        return self._requests.counts() if self._requests is not None else ()

    def __call__(self, where: ModelConfig | DiscoverConfig) -> ObjectStore:
        if where.bucket is None:
            return DirectoryStore(where.directory or ".")
        from .s3store import RequestCounter, S3Store, request_seconds

        with self._lock:
            if self._client is None:
                self._client = self._s3_client()
                if hasattr(self._client, "meta"):
                    self._request_seconds = request_seconds(self._client)
                    self._requests = RequestCounter()
                    self._requests.watch(self._client)
        return S3Store(self._client, where.bucket, self._request_seconds)


# Keys read once at start: a reload logs their change instead of applying it.
RESTART_KEYS: dict[str, Callable[[Config], object]] = {
    "listen": lambda c: (c.listen_host, c.listen_port),
    "s3": lambda c: c.s3,
    "telegraf": lambda c: c.telegraf_listen,
    "docker": lambda c: c.docker,
    "cloudwatch": lambda c: c.cloudwatch,
}


def latest_iteration(snapshot: Snapshot, prefix: str) -> int | None:
    """The latest training iteration of the watched model whose latest round is `prefix` (what
    DRfC's containers tag their pushed lines with), None when no model matches yet."""
    for m in snapshot.models:
        if m.prefix == prefix and m.derived is not None and m.derived.latest_iteration >= 0:
            return m.derived.latest_iteration
    return None


class Exporter:
    """The running service: background refresher plus HTTP server (and, when configured, the
    metrics-push listener), started and stopped as one.

    `registry` holds collectors read at every scrape (process and platform metrics); the
    snapshot's families are rendered once per refresh."""

    def __init__(self, config: Config, stores: Callable[[ModelConfig | DiscoverConfig],
                                                          ObjectStore],
                 registry: CollectorRegistry | None = None,
                 clock: Callable[[], float] = time.time, web: WebConfig | None = None,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self.exposition = Exposition(CollectorRegistry(), live=registry)
        self._web = web
        self._monotonic = monotonic
        self.push: UdpListener | None = None  # bound by start(serve=True), not by --once
        self._receiver: PushReceiver | None = None
        self._prefixes: tuple[Snapshot | None, frozenset[str]] = (None, frozenset())
        if config.telegraf_listen is not None:
            self._receiver = PushReceiver(
                lambda prefix: latest_iteration(self.snapshot, prefix), clock,
                max_iterations=config.max_iterations, watched=self._watched)
        self.docker: DockerLogs | None = None  # started by start(serve=True), not by --once
        if config.docker is not None:
            d = config.docker
            self.docker = DockerLogs(Engine(d.socket), d.containers, poll_interval=d.poll_interval,
                                     max_iterations=config.max_iterations, monotonic=monotonic)
        self.cloudwatch: CloudWatchLogs | None = None  # started with the docker source
        if config.cloudwatch is not None:
            from .s3store import translate_s3

            cw = config.cloudwatch
            self.cloudwatch = CloudWatchLogs(
                make_logs_client(cw.region, cw.profile, cw.endpoint_url), translate_s3,
                cw.log_group, poll_interval=cw.poll_interval,
                max_iterations=config.max_iterations, monotonic=monotonic)
        receiver, docker, cloudwatch = self._receiver, self.docker, self.cloudwatch
        trainer = None if receiver is None and docker is None and cloudwatch is None else (
            lambda: trainer_state(receiver.state() if receiver else None,
                                  docker.state() if docker else None,
                                  cloudwatch.state() if cloudwatch else None))
        self.refresher = Refresher(config, stores, clock=clock, on_snapshot=self.exposition.update,
                                   monotonic=monotonic, push=trainer,
                                   requests=stores.requests
                                   if isinstance(stores, StoreFactory) else None)
        self.server: MetricsServer | None = None
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    @property
    def snapshot(self) -> Snapshot:
        return self.refresher.snapshot

    def _watched(self, prefix: str) -> bool:
        """Whether a watched model's latest round is `prefix` (one set per snapshot)."""
        snapshot = self.snapshot
        if self._prefixes[0] is not snapshot:
            self._prefixes = (snapshot, frozenset(m.prefix for m in snapshot.models))
        return prefix in self._prefixes[1]

    @property
    def port(self) -> int:
        assert self.server is not None
        return int(self.server.server_address[1])

    def start(self, serve: bool = True) -> None:
        """First refresh in the foreground (so the first scrape has data), then background."""
        config = self.refresher.config
        if serve and self._receiver is not None and config.telegraf_listen is not None:
            host, port = config.telegraf_listen
            self.push = UdpListener(host, port, self._receiver, monotonic=self._monotonic)
            self.push.start()
        if serve and self.docker is not None:
            self.docker.start()
        if serve and self.cloudwatch is not None:
            self.cloudwatch.start()
        self.refresher.refresh_once()
        if serve:
            from .server import MetricsServer  # --once never loads the HTTP server

            self.server = MetricsServer(config.listen_host, config.listen_port, self.exposition,
                                        self._web)
            t = threading.Thread(target=self.server.serve_forever, name="http", daemon=True)
            t.start()
            self._threads.append(t)
        t = threading.Thread(target=self._loop, name="refresher", daemon=True)
        t.start()
        self._threads.append(t)

    def reload(self, config: Config) -> list[str]:
        """Apply a new configuration; returns (and logs by name) the changed keys that take
        effect only after a restart. Everything else applies from the refresh it starts now."""
        old = self.refresher.config
        restart = [key for key, value in RESTART_KEYS.items() if value(old) != value(config)]
        for key in restart:
            log.warning("reload: '%s' changed; it takes effect only after a restart", key)
        self.refresher.reconfigure(config)
        return restart

    def _loop(self) -> None:
        self.refresher.pause(self.refresher.config.refresh_interval)
        self.refresher.run(self._stop)

    def stop(self) -> None:
        """Stops serving and refreshing now: a refresh stuck in a read is not waited for."""
        self._stop.set()
        self.refresher.close()
        if self.push is not None:
            self.push.stop()
        if self.docker is not None:
            self.docker.stop()
        if self.cloudwatch is not None:
            self.cloudwatch.stop()
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
        for t in self._threads:
            t.join(timeout=5)
