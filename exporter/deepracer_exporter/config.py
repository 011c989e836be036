"""Configuration: YAML -> validated frozen dataclasses.

Every problem in a file is collected and reported in one `ConfigInvalid` message naming the file,
the key and what is expected, so a user fixes the whole file in one pass.
Secrets never live in the YAML: credentials come from boto3's chain or `${VAR}` interpolation.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

DEFAULT_LISTEN = "0.0.0.0:9877"
_DURATION = re.compile(r"^(\d+(?:\.\d+)?)(ms|s|m|h)$")
_SIZE = re.compile(r"^(\d+)\s*(B|KiB|MiB|GiB)?$")
_ENV = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
_SIZES = {"B": 1, "KiB": 1024, "MiB": 1024**2, "GiB": 1024**3}
_SECRET_KEYS = ("access_key_id", "secret_access_key", "session_token")


class ConfigInvalid(Exception):
    """The configuration cannot be used; the message lists every problem found."""


@dataclass(frozen=True)
class S3Settings:
    endpoint_url: str | None = None
    region: str | None = None
    profile: str | None = None
    access_key_id: str | None = field(default=None, repr=False)
    secret_access_key: str | None = field(default=None, repr=False)
    session_token: str | None = field(default=None, repr=False)
    connect_timeout: float = 5.0
    read_timeout: float = 10.0
    max_attempts: int = 3


@dataclass(frozen=True)
class ModelConfig:
    """One watched model: a bucket (or local directory) and its rounds' prefixes, oldest first."""

    name: str
    rounds: tuple[str, ...]
    bucket: str | None = None
    directory: str | None = None


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
class ShardConfig:
    index: int = 0
    total: int = 1


@dataclass(frozen=True)
class Config:
    listen_host: str = "0.0.0.0"
    listen_port: int = 9877
    refresh_interval: float = 15.0
    rolling_window: int = 5
    max_iterations: int = 1000
    top_laps: int = 10
    max_evaluation_runs: int = 10
    max_object_bytes: int = 256 * 1024**2
    refresh_workers: int = 8
    s3: S3Settings = field(default_factory=S3Settings)
    models: tuple[ModelConfig, ...] = ()
    discover: tuple[DiscoverConfig, ...] = ()
    shard: ShardConfig = field(default_factory=ShardConfig)


def parse_duration(text: str) -> float:
    m = _DURATION.match(text.strip())
    if not m:
        raise ValueError(text)
    return float(m.group(1)) * _UNITS[m.group(2)]


def _interpolate(value: Any, env: dict[str, str], path: str, errors: list[str]) -> Any:
    if isinstance(value, str):

        def repl(m: re.Match[str]) -> str:
            name, default = m.group(1), m.group(2)
            if name in env:
                return env[name]
            if default is not None:
                return default
            errors.append(f"{path}: environment variable ${{{name}}} is not set")
            return ""

        return _ENV.sub(repl, value)
    if isinstance(value, dict):
        return {k: _interpolate(v, env, f"{path}.{k}" if path else str(k), errors)
                for k, v in value.items()}
    if isinstance(value, list):
        return [_interpolate(v, env, f"{path}[{i}]", errors) for i, v in enumerate(value)]
    return value


