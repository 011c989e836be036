"""Configuration: YAML -> validated frozen dataclasses.

Every setting is declared once, in `KEYS` (name, default as the user writes it, reader, help);
the parser, the dataclasses' defaults and other modules' defaults (e.g. `ROLLING_WINDOW.default`)
all come from there. Every problem in a file is collected and reported in one `ConfigInvalid`
message naming the file, the key and what is expected, so a user fixes the whole file in one pass.

Secrets never live in the YAML: credentials come from boto3's chain or `${VAR}` interpolation,
and no message shows an interpolated value or a line of the file (only the value as written,
or a line and column), so an error cannot put a secret in a terminal or a log.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, TypeVar
from urllib.parse import urlsplit

import yaml

T = TypeVar("T")

MAX_CONFIG_BYTES = 1024**2  # a real config is a few KiB; 50 MB took minutes to parse
MAX_ALIAS_NODES = 10_000  # nodes that YAML aliases may add: refuses "billion laughs" files
_TOO_BIG = "larger than 1 MiB; refused (a configuration is a few KiB)"
_LOADER: type[Any] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml when present

_DURATION = re.compile(r"^(\d+(?:\.\d+)?)(ms|s|m|h|d)$")
_SIZE = re.compile(r"^(\d+)\s*(B|KiB|MiB|GiB)?$")
_ENV = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_SIZES = {"B": 1, "KiB": 1024, "MiB": 1024**2, "GiB": 1024**3}

ITERATION_PHASES = ("training", "evaluation")  # = parse.PHASES (config imports nothing below)
ITERATION_STATISTICS = ("mean", "median", "min", "max")  # = derive.STATS
ITERATION_STAT_FAMILIES = ("reward", "completion", "episode_seconds", "lap_seconds",
                           "rolling_reward", "rolling_completion")
IterationStats = tuple[tuple[str, str, tuple[str, ...]], ...]  # (phase, family, statistics)


class ConfigInvalid(Exception):
    """The configuration cannot be used; the message lists every problem found."""


class _Bad(ValueError):
    """A value a reader refuses: `expected` says what it wants; `nested` holds (sub-path,
    message) pairs for a structured value, reported one per line."""

    def __init__(self, expected: str = "", nested: tuple[tuple[str, str], ...] = ()) -> None:
        super().__init__(expected)
        self.expected = expected
        self.nested = nested


@dataclass(frozen=True)
class Key(Generic[T]):
    """One setting. `written` is the default as it would appear in the file; `default` is what
    `read` makes of it, so a key's default is stated once."""

    name: str  # dotted for a key inside a section, e.g. "s3.read_timeout"
    written: object
    read: Callable[[object], T] = field(repr=False)
    help: str
    secret: bool = False

    @property
    def default(self) -> T:
        return self.read(self.written)

    @property
    def leaf(self) -> str:
        return self.name.rpartition(".")[2]


# --- readers: value (after ${VAR} interpolation) -> typed value, or _Bad ---------------------


def parse_duration(text: str) -> float:
    """'15s', '500ms', '2m', '1h', '7d' -> seconds; ValueError otherwise."""
    m = _DURATION.match(text.strip())
    if not m:
        raise ValueError(text)
    return float(m.group(1)) * _UNITS[m.group(2)]


def _duration(minimum: float, always: bool = False) -> Callable[[object], float]:
    expected = ("expected a duration like 15s, 500ms, 2m, 7d"
                + (" or 'always'" if always else ""))

    def read(value: object) -> float:
        if always and value == "always":
            return math.inf
        if isinstance(value, bool):
            raise _Bad(expected)
        try:
            seconds = (float(value) if isinstance(value, int | float)
                       else parse_duration(str(value)))
        except ValueError:
            raise _Bad(expected) from None
        if seconds < minimum:
            raise _Bad(f"must be at least {minimum:g}s")
        return seconds

    return read


def _integer(lo: int, hi: int) -> Callable[[object], int]:
    def read(value: object) -> int:
        if isinstance(value, str) and value.strip().isdigit():
            value = int(value)  # e.g. from ${WORKERS}
        if not isinstance(value, int) or isinstance(value, bool) or not lo <= value <= hi:
            raise _Bad(f"expected a whole number from {lo} to {hi}")
        return value

    return read


