"""deepracer-for-cloud's metrics push: InfluxDB line protocol over UDP, as sent to Telegraf.

With `DR_TELEGRAF_HOST` / `DR_TELEGRAF_PORT` set in DRfC's `system.env`, its containers send, with
pytelegraf's `TelegrafClient` (one line per datagram, fields and tags sorted by name, integers with
an `i` suffix, no timestamp):

- the trainer (deepracer-sagemaker-container, `files/rl_coach.patch`, rl_coach `logger.log_dict`),
  once per policy-training epoch:
  `dr_sagemaker_epochs,model=<job> entropy=<f>,epoch=<n>i,kl_divergence=<f>,surrogate_loss=<f>`.
  The job name is the model's S3 prefix (deepracer-simapp `docker/files/rl-coach/start.py`:
  `job_name = s3_prefix`), so `model` matches the prefix the exporter reads. Epochs restart at 0
  for every policy update, i.e. once per training iteration.
- the simulator (deepracer-simapp `bundle/markov/metrics/s3_metrics.py`), once per episode:
  `dr_training_episodes,model=<prefix>,phase=<phase>,status=<status>,worker=<n>
  elapsed_time=<ms>i,progress=<pct>i,reward=<r>i` and, in evaluations, `dr_eval_episodes` with
  `elapsed_time`, `progress` and `reset_count`. These duplicate what S3 already gives; they are
  counted and give the time of the last push, nothing more.

Nothing here trusts the sender: lines are bounded in length and number per second, unknown
measurements and garbage are dropped and counted, and at most `max_models` model tags are held.
"""

from __future__ import annotations

import logging
import math
import re
import socket
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

from .cloudwatchlogs import CloudWatchState
from .dockerlogs import DockerState
from .policylog import Epoch, PolicyTrack
from .policylog import PolicyState as PolicyState  # where the collector has always found it

log = logging.getLogger("deepracer_exporter")

POLICY_MEASUREMENT = "dr_sagemaker_epochs"
EPISODE_MEASUREMENTS = ("dr_training_episodes", "dr_eval_episodes")
RESULTS = ("policy", "episode", "other_measurement", "malformed", "too_long", "model_limit",
           "rate_limited")
MAX_LINE_BYTES = 4096
MAX_DATAGRAM_BYTES = 65535
MAX_TAG_LENGTH = 256
# Line protocol's timestamp is an integer (nanoseconds by default, Telegraf's `-?[0-9]+`).
_TIMESTAMP = re.compile(r"-?[0-9]{1,19}")
# DRfC's evaluations tag their episode lines with the SageMaker job's placeholder name, not the
# model's prefix: they are counted as episodes but held for no model.
EVALUATION_TAG = "sagemaker"


class LineError(ValueError):
    """A line that is not InfluxDB line protocol."""


@dataclass(frozen=True)
class Line:
    measurement: str
    tags: dict[str, str]
    fields: dict[str, float | str | bool]


def _split(text: str, sep: str, *, quotes: bool) -> list[str]:
    """Split on `sep` outside backslash escapes (and, with quotes, outside double quotes)."""
    parts: list[str] = []
    current: list[str] = []
    quoted = False
    i = 0
    while i < len(text):
        c = text[i]
        if c == "\\" and i + 1 < len(text):
            current.append(text[i:i + 2])
            i += 2
            continue
        if quotes and c == '"':
            quoted = not quoted
        elif c == sep and not quoted:
            parts.append("".join(current))
            current = []
            i += 1
            continue
        current.append(c)
        i += 1
    if quoted:
        raise LineError("unterminated string")
    parts.append("".join(current))
    return parts


def _unescape(text: str) -> str:
    out: list[str] = []
    i = 0
    while i < len(text):
        if text[i] == "\\" and i + 1 < len(text) and text[i + 1] in ', ="\\':
            out.append(text[i + 1])
            i += 2
        else:
            out.append(text[i])
            i += 1
    return "".join(out)


def _field_value(raw: str) -> float | str | bool:
    if raw.startswith('"'):
        if len(raw) < 2 or not raw.endswith('"'):
            raise LineError("bad string field")
        return _unescape(raw[1:-1])
    if raw in ("t", "T", "true", "True", "TRUE"):
        return True
    if raw in ("f", "F", "false", "False", "FALSE"):
        return False
    number = raw[:-1] if raw[-1:] in ("i", "u") else raw
    try:
        value = float(number)
    except ValueError:
        raise LineError(f"bad field value {raw[:32]!r}") from None
    if not math.isfinite(value):
        raise LineError("non-finite field value")
    return value