class _Checker:
    """Collects errors while reading typed values out of the raw mapping."""

    def __init__(self) -> None:
        self.errors: list[str] = []

    def unknown(self, raw: dict[str, Any], allowed: set[str], path: str) -> None:
        for key in sorted(set(raw) - allowed):
            where = f"{path}.{key}" if path else key
            expected = ", ".join(sorted(allowed))
            self.errors.append(f"{where}: unknown key (expected one of: {expected})")

    def string(self, raw: dict[str, Any], key: str, path: str, *, required: bool = False,
               default: str | None = None) -> str | None:
        where = f"{path}.{key}" if path else key
        if key not in raw or raw[key] is None:
            if required:
                self.errors.append(f"{where}: required, expected a string")
            return default
        value = raw[key]
        if not isinstance(value, str | int | float) or isinstance(value, bool):
            self.errors.append(f"{where}: expected a string, got {type(value).__name__}")
            return default
        return str(value)

    def integer(self, raw: dict[str, Any], key: str, path: str, default: int, lo: int,
                hi: int) -> int:
        where = f"{path}.{key}" if path else key
        value = raw.get(key, default)
        if not isinstance(value, int) or isinstance(value, bool) or not lo <= value <= hi:
            self.errors.append(f"{where}: expected a whole number from {lo} to {hi}, got {value!r}")
            return default
        return value

    def duration(self, raw: dict[str, Any], key: str, path: str, default: float,
                 minimum: float) -> float:
        where = f"{path}.{key}" if path else key
        value = raw.get(key)
        if value is None:
            return default
        try:
            seconds = float(value) if isinstance(value, int | float) else parse_duration(str(value))
        except ValueError:
            self.errors.append(f"{where}: expected a duration like 15s, 500ms, 2m, got {value!r}")
            return default
        if seconds < minimum:
            self.errors.append(f"{where}: must be at least {minimum}s, got {value!r}")
            return default
        return seconds

    def size(self, raw: dict[str, Any], key: str, default: int) -> int:
        value = raw.get(key)
        if value is None:
            return default
        m = _SIZE.match(str(value).strip())
        if not m or isinstance(value, bool) or int(m.group(1)) <= 0:
            self.errors.append(f"{key}: expected a size like 256MiB, 1GiB or a byte count, "
                               f"got {value!r}")
            return default
        return int(m.group(1)) * _SIZES[m.group(2) or "B"]

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


def _listen(text: str, errors: list[str]) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) < 65536:
        errors.append(f"listen: expected HOST:PORT such as {DEFAULT_LISTEN!r}, got {text!r}")
        return "0.0.0.0", 9877
    return host.strip("[]") or "0.0.0.0", int(port)


def _s3(c: _Checker, raw: dict[str, Any], literal: dict[str, Any]) -> S3Settings:
    allowed = {"endpoint_url", "region", "profile", "connect_timeout", "read_timeout",
               "max_attempts", *_SECRET_KEYS}
    c.unknown(raw, allowed, "s3")
    for key in _SECRET_KEYS:
        text = literal.get(key)
        if text is not None and not (isinstance(text, str) and _ENV.fullmatch(text.strip())):
            c.errors.append(f"s3.{key}: secrets must not be written in the file; use "
                            f"'${{ENV_VAR}}' or the AWS credential chain (env, profile, role)")
    endpoint = c.string(raw, "endpoint_url", "s3")
    if endpoint is not None and not re.match(r"^https?://[^/\s]+", endpoint):
        c.errors.append(f"s3.endpoint_url: expected http(s)://host[:port], got {endpoint!r}")
    return S3Settings(
        endpoint_url=endpoint or None,
        region=c.string(raw, "region", "s3") or None,
        profile=c.string(raw, "profile", "s3") or None,
        access_key_id=c.string(raw, "access_key_id", "s3") or None,
        secret_access_key=c.string(raw, "secret_access_key", "s3") or None,
        session_token=c.string(raw, "session_token", "s3") or None,
        connect_timeout=c.duration(raw, "connect_timeout", "s3", 5.0, 0.1),
        read_timeout=c.duration(raw, "read_timeout", "s3", 10.0, 0.1),
        max_attempts=c.integer(raw, "max_attempts", "s3", 3, 1, 10),
    )


def _location(c: _Checker, raw: dict[str, Any], path: str) -> tuple[str | None, str | None]:
    bucket = c.string(raw, "bucket", path)
    directory = c.string(raw, "directory", path)
    if (bucket is None) == (directory is None):
        c.errors.append(f"{path}: give exactly one of 'bucket' (S3) or 'directory' (local files)")
    return bucket, directory


def _clean_prefix(prefix: str) -> str:
    return prefix.strip("/")