def _size(value: object) -> int:
    m = _SIZE.match(str(value).strip())
    if not m or isinstance(value, bool) or int(m.group(1)) <= 0:
        raise _Bad("expected a size like 256MiB, 1GiB or a byte count")
    return int(m.group(1)) * _SIZES[m.group(2) or "B"]


def _text(value: object) -> str | None:
    if value is None or value == "":
        return None
    if not isinstance(value, str | int | float) or isinstance(value, bool):
        raise _Bad(f"expected a string, got {type(value).__name__}")
    return str(value)


def _endpoint(value: object) -> str | None:
    text = _text(value)
    if text is not None and not re.match(r"^https?://[^/\s]+", text):
        raise _Bad("expected http(s)://host[:port]")
    return text


def _address(example: str) -> Callable[[object], tuple[str, int]]:
    def read(value: object) -> tuple[str, int]:
        host, sep, port = str(value).rpartition(":")
        if not sep or not port.isdigit() or not 0 <= int(port) < 65536:
            raise _Bad(f"expected HOST:PORT such as {example!r}")
        return host.strip("[]") or "0.0.0.0", int(port)

    return read


def _stats_table(chosen: dict[str, dict[str, tuple[str, ...]]]) -> IterationStats:
    return tuple((p, f, chosen[p][f]) for p in ITERATION_PHASES for f in ITERATION_STAT_FAMILIES)


_DEFAULT_STATS: dict[str, dict[str, tuple[str, ...]]] = {
    "training": {"reward": ("mean", "median", "max"), "completion": ("mean", "median", "max"),
                 "episode_seconds": ("mean",), "lap_seconds": ("mean", "min"),
                 "rolling_reward": ("mean",), "rolling_completion": ("mean",)},
    "evaluation": {"reward": ("mean", "max"), "completion": ("mean", "max"),
                   "episode_seconds": (), "lap_seconds": ("mean", "min"),
                   "rolling_reward": ("mean",), "rolling_completion": ("mean",)},
}
DEFAULT_ITERATION_STATS: IterationStats = _stats_table(_DEFAULT_STATS)
FULL_ITERATION_STATS: IterationStats = tuple(
    (p, f, ITERATION_STATISTICS) for p in ITERATION_PHASES for f in ITERATION_STAT_FAMILIES)


def _iteration_stats(value: object) -> IterationStats:
    if value == "default":
        return DEFAULT_ITERATION_STATS
    if value == "full":
        return FULL_ITERATION_STATS
    if not isinstance(value, dict):
        raise _Bad("expected 'default', 'full' or a mapping of phase to family to statistics")
    chosen = {p: dict(families) for p, families in _DEFAULT_STATS.items()}
    problems: list[tuple[str, str]] = []
    for phase, families in value.items():
        if phase not in chosen:
            problems.append((f".{phase}", "unknown phase (expected one of: "
                             f"{', '.join(ITERATION_PHASES)})"))
            continue
        if not isinstance(families, dict):
            problems.append((f".{phase}", "expected a mapping of family to statistics, got "
                             f"{families!r}"))
            continue
        for family, stats in families.items():
            where = f".{phase}.{family}"
            if family not in ITERATION_STAT_FAMILIES:
                problems.append((where, "unknown family (expected one of: "
                                 f"{', '.join(ITERATION_STAT_FAMILIES)})"))
            elif not isinstance(stats, list) or not set(stats) <= set(ITERATION_STATISTICS):
                problems.append((where, "expected a list of statistics from "
                                 f"{', '.join(ITERATION_STATISTICS)}, got {stats!r}"))
            else:
                chosen[phase][family] = tuple(s for s in ITERATION_STATISTICS if s in stats)
    if problems:
        raise _Bad(nested=tuple(problems))
    return _stats_table(chosen)


def _socket_path(value: object) -> str:
    if not isinstance(value, str) or not value.startswith("/") or _CONTROL.search(value):
        raise _Bad("expected the absolute path of a unix socket, such as /var/run/docker.sock")
    return value


def _refuse(expected: str) -> str:
    raise _Bad(expected)


