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
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace

log = logging.getLogger("deepracer_exporter")

POLICY_MEASUREMENT = "dr_sagemaker_epochs"
EPISODE_MEASUREMENTS = ("dr_training_episodes", "dr_eval_episodes")
RESULTS = ("policy", "episode", "other_measurement", "malformed", "too_long", "model_limit",
           "rate_limited")
MAX_LINE_BYTES = 4096
MAX_DATAGRAM_BYTES = 65535
MAX_TAG_LENGTH = 256


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
    return Line(measurement, tags, fields)


@dataclass(frozen=True)
class PolicyState:
    """What the trainer pushed for one model (one `model` tag)."""

    entropy: float | None = None
    kl_divergence: float | None = None
    surrogate_loss: float | None = None
    epoch: int | None = None
    epochs: int = 0  # epochs received since the exporter started
    last_epoch_time: float | None = None  # Unix seconds
    episodes: int = 0  # episode lines received from the simulator
    last_episode_time: float | None = None
    # (iteration, mean entropy over that iteration's policy-training epochs), oldest first
    iteration_entropy: tuple[tuple[int, float], ...] = ()


@dataclass(frozen=True)
class PushState:
    """An immutable view for the collector: per model tag, and lines by result."""

    models: dict[str, PolicyState] = field(default_factory=dict)
    lines: dict[str, int] = field(default_factory=lambda: dict.fromkeys(RESULTS, 0))


@dataclass
class _Model:
    state: PolicyState = PolicyState()
    phase_iteration: int | None = None  # iteration of the policy update under way
    phase_sum: float = 0.0
    phase_count: int = 0
    entropy_by_iteration: dict[int, float] = field(default_factory=dict)
    touched: float = 0.0


class PushReceiver:
    """Turns lines into per-model state. `iteration_of(model_tag)` gives the model's latest
    training iteration as the exporter last read it from S3 (None when unknown): a policy update
    starts after the last episode of its iteration and before any episode of the next one, so
    that is the iteration its epochs belong to (given refreshes faster than an iteration)."""

    def __init__(self, iteration_of: Callable[[str], int | None],
                 clock: Callable[[], float] = time.time, *, max_models: int = 256,
                 max_iterations: int = 1000) -> None:
        self._iteration_of = iteration_of
        self._clock = clock
        self._max_models = max_models
        self._max_iterations = max_iterations
        self._models: dict[str, _Model] = {}
        self._lines = dict.fromkeys(RESULTS, 0)
        self._lock = threading.Lock()

    def count(self, result: str, n: int = 1) -> None:
        with self._lock:
            self._lines[result] += n

    def receive(self, datagram: bytes) -> None:
        """Every line of one datagram; never raises."""
        for raw in datagram.split(b"\n"):
            if not raw.strip():
                continue
            if len(raw) > MAX_LINE_BYTES:
                self.count("too_long")
                continue
            try:
                line = parse_line(raw.decode("utf-8"))
            except (UnicodeDecodeError, LineError):
                self.count("malformed")
                continue
            self.count(self._apply(line))

    def _model(self, tag: str | None, now: float) -> _Model | None:
        if not tag:
            return None
        model = self._models.get(tag)
        if model is None:
            if len(self._models) >= self._max_models:
                return None
            model = self._models[tag] = _Model()
        model.touched = now
        return model

    def _apply(self, line: Line) -> str:
        if line.measurement in EPISODE_MEASUREMENTS:
            now = self._clock()
            with self._lock:
                model = self._model(line.tags.get("model"), now)
                if model is None:
                    return "model_limit" if line.tags.get("model") else "malformed"
                s = model.state
                model.state = replace(s, episodes=s.episodes + 1, last_episode_time=now)
            return "episode"
        if line.measurement != POLICY_MEASUREMENT:
            return "other_measurement"
        values = [line.fields.get(k) for k in ("entropy", "kl_divergence", "surrogate_loss")]
        epoch_raw = line.fields.get("epoch", 0)
        if (any(isinstance(v, bool) or not isinstance(v, float) for v in values)
                or isinstance(epoch_raw, bool) or not isinstance(epoch_raw, float)
                or epoch_raw < 0 or epoch_raw != int(epoch_raw) or epoch_raw > 1e9):
            return "malformed"
        entropy, kl, loss = (float(v) for v in values)  # type: ignore[arg-type]
        epoch = int(epoch_raw)
        tag = line.tags.get("model")
        iteration = self._iteration_of(tag) if tag else None
        now = self._clock()
        with self._lock:
            model = self._model(tag, now)
            if model is None:
                return "model_limit" if tag else "malformed"
            s = model.state
            if s.epoch is None or epoch <= s.epoch:  # a new policy update starts
                model.phase_iteration, model.phase_sum, model.phase_count = iteration, 0.0, 0
            model.phase_sum += entropy
            model.phase_count += 1
            if model.phase_iteration is not None:
                by_iter = model.entropy_by_iteration
                by_iter[model.phase_iteration] = model.phase_sum / model.phase_count
                while len(by_iter) > self._max_iterations:
                    del by_iter[min(by_iter)]
            model.state = replace(
                s, entropy=entropy, kl_divergence=kl, surrogate_loss=loss, epoch=epoch,
                epochs=s.epochs + 1, last_epoch_time=now,
                iteration_entropy=tuple(sorted(model.entropy_by_iteration.items())))
        return "policy"

    def state(self) -> PushState:
        with self._lock:
            return PushState({k: m.state for k, m in self._models.items()}, dict(self._lines))


class UdpListener:
    """Receives datagrams on HOST:PORT in a daemon thread and hands them to a PushReceiver.

    At most `max_lines_per_second` datagrams are parsed each second; the first one past that is
    dropped (counted as `rate_limited`) and the socket is not read until the next second, so a
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
            if used >= self._budget:
                self.receiver.count("rate_limited")
                self._stop.wait(max(0.0, 1.0 - (now - window)))
                continue
            used += 1
            self.receiver.receive(data)
