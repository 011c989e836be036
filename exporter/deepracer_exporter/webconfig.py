"""Web configuration (`--web.config.file`): TLS and basic auth for /metrics.

The file format is the one of Prometheus' exporter-toolkit (`web.yml`), so a file written for
node_exporter works here for the parts this exporter supports; keys of that format this exporter
does not implement are rejected by name instead of being silently ignored. Unlike the toolkit,
the file is read once at start: the SSL context and the user table are built then.

Passwords are stored as bcrypt hashes only. Neither a password nor a hash is ever put in an
error message or a log line.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import logging
import re
import secrets
import ssl
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

import bcrypt
import yaml

log = logging.getLogger(__name__)

_BCRYPT = re.compile(r"^\$2[abxy]\$(\d\d)\$[./A-Za-z0-9]{53}$")
_HASH_HOWTO = (
    "python -c 'import bcrypt; print(bcrypt.hashpw(b\"pw\", bcrypt.gensalt()).decode())' "
    "or htpasswd -nBC 10 \"\" | tr -d ':\\n'"
)
_CLIENT_AUTH = {
    "NoClientCert": ssl.CERT_NONE,
    "VerifyClientCertIfGiven": ssl.CERT_OPTIONAL,
    "RequireAndVerifyClientCert": ssl.CERT_REQUIRED,
}
_TLS_VERSIONS = {"TLS12": ssl.TLSVersion.TLSv1_2, "TLS13": ssl.TLSVersion.TLSv1_3}
_HEADERS = ("Content-Security-Policy", "X-Frame-Options", "X-Content-Type-Options",
            "X-XSS-Protection", "Strict-Transport-Security")
# exporter-toolkit keys this exporter does not implement: named in the error, not ignored.
_UNSUPPORTED = {
    "tls_server_config.cert": "inline certificates are not supported; use cert_file",
    "tls_server_config.key": "inline keys are not supported; use key_file",
    "tls_server_config.client_ca": "inline CAs are not supported; use client_ca_file",
    "tls_server_config.client_allowed_sans": "not supported; remove it",
    "tls_server_config.cipher_suites": "not supported (OpenSSL defaults are used); remove it",
    "tls_server_config.prefer_server_cipher_suites": "not supported; remove it",
    "tls_server_config.curve_preferences": "not supported; remove it",
    "rate_limit": "not supported; put a reverse proxy in front for rate limiting",
}
REALM = "deepracer-exporter"


class WebConfigInvalid(Exception):
    """The web config file cannot be used; the message lists every problem found."""


@dataclass(frozen=True)
class TLSServerConfig:
    cert_file: Path
    key_file: Path
    client_auth_type: str = "NoClientCert"
    client_ca_file: Path | None = None
    min_version: str = "TLS12"
    max_version: str = "TLS13"


@dataclass(frozen=True)
class WebConfig:
    """`tls` None: plain HTTP. `basic_auth_users` empty: no authentication."""

    source: Path
    tls: TLSServerConfig | None = None
    basic_auth_users: Mapping[str, str] = field(
        default_factory=lambda: MappingProxyType({}), repr=False)
    headers: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))

    @property
    def credentials_in_clear(self) -> bool:
        """Basic auth without TLS: passwords cross the network readable; worth a warning."""
        return bool(self.basic_auth_users) and self.tls is None


def _file(tls: dict[str, Any], key: str, base: Path, errors: list[str],
          required: bool) -> Path | None:
    where = f"tls_server_config.{key}"
    value = tls.get(key)
    if value is None or value == "":
        if required:
            errors.append(f"{where}: required when tls_server_config is given "
                          f"(path to a PEM file, relative to the web config file)")
        return None
    if not isinstance(value, str):
        errors.append(f"{where}: expected a file path, got {type(value).__name__}")
        return None
    path = Path(value).expanduser()
    path = path if path.is_absolute() else base / path
    if not path.is_file():
        errors.append(f"{where}: no such file {str(path)!r}")
        return None
    return path


def _choice(raw: dict[str, Any], key: str, allowed: Mapping[str, object], default: str,
            errors: list[str], hint: str = "") -> str | None:
    """The value, the default when absent, or None (error recorded) when not allowed."""
    value = raw.get(key, default)
    if value is None:
        return default
    if not isinstance(value, str) or value not in allowed:
        expected = ", ".join(allowed)
        errors.append(f"tls_server_config.{key}: expected one of {expected}, got {value!r}{hint}")
        return None
    return str(value)


def _unknown(raw: dict[str, Any], allowed: set[str], path: str, errors: list[str]) -> None:
    for key in sorted(set(raw) - allowed, key=str):
        where = f"{path}.{key}" if path else str(key)
        if where in _UNSUPPORTED:
            errors.append(f"{where}: {_UNSUPPORTED[where]}")
        else:
            errors.append(f"{where}: unknown key (expected one of: {', '.join(sorted(allowed))})")


def _mapping(raw: dict[str, Any], key: str, errors: list[str]) -> dict[str, Any] | None:
    value = raw.get(key)
    if value is None:
        return None
    if not isinstance(value, dict):
        errors.append(f"{key}: expected a mapping, got {type(value).__name__}")
        return None
    return value


def _tls(raw: dict[str, Any], base: Path, errors: list[str]) -> TLSServerConfig | None:
    _unknown(raw, {"cert_file", "key_file", "client_auth_type", "client_ca_file",
                   "min_version", "max_version"}, "tls_server_config", errors)
    cert = _file(raw, "cert_file", base, errors, required=True)
    key = _file(raw, "key_file", base, errors, required=True)
    ca = _file(raw, "client_ca_file", base, errors, required=False)
    auth = _choice(raw, "client_auth_type", _CLIENT_AUTH, "NoClientCert", errors,
                   " (RequestClientCert and RequireAnyClientCert accept unverified "
                   "certificates and are not supported)")
    if auth not in (None, "NoClientCert") and ca is None and "client_ca_file" not in raw:
        errors.append(f"tls_server_config.client_ca_file: required with client_auth_type {auth} "
                      f"(the CA that signs the scrapers' client certificates)")
    if auth == "NoClientCert" and ca is not None:
        errors.append("tls_server_config.client_auth_type: client_ca_file is set but "
                      "client_auth_type is NoClientCert (the default), so client certificates "
                      "would not be checked; set client_auth_type: RequireAndVerifyClientCert")
    lo = _choice(raw, "min_version", _TLS_VERSIONS, "TLS12", errors,
                 " (TLS10 and TLS11 are insecure and not supported)")
    hi = _choice(raw, "max_version", _TLS_VERSIONS, "TLS13", errors)
    if lo is not None and hi is not None and _TLS_VERSIONS[lo] > _TLS_VERSIONS[hi]:
        errors.append(f"tls_server_config.min_version: {lo} is above max_version {hi}")
    if cert is None or key is None or auth is None or lo is None or hi is None:
        return None  # errors were recorded
    return TLSServerConfig(cert_file=cert, key_file=key, client_auth_type=auth,
                           client_ca_file=ca, min_version=lo, max_version=hi)


def _users(raw: dict[str, Any], errors: list[str]) -> dict[str, str]:
    users: dict[str, str] = {}
    for i, (name, hashed) in enumerate(raw.items(), 1):
        if not isinstance(name, str) or not name or ":" in name:
            # Not echoed: "user:password" written as a name would put the password in the log.
            errors.append(f"basic_auth_users: entry {i}: user names must be non-empty strings "
                          f"without ':'")
            continue
        where = f"basic_auth_users.{name}"
        # Never echo the value: if it is not a hash, it is probably the password itself.
        m = _BCRYPT.match(hashed) if isinstance(hashed, str) else None
        if m is None:
            errors.append(f"{where}: not a bcrypt hash (a plaintext password?); store the "
                          f"bcrypt hash of the password, made with: {_HASH_HOWTO}")
            continue
        cost = int(m.group(1))
        if not 4 <= cost <= 31:
            errors.append(f"{where}: bcrypt cost must be from 4 to 31, got {cost}")
            continue
        users[name] = hashed
    return users


def parse_web_config(text: str, source: Path) -> WebConfig:
    """Validate YAML text; relative file paths resolve against `source`'s directory."""
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        # The YAML error quotes the offending line, which may hold a secret: give position only.
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise WebConfigInvalid(f"{source}: not valid YAML{where}") from None
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise WebConfigInvalid(f"{source}: expected a mapping at the top level")
    errors: list[str] = []
    _unknown(raw, {"tls_server_config", "basic_auth_users", "http_server_config"}, "", errors)
    base = source.resolve().parent
    tls_raw = _mapping(raw, "tls_server_config", errors)
    tls = _tls(tls_raw, base, errors) if tls_raw else None
    users_raw = _mapping(raw, "basic_auth_users", errors)
    users = _users(users_raw, errors) if users_raw else {}
    headers: dict[str, str] = {}
    http_raw = _mapping(raw, "http_server_config", errors)
    if http_raw:
        # http2 is accepted and has no effect: the server speaks HTTP/1.1 only.
        _unknown(http_raw, {"http2", "headers"}, "http_server_config", errors)
        if not isinstance(http_raw.get("http2", True), bool):
            errors.append("http_server_config.http2: expected true or false")
        headers_raw = http_raw.get("headers") or {}
        if not isinstance(headers_raw, dict):
            errors.append("http_server_config.headers: expected a mapping")
            headers_raw = {}
        for name, value in headers_raw.items():
            if name not in _HEADERS:
                errors.append(f"http_server_config.headers.{name}: unknown header "
                              f"(expected one of: {', '.join(_HEADERS)})")
            elif not isinstance(value, str) or "\n" in value or "\r" in value:
                errors.append(f"http_server_config.headers.{name}: expected a one-line string")
            elif value:
                headers[name] = value
    if errors:
        raise WebConfigInvalid(f"{source}: invalid web configuration:\n" +
                               "\n".join(f"  - {e}" for e in errors))
    return WebConfig(source=source, tls=tls, basic_auth_users=MappingProxyType(users),
                     headers=MappingProxyType(headers))


