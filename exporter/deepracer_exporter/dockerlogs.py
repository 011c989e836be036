"""The trainer's log followed live through the Docker Engine API on a unix socket.

deepracer-for-cloud runs the trainer in a SageMaker-local-mode container named
`<tmp>-algo-<n>-<id>` (its `dr-find-sagemaker` looks for `-algo-` in `docker ps`), and only that
container's stdout has the `Policy training>` lines in simapp 6 (which pushes nothing). This
source lists the containers whose name matches a pattern, follows each one's log
(`GET /containers/{id}/logs?follow=1&timestamps=1`) and folds the lines into the model's
policy figures (policylog.py), as Telegraf's `docker_log` input or Grafana Alloy's
`loki.source.docker` read container logs.

Plain HTTP/1.1 over the socket with the standard library (http.client on an AF_UNIX socket),
not the docker SDK: three read-only GET endpoints are all it needs, and the SDK would add
requests, urllib3 and its own release cadence to an exporter that otherwise never imports them.

- **Model**: a container is matched to a model by its S3 prefix, the same key the push uses:
  the first of `env` variables set in the container (`docker inspect`: DRfC's `rl_coach`
  container has `MODEL_S3_PREFIX`), else the `s3_prefix='...'` of the trainer's own
  `Training Worker Args: Namespace(...)` line, which every simapp prints before any epoch (a
  later such line with another prefix starts that model's figures afresh: the simulator prints
  its clone rounds in one container). Lines before either are held in the container's own
  figures and count once it is known.
- **Never twice**: the source keeps, per container, the timestamp of the last line read (and how
  many lines carried it); a stream that ends (container stopped or restarted, dockerd gone)
  resumes with `since=` that time and skips what it has already read. A new training is a new
  container: its figures replace the older container's for the model.
- **Bounded**: at most `max_containers` containers are followed at once (one thread each) and
  remembered (stopped ones: the least recently seen is forgotten), each with one PolicyTrack
  (`max_iterations` means) and one partial line of at most a few KiB.
- Failures (socket missing, dockerd stopping, an API error) are counted by reason and logged
  once; the source retries every `poll_interval` and the last figures stay exported.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import logging
import re
import socket
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote, urlencode

from .lograte import LogLimiter
from .policylog import (
    LINE_RESULTS,
    MAX_LOG_LINE,
    PolicyState,
    PolicyTrack,
    read_line,
    worker_prefix,
)

log = logging.getLogger("deepracer_exporter")

DEFAULT_CONTAINERS = r"-algo-\d+-"
DEFAULT_ENV = ("MODEL_S3_PREFIX",)
ERROR_REASONS = ("unreachable", "access_denied", "timeout", "api_error", "protocol")
_REQUEST_SECONDS = 10.0


class DockerError(Exception):
    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float | None) -> None:
        super().__init__("localhost", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        sock.connect(self._path)
        self.sock = sock


class Engine:
    """The few Docker Engine API calls the source makes; every failure is a DockerError."""

    def __init__(self, socket_path: str) -> None:
        self.socket_path = socket_path

    def _open(self, path: str, timeout: float | None) -> tuple[_UnixConnection,
                                                                http.client.HTTPResponse]:
        conn = _UnixConnection(self.socket_path, timeout)
        try:
            conn.request("GET", path)
            response = conn.getresponse()
        except TimeoutError as exc:
            conn.close()
            raise DockerError("timeout", f"{path}: {exc}") from None
        except PermissionError as exc:  # the socket's group is not ours (docs/compose.md)
            conn.close()
            raise DockerError("access_denied", f"{self.socket_path}: {exc}") from None
        except (OSError, http.client.HTTPException) as exc:
            conn.close()
            raise DockerError("unreachable", f"{self.socket_path}: {exc}") from None
        if response.status != 200:
            body = response.read(512).decode("utf-8", "replace").strip()
            conn.close()
            raise DockerError("api_error", f"GET {path.split('?')[0]}: HTTP "
                                           f"{response.status} {body}")
        return conn, response

    def get(self, path: str) -> Any:
        conn, response = self._open(path, _REQUEST_SECONDS)
        try:
            return json.loads(response.read(8 << 20))
        except (OSError, http.client.HTTPException) as exc:
            raise DockerError("unreachable", f"{path}: {exc}") from None
        except ValueError as exc:
            raise DockerError("protocol", f"{path}: not JSON ({exc})") from None
        finally:
            conn.close()

    def containers(self) -> list[dict[str, Any]]:
        found = self.get("/containers/json")
        if not isinstance(found, list):
            raise DockerError("protocol", "/containers/json: not a list")
        return [c for c in found if isinstance(c, dict)]

    def inspect(self, cid: str) -> dict[str, Any]:
        found = self.get(f"/containers/{quote(cid)}/json")
        if not isinstance(found, dict):
            raise DockerError("protocol", "inspect: not an object")
        return found

    def logs(self, cid: str, since: str, tty: bool,
             opened: Callable[[_UnixConnection], None]) -> Iterator[bytes]:
        """The container's log entries (timestamp, space, text) from `since` on, following it
        until the container stops; `opened` receives the connection so it can be closed from
        another thread."""
        query = urlencode({"follow": 1, "stdout": 1, "stderr": 1, "timestamps": 1,
                           "since": since})
        conn, response = self._open(f"/containers/{quote(cid)}/logs?{query}", None)
        opened(conn)
        try:
            yield from (_raw(response) if tty else _frames(response))
        except (OSError, http.client.HTTPException) as exc:
            raise DockerError("unreachable", f"log stream of {cid[:12]}: {exc}") from None
        finally:
            conn.close()


def _frames(response: http.client.HTTPResponse) -> Iterator[bytes]:
    """Payloads of the multiplexed stream (no TTY): an 8-byte header, then the payload."""
    while True:
        header = response.read(8)
        if not header:
            return
        if len(header) < 8 or header[0] not in (0, 1, 2):
            raise DockerError("protocol", "log stream: bad frame header")
        size = int.from_bytes(header[4:8], "big")
        payload = response.read(size)
        if len(payload) < size:
            return
        yield payload


def _raw(response: http.client.HTTPResponse) -> Iterator[bytes]:
    while chunk := response.read1(65536):
        yield chunk


def nanoseconds(stamp: str) -> int | None:
    """Docker's RFC 3339 timestamp (fraction of up to 9 digits, trailing zeros trimmed) as Unix
    nanoseconds, None if it is not one."""
    head, dot, rest = stamp.partition(".")
    fraction = ""
    if dot:
        fraction = rest.rstrip("Z")
        if not fraction.isdigit() or len(fraction) > 9:
            return None
    elif head.endswith("Z"):
        head = head[:-1]
    try:
        seconds = datetime.strptime(head, "%Y-%m-%dT%H:%M:%S").replace(tzinfo=UTC)
    except ValueError:
        return None
    return int(seconds.timestamp()) * 1_000_000_000 + int(fraction.ljust(9, "0") or 0)


@dataclass
class _Container:
    cid: str
    name: str
    track: PolicyTrack
    prefix: str | None = None
    from_env: bool = False
    started: int = 0  # nanoseconds of its first line read: the newer container wins a model
    last: int = 0  # nanoseconds of the last line read
    at_last: int = 0  # lines read carrying `last`
    following: bool = False
    partial: bytearray = field(default_factory=bytearray)
    connection: _UnixConnection | None = None


@dataclass(frozen=True)
class DockerState:
    models: dict[str, PolicyState]
    followed: int
    errors: dict[str, int]
    lines: dict[str, int]


class DockerLogs:
    """Follows the trainer containers of one Docker Engine; `state()` is what the collector
    shows. `start()` runs a watcher thread that lists containers every `poll_interval` and one
    thread per container followed."""

    def __init__(self, engine: Engine, pattern: str = DEFAULT_CONTAINERS, *,
                 env: tuple[str, ...] = DEFAULT_ENV, poll_interval: float = 5.0,
                 max_containers: int = 16, max_iterations: int = 1000,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self._engine = engine
        self._pattern = re.compile(pattern)
        self._env = env
        self._poll = poll_interval
        self._max_containers = max_containers
        self._max_iterations = max_iterations
        self._containers: OrderedDict[str, _Container] = OrderedDict()
        self._errors = dict.fromkeys(ERROR_REASONS, 0)
        self._lines = dict.fromkeys(LINE_RESULTS, 0)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._log = LogLimiter(clock=monotonic)
        self._thread = threading.Thread(target=self._watch, name="docker-watch", daemon=True)
        self._followers: list[threading.Thread] = []

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        with self._lock:
            conns = [c.connection for c in self._containers.values() if c.connection]
        for conn in conns:
            _shut(conn)
        if self._thread.is_alive():
            self._thread.join(timeout=5)
        for t in list(self._followers):
            t.join(timeout=5)

    def state(self) -> DockerState:
        with self._lock:
            newest: dict[str, _Container] = {}
            for c in self._containers.values():
                if c.prefix is not None and (c.prefix not in newest
                                             or c.started > newest[c.prefix].started):
                    newest[c.prefix] = c
            return DockerState({p: c.track.state for p, c in newest.items()},
                               sum(c.following for c in self._containers.values()),
                               dict(self._errors), dict(self._lines))

    # -- the watcher: which containers to follow --------------------------------------------

    def _watch(self) -> None:
        while not self._stop.is_set():
            self.poll()
            self._stop.wait(self._poll)

    def poll(self) -> None:
        """One listing: start following every running matching container not followed."""
        try:
            listed = self._engine.containers()
        except DockerError as exc:
            self._failed(exc)
            return
        if self._log.recovered("engine"):
            log.info("docker: %s answers again", self._engine.socket_path)
        for item in listed:
            cid, names = item.get("Id"), item.get("Names")
            if not isinstance(cid, str) or not isinstance(names, list):
                continue
            name = next((n.lstrip("/") for n in names if isinstance(n, str)
                         and self._pattern.search(n.lstrip("/"))), None)
            if name is None:
                continue
            with self._lock:
                known = self._containers.get(cid)
                if known is not None and known.following:
                    self._containers.move_to_end(cid)
                    continue
                busy = sum(c.following for c in self._containers.values())
            if busy >= self._max_containers:
                if self._log.failed("full", "full"):
                    log.warning("docker: %d containers match %r; following only %d of them",
                                busy + 1, self._pattern.pattern, self._max_containers)
                continue
            self._follow(cid, name, known)

    def _follow(self, cid: str, name: str, known: _Container | None) -> None:
        try:
            details = self._engine.inspect(cid)
        except DockerError as exc:
            self._failed(exc)
            return
        config = details.get("Config") if isinstance(details.get("Config"), dict) else {}
        assert isinstance(config, dict)
        tty = bool(config.get("Tty"))
        with self._lock:
            container = known or _Container(cid, name, PolicyTrack(self._max_iterations))
            if container.prefix is None:
                container.prefix = _env_prefix(config.get("Env"), self._env)
                container.from_env = container.prefix is not None
            container.following = True
            self._containers[cid] = container
            self._containers.move_to_end(cid)
            self._forget()
        t = threading.Thread(target=self._read, args=(container, tty),
                             name=f"docker-log-{cid[:12]}", daemon=True)
        self._followers = [f for f in self._followers if f.is_alive()] + [t]
        t.start()

    def _forget(self) -> None:
        """Keep at most `max_containers`: forget the least recently seen stopped ones."""
        excess = len(self._containers) - self._max_containers
        for cid in [k for k, c in self._containers.items() if not c.following][:max(0, excess)]:
            del self._containers[cid]

    def _failed(self, exc: DockerError) -> None:
        with self._lock:
            self._errors[exc.reason] += 1
        if self._log.failed("engine", exc.reason):
            log.warning("docker: %s (%s); retrying every %gs, the last figures stay exported",
                        exc, exc.reason, self._poll)

    # -- one container's log ------------------------------------------------------------------

    def _read(self, c: _Container, tty: bool) -> None:
        since = f"{c.last // 1_000_000_000}.{c.last % 1_000_000_000:09d}" if c.last else "0"
        skip_at, skip = c.last, c.at_last

        def opened(conn: _UnixConnection) -> None:
            with self._lock:
                c.connection = conn
            if self._stop.is_set():
                _shut(conn)

        try:
            for chunk in self._engine.logs(c.cid, since, tty, opened):
                c.partial += chunk
                while (end := c.partial.find(b"\n")) >= 0:
                    entry = bytes(c.partial[:end])
                    del c.partial[:end + 1]
                    skip = self._entry(c, entry, skip_at, skip)
                if len(c.partial) > 4 * MAX_LOG_LINE:
                    del c.partial[:]  # not the trainer's: drop it rather than hold it
        except DockerError as exc:
            if not self._stop.is_set():
                self._failed(exc)
        finally:
            with self._lock:
                c.following = False
                c.connection = None
                del c.partial[:]

    def _entry(self, c: _Container, entry: bytes, skip_at: int, skip: int) -> int:
        """One log entry (timestamp, space, text); returns how many more entries carrying the
        resume timestamp are still to skip."""
        stamp, _, text_bytes = entry.partition(b" ")
        at = nanoseconds(stamp.decode("ascii", "replace"))
        if at is None:
            with self._lock:
                self._lines["unreadable"] += 1
            return skip
        if at < skip_at:
            return skip
        if at == skip_at and skip > 0:
            return skip - 1
        text = text_bytes.decode("utf-8", "replace")
        record, result = read_line(text)
        with self._lock:
            if c.last == 0:
                c.started = at
            c.at_last = c.at_last + 1 if at == c.last else 1
            c.last = at
            if not c.from_env and (prefix := worker_prefix(text)) is not None:
                if c.prefix is not None and prefix != c.prefix:  # the next training in it
                    c.track = PolicyTrack(self._max_iterations)
                    c.started = at
                c.prefix = prefix
            c.track.take(record, at / 1e9)
            if result is not None:
                self._lines[result] += 1
        return skip


def _env_prefix(env: object, names: tuple[str, ...]) -> str | None:
    if not isinstance(env, list):
        return None
    values = dict(e.partition("=")[::2] for e in env if isinstance(e, str))
    return next((values[n] for n in names if values.get(n)), None)


def _shut(conn: _UnixConnection) -> None:
    """Ends a blocked read of a log stream from another thread."""
    sock = conn.sock
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)