def parse_line(text: str) -> Line:
    """One line of InfluxDB line protocol (the subset pytelegraf writes, escapes included)."""
    parts = _split(text.strip(), " ", quotes=True)
    if len(parts) not in (2, 3) or not parts[0] or not parts[1]:
        raise LineError("expected 'measurement[,tags] fields [timestamp]'")
    head = _split(parts[0], ",", quotes=False)
    measurement = _unescape(head[0])
    tags: dict[str, str] = {}
    for item in head[1:]:
        key, sep, value = item.partition("=")
        if not sep or not key or not value:
            raise LineError("bad tag")
        tags[_unescape(key)] = _unescape(value)[:MAX_TAG_LENGTH]
    fields: dict[str, float | str | bool] = {}
    for item in _split(parts[1], ",", quotes=True):
        key, sep, value = item.partition("=")
        if not sep or not key or not value:
            raise LineError("bad field")
        fields[_unescape(key)] = _field_value(value)
    if not measurement:
        raise LineError("empty measurement")
    if len(parts) == 3 and not _TIMESTAMP.fullmatch(parts[2]):
        raise LineError("the timestamp is not an integer")
    return Line(measurement, tags, fields)


@dataclass(frozen=True)
class PushState:
    """An immutable view for the collector: the trainer's figures per model tag (S3 prefix),
    pushed over UDP (`lines` by result, when `listening`), read from CloudWatch Logs
    (`cloudwatch`) or followed in container logs (`docker`), each when on; for a prefix that
    several have, a container log wins over CloudWatch, and both over the push."""

    models: dict[str, PolicyState] = field(default_factory=dict)
    lines: dict[str, int] = field(default_factory=lambda: dict.fromkeys(RESULTS, 0))
    listening: bool = True
    docker: DockerState | None = None
    cloudwatch: CloudWatchState | None = None


def trainer_state(push: PushState | None, docker: DockerState | None,
                  cloudwatch: CloudWatchState | None = None) -> PushState:
    """What the snapshot holds of the trainer: the push, the logs, or several."""
    if docker is None and cloudwatch is None:
        return push if push is not None else PushState(listening=False)
    models = dict(push.models) if push is not None else {}
    for source in (cloudwatch, docker):
        if source is not None:
            models |= source.models
    return PushState(models, push.lines if push is not None else {},
                     listening=push is not None, docker=docker, cloudwatch=cloudwatch)


