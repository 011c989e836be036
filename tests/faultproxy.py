"""A real TCP proxy on loopback that puts S3 faults between the exporter and an S3 endpoint.

The exporter's `s3.endpoint_url` points at the proxy; the proxy relays HTTP/1.1 requests to the
upstream endpoint (moto's server) one request at a time, so a fault can be applied per request
even on kept-alive connections. Modes (switchable at any time, from any thread):

* `passthrough()`: relay every request.
* `refuse()`: the endpoint is down: the listening socket is closed (connect -> ECONNREFUSED) and
  every open connection is dropped. `passthrough()` listens again on the same port.
* `reset()`: connections are accepted and then reset without an answer.
* `delay(seconds, match)`: requests whose target contains `match` (all when None) are held for
  `seconds` before they are relayed; beyond the client's read timeout that is a timeout.
* `fail(count, status, code)`: the next `count` requests are answered by the proxy with an S3
  XML error (503 SlowDown, 500 InternalError, 403 AccessDenied, ...), later ones are relayed.
* `drip(seconds, match, part)`: answers to requests whose target contains `match` arrive one
  byte every `seconds` (below a client's read timeout, so no single read ever times out):
  part "body" relays the head at once and drips the real body; part "head" drips an endless
  response head (a request that never gets its answer).

Every request seen is recorded in `seen` as (method, target, action, held): `held` is how many
other requests were being held (delayed or dripping) when it arrived; `holding()` is that number
now.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

_REASONS = {403: "Forbidden", 404: "Not Found", 500: "Internal Server Error",
            503: "Slow Down"}
_MESSAGES = {
    "SlowDown": "Please reduce your request rate.",
    "InternalError": "We encountered an internal error. Please try again.",
    "AccessDenied": "Access Denied",
    "InvalidAccessKeyId": "The AWS Access Key Id you provided does not exist in our records.",
}


class _Closed(Exception):
    """The peer closed the connection (or it was dropped by a mode switch)."""


class _Reader:
    """Buffered reads of HTTP framing from a socket."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buf = b""

    def _fill(self) -> None:
        try:
            data = self.sock.recv(65536)
        except OSError as exc:
            raise _Closed() from exc
        if not data:
            raise _Closed()
        self.buf += data

    def until(self, marker: bytes, limit: int = 1 << 20) -> bytes:
        while marker not in self.buf:
            if len(self.buf) > limit:
                raise _Closed()
            self._fill()
        head, _, self.buf = self.buf.partition(marker)
        return head + marker

    def exactly(self, n: int) -> bytes:
        while len(self.buf) < n:
            self._fill()
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def rest(self) -> bytes:
        """Everything up to EOF (a response framed by closing the connection)."""
        try:
            while True:
                self._fill()
        except _Closed:
            pass
        out, self.buf = self.buf, b""
        return out


def _headers(head: bytes) -> tuple[str, dict[str, str]]:
    lines = head.decode("latin-1").split("\r\n")
    fields = {}
    for line in lines[1:]:
        name, sep, val = line.partition(":")
        if sep:
            fields[name.strip().lower()] = val.strip()
    return lines[0], fields


def _body(reader: _Reader, fields: dict[str, str]) -> bytes:
    """A message body framed by Content-Length or chunked transfer coding (raw bytes)."""
    if "chunked" in fields.get("transfer-encoding", "").lower():
        out = b""
        while True:
            line = reader.until(b"\r\n")
            out += line
            size = int(line.split(b";")[0].strip(), 16)
            if size == 0:
                while True:  # trailers up to the empty line
                    trailer = reader.until(b"\r\n")
                    out += trailer
                    if trailer == b"\r\n":
                        return out
            out += reader.exactly(size + 2)
    return reader.exactly(int(fields.get("content-length", "0") or 0))