def load_web_config(path: str | Path) -> WebConfig:
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
        raise WebConfigInvalid(f"{p}: cannot read: {reason}") from None
    return parse_web_config(text, p)


def _no_passphrase() -> bytes:
    raise WebConfigInvalid("key is encrypted")


def ssl_context(cfg: WebConfig) -> ssl.SSLContext | None:
    """The server's TLS context, or None for plain HTTP. Build once at start."""
    tls = cfg.tls
    if tls is None:
        return None
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = _TLS_VERSIONS[tls.min_version]
    ctx.maximum_version = _TLS_VERSIONS[tls.max_version]
    try:
        # A passphrase callback that refuses: OpenSSL would otherwise prompt on the terminal.
        ctx.load_cert_chain(tls.cert_file, tls.key_file, password=_no_passphrase)
    except WebConfigInvalid:
        raise WebConfigInvalid(
            f"{cfg.source}: tls_server_config.key_file: {str(tls.key_file)!r} is encrypted with "
            f"a passphrase; store it unencrypted (openssl pkey -in KEY -out KEY.plain) and "
            f"restrict its file permissions") from None
    except (ssl.SSLError, OSError) as exc:
        raise WebConfigInvalid(
            f"{cfg.source}: tls_server_config.cert_file/key_file: cannot load "
            f"{str(tls.cert_file)!r} with {str(tls.key_file)!r} ({exc}); expected a PEM "
            f"certificate (chain) and its matching PEM private key") from None
    ctx.verify_mode = _CLIENT_AUTH[tls.client_auth_type]
    if tls.client_ca_file is not None:
        try:
            ctx.load_verify_locations(cafile=tls.client_ca_file)
        except (ssl.SSLError, OSError) as exc:
            raise WebConfigInvalid(
                f"{cfg.source}: tls_server_config.client_ca_file: cannot load "
                f"{str(tls.client_ca_file)!r} ({exc}); expected PEM CA certificates") from None
    return ctx


