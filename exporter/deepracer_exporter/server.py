"""HTTP: `/metrics` serves the exposition rendered once per refresh; scrapes never touch S3.

Rendering happens when a snapshot is swapped in (exposition.py), so a scrape is a lookup of
ready bytes (plain or gzip), whatever the number of concurrent scrapers. Only the small "live"
collectors (process and platform) are read per scrape.

Connections cost a file descriptor, not a thread: one loop thread accepts them, waits for
requests on all of them at once (TLS handshakes included) and hands each complete request head
to a small pool of workers. A worker makes the response (references to ready bytes, no copy),
sends what the socket takes without blocking and leaves the rest to the loop, which sends it as
the client reads: a client that does not read holds a file descriptor, never a worker, and
nothing more is read from it until its response is out. Idle, half-sent and unread connections
time out, the number of open ones is bounded (the least recently active one that no worker holds
makes room for a new one), and running out of file descriptors is logged once and waited out
instead of retried in a busy loop.
"""

from __future__ import annotations

import contextlib
import errno
import io
import itertools
import logging
import re
import resource
import selectors
import socket
import ssl
import threading
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Any

from prometheus_client.exposition import CONTENT_TYPE_LATEST

from .exposition import Exposition
from .pages import Pages
from .webconfig import BasicAuth, WebConfig, ssl_context

log = logging.getLogger(__name__)

_HEAD_END = re.compile(rb"\r?\n\r?\n")
_OUT_OF_FILES = {errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM}
_TOO_LARGE = (b"HTTP/1.1 431 Request Header Fields Too Large\r\nConnection: close\r\n"
              b"Content-Length: 0\r\n\r\n")
_ALLOW = "GET, HEAD"
_IOV = 64  # buffers per sendmsg
_TLS_CHUNK = 64 * 1024  # bytes per TLS send; one that would block is retried with the same bytes
_READ = 16 * 1024  # bytes per recv
_FRESH = 0.1  # seconds a new connection has to send its request before it can be evicted


def accepts_gzip(header: str | None) -> bool:
    """Content negotiation (RFC 9110 12.5.3) between gzip and identity: gzip when the client
    gives it (or `*`) a non-zero weight at least as high as identity's. Tokens are
    case-insensitive; a weight that does not parse counts as 0."""
    weights: dict[str, float] = {}
    for item in (header or "").split(","):
        token, *params = (part.strip() for part in item.split(";"))
        token = token.lower()
        if not token:
            continue
        q = 1.0
        for param in params:
            name, _, value = param.partition("=")
            if name.strip().lower() == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0
        weights["gzip" if token == "x-gzip" else token] = q
    star = weights.get("*")
    gzip_q = weights.get("gzip", star if star is not None else 0.0)
    identity_q = weights.get("identity", star if star is not None and star > 0 else 1.0)
    return gzip_q > 0 and gzip_q >= identity_q