def _pattern(value: object) -> str:
    if not isinstance(value, str) or not value:
        raise _Bad("expected a regular expression, such as '-algo-\\d+-'")
    try:
        re.compile(value)
    except re.error as exc:
        raise _Bad(f"not a valid regular expression ({exc})") from None
    return value


def _optional(read: Callable[[object], T]) -> Callable[[object], T | None]:
    return lambda value: None if value is None else read(value)


# --- the keys ------------------------------------------------------------------------------

LISTEN = Key("listen", "0.0.0.0:9877", _address("0.0.0.0:9877"), "HOST:PORT of /metrics")
REFRESH_INTERVAL = Key("refresh_interval", "15s", _duration(0.1),
                       "time between two refreshes of every model")
MAX_REFRESH_INTERVAL = Key("max_refresh_interval", "10m", _duration(1.0),
                           "a finished model, or one unchanged for 10 minutes, is refreshed "
                           "this often (refresh_interval if that is longer): how late a "
                           "restarted training may be noticed")
ROLLING_WINDOW = Key("rolling_window", 5, _integer(1, 1000),
                     "iterations in the rolling mean of reward and completion")
MAX_ITERATIONS = Key("max_iterations", 1000, _integer(1, 100_000),
                     "most recent iterations exported per model")
TOP_LAPS = Key("top_laps", 10, _integer(0, 1000), "fastest laps exported per model")
MAX_EVALUATION_RUNS = Key("max_evaluation_runs", 10, _integer(0, 1000),
                          "most recent evaluation runs exported per model")
MAX_OBJECT_BYTES = Key("max_object_bytes", "256MiB", _size,
                       "larger log objects are refused (reason too_large)")
REFRESH_WORKERS = Key("refresh_workers", 8, _integer(1, 256),
                      "models refreshed in parallel")
HISTORY_MAX_AGE = Key("history_max_age", "7d", _duration(1.0, always=True),
                      "a model whose metrics have not changed for longer exports no "
                      "per-iteration series; 'always' keeps every model's history "
                      "(also settable per model)")
ITERATION_STATS = Key("iteration_stats", "default", _iteration_stats,
                      "statistics exported per iteration: default, full, or "
                      "{phase: {family: [stats]}} overriding the default")
TELEGRAF_LISTEN = Key("telegraf.listen", None, _optional(_address("0.0.0.0:8092")),
                      "UDP HOST:PORT for deepracer-for-cloud's Telegraf push; "
                      "no 'telegraf' section = off")
DOCKER_SOCKET = Key("docker.socket", "/var/run/docker.sock", _socket_path,
                    "the Docker Engine's unix socket, to follow the trainer containers' logs; "
                    "no 'docker' section = off")
DOCKER_CONTAINERS = Key("docker.containers", r"-algo-\d+-", _pattern,
                        "regular expression searched in container names (default: DRfC's "
                        "SageMaker containers, <tmp>-algo-<n>-<id>)")
DOCKER_POLL_INTERVAL = Key("docker.poll_interval", "5s", _duration(0.1),
                           "time between two listings of the containers")
CLOUDWATCH_LOG_GROUP = Key("cloudwatch.log_group", "/aws/deepracer/training/TrainingJobs",
                           lambda v: _text(v) or _refuse("expected a log group name"),
                           "CloudWatch Logs group of the trainers' output (DRfC: "
                           "/deepracer-for-cloud); no 'cloudwatch' section = off")
CLOUDWATCH_REGION = Key("cloudwatch.region", None, _text, "its region (absent: us-east-1)")
CLOUDWATCH_PROFILE = Key("cloudwatch.profile", None, _text, "AWS profile (absent: the chain)")
CLOUDWATCH_ENDPOINT_URL = Key("cloudwatch.endpoint_url", None, _endpoint,
                              "CloudWatch Logs API endpoint; absent = AWS")
CLOUDWATCH_POLL_INTERVAL = Key("cloudwatch.poll_interval", "60s", _duration(1.0),
                               "time between two reads of the log group")
S3_ENDPOINT_URL = Key("s3.endpoint_url", None, _endpoint, "S3 API endpoint (minio); "
                      "absent = AWS")
