"""The HTTP server under hostile clients (issue 12, items 7, 8, 13, 16c; issue 14 live process
metrics): real sockets on 127.0.0.1, the server in this process or, where the test exhausts its
open files, in its own (tests/serverproc.py)."""

from __future__ import annotations

import contextlib
import gzip
import http.client
import re
import select
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from deepracer_exporter.server import Exposition, MetricsServer, ServerLimits, accepts_gzip
from deepracer_exporter.snapshot import Snapshot
from deepracer_exporter.webconfig import WebConfig
from helpers import parse
from test_webconfig import PKI, _client_ctx, _web_config
from test_webconfig import pki as pki  # the fixture, for the TLS test

SERVERPROC = Path(__file__).with_name("serverproc.py")


def _exposition(live: CollectorRegistry | None = None) -> Exposition:
    exposition = Exposition(CollectorRegistry(), live=live)
    exposition.update(Snapshot((), (), 15.0, 5, 0.0))
    return exposition


@pytest.fixture
def serve() -> Iterator[Any]:
    servers: list[MetricsServer] = []

    def start(limits: ServerLimits | None = None, exposition: Exposition | None = None,
              run: bool = True, web: WebConfig | None = None) -> MetricsServer:
        server = MetricsServer("127.0.0.1", 0, exposition or _exposition(), web,
                               limits=limits or ServerLimits())
        if run:
            threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return server

    yield start
    for s in servers:
        s.shutdown()
        s.server_close()


def port_of(server: MetricsServer) -> int:
    return int(server.server_address[1])


