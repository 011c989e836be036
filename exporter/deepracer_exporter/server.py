"""HTTP: `/metrics` serves the exposition rendered once per refresh; scrapes never touch S3.

Rendering happens when a snapshot is swapped in (`Exposition.update`), so a scrape is a lookup
of ready bytes (plain or gzip), whatever the number of concurrent scrapers.
"""

from __future__ import annotations

import gzip
import sys
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from .collector import SnapshotCollector
from .pages import Pages
from .render import IterationRenderer
from .snapshot import Snapshot
from .webconfig import BasicAuth, WebConfig, ssl_context, tls_handshake


@dataclass(frozen=True)
class Rendered:
    """A body as parts, served with one writelines: the models' cached chunks are not copied
    into one large string (with 100 models x 500 iterations that string is 300 MB)."""

    plain_parts: tuple[bytes, ...]
    gzip_parts: tuple[bytes, ...]  # concatenated gzip members: one valid stream (RFC 1952)

    @property
    def plain(self) -> bytes:
        return b"".join(self.plain_parts)

    @property
    def gzipped(self) -> bytes:
        return b"".join(self.gzip_parts)


class Exposition:
    """Holds the latest rendered exposition; `update` renders a new snapshot once."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self._snapshot: Snapshot | None = None
        self.registry = registry if registry is not None else CollectorRegistry()
        self.registry.register(SnapshotCollector(self._current))
        self._lock = threading.Lock()
        self.iterations = IterationRenderer()
        self.rendered = Rendered((), (gzip.compress(b""),))

    def _current(self) -> Snapshot:
        assert self._snapshot is not None
        return self._snapshot

    def update(self, snapshot: Snapshot) -> None:
        with self._lock:  # one render at a time; readers use the previous bytes meanwhile
            self._snapshot = snapshot
            body = generate_latest(self.registry)
            plain, gzipped = self.iterations.render(snapshot)
            self.rendered = Rendered((body, *plain), (gzip.compress(body, 6), *gzipped))


class _Handler(BaseHTTPRequestHandler):
    server: MetricsServer
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and a small body go out at once, not 40 ms apart

    def do_GET(self) -> None:
        auth = self.server.auth
        if auth is not None and not auth.check(self.headers.get("Authorization")):
            self._send(401, "text/plain; charset=utf-8", (b"unauthorized\n",),
                       extra={"WWW-Authenticate": auth.challenge})
            return
        path = self.path.split("?", 1)[0]
        if path == "/metrics":
            rendered = self.server.exposition.rendered
            accept = self.headers.get("Accept-Encoding", "")
            parts, encoding = ((rendered.gzip_parts, "gzip") if "gzip" in accept
                               else (rendered.plain_parts, None))
            self._send(200, CONTENT_TYPE_LATEST, parts, encoding)
        elif (page := self.server.pages.get(self.server.exposition._snapshot, path)) is not None:
            gzipped = "gzip" in self.headers.get("Accept-Encoding", "")
            self._send(page.status, "text/html; charset=utf-8",
                       (page.gzipped if gzipped else page.plain,), "gzip" if gzipped else None,
                       extra=dict(page.headers))
        else:
            self._send(404, "text/plain; charset=utf-8", (b"not found; see /metrics\n",))

    def do_HEAD(self) -> None:
        """GET's status and headers without the body (link checkers, uptime monitors)."""
        self.do_GET()

    def _send(self, code: int, ctype: str, body: tuple[bytes, ...],
              encoding: str | None = None, extra: dict[str, str] | None = None) -> None:
        self.send_response(code)
        for name, val in {**self.server.headers, **(extra or {})}.items():
            self.send_header(name, val)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(sum(len(part) for part in body)))
        if encoding:
            self.send_header("Content-Encoding", encoding)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.writelines(body)

    def log_message(self, format: str, *args: Any) -> None:
        """Scrapes are not logged: one line per scrape would drown the useful lines."""


class MetricsServer(ThreadingHTTPServer):
    """Threaded HTTP(S) server; TLS and basic auth come from an exporter-toolkit style web
    config. The TLS handshake runs in the connection's own thread, so a client that connects
    and sends nothing cannot hold up other scrapes."""

    daemon_threads = True

    def __init__(self, host: str, port: int, exposition: Exposition,
                 web: WebConfig | None = None) -> None:
        self.exposition = exposition
        self.pages = Pages()  # / and /models/<name>, from the snapshot /metrics serves
        self.ssl_ctx = ssl_context(web) if web is not None else None
        self.auth = BasicAuth.from_config(web) if web is not None else None
        self.headers: dict[str, str] = dict(web.headers) if web is not None else {}
        super().__init__((host, port), _Handler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A scraper that hangs up mid-request is not an error worth a traceback."""
        if not isinstance(sys.exc_info()[1], ConnectionError | TimeoutError):
            super().handle_error(request, client_address)

    def finish_request(self, request: Any, client_address: Any) -> None:
        if self.ssl_ctx is None:
            super().finish_request(request, client_address)
            return
        tls = tls_handshake(self.ssl_ctx, request, timeout=10.0)
        if tls is None:  # plain HTTP, a certificate we do not accept, or a silent client
            return
        try:
            super().finish_request(tls, client_address)
        finally:
            self.shutdown_request(tls)