S3_REGION = Key("s3.region", None, _text, "S3 region")
S3_PROFILE = Key("s3.profile", None, _text, "AWS profile")
S3_ACCESS_KEY_ID = Key("s3.access_key_id", None, _text, "as ${VAR} only", secret=True)
S3_SECRET_ACCESS_KEY = Key("s3.secret_access_key", None, _text, "as ${VAR} only", secret=True)
S3_SESSION_TOKEN = Key("s3.session_token", None, _text, "as ${VAR} only", secret=True)
S3_CONNECT_TIMEOUT = Key("s3.connect_timeout", "5s", _duration(0.1), "S3 connect timeout")
S3_READ_TIMEOUT = Key("s3.read_timeout", "10s", _duration(0.1), "S3 read timeout")
S3_MAX_ATTEMPTS = Key("s3.max_attempts", 3, _integer(1, 10), "S3 attempts per request")
SHARD_INDEX = Key("shard.index", 0, _integer(0, 1023), "this exporter's shard, from 0")
SHARD_TOTAL = Key("shard.total", 1, _integer(1, 1024), "number of shards")


def _folder(value: object) -> str | None:
    text = _text(value)
    if text is not None and not Path(text).is_dir():
        raise _Bad(f"no such directory: {text!r}")
    return text


TRACKS_DIR = Key("tracks_dir", None, _folder, "folder of track waypoint files "
                 "(<WORLD_NAME>.npy) for the track view; none = paths only")

KEYS: tuple[Key[Any], ...] = (
    LISTEN, REFRESH_INTERVAL, MAX_REFRESH_INTERVAL,
    ROLLING_WINDOW, MAX_ITERATIONS, TOP_LAPS, MAX_EVALUATION_RUNS,
    MAX_OBJECT_BYTES, REFRESH_WORKERS, HISTORY_MAX_AGE, ITERATION_STATS, TELEGRAF_LISTEN,
    DOCKER_SOCKET, DOCKER_CONTAINERS, DOCKER_POLL_INTERVAL, CLOUDWATCH_LOG_GROUP,
    CLOUDWATCH_REGION, CLOUDWATCH_PROFILE, CLOUDWATCH_ENDPOINT_URL, CLOUDWATCH_POLL_INTERVAL,
    S3_ENDPOINT_URL, S3_REGION, S3_PROFILE, S3_ACCESS_KEY_ID, S3_SECRET_ACCESS_KEY,
    S3_SESSION_TOKEN, S3_CONNECT_TIMEOUT, S3_READ_TIMEOUT, S3_MAX_ATTEMPTS, SHARD_INDEX,
    SHARD_TOTAL, TRACKS_DIR,
)
_SECTIONS = ("s3", "telegraf", "docker", "cloudwatch", "shard", "models", "discover")
DEFAULT_LISTEN = str(LISTEN.written)


# --- the dataclasses -----------------------------------------------------------------------


@dataclass(frozen=True)
class S3Settings:
    endpoint_url: str | None = S3_ENDPOINT_URL.default
    region: str | None = S3_REGION.default
    profile: str | None = S3_PROFILE.default
    access_key_id: str | None = field(default=S3_ACCESS_KEY_ID.default, repr=False)
    secret_access_key: str | None = field(default=S3_SECRET_ACCESS_KEY.default, repr=False)
    session_token: str | None = field(default=S3_SESSION_TOKEN.default, repr=False)
    connect_timeout: float = S3_CONNECT_TIMEOUT.default
    read_timeout: float = S3_READ_TIMEOUT.default
    max_attempts: int = S3_MAX_ATTEMPTS.default

    @property
    def endpoint_display(self) -> str:
        """The endpoint without userinfo (`http://key:secret@host` -> `http://host`), for
        summaries and logs; 'AWS' when no endpoint is set."""
        if not self.endpoint_url:
            return "AWS"
        parts = urlsplit(self.endpoint_url)
        host = parts.netloc.rpartition("@")[2]
        return f"{parts.scheme}://{host}{parts.path}"


@dataclass(frozen=True)
class ModelConfig:
    """One watched model: a bucket (or local directory) and its rounds' prefixes, oldest first.
    `history_max_age` None: the global one applies."""

    name: str
    rounds: tuple[str, ...]
    bucket: str | None = None
    directory: str | None = None
    history_max_age: float | None = None