def _cost(hashed: bytes) -> int:
    return int(hashed[4:6])


def _key(secret: bytes, user: str, password: bytes) -> bytes:
    """Keyed SHA-256 of (user, password): a memory dump of the cache is not a fast-hash table."""
    name = user.encode()
    msg = len(name).to_bytes(4, "big") + name + password
    return hmac.new(secret, msg, hashlib.sha256).digest()


class BasicAuth:
    """Checks `Authorization: Basic ...` against bcrypt hashes.

    bcrypt costs tens of milliseconds by design; a scraper sends the same credentials every
    interval, so a successful check is remembered (keyed hash of user and password) and later
    checks of the same credentials skip bcrypt, as exporter-toolkit does.
    """

    challenge = f'Basic realm="{REALM}", charset="UTF-8"'

    def __init__(self, users: Mapping[str, str],
                 verify: Callable[[bytes, bytes], bool] = bcrypt.checkpw) -> None:
        self._users = {u: h.encode() for u, h in users.items()}
        self._verify = verify
        self._secret = secrets.token_bytes(32)
        self._ok: dict[str, bytes] = {}  # user -> key of the last password that verified
        self._lock = threading.Lock()
        # One dummy hash per cost in use: every check that misses the cache runs bcrypt once at
        # each of these costs (the user's own hash standing in for the dummy of its cost), so
        # a wrong password for a cheap user, for a dear one and an unknown user cost the same.
        costs = sorted({_cost(h) for h in self._users.values()}) or [4]
        self._dummies = {c: bcrypt.hashpw(secrets.token_bytes(16), bcrypt.gensalt(rounds=c))
                         for c in costs}

    @classmethod
    def from_config(cls, cfg: WebConfig) -> BasicAuth | None:
        return cls(cfg.basic_auth_users) if cfg.basic_auth_users else None

    def check(self, header_value: str | None) -> bool:
        """True when the header carries a configured user and its password."""
        creds = self._parse(header_value)
        if creds is None:
            return False
        user, password = creds
        key = _key(self._secret, user, password)
        with self._lock:
            cached = self._ok.get(user)
        if cached is not None and hmac.compare_digest(cached, key):
            return True
        hashed = self._users.get(user)
        own = _cost(hashed) if hashed is not None else None
        ok = False
        for cost, dummy in self._dummies.items():
            target = hashed if hashed is not None and cost == own else dummy
            try:
                verified = self._verify(password, target)
            except ValueError:  # e.g. a password over bcrypt's 72 bytes
                verified = False
            ok = ok or (verified and target is hashed)
        if hashed is None or not ok:
            log.debug("basic auth rejected: %s",
                      "unknown user" if hashed is None else f"wrong password for user {user!r}")
            return False
        with self._lock:
            self._ok[user] = key
        return True

    @staticmethod
    def _parse(header_value: str | None) -> tuple[str, bytes] | None:
        if not header_value:
            return None
        scheme, _, token = header_value.strip().partition(" ")
        if scheme.lower() != "basic":
            return None
        try:
            decoded = base64.b64decode(token.strip(), validate=True)
            user_bytes, sep, password = decoded.partition(b":")
            user = user_bytes.decode("utf-8")
        except (binascii.Error, UnicodeDecodeError, ValueError):
            return None
        if not sep:
            return None
        return user, password
