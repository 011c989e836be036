"""What /metrics serves: the exposition rendered once per refresh, kept as ready bytes.

Rendering happens when a snapshot is swapped in (`Exposition.update`); a scrape only looks the
bytes up (plain, or gzip once a scraper has asked for it) and reads the small "live" collectors
(process and platform). `--once` prints the same bytes without loading the HTTP server.
"""

from __future__ import annotations

import gzip
import threading
from collections.abc import Callable

from prometheus_client import CollectorRegistry, generate_latest

from .collector import SnapshotCollector
from .render import IterationRenderer, SimtraceRenderer
from .snapshot import Snapshot


class Rendered:
    """A body as parts, served with one writelines: the models' cached chunks are not copied
    into one large string (with 100 models x 500 iterations that string is 300 MB). The gzip
    parts (concatenated gzip members: one valid stream, RFC 1952) are made when first asked for."""

    def __init__(self, plain_parts: tuple[bytes, ...],
                 make_gzip: Callable[[], tuple[bytes, ...]]) -> None:
        self.plain_parts = plain_parts
        self._make_gzip = make_gzip
        self._gzip: tuple[bytes, ...] | None = None
        self._lock = threading.Lock()

    @property
    def gzip_ready(self) -> bool:
        """Whether the gzip parts have been made (a body nobody asked gzip for never is)."""
        return self._gzip is not None

    @property
    def gzip_parts(self) -> tuple[bytes, ...]:
        with self._lock:
            if self._gzip is None:
                self._gzip = self._make_gzip()
            return self._gzip

    @property
    def plain(self) -> bytes:
        return b"".join(self.plain_parts)

    @property
    def gzipped(self) -> bytes:
        return b"".join(self.gzip_parts)


class Exposition:
    """Holds the latest rendered exposition; `update` renders a new snapshot once.

    `registry` is rendered with each snapshot; `live` (process and platform collectors) is
    rendered at every scrape, so `process_*` is the value at scrape time, not at the last
    refresh. `rendered` holds the per-snapshot parts only; `body` puts both together."""

    def __init__(self, registry: CollectorRegistry | None = None,
                 live: CollectorRegistry | None = None) -> None:
        self._snapshot: Snapshot | None = None
        self.registry = registry if registry is not None else CollectorRegistry()
        self.simtrace = SimtraceRenderer()
        self.registry.register(SnapshotCollector(self._current, self.simtrace.samples))
        self.live = live
        self._lock = threading.Lock()
        self.iterations = IterationRenderer()
        self.rendered = Rendered((), lambda: (gzip.compress(b""),))
        self._gzip_wanted = False  # set by the first gzip request; then compressed eagerly

    @property
    def snapshot(self) -> Snapshot | None:
        """The snapshot `rendered` was made from (None before the first update)."""
        return self._snapshot

    def _current(self) -> Snapshot:
        assert self._snapshot is not None
        return self._snapshot

    def update(self, snapshot: Snapshot) -> None:
        with self._lock:  # one render at a time; readers use the previous bytes meanwhile
            self._snapshot = snapshot
            simtrace = self.simtrace.render(snapshot)  # before the collector counts its samples
            body = generate_latest(self.registry)
            families = self.iterations.render(snapshot)
            rendered = Rendered((body, *simtrace.plain, *families.plain),
                                lambda: (gzip.compress(body, 6), *simtrace.gzipped(),
                                         *families.gzipped()))
            if self._gzip_wanted:  # compress here, in the refresh thread, not in a scrape
                rendered.gzip_parts  # noqa: B018
            self.rendered = rendered

    def body(self, gzipped: bool) -> tuple[bytes, ...]:
        """The parts of one response: the live collectors, read now, then the cached parts."""
        rendered = self.rendered
        self._gzip_wanted = self._gzip_wanted or gzipped
        if self.live is None:
            return rendered.gzip_parts if gzipped else rendered.plain_parts
        live = generate_latest(self.live)
        if not live:
            return rendered.gzip_parts if gzipped else rendered.plain_parts
        if gzipped:
            return (gzip.compress(live, 1), *rendered.gzip_parts)
        return (live, *rendered.plain_parts)