@dataclass(frozen=True)
class DiscoverConfig:
    """Every prefix under this location holding metrics/TrainingMetrics*.json becomes a model."""

    prefix: str = ""
    bucket: str | None = None
    directory: str | None = None

    @property
    def source_label(self) -> str:
        if self.bucket is not None:
            return f"s3://{self.bucket}/{self.prefix}"
        return str(Path(self.directory or ".") / self.prefix)


@dataclass(frozen=True)
class DockerConfig:
    """Follow the logs of the containers whose name matches `containers` (dockerlogs.py)."""

    socket: str = DOCKER_SOCKET.default
    containers: str = DOCKER_CONTAINERS.default
    poll_interval: float = DOCKER_POLL_INTERVAL.default


@dataclass(frozen=True)
class CloudWatchConfig:
    """Read the trainers' output from a CloudWatch Logs group (cloudwatchlogs.py)."""

    log_group: str = CLOUDWATCH_LOG_GROUP.default
    region: str | None = CLOUDWATCH_REGION.default
    profile: str | None = CLOUDWATCH_PROFILE.default
    endpoint_url: str | None = CLOUDWATCH_ENDPOINT_URL.default
    poll_interval: float = CLOUDWATCH_POLL_INTERVAL.default


@dataclass(frozen=True)
class ShardConfig:
    index: int = SHARD_INDEX.default
    total: int = SHARD_TOTAL.default


@dataclass(frozen=True)
class Config:
    listen_host: str = LISTEN.default[0]
    listen_port: int = LISTEN.default[1]
    refresh_interval: float = REFRESH_INTERVAL.default
    max_refresh_interval: float = MAX_REFRESH_INTERVAL.default
    rolling_window: int = ROLLING_WINDOW.default
    max_iterations: int = MAX_ITERATIONS.default
    top_laps: int = TOP_LAPS.default
    max_evaluation_runs: int = MAX_EVALUATION_RUNS.default
    max_object_bytes: int = MAX_OBJECT_BYTES.default
    refresh_workers: int = REFRESH_WORKERS.default
    history_max_age: float = HISTORY_MAX_AGE.default
    iteration_stats: IterationStats = ITERATION_STATS.default
    telegraf_listen: tuple[str, int] | None = TELEGRAF_LISTEN.default
    docker: DockerConfig | None = None  # no 'docker' section: no container is followed
    cloudwatch: CloudWatchConfig | None = None  # no 'cloudwatch' section: none read
    s3: S3Settings = field(default_factory=S3Settings)
    models: tuple[ModelConfig, ...] = ()
    discover: tuple[DiscoverConfig, ...] = ()
    shard: ShardConfig = field(default_factory=ShardConfig)
    tracks_dir: str | None = TRACKS_DIR.default


def reference() -> Iterator[tuple[str, str, str]]:
    """(key, default as written, help) of every setting, for documentation."""
    for key in KEYS:
        written = "(none)" if key.written is None else str(key.written)
        yield key.name, written, key.help


# --- reading a file ------------------------------------------------------------------------