@dataclass(frozen=True)
class ServerLimits:
    """What clients may hold. `max_connections` 0: half the open-file limit, at most 1024
    (the rest is left for S3 connections and files)."""

    max_connections: int = 0
    workers: int = 8  # requests answered at once; a response is ready bytes, so few suffice
    idle_timeout: float = 60.0  # a connection with no request under way
    request_timeout: float = 10.0  # first byte (or TLS hello) to a complete request head
    send_timeout: float = 30.0  # to take a whole response (a client that stops reading)
    max_head_bytes: int = 64 * 1024
    backlog: int = 128  # socketserver's 5 made 50 simultaneous connects wait for SYN retries
    out_of_files_pause: float = 0.5  # accept() failing with EMFILE: wait this long

    def connections(self) -> int:
        if self.max_connections:
            return self.max_connections
        soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        return max(16, min(1024, soft // 2)) if soft != resource.RLIM_INFINITY else 1024


@dataclass(eq=False)
class _Connection:
    sock: socket.socket
    address: Any
    deadline: float
    active: float  # last time it did something (the idle one longest unused goes first)
    handshaking: bool = False
    busy: bool = False  # a worker is answering it
    registered: int = 0  # the selector events it waits for (0: not in the selector)
    closing: bool = False  # refused: what still arrives is read and dropped until EOF
    buffer: bytearray = field(default_factory=bytearray)
    output: deque[memoryview] = field(default_factory=deque)  # the response not yet sent
    keep: bool = False  # kept alive once the response is out


class _Output(io.BufferedIOBase):
    """`wfile` for a handler: keeps what it is given (the rendered parts are not copied)."""

    def __init__(self) -> None:
        self.parts: list[bytes] = []

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        self.parts.append(data if isinstance(data, bytes) else bytes(data))
        return len(self.parts[-1])


class _Handler(BaseHTTPRequestHandler):
    """Answers one request whose head the server has already read."""

    server: MetricsServer  # type: ignore[assignment]
    protocol_version = "HTTP/1.1"

    def __init__(self, sock: socket.socket, head: bytes, address: Any,
                 server: MetricsServer) -> None:
        self._head = head
        super().__init__(sock, address, server)  # type: ignore[arg-type]

    def setup(self) -> None:
        self.connection = self.request
        self.rfile = io.BytesIO(self._head)
        self.wfile = self.output = _Output()

    def handle(self) -> None:
        self.handle_one_request()
        headers = getattr(self, "headers", None)  # absent when the request line was bad
        if headers is not None and (headers.get("Content-Length", "0") != "0"
                                    or "Transfer-Encoding" in headers):
            self.close_connection = True  # a body is never read: do not parse it as a request

    def finish(self) -> None:
        self.wfile.flush()

    def do_GET(self) -> None:
        if self.path == "/-/healthy":  # liveness for container healthchecks: no data, no auth
            self._send(200, "text/plain; charset=utf-8", (b"OK\n",))
            return
        auth = self.server.auth
        if auth is not None and not auth.check(self.headers.get("Authorization")):
            self._send(401, "text/plain; charset=utf-8", (b"unauthorized\n",),
                       extra={"WWW-Authenticate": auth.challenge})
            return
        path = self.path.split("?", 1)[0]
        gzipped = accepts_gzip(self.headers.get("Accept-Encoding"))
        if path == "/metrics":
            self._send(200, CONTENT_TYPE_LATEST, self.server.exposition.body(gzipped),
                       "gzip" if gzipped else None, extra={"Vary": "Accept-Encoding"})
        elif (page := self.server.pages.get(self.server.exposition.snapshot, path)) is not None:
            self._send(page.status, "text/html; charset=utf-8",
                       (page.gzipped if gzipped else page.plain,), "gzip" if gzipped else None,
                       extra=dict(page.headers))
        else:
            self._send(404, "text/plain; charset=utf-8", (b"not found; see /metrics\n",))

    def do_HEAD(self) -> None:
        """GET's status and headers without the body (link checkers, uptime monitors)."""
        self.do_GET()

    def _not_allowed(self) -> None:
        self.close_connection = True
        self._send(405, "text/plain; charset=utf-8", (b"method not allowed\n",),
                   extra={"Allow": _ALLOW})

    do_POST = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = _not_allowed

    def _send(self, code: int, ctype: str, body: tuple[bytes, ...],
              encoding: str | None = None, extra: dict[str, str] | None = None) -> None:
        self.send_response(code)
        for name, val in {**self.server.headers, **(extra or {})}.items():
            self.send_header(name, val)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(sum(len(part) for part in body)))
        if encoding:
            self.send_header("Content-Encoding", encoding)
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.writelines(body)

    def log_message(self, format: str, *args: Any) -> None:
        """Scrapes are not logged: one line per scrape would drown the useful lines."""


class MetricsServer:
    """HTTP(S) server with `serve_forever`, `shutdown`, `server_close` and `server_address`
    like socketserver's. TLS and basic auth come from an exporter-toolkit style web config."""

    def __init__(self, host: str, port: int, exposition: Exposition,
                 web: WebConfig | None = None, limits: ServerLimits | None = None) -> None:
        self.exposition = exposition
        self.pages = Pages()  # / and /models/<name>, from the snapshot /metrics serves
        self.ssl_ctx = ssl_context(web) if web is not None else None
        self.auth = BasicAuth.from_config(web) if web is not None else None
        self.headers: dict[str, str] = dict(web.headers) if web is not None else {}
        self.limits = limits or ServerLimits()
        self._max_connections = self.limits.connections()
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.socket = socket.create_server((host, port), family=family,
                                           backlog=self.limits.backlog)
        self.socket.setblocking(False)
        self.server_address: tuple[Any, ...] = self.socket.getsockname()
        # Made now, not in serve_forever: when files run out, the loop must still run.
        self._selector = selectors.DefaultSelector()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._selector.register(self._wake_r, selectors.EVENT_READ, None)
        self._selector.register(self.socket, selectors.EVENT_READ, self.socket)
        self._connections: dict[socket.socket, _Connection] = {}
        self._returned: deque[tuple[_Connection, int]] = deque()
        self._pool = ThreadPoolExecutor(self.limits.workers, thread_name_prefix="http")
        self._stop = threading.Event()
        self._stopped = threading.Event()
        self._stopped.set()
        self._accept_paused_until: float | None = None
        self._listening = True  # the listening socket is in the selector
        self._waiting: deque[tuple[socket.socket, Any]] = deque()  # accepted, not yet admitted
        self._out_of_files = False

    # --- the loop ----------------------------------------------------------------------

    def serve_forever(self) -> None:
        self._stopped.clear()
        try:
            next_sweep = 0.0
            while not self._stop.is_set():
                for key, _ in self._selector.select(timeout=0.25):
                    if key.data is self.socket:
                        self._accept()
                    elif key.data is None:
                        self._take_returned()
                    elif key.data.output:
                        self._flush(key.data)
                    else:
                        self._on_ready(key.data)
                now = time.monotonic()
                if self._accept_paused_until is not None and now >= self._accept_paused_until:
                    self._accept_paused_until = None
                    self._listen(not self._waiting)
                if now >= next_sweep:
                    self._expire(now)
                    self._admit_waiting()
                    next_sweep = now + 0.25
        finally:
            self._stopped.set()

    def shutdown(self) -> None:
        """Stop serve_forever and wait for it to return."""
        self._stop.set()
        self._wake()
        self._stopped.wait()

    def server_close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        for conn in list(self._connections.values()):
            conn.sock.close()  # a worker still writing gets an error and drops it
        self._connections.clear()
        for sock, _ in self._waiting:
            sock.close()
        self._selector.close()
        self.socket.close()
        self._wake_r.close()
        self._wake_w.close()

    def _wake(self) -> None:
        with contextlib.suppress(OSError):  # full (a wake-up is pending anyway) or closed
            self._wake_w.send(b"x")

    def _listen(self, on: bool) -> None:
        """Accept connections, or leave them waiting in the listen backlog."""
        if on != self._listening:
            if on:
                self._selector.register(self.socket, selectors.EVENT_READ, self.socket)
            else:
                self._selector.unregister(self.socket)
            self._listening = on

    def _accept(self) -> None:
        for _ in range(64):  # a burst, then back to the other connections
            if not self._listening:
                return
            try:
                sock, address = self.socket.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                if exc.errno in _OUT_OF_FILES:
                    self._pause_accepting(exc)
                return  # ECONNABORTED and the like: the client is gone
            if self._out_of_files:
                self._out_of_files = False
                log.warning("accepting connections again")
            self._admit(sock, address)

    def _pause_accepting(self, exc: OSError) -> None:
        """Out of file descriptors: the pending connection stays readable, so retrying at
        once would spin. Free the idle connection longest unused and wait a moment."""
        if not self._out_of_files:
            self._out_of_files = True
            log.error("cannot accept connections: %s (open connections: %d); retrying "
                      "every %gs", exc.strerror or exc, len(self._connections),
                      self.limits.out_of_files_pause)
        self._listen(False)
        self._accept_paused_until = time.monotonic() + self.limits.out_of_files_pause
        self._evict()

    def _admit(self, sock: socket.socket, address: Any) -> None:
        if len(self._connections) >= self._max_connections and not self._evict():
            # Every connection is being answered (for a moment only: a worker never waits for
            # a client) or has just arrived: this one is admitted when there is room, the next
            # ones wait in the listen backlog.
            self._waiting.append((sock, address))
            self._listen(False)
            return
        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # headers and body at once
        now = time.monotonic()
        conn = _Connection(sock, address, now + self.limits.idle_timeout, now)
        if self.ssl_ctx is not None:
            try:
                conn.sock = self.ssl_ctx.wrap_socket(sock, server_side=True,
                                                     do_handshake_on_connect=False)
            except (ssl.SSLError, OSError) as exc:
                log.debug("TLS set-up failed: %s", exc)
                sock.close()
                return
            conn.handshaking = True
            conn.deadline = now + self.limits.request_timeout
        self._connections[conn.sock] = conn
        self._want(conn, selectors.EVENT_READ)

    def _evict(self) -> bool:
        """Close a connection no worker holds: a client not reading its response first, then
        an idle one, the one longest unused of them; False when every one is busy or new
        (under a flood of new connections, each would close the one before it before its
        request is read)."""
        fresh = time.monotonic() - _FRESH
        waiting = [c for c in self._connections.values() if not c.busy and c.active < fresh]
        if not waiting:
            return False
        conn = min(waiting, key=lambda c: (not c.output, c.active))
        with contextlib.suppress(OSError):  # a lingering close, as in _refuse: what the
            for _ in range(16):  # client sent is dropped, so that it sees an end, not a reset
                if not conn.sock.recv(65536):
                    break
        self._close(conn)
        return True

    def _want(self, conn: _Connection, events: int) -> None:
        """Wait for `events` on the connection (0: not at all)."""
        if events == conn.registered:
            return
        if not conn.registered:
            self._selector.register(conn.sock, events, conn)
        elif not events:
            self._selector.unregister(conn.sock)
        else:
            self._selector.modify(conn.sock, events, conn)
        conn.registered = events

    def _close(self, conn: _Connection) -> None:
        self._connections.pop(conn.sock, None)
        self._want(conn, 0)
        conn.output.clear()
        conn.sock.close()

    def _expire(self, now: float) -> None:
        for conn in [c for c in self._connections.values() if not c.busy and c.deadline < now]:
            self._close(conn)

    def _on_ready(self, conn: _Connection) -> None:
        now = time.monotonic()
        conn.active = now
        if conn.handshaking and not self._handshake(conn):
            return
        try:
            while True:
                data = conn.sock.recv(_READ)
                if not data:
                    self._close(conn)
                    return
                if not conn.buffer:
                    conn.deadline = now + self.limits.request_timeout
                if conn.closing:
                    continue
                conn.buffer += data
                # One complete head is enough: pipelined requests wait in the socket (a
                # client that sends many and never reads holds at most _READ bytes here).
                if (_HEAD_END.search(conn.buffer, max(0, len(conn.buffer) - len(data) - 3))
                        or len(conn.buffer) > self.limits.max_head_bytes):
                    break
        except (BlockingIOError, ssl.SSLWantReadError, ssl.SSLWantWriteError):
            pass
        except OSError as exc:  # reset, or TLS that ends mid-record: the client is gone
            log.debug("connection from %s dropped: %s", conn.address, exc)
            self._close(conn)
            return
        self._dispatch(conn)

    def _handshake(self, conn: _Connection) -> bool:
        """One step of a TLS handshake; True once it is done."""
        assert isinstance(conn.sock, ssl.SSLSocket)
        try:
            conn.sock.do_handshake()
        except ssl.SSLWantReadError:
            self._want(conn, selectors.EVENT_READ)
            return False
        except ssl.SSLWantWriteError:
            self._want(conn, selectors.EVENT_WRITE)
            return False
        except (ssl.SSLError, OSError) as exc:  # plain HTTP, an untrusted client certificate
            log.debug("TLS handshake with %s failed: %s", conn.address, exc)
            self._close(conn)
            return False
        conn.handshaking = False
        conn.deadline = time.monotonic() + self.limits.idle_timeout
        self._want(conn, selectors.EVENT_READ)
        return True

    def _dispatch(self, conn: _Connection) -> None:
        """Hand a complete request head to a worker; refuse one that grows too large."""
        end = _HEAD_END.search(conn.buffer)
        if (end.end() if end else len(conn.buffer)) > self.limits.max_head_bytes:
            self._refuse(conn)
            return
        if end is None:
            return
        head = bytes(conn.buffer[:end.end()])
        del conn.buffer[:end.end()]
        conn.busy = True
        self._want(conn, 0)  # nothing more is read until this response is out
        self._pool.submit(self._answer, conn, head)

    def _refuse(self, conn: _Connection) -> None:
        """431, then a graceful close: the rest of the head is read and dropped (closing with
        unread bytes would reset the connection and the client might miss the answer)."""
        conn.buffer.clear()
        conn.closing = True
        conn.deadline = time.monotonic() + self.limits.request_timeout
        try:
            conn.sock.send(_TOO_LARGE)
            conn.sock.shutdown(socket.SHUT_WR)
        except OSError:
            self._close(conn)

    def _take_returned(self) -> None:
        try:
            while self._wake_r.recv(4096):
                pass
        except BlockingIOError:
            pass
        while self._returned:
            conn, events = self._returned.popleft()
            conn.busy = False
            if conn.sock not in self._connections:
                self._close(conn)
            elif events:
                self._want(conn, events)  # the rest of the response, as the client reads
            else:
                self._answered(conn)
        self._admit_waiting()

    def _admit_waiting(self) -> None:
        """Admit the connection waiting for room, if there is room now; then accept again."""
        while self._waiting and (len(self._connections) < self._max_connections
                                 or self._evict()):
            self._admit(*self._waiting.popleft())
        if not self._waiting and self._accept_paused_until is None:
            self._listen(True)

    def _flush(self, conn: _Connection) -> None:
        try:
            events = self._send_ready(conn)
        except OSError as exc:  # reset, or gone
            log.debug("connection from %s dropped while answering: %s", conn.address, exc)
            self._close(conn)
            return
        conn.active = time.monotonic()
        if events:
            self._want(conn, events)
        else:
            self._answered(conn)

    def _answered(self, conn: _Connection) -> None:
        """The response is out: close, or wait for the next request."""
        if not conn.keep:
            self._close(conn)
            return
        now = time.monotonic()
        conn.active = now
        conn.deadline = now + (self.limits.request_timeout if conn.buffer
                               else self.limits.idle_timeout)
        self._want(conn, selectors.EVENT_READ)
        if isinstance(conn.sock, ssl.SSLSocket) and conn.sock.pending():
            self._on_ready(conn)  # decrypted bytes the selector cannot see
        else:
            self._dispatch(conn)  # a pipelined request may be waiting in the buffer

    @staticmethod
    def _send_ready(conn: _Connection) -> int:
        """Send what the socket takes now, without blocking: 0 once the response is out, else
        the selector event to wait for before sending more."""
        out = conn.output
        while out:
            try:
                if isinstance(conn.sock, ssl.SSLSocket):
                    sent = conn.sock.send(out[0][:_TLS_CHUNK])
                else:
                    sent = conn.sock.sendmsg(list(itertools.islice(out, _IOV)))
            except (BlockingIOError, ssl.SSLWantWriteError):
                return selectors.EVENT_WRITE
            except ssl.SSLWantReadError:
                return selectors.EVENT_READ
            while sent:
                size = len(out[0])
                if sent < size:
                    out[0] = out[0][sent:]
                    break
                out.popleft()
                sent -= size
        return 0

    # --- the workers -------------------------------------------------------------------

    def _answer(self, conn: _Connection, head: bytes) -> None:
        """Make the response and send what the socket takes now; the loop sends the rest."""
        events = 0
        try:
            handler = _Handler(conn.sock, head, conn.address, self)
            conn.keep = not handler.close_connection
            conn.output.extend(memoryview(part) for part in handler.output.parts if part)
            conn.deadline = time.monotonic() + self.limits.send_timeout
            events = self._send_ready(conn)
        except (OSError, ValueError) as exc:  # hung up, reset, socket closed
            log.debug("connection from %s dropped while answering: %s", conn.address, exc)
            conn.keep = False
            conn.output.clear()
        except Exception:
            log.exception("error answering a request from %s", conn.address)
            conn.keep = False
            conn.output.clear()
        self._returned.append((conn, events))
        self._wake()