class PushReceiver:
    """Turns lines into per-model state. `iteration_of(model_tag)` gives the model's latest
    training iteration as the exporter last read it from S3 (None when unknown): a policy update
    starts after the last episode of its iteration and before any episode of the next one, so
    that is the iteration its epochs belong to (given refreshes faster than an iteration).

    At most `max_models` tags are held. A new tag past that evicts the tag touched least
    recently among those no watched model has (`watched(tag)`: a configured or discovered
    model's latest prefix), so stale or hostile tags never lock a watched model out; a tag is
    refused (`model_limit`) only when every held tag is watched, and a watched tag is always
    admitted (watched tags are bounded by the models the exporter watches)."""

    def __init__(self, iteration_of: Callable[[str], int | None],
                 clock: Callable[[], float] = time.time, *, max_models: int = 256,
                 max_iterations: int = 1000,
                 watched: Callable[[str], bool] = lambda _tag: False) -> None:
        self._iteration_of = iteration_of
        self._watched = watched
        self._clock = clock
        self._max_models = max_models
        self._max_iterations = max_iterations
        self._models: OrderedDict[str, PolicyTrack] = OrderedDict()  # least recent first
        self._lines = dict.fromkeys(RESULTS, 0)
        self._lock = threading.Lock()

    def count(self, result: str, n: int = 1) -> None:
        with self._lock:
            self._lines[result] += n

    def receive(self, datagram: bytes, max_lines: int | None = None) -> int:
        """Every line of one datagram, at most `max_lines` of them parsed (the rest counted as
        `rate_limited`); returns the lines it held. Never raises."""
        lines = [raw for raw in datagram.split(b"\n") if raw.strip()]
        if max_lines is not None and len(lines) > max_lines:
            self.count("rate_limited", len(lines) - max_lines)
            del lines[max_lines:]
        for raw in lines:
            if len(raw) > MAX_LINE_BYTES:
                self.count("too_long")
                continue
            try:
                line = parse_line(raw.decode("utf-8"))
            except (UnicodeDecodeError, LineError):
                self.count("malformed")
                continue
            self.count(self._apply(line))
        return len(lines)

    def _model(self, tag: str) -> PolicyTrack | None:
        models = self._models
        model = models.get(tag)
        if model is not None:
            models.move_to_end(tag)
            return model
        if len(models) >= self._max_models and not self._evict() and not self._watched(tag):
            return None
        model = models[tag] = PolicyTrack(self._max_iterations)
        return model

    def _evict(self) -> bool:
        """Drop the least recently touched tag that no watched model has; False if none."""
        for _ in range(len(self._models)):
            tag = next(iter(self._models))
            if not self._watched(tag):
                del self._models[tag]
                return True
            self._models.move_to_end(tag)  # never evicted: its place in the order is moot
        return False

    def _apply(self, line: Line) -> str:
        tag = line.tags.get("model")
        if line.measurement in EPISODE_MEASUREMENTS:
            if not tag:
                return "malformed"
            if tag == EVALUATION_TAG and not self._watched(tag):
                return "episode"
            now = self._clock()
            with self._lock:
                model = self._model(tag)
                if model is None:
                    return "model_limit"
                model.episode(now)
            return "episode"
        if line.measurement != POLICY_MEASUREMENT:
            return "other_measurement"
        values = [line.fields.get(k) for k in ("entropy", "kl_divergence", "surrogate_loss")]
        epoch_raw = line.fields.get("epoch", 0)
        if (any(isinstance(v, bool) or not isinstance(v, float) for v in values)
                or isinstance(epoch_raw, bool) or not isinstance(epoch_raw, float)
                or epoch_raw < 0 or epoch_raw != int(epoch_raw) or epoch_raw > 1e9 or not tag):
            return "malformed"
        entropy, kl, loss = (float(v) for v in values)  # type: ignore[arg-type]
        iteration = self._iteration_of(tag)
        now = self._clock()
        with self._lock:
            model = self._model(tag)
            if model is None:
                return "model_limit"
            model.epoch(Epoch(loss, kl, entropy, int(epoch_raw)), now, iteration)
        return "policy"

    def state(self) -> PushState:
        with self._lock:
            return PushState({k: m.state for k, m in self._models.items()}, dict(self._lines))


class UdpListener:
    """Receives datagrams on HOST:PORT in a daemon thread and hands them to a PushReceiver.

    At most `max_lines_per_second` lines are parsed each second, whatever the datagrams they
    come in: a datagram that crosses the budget has its lines up to it parsed and the rest
    counted as `rate_limited`, and the socket is then not read until the next second, so a
    flood costs one thread a bounded amount of work and the kernel drops what overflows its
    buffer meanwhile (not counted: it never reaches the exporter).
    """

    def __init__(self, host: str, port: int, receiver: PushReceiver, *,
                 max_lines_per_second: int = 20_000,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self.receiver = receiver
        self._budget = max_lines_per_second
        self._monotonic = monotonic
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self._sock = socket.socket(family, socket.SOCK_DGRAM)
        self._sock.bind((host, port))
        self._sock.settimeout(0.2)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="telegraf-udp", daemon=True)

    @property
    def port(self) -> int:
        return int(self._sock.getsockname()[1])

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
        self._sock.close()

    def _run(self) -> None:
        window = self._monotonic()
        used = 0
        while not self._stop.is_set():
            try:
                data = self._sock.recv(MAX_DATAGRAM_BYTES)
            except TimeoutError:
                continue
            except OSError as exc:
                if self._stop.is_set():
                    return
                log.warning("telegraf listener: receive failed (%s); continuing", exc)
                self._stop.wait(0.1)
                continue
            now = self._monotonic()
            if now - window >= 1.0:
                window, used = now, 0
            used += self.receiver.receive(data, max_lines=max(0, self._budget - used))
            if used >= self._budget:
                self._stop.wait(max(0.0, 1.0 - (now - window)))