class _Checker:
    """Reads typed values out of the file's mapping, interpolating `${VAR}` as it goes and
    collecting errors. Errors show the value as written in the file, never the interpolated
    one (which may come from a secret environment variable)."""

    def __init__(self, env: dict[str, str]) -> None:
        self.env = env
        self.errors: list[str] = []

    def expand(self, value: Any, where: str) -> Any:
        if isinstance(value, str):
            def repl(m: re.Match[str]) -> str:
                name, default = m.group(1), m.group(2)
                got = self.env.get(name)
                if got or (got is not None and default is None):
                    return got
                if default is not None:  # unset or empty: the default (as ${VAR:-x} in sh)
                    return default
                self.errors.append(f"{where}: environment variable ${{{name}}} is not set")
                return ""

            return _ENV.sub(repl, value)
        if isinstance(value, dict):
            return {k: self.expand(v, f"{where}.{k}") for k, v in value.items()}
        if isinstance(value, list):
            return [self.expand(v, f"{where}[{i}]") for i, v in enumerate(value)]
        return value

    def read(self, raw: dict[str, Any], key: Key[T], path: str = "") -> T:
        """The key's value in `raw` (the mapping at `path`); its default when absent."""
        fallback = key.default
        where = f"{path}.{key.leaf}" if path else key.leaf
        written = raw.get(key.leaf)
        if written is None:
            return fallback
        if key.secret and not _is_reference(written):
            self.errors.append(f"{where}: secrets must not be written in the file; use "
                               f"'${{ENV_VAR}}' (without a ':-' default) or the AWS credential "
                               f"chain (env, profile, role)")
            return fallback
        try:
            return key.read(self.expand(written, where))
        except _Bad as exc:
            if exc.nested:
                self.errors.extend(f"{where}{sub}: {message}" for sub, message in exc.nested)
            else:
                self.errors.append(f"{where}: {exc.expected}, got {written!r}")
            return fallback

    def unknown(self, raw: dict[str, Any], allowed: set[str], path: str) -> None:
        for key in sorted(set(raw) - allowed, key=str):
            where = f"{path}.{key}" if path else str(key)
            expected = ", ".join(sorted(allowed))
            self.errors.append(f"{where}: unknown key (expected one of: {expected})")

    def text(self, raw: dict[str, Any], key: str, path: str) -> str | None:
        where = f"{path}.{key}" if path else key
        try:
            text = _text(self.expand(raw.get(key), where))
        except _Bad as exc:
            self.errors.append(f"{where}: {exc.expected}")
            return None
        if text is not None and _CONTROL.search(text):
            self.errors.append(f"{where}: control characters are not allowed (a model name "
                               f"becomes a label value)")
            return None
        return text

    def mapping(self, raw: dict[str, Any], key: str) -> dict[str, Any]:
        value = raw.get(key)
        if value is None:
            return {}
        if not isinstance(value, dict):
            self.errors.append(f"{key}: expected a mapping, got {type(value).__name__}")
            return {}
        return value

    def items(self, raw: dict[str, Any], key: str) -> list[tuple[str, dict[str, Any]]]:
        value = raw.get(key)
        if value is None:
            return []
        if not isinstance(value, list):
            self.errors.append(f"{key}: expected a list, got {type(value).__name__}")
            return []
        out = []
        for i, item in enumerate(value):
            if not isinstance(item, dict):
                self.errors.append(f"{key}[{i}]: expected a mapping, got {type(item).__name__}")
            else:
                out.append((f"{key}[{i}]", item))
        return out


def _is_reference(written: object) -> bool:
    """`${VAR}` alone: a secret taken from the environment, with no literal default."""
    m = _ENV.fullmatch(written.strip()) if isinstance(written, str) else None
    return m is not None and not m.group(2)


def _section(c: _Checker, raw: dict[str, Any], name: str) -> dict[str, Any]:
    body = c.mapping(raw, name)
    c.unknown(body, {k.leaf for k in KEYS if k.name.startswith(f"{name}.")}, name)
    return body


def _s3(c: _Checker, raw: dict[str, Any]) -> S3Settings:
    return S3Settings(
        endpoint_url=c.read(raw, S3_ENDPOINT_URL, "s3"),
        region=c.read(raw, S3_REGION, "s3"),
        profile=c.read(raw, S3_PROFILE, "s3"),
        access_key_id=c.read(raw, S3_ACCESS_KEY_ID, "s3"),
        secret_access_key=c.read(raw, S3_SECRET_ACCESS_KEY, "s3"),
        session_token=c.read(raw, S3_SESSION_TOKEN, "s3"),
        connect_timeout=c.read(raw, S3_CONNECT_TIMEOUT, "s3"),
        read_timeout=c.read(raw, S3_READ_TIMEOUT, "s3"),
        max_attempts=c.read(raw, S3_MAX_ATTEMPTS, "s3"),
    )


def _location(c: _Checker, raw: dict[str, Any], path: str) -> tuple[str | None, str | None]:
    bucket = c.text(raw, "bucket", path)
    directory = c.text(raw, "directory", path)
    if (bucket is None) == (directory is None):
        c.errors.append(f"{path}: give exactly one of 'bucket' (S3) or 'directory' (local files)")
    return bucket, directory


def _clean_prefix(prefix: str) -> str:
    return prefix.strip("/")