def s3_error(status: int, code: str, resource: str = "/") -> bytes:
    """A complete HTTP response carrying an S3 XML error, as S3 sends it."""
    request_id = uuid.uuid4().hex[:16].upper()
    body = (f'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{code}</Code>'
            f"<Message>{_MESSAGES.get(code, code)}</Message><Resource>{resource}</Resource>"
            f"<RequestId>{request_id}</RequestId><HostId>faultproxy</HostId></Error>").encode()
    head = (f"HTTP/1.1 {status} {_REASONS.get(status, 'Error')}\r\n"
            f"Content-Type: application/xml\r\nContent-Length: {len(body)}\r\n"
            f"x-amz-request-id: {request_id}\r\nServer: AmazonS3\r\n"
            f"Date: {time.strftime('%a, %d %b %Y %H:%M:%S GMT', time.gmtime())}\r\n\r\n")
    return head.encode() + body


@dataclass(frozen=True)
class Seen:
    method: str
    target: str
    action: str  # relayed | failed | delayed | dripped | reset
    held: int = 0  # requests held (delayed or dripping) when this one arrived


class FaultProxy:
    def __init__(self, upstream: str) -> None:
        parts = urlsplit(upstream)
        self._upstream = (parts.hostname or "127.0.0.1", parts.port or 80)
        self._lock = threading.Lock()
        self._mode = "pass"
        self._delay = 0.0
        self._match: str | None = None
        self._fail_left = 0
        self._fail_status = 503
        self._fail_code = "SlowDown"
        self._drip_part = "body"
        self._held = 0
        self._conns: set[socket.socket] = set()
        self._listener: socket.socket | None = None
        self._stopped = threading.Event()
        self.port = 0
        self.seen: list[Seen] = []

    # -- lifecycle ---------------------------------------------------------------------------
    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> FaultProxy:
        self._listen()
        return self

    def stop(self) -> None:
        self._stopped.set()
        self._close_listener()
        self._drop_connections()

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _listen(self) -> None:
        with self._lock:
            if self._listener is not None:
                return
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(("127.0.0.1", self.port))
            sock.listen(128)
            self.port = sock.getsockname()[1]
            self._listener = sock
        threading.Thread(target=self._accept, args=(sock,), name="faultproxy-accept",
                         daemon=True).start()

    def _close_listener(self) -> None:
        with self._lock:
            sock, self._listener = self._listener, None
        if sock is not None:
            with contextlib.suppress(OSError):  # shutdown wakes the listener thread's accept()
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def _drop_connections(self) -> None:
        with self._lock:
            conns, self._conns = self._conns, set()
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
            conn.close()

    # -- modes -------------------------------------------------------------------------------
    def passthrough(self) -> None:
        with self._lock:
            self._mode, self._fail_left = "pass", 0
        self._listen()

    def refuse(self) -> None:
        with self._lock:
            self._mode = "refuse"
        self._close_listener()
        self._drop_connections()

    def reset(self) -> None:
        with self._lock:
            self._mode = "reset"
        self._listen()
        self._drop_connections()

    def delay(self, seconds: float, match: str | None = None) -> None:
        with self._lock:
            self._mode, self._delay, self._match = "delay", seconds, match
        self._listen()

    def fail(self, count: int, status: int = 503, code: str = "SlowDown") -> None:
        """Answer the next `count` requests with an S3 error, then relay again."""
        with self._lock:
            self._mode = "pass"
            self._fail_left, self._fail_status, self._fail_code = count, status, code
        self._listen()

    def drip(self, seconds: float, match: str | None = None, part: str = "body") -> None:
        with self._lock:
            self._mode, self._delay, self._match, self._drip_part = "drip", seconds, match, part
        self._listen()

    def holding(self) -> int:
        with self._lock:
            return self._held

    def count(self, action: str | None = None, contains: str = "") -> int:
        with self._lock:
            return sum(1 for s in self.seen
                       if (action is None or s.action == action) and contains in s.target)

    # -- relay -------------------------------------------------------------------------------
    def _accept(self, listener: socket.socket) -> None:
        while not self._stopped.is_set():
            try:
                conn, _ = listener.accept()
            except OSError:
                return  # listener closed: refuse() or stop()
            with self._lock:
                if self._listener is not listener:
                    conn.close()
                    return
                self._conns.add(conn)
            threading.Thread(target=self._serve, args=(conn,), name="faultproxy-conn",
                             daemon=True).start()

    def _decide(self, method: str, target: str) -> tuple[str, float]:
        with self._lock:
            if self._mode in ("refuse", "reset"):
                action, wait = "reset", 0.0
            elif self._fail_left > 0:
                self._fail_left -= 1
                action, wait = "failed", 0.0
            elif self._mode == "delay" and (self._match is None or self._match in target):
                action, wait = "delayed", self._delay
            elif self._mode == "drip" and (self._match is None or self._match in target):
                action, wait = "dripped", self._delay
            else:
                action, wait = "relayed", 0.0
            self.seen.append(Seen(method, target, action, self._held))
            if action in ("delayed", "dripped"):
                self._held += 1
            return action, wait

    def _release(self) -> None:
        with self._lock:
            self._held -= 1

    def _drip(self, client: socket.socket, data: bytes, seconds: float) -> None:
        for i in range(len(data)):
            if self._stopped.wait(seconds):
                raise _Closed()
            client.sendall(data[i:i + 1])

    def _serve(self, client: socket.socket) -> None:
        upstream: socket.socket | None = None
        upstream_reader: _Reader | None = None
        reader = _Reader(client)
        answered = False
        try:
            if self._mode in ("reset", "refuse"):
                raise _Closed()
            while True:
                head = reader.until(b"\r\n\r\n")
                start, fields = _headers(head)
                body = _body(reader, fields)
                method, target = ([*start.split(" "), "", ""])[:2]
                action, wait = self._decide(method, target)
                if action == "reset":
                    raise _Closed()
                if action == "failed":
                    client.sendall(s3_error(self._fail_status, self._fail_code,
                                            target.split("?")[0]))
                    continue
                if action == "dripped" and self._drip_part == "head":
                    try:
                        self._drip(client, b"HTTP/1.1 200 OK\r\nX-Drip: ", wait)
                        while True:  # a header line that never ends
                            self._drip(client, b"a", wait)
                    finally:
                        self._release()
                if action == "delayed":
                    try:
                        if self._stopped.wait(wait):
                            raise _Closed()
                    finally:
                        self._release()
                if upstream is None:
                    upstream = socket.create_connection(self._upstream, timeout=30)
                    upstream_reader = _Reader(upstream)
                    with self._lock:
                        self._conns.add(upstream)
                assert upstream_reader is not None
                upstream.sendall(head + body)
                if action == "dripped":
                    try:
                        keep = self._relay_response(
                            upstream_reader, client, method,
                            lambda data, w=wait: self._drip(client, data, w))
                    finally:
                        self._release()
                else:
                    keep = self._relay_response(upstream_reader, client, method)
                if not keep:
                    answered = True  # the upstream closes after a complete answer
                    raise _Closed()
        except (_Closed, OSError):
            pass
        finally:
            for sock in (client, upstream):
                if sock is None:
                    continue
                with self._lock:
                    self._conns.discard(sock)
                try:
                    if not answered:  # a reset, as a dropped endpoint does; else a plain close
                        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                        struct.pack("ii", 1, 0))
                    sock.close()  # (a reset would discard what the client has not read yet)
                except OSError:
                    pass

    @staticmethod
    def _relay_response(upstream: _Reader, client: socket.socket, method: str,
                        send_body: Callable[[bytes], None] | None = None) -> bool:
        """Relay one response (its body through `send_body` when given); False when the
        connection must close after it."""
        head = upstream.until(b"\r\n\r\n")
        status_line, fields = _headers(head)
        status = int(status_line.split(" ")[1])
        keep = fields.get("connection", "").lower() != "close"
        if method == "HEAD" or status in (204, 304) or 100 <= status < 200:
            body = b""
        elif "transfer-encoding" in fields or "content-length" in fields:
            body = _body(upstream, fields)
        else:
            body, keep = upstream.rest(), False
        if send_body is None:
            client.sendall(head + body)
        else:
            client.sendall(head)
            send_body(body)
        return keep