def _model(c: _Checker, path: str, raw: dict[str, Any]) -> ModelConfig | None:
    c.unknown(raw, {"name", "bucket", "directory", "prefix", "rounds"}, path)
    bucket, directory = _location(c, raw, path)
    prefix = c.string(raw, "prefix", path)
    rounds_raw = raw.get("rounds")
    rounds: tuple[str, ...] = ()
    if prefix is not None and rounds_raw is not None:
        c.errors.append(f"{path}: give either 'prefix' or 'rounds', not both")
    elif rounds_raw is not None:
        if (not isinstance(rounds_raw, list) or not rounds_raw
                or not all(isinstance(r, str) and r.strip("/") for r in rounds_raw)):
            c.errors.append(f"{path}.rounds: expected a non-empty list of prefixes, oldest first")
        else:
            rounds = tuple(_clean_prefix(r) for r in rounds_raw)
    elif prefix is not None:
        rounds = (_clean_prefix(prefix),)
    else:
        c.errors.append(f"{path}: 'prefix' (or 'rounds') is required")
    name = c.string(raw, "name", path) or (rounds[-1] if rounds else "")
    if not rounds:
        return None
    return ModelConfig(name=name, rounds=rounds, bucket=bucket, directory=directory)


def _discover(c: _Checker, path: str, raw: dict[str, Any]) -> DiscoverConfig:
    c.unknown(raw, {"bucket", "directory", "prefix"}, path)
    bucket, directory = _location(c, raw, path)
    prefix = _clean_prefix(c.string(raw, "prefix", path, default="") or "")
    return DiscoverConfig(prefix=prefix, bucket=bucket, directory=directory)


def parse_config(text: str, source: str, env: dict[str, str] | None = None) -> Config:
    """Validate YAML text; `source` names the file in error messages."""
    try:
        literal = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigInvalid(f"{source}: not valid YAML: {exc}") from None
    if literal is None:
        literal = {}
    if not isinstance(literal, dict):
        raise ConfigInvalid(f"{source}: expected a mapping at the top level")
    c = _Checker()
    raw = _interpolate(literal, dict(os.environ) if env is None else env, "", c.errors)
    c.unknown(raw, {"listen", "refresh_interval", "rolling_window", "max_iterations", "top_laps",
                    "max_evaluation_runs", "max_object_bytes", "refresh_workers", "s3", "models",
                    "discover", "shard"}, "")
    host, port = _listen(c.string(raw, "listen", "", default=DEFAULT_LISTEN) or "", c.errors)
    s3_raw = literal.get("s3")
    s3_literal: dict[str, Any] = s3_raw if isinstance(s3_raw, dict) else {}
    s3 = _s3(c, c.mapping(raw, "s3"), s3_literal)
    models = tuple(m for p, r in c.items(raw, "models") if (m := _model(c, p, r)) is not None)
    discover = tuple(_discover(c, p, r) for p, r in c.items(raw, "discover"))
    seen: set[str] = set()
    for i, m in enumerate(models):
        if m.name in seen:
            c.errors.append(f"models[{i}].name: duplicate model name {m.name!r}")
        seen.add(m.name)
    if not raw.get("models") and not raw.get("discover"):
        c.errors.append("models: nothing to watch; add 'models' or 'discover' entries")
    shard_raw = c.mapping(raw, "shard")
    c.unknown(shard_raw, {"index", "total"}, "shard")
    total = c.integer(shard_raw, "total", "shard", 1, 1, 1024)
    index = c.integer(shard_raw, "index", "shard", 0, 0, 1023)
    if index >= total:
        c.errors.append(f"shard.index: must be below shard.total ({total}), got {index}")
    config = Config(
        listen_host=host,
        listen_port=port,
        refresh_interval=c.duration(raw, "refresh_interval", "", 15.0, 0.1),
        rolling_window=c.integer(raw, "rolling_window", "", 5, 1, 1000),
        max_iterations=c.integer(raw, "max_iterations", "", 1000, 1, 100_000),
        top_laps=c.integer(raw, "top_laps", "", 10, 0, 1000),
        max_evaluation_runs=c.integer(raw, "max_evaluation_runs", "", 10, 0, 1000),
        max_object_bytes=c.size(raw, "max_object_bytes", 256 * 1024**2),
        refresh_workers=c.integer(raw, "refresh_workers", "", 8, 1, 256),
        s3=s3,
        models=models,
        discover=discover,
        shard=ShardConfig(index=index, total=total),
    )
    if c.errors:
        raise ConfigInvalid(f"{source}: invalid configuration:\n" +
                            "\n".join(f"  - {e}" for e in c.errors))
    return config


def load_config(path: str | Path, env: dict[str, str] | None = None) -> Config:
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigInvalid(f"{p}: cannot read: {exc.strerror or exc}") from None
    return parse_config(text, str(p), env)