def _model(c: _Checker, path: str, raw: dict[str, Any]) -> ModelConfig | None:
    c.unknown(raw, {"name", "bucket", "directory", "prefix", "rounds", HISTORY_MAX_AGE.leaf},
              path)
    bucket, directory = _location(c, raw, path)
    prefix = c.text(raw, "prefix", path)
    rounds_raw = c.expand(raw.get("rounds"), f"{path}.rounds")
    rounds: tuple[str, ...] = ()
    if prefix is not None and rounds_raw is not None:
        c.errors.append(f"{path}: give either 'prefix' or 'rounds', not both")
    elif rounds_raw is not None:
        if (not isinstance(rounds_raw, list) or not rounds_raw
                or not all(isinstance(r, str) and r.strip("/") for r in rounds_raw)):
            c.errors.append(f"{path}.rounds: expected a non-empty list of prefixes, oldest first")
        elif any(_CONTROL.search(r) for r in rounds_raw):
            c.errors.append(f"{path}.rounds: control characters are not allowed")
        else:
            rounds = tuple(_clean_prefix(r) for r in rounds_raw)
    elif prefix is not None:
        rounds = (_clean_prefix(prefix),)
    elif raw.get("prefix") is None:
        c.errors.append(f"{path}: 'prefix' (or 'rounds') is required")
    name = c.text(raw, "name", path) or (rounds[-1] if rounds else "")
    age = (None if raw.get(HISTORY_MAX_AGE.leaf) is None
           else c.read(raw, HISTORY_MAX_AGE, path))
    if not rounds:
        return None
    return ModelConfig(name=name, rounds=rounds, bucket=bucket, directory=directory,
                       history_max_age=age)


def _discover(c: _Checker, path: str, raw: dict[str, Any]) -> DiscoverConfig:
    c.unknown(raw, {"bucket", "directory", "prefix"}, path)
    bucket, directory = _location(c, raw, path)
    prefix = _clean_prefix(c.text(raw, "prefix", path) or "")
    return DiscoverConfig(prefix=prefix, bucket=bucket, directory=directory)


def _alias_bomb(text: str) -> bool:
    """True when the file's aliases would add more than MAX_ALIAS_NODES nodes. Counted on the
    parser's events, before anything is built, so a bomb costs one linear pass."""
    size: dict[str, int] = {}  # anchor -> nodes it stands for
    open_: list[list[Any]] = []  # [anchor, nodes so far] of each open collection
    added = 0
    for event in yaml.parse(text, Loader=_LOADER):
        if isinstance(event, yaml.CollectionStartEvent):
            open_.append([event.anchor, 1])
            continue
        if isinstance(event, yaml.AliasEvent):
            nodes = size.get(event.anchor or "", 1)
            added += nodes
            if added > MAX_ALIAS_NODES:
                return True
        elif isinstance(event, yaml.ScalarEvent):
            nodes = 1
            if event.anchor:
                size[event.anchor] = 1
        elif isinstance(event, yaml.CollectionEndEvent):
            anchor, nodes = open_.pop()
            if anchor:
                size[anchor] = nodes
        else:
            continue
        if open_:
            open_[-1][1] += nodes
    return False


def _load_yaml(text: str, source: str) -> Any:
    if len(text.encode("utf-8", "surrogatepass")) > MAX_CONFIG_BYTES:
        raise ConfigInvalid(f"{source}: {_TOO_BIG}")
    try:
        if _alias_bomb(text):
            raise ConfigInvalid(f"{source}: YAML aliases expand to more than "
                                f"{MAX_ALIAS_NODES} values; refused (an alias bomb?)")
        return yaml.load(text, Loader=_LOADER)
    except yaml.YAMLError as exc:
        # The error's snippet quotes the offending line, which may hold a secret.
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None)
        raise ConfigInvalid(f"{source}: not valid YAML{where}"
                            f"{': ' + problem if problem else ''}") from None