def get(port: int, method: str = "GET", path: str = "/metrics",
        headers: dict[str, str] | None = None) -> tuple[http.client.HTTPResponse, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request(method, path, headers=headers or {})
        resp = conn.getresponse()
        return resp, resp.read()
    finally:
        conn.close()


# --- item 8: listen backlog ---------------------------------------------------------------


def test_fifty_simultaneous_connections_fit_the_listen_backlog(serve: Any) -> None:
    """With socketserver's backlog of 5, connections beyond it have their SYN dropped and wait
    for the client's retry (1 s). Connecting 50 while the server does not accept yet: none may
    wait for a retry (the connect timeout is below the first retry)."""
    server = serve(run=False)
    port = port_of(server)

    def connect(_: int) -> socket.socket | str:
        try:
            return socket.create_connection(("127.0.0.1", port), timeout=0.9)
        except OSError as exc:
            return type(exc).__name__

    with ThreadPoolExecutor(50) as pool:
        results = list(pool.map(connect, range(50)))
    failed = [r for r in results if isinstance(r, str)]
    socks = [r for r in results if isinstance(r, socket.socket)]
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        assert failed == [], f"{len(failed)} of 50 connects stalled: {failed[:3]}"
        for s in socks:
            s.settimeout(10)
            s.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        answers = [b"".join(iter(lambda s=s: s.recv(65536), b"")) for s in socks]
        assert all(a.startswith(b"HTTP/1.1 200") for a in answers)
    finally:
        for s in socks:
            s.close()


# --- item 7: idle and half-sent connections ----------------------------------------------


def test_idle_and_half_sent_connections_are_closed(serve: Any) -> None:
    server = serve(ServerLimits(idle_timeout=0.5, request_timeout=0.5))
    port = port_of(server)
    idle = socket.create_connection(("127.0.0.1", port), timeout=10)
    half = socket.create_connection(("127.0.0.1", port), timeout=10)
    half.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")  # never finishes the head
    kept = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    kept.request("GET", "/metrics")
    kept.getresponse().read()  # a kept-alive connection after a response: idle too
    assert kept.sock is not None
    try:
        for s in (idle, half, kept.sock):
            assert s.recv(100) == b""  # closed by the server (a timeout here raises)
    finally:
        idle.close()
        half.close()
        kept.close()


def test_many_open_connections_do_not_make_threads_nor_stop_a_scrape(serve: Any) -> None:
    before = threading.active_count()
    limits = ServerLimits(max_connections=200, workers=4)
    server = serve(limits)
    port = port_of(server)
    held = []
    try:
        for i in range(300):
            s = socket.create_connection(("127.0.0.1", port), timeout=10)
            if i % 3 == 0:
                s.sendall(b"GET /metrics HTTP/1.1\r\n")  # half-sent
            held.append(s)
        for _ in range(5):
            resp, _ = get(port)
            assert resp.status == 200
        threads = threading.active_count() - before
        assert threads <= 1 + limits.workers, threads  # the loop and its workers
        open_ = sum(_still_open(s) for s in held)
        assert open_ <= limits.max_connections, open_  # the oldest were closed
    finally:
        for s in held:
            s.close()


def _still_open(s: socket.socket) -> bool:
    s.setblocking(False)
    try:
        return s.recv(1) != b""
    except BlockingIOError:
        return True
    except OSError:
        return False


class ServerProcess:
    def __init__(self, *args: str) -> None:
        self.proc = subprocess.Popen([sys.executable, str(SERVERPROC), *args],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        m = re.match(r"port (\d+)", line)
        assert m, line + self.stop()
        self.port = int(m.group(1))

    def send(self, line: str) -> str:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()
        return self.proc.stdout.readline()

    def cpu_seconds(self) -> float:
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / 100.0  # utime + stime, in clock ticks

    def stop(self) -> str:
        if self.proc.poll() is None:
            assert self.proc.stdin is not None
            self.proc.stdin.close()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        assert self.proc.stderr is not None
        return self.proc.stderr.read()


def test_more_idle_connections_than_open_files_do_not_stop_a_scrape() -> None:
    """1,100 connections that send nothing, under the common `ulimit -n 1024`."""
    server = ServerProcess("--nofile", "1024")
    held = []
    try:
        for _ in range(1100):
            held.append(socket.create_connection(("127.0.0.1", server.port), timeout=10))
        statuses = [get(server.port)[0].status for _ in range(3)]
    finally:
        for s in held:
            s.close()
        log = server.stop()
    assert statuses == [200, 200, 200]
    assert "Traceback" not in log, log


def test_out_of_files_logs_once_and_backs_off_instead_of_spinning() -> None:
    server = ServerProcess("--exhaust-fds")
    pending = []
    try:
        for _ in range(3):  # wait in the backlog: accept() fails with EMFILE
            pending.append(socket.create_connection(("127.0.0.1", server.port), timeout=10))
        cpu, started = server.cpu_seconds(), time.monotonic()
        time.sleep(2.0)
        busy = (server.cpu_seconds() - cpu) / (time.monotonic() - started)
        assert busy < 0.5, f"accept loop used {busy:.0%} of a CPU while out of files"
        assert server.send("release") == "released\n"
        pending[0].settimeout(10)
        pending[0].sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        assert pending[0].recv(100).startswith(b"HTTP/1.1 200")  # served once files are back
    finally:
        for s in pending:
            s.close()
        log = server.stop()
    assert len(re.findall(r"cannot accept connections", log)) == 1, log
    assert "Too many open files" in log
    assert "Traceback" not in log, log


def test_oversized_request_head_gets_431(serve: Any) -> None:
    port = port_of(serve())
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(b"GET /metrics HTTP/1.1\r\n" + b"X-Pad: " + b"a" * 1000 + b"\r\n" * 1)
        for _ in range(80):
            s.sendall(b"X-Pad: " + b"a" * 1000 + b"\r\n")
        answer = b"".join(iter(lambda: s.recv(65536), b""))
    assert answer.startswith(b"HTTP/1.1 431")
    assert get(port)[0].status == 200


# --- item 13: Accept-Encoding -------------------------------------------------------------


@pytest.mark.parametrize(("header", "gzipped"), [
    ("gzip", True), ("GZIP", True), ("x-gzip", True), ("deflate, gzip;q=1.0, *;q=0.5", True),
    ("*", True), ("gzip;q=0", False), ("identity, gzip;q=0", False), ("gzip; q=0.000", False),
    ("", False), ("deflate, br", False), ("identity;q=1, gzip;q=0.5", False),
    ("*;q=0, gzip", True), ("gzipped", False), ("gzip;q=bogus", False),
])
def test_accept_encoding_negotiation(serve: Any, header: str, gzipped: bool) -> None:
    assert accepts_gzip(header) is gzipped
    port = port_of(serve())
    resp, body = get(port, headers={"Accept-Encoding": header} if header else {})
    assert resp.status == 200
    assert resp.getheader("Vary") == "Accept-Encoding"
    assert (resp.getheader("Content-Encoding") == "gzip") is gzipped
    text = gzip.decompress(body) if gzipped else body
    assert b"deepracer_exporter_models" in text


# --- item 16c: methods --------------------------------------------------------------------


def test_head_answers_like_get_without_a_body(serve: Any) -> None:
    port = port_of(serve())
    for path, headers in (("/metrics", {}), ("/metrics", {"Accept-Encoding": "gzip"}),
                          ("/", {}), ("/nowhere", {})):
        got, got_body = get(port, "GET", path, headers)
        head, head_body = get(port, "HEAD", path, headers)
        assert head.status == got.status
        assert head_body == b""
        assert head.getheader("Content-Length") == str(len(got_body))
        assert head.getheader("Content-Type") == got.getheader("Content-Type")


def test_other_methods_get_405_and_the_connection_stays_usable(serve: Any) -> None:
    port = port_of(serve())
    for method in ("POST", "PUT", "DELETE", "PATCH", "OPTIONS"):
        resp, _ = get(port, method)
        assert resp.status == 405, method
        assert resp.getheader("Allow") == "GET, HEAD"
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request("POST", "/metrics", body=b"x" * 1000)
    assert conn.getresponse().read() is not None
    conn.close()
    assert get(port)[0].status == 200


# --- issue 14: process metrics read at scrape time ----------------------------------------


class CountingCollector:
    """A live collector whose value is the number of times it was collected."""

    def __init__(self) -> None:
        self.calls = 0

    def collect(self) -> Iterable[Metric]:
        self.calls += 1
        yield CounterMetricFamily("test_collections", "Times collected.", value=self.calls)


def test_live_collectors_are_read_per_scrape_and_the_rest_stays_cached(serve: Any) -> None:
    live = CollectorRegistry()
    counting = CountingCollector()
    live.register(counting)
    exposition = _exposition(live)
    rendered = exposition.rendered
    port = port_of(serve(exposition=exposition))
    seen = []
    for headers in ({}, {"Accept-Encoding": "gzip"}, {}):
        resp, body = get(port, headers=headers)
        text = gzip.decompress(body) if resp.getheader("Content-Encoding") else body
        samples = parse(text.decode())
        seen.append(samples[("test_collections_total", frozenset())])
        assert ("deepracer_exporter_models", frozenset()) in samples
    assert seen == sorted(seen) and len(set(seen)) == 3  # a new value every scrape
    assert exposition.rendered is rendered  # the snapshot's parts were not rendered again


# --- issue 16: gzip only what is served gzipped ------------------------------------------------

def test_gzip_is_made_only_once_a_scraper_asks_for_it(serve: Any) -> None:
    exposition = _exposition()
    port = port_of(serve(exposition=exposition))
    resp, _ = get(port)
    assert resp.getheader("Content-Encoding") is None
    assert not exposition.rendered.gzip_ready  # plain scrapes (and --once) compress nothing
    exposition.update(Snapshot((), (), 15.0, 5, 1.0))
    assert not exposition.rendered.gzip_ready
    resp, body = get(port, headers={"Accept-Encoding": "gzip"})
    assert resp.getheader("Content-Encoding") == "gzip"
    assert gzip.decompress(body) == get(port)[1]
    # From then on the refresh compresses each new body itself, before any scrape asks.
    exposition.update(Snapshot((), (), 15.0, 5, 2.0))
    assert exposition.rendered.gzip_ready
    assert gzip.decompress(exposition.rendered.gzipped) == exposition.rendered.plain


def test_healthy_answers_ok_without_the_exposition(serve: Any) -> None:
    """`/-/healthy` (the image's healthcheck) answers without sending the exposition, whatever
    its size."""
    port = port_of(serve())
    resp, body = get(port, path="/-/healthy")
    assert resp.status == 200 and body == b"OK\n"


# --- issue 24, item 1: clients that do not read their responses -------------------------------

PIPELINED = b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"
SCRAPE_TIMEOUT = 10.0  # Prometheus' default scrape_timeout


def _send_buffer_max() -> int:
    """How far Linux grows a socket's send buffer (tcp_wmem's maximum, 4 MiB by default)."""
    try:
        return int(Path("/proc/sys/net/ipv4/tcp_wmem").read_text().split()[2])
    except (OSError, ValueError, IndexError):
        return 4 << 20


class WideCollector:
    """One family with a help text of `size` bytes."""

    def __init__(self, size: int) -> None:
        self.size = size

    def collect(self) -> Iterable[Metric]:
        yield GaugeMetricFamily("test_wide", "w" * self.size, value=1)


def _wide_exposition(size: int = 0) -> Exposition:
    """An exposition rendered once, like the exporter's, and larger than the server's and a
    client's socket buffers together (by default): one unread response fills both."""
    registry = CollectorRegistry()
    registry.register(WideCollector(size or 2 * _send_buffer_max()))
    exposition = Exposition(registry)
    exposition.update(Snapshot((), (), 15.0, 5, 0.0))
    return exposition


def stalled_clients(port: int, count: int) -> list[socket.socket]:
    """Clients with a 4 KiB receive buffer that each pipeline as many GET /metrics as their
    socket takes (up to 3,000) and never read; returned once the server has started answering
    every one (each has bytes waiting to be read)."""
    clients = []
    for _ in range(count):
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        s.connect(("127.0.0.1", port))
        s.setblocking(False)
        with contextlib.suppress(BlockingIOError):
            s.send(PIPELINED * 3000)
        clients.append(s)
    waiting = list(clients)
    deadline = time.monotonic() + 30
    while waiting and time.monotonic() < deadline:
        readable, _, _ = select.select(waiting, [], [], 1.0)
        waiting = [s for s in waiting if s not in readable]
    assert not waiting, f"{len(waiting)} of {count} clients got no answer"
    return clients


def scrape_within_timeout(port: int, path: str) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=SCRAPE_TIMEOUT)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def test_clients_that_do_not_read_hold_no_worker(serve: Any) -> None:
    """As many non-reading clients as workers: before, each held a worker in sendall for up
    to the 30 s send timeout and a normal scrape timed out."""
    limits = ServerLimits()
    port = port_of(serve(limits, _wide_exposition()))
    clients = stalled_clients(port, limits.workers)
    try:
        for path in ("/metrics", "/-/healthy", "/metrics"):
            status, body = scrape_within_timeout(port, path)
            assert status == 200, path
            if path == "/-/healthy":
                assert body == b"OK\n"
            else:
                assert b"\ntest_wide 1.0\n" in body
        assert all(_still_open(s) for s in clients)  # stalled, not dropped
    finally:
        for s in clients:
            s.close()


def test_clients_that_do_not_read_make_room_at_max_connections(serve: Any) -> None:
    """As many non-reading clients as max_connections allows: before, every connection was
    busy, so a new one was closed unanswered. Now the one stalled longest makes room."""
    limits = ServerLimits(max_connections=8)
    port = port_of(serve(limits, _wide_exposition()))
    clients = stalled_clients(port, limits.max_connections)
    try:
        for path in ("/metrics", "/-/healthy"):
            status, _ = scrape_within_timeout(port, path)
            assert status == 200, path
    finally:
        for s in clients:
            s.close()


def test_a_client_that_stops_reading_is_closed_after_the_send_timeout(serve: Any) -> None:
    port = port_of(serve(ServerLimits(send_timeout=0.5), _wide_exposition()))
    client = stalled_clients(port, 1)[0]
    try:
        time.sleep(1.0)  # past the send timeout without reading
        client.setblocking(True)
        client.settimeout(10)  # a connection still open would time out here
        with contextlib.suppress(ConnectionResetError):  # closed with requests unread
            while client.recv(1 << 20):
                pass
    finally:
        client.close()


def test_pipelined_requests_are_answered_in_order(serve: Any) -> None:
    port = port_of(serve(exposition=_wide_exposition(100_000)))
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(b"GET /-/healthy HTTP/1.1\r\nHost: x\r\n\r\n" + PIPELINED
                  + b"GET /nowhere HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        answer = b"".join(iter(lambda: s.recv(1 << 20), b""))
    statuses = re.findall(rb"^HTTP/1.1 (\d+)", answer, re.MULTILINE)
    assert statuses == [b"200", b"200", b"404"]
    assert answer.index(b"OK\n") < answer.index(b"test_wide") < answer.index(b"not found")


def test_a_slow_reader_gets_every_byte_over_tls(serve: Any, pki: PKI, tmp_path: Path) -> None:
    """The loop's TLS writes: one that would block is retried with the same bytes."""
    web = _web_config(pki, tmp_path, "tls_server_config:\n  cert_file: server.crt\n"
                                     "  key_file: server.key\n")
    exposition = _wide_exposition()
    port = port_of(serve(exposition=exposition, web=web))
    raw = socket.socket()
    raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    raw.settimeout(30)
    raw.connect(("127.0.0.1", port))
    with _client_ctx(pki).wrap_socket(raw, server_hostname="localhost") as tls:
        tls.sendall(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        time.sleep(0.3)  # not reading: the server's writes would block
        received = b"".join(iter(lambda: tls.recv(65536), b""))
    head, _, body = received.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200")
    assert body == exposition.rendered.plain


def test_pipelined_requests_over_tls_beyond_one_read(serve: Any, pki: PKI, tmp_path: Path
                                                     ) -> None:
    """More pipelined requests than one read takes: the rest wait decrypted in the TLS
    layer, where the selector does not see them."""
    web = _web_config(pki, tmp_path, "tls_server_config:\n  cert_file: server.crt\n"
                                     "  key_file: server.key\n")
    port = port_of(serve(web=web))
    healthy = b"GET /-/healthy HTTP/1.1\r\nHost: localhost\r\n\r\n"
    raw = socket.create_connection(("127.0.0.1", port), timeout=10)
    with _client_ctx(pki).wrap_socket(raw, server_hostname="localhost") as tls:
        tls.sendall(healthy * 1000 + b"GET /-/healthy HTTP/1.1\r\nHost: localhost\r\n"
                    b"Connection: close\r\n\r\n")
        received = b"".join(iter(lambda: tls.recv(65536), b""))
    assert received.count(b"HTTP/1.1 200") == 1001