def parse_config(text: str, source: str, env: dict[str, str] | None = None) -> Config:
    """Validate YAML text; `source` names the file in error messages."""
    raw = _load_yaml(text, source)
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigInvalid(f"{source}: expected a mapping at the top level")
    c = _Checker(dict(os.environ) if env is None else env)
    c.unknown(raw, {k.name for k in KEYS if "." not in k.name} | set(_SECTIONS), "")
    host, port = c.read(raw, LISTEN)
    s3 = _s3(c, _section(c, raw, "s3"))
    telegraf_listen = None
    if raw.get("telegraf") is not None:
        telegraf = _section(c, raw, "telegraf")
        if telegraf.get(TELEGRAF_LISTEN.leaf) is None:
            c.errors.append("telegraf.listen: required (UDP HOST:PORT such as "
                            "'0.0.0.0:8092'); remove the section to turn the listener off")
        telegraf_listen = c.read(telegraf, TELEGRAF_LISTEN, "telegraf")
    docker = None
    if "docker" in raw:
        body = _section(c, raw, "docker")
        docker = DockerConfig(c.read(body, DOCKER_SOCKET, "docker"),
                              c.read(body, DOCKER_CONTAINERS, "docker"),
                              c.read(body, DOCKER_POLL_INTERVAL, "docker"))
    cloudwatch = None
    if "cloudwatch" in raw:
        body = _section(c, raw, "cloudwatch")
        cloudwatch = CloudWatchConfig(
            c.read(body, CLOUDWATCH_LOG_GROUP, "cloudwatch"),
            c.read(body, CLOUDWATCH_REGION, "cloudwatch"),
            c.read(body, CLOUDWATCH_PROFILE, "cloudwatch"),
            c.read(body, CLOUDWATCH_ENDPOINT_URL, "cloudwatch"),
            c.read(body, CLOUDWATCH_POLL_INTERVAL, "cloudwatch"))
    models = tuple(m for p, r in c.items(raw, "models") if (m := _model(c, p, r)) is not None)
    discover = tuple(_discover(c, p, r) for p, r in c.items(raw, "discover"))
    seen: set[str] = set()
    for i, m in enumerate(models):
        if m.name in seen:
            c.errors.append(f"models[{i}].name: duplicate model name {m.name!r}")
        seen.add(m.name)
    if not raw.get("models") and not raw.get("discover"):
        c.errors.append("models: nothing to watch; add 'models' or 'discover' entries")
    shard_raw = _section(c, raw, "shard")
    total = c.read(shard_raw, SHARD_TOTAL, "shard")
    index = c.read(shard_raw, SHARD_INDEX, "shard")
    if index >= total:
        c.errors.append(f"shard.index: must be below shard.total ({total}), got {index}")
    config = Config(
        listen_host=host,
        listen_port=port,
        refresh_interval=c.read(raw, REFRESH_INTERVAL),
        max_refresh_interval=c.read(raw, MAX_REFRESH_INTERVAL),
        rolling_window=c.read(raw, ROLLING_WINDOW),
        max_iterations=c.read(raw, MAX_ITERATIONS),
        top_laps=c.read(raw, TOP_LAPS),
        max_evaluation_runs=c.read(raw, MAX_EVALUATION_RUNS),
        max_object_bytes=c.read(raw, MAX_OBJECT_BYTES),
        refresh_workers=c.read(raw, REFRESH_WORKERS),
        history_max_age=c.read(raw, HISTORY_MAX_AGE),
        iteration_stats=c.read(raw, ITERATION_STATS),
        telegraf_listen=telegraf_listen,
        docker=docker,
        cloudwatch=cloudwatch,
        s3=s3,
        models=models,
        discover=discover,
        shard=ShardConfig(index=index, total=total),
        tracks_dir=c.read(raw, TRACKS_DIR),
    )
    if c.errors:
        raise ConfigInvalid(f"{source}: invalid configuration:\n" +
                            "\n".join(f"  - {e}" for e in c.errors))
    return config


def load_config(path: str | Path, env: dict[str, str] | None = None) -> Config:
    p = Path(path)
    try:
        with p.open("rb") as fh:
            data = fh.read(MAX_CONFIG_BYTES + 1)  # a 50 MB file is not read whole
    except OSError as exc:
        raise ConfigInvalid(f"{p}: cannot read: {exc.strerror or exc}") from None
    if len(data) > MAX_CONFIG_BYTES:
        raise ConfigInvalid(f"{p}: {_TOO_BIG}")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigInvalid(f"{p}: cannot read: not UTF-8 text (byte {exc.start})") from None
    return parse_config(text, str(p), env)
