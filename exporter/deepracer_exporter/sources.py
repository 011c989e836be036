"""Object stores: S3 (or minio) through a boto3 client, and a local directory of the same layout.

Both answer the two questions the refresher asks: which objects are under a prefix, and what is
in one object unless it is unchanged since the ETag we hold (a conditional GET). Every failure
is raised as `SourceError` with a bounded `reason`, which becomes a metric label.

Every read is bounded in time as a whole, not only per socket read: an endpoint that drips one
byte within each read timeout would otherwise hold a refresh for ever. `budget(size)` says how
long one request for `size` bytes may take; a body still arriving after that is a `timeout`.
"""

from __future__ import annotations

import os
import stat
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectTimeoutError,
    EndpointConnectionError,
    NoCredentialsError,
    ReadTimeoutError,
)
from urllib3.exceptions import ProtocolError as Urllib3ProtocolError
from urllib3.exceptions import ReadTimeoutError as Urllib3ReadTimeoutError

REASONS = ("not_found", "access_denied", "unreachable", "timeout", "server_error", "malformed",
           "too_large", "other")

_NOT_FOUND = {"NoSuchKey", "NoSuchBucket", "404", "NotFound"}
_DENIED = {"AccessDenied", "403", "InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken",
           "InvalidToken", "AllAccessDisabled"}
_THROTTLED = {"SlowDown", "Throttling", "ThrottlingException", "RequestLimitExceeded",
              "ServiceUnavailable", "InternalError", "503", "500"}

# A body must arrive at this mean rate at least (after the request's own time): 64 KiB/s is far
# below any working link, and bounds a 256 MiB object to about 70 minutes.
MIN_READ_RATE = 64 * 1024
_CHUNK = 1024 * 1024


class SourceError(Exception):
    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class ObjectInfo:
    key: str
    etag: str
    last_modified: float  # Unix seconds
    size: int


@dataclass(frozen=True)
class Fetched:
    """A GET's answer: `body` is None when the object is unchanged since the ETag we sent."""

    body: bytes | None
    etag: str
    last_modified: float
    size: int


class ObjectStore(Protocol):
    def describe(self, key: str) -> str: ...

    def budget(self, size: int) -> float: ...

    def list_objects(self, prefix: str) -> list[ObjectInfo]: ...

    def list_children(self, prefix: str) -> list[str]: ...

    def get(self, key: str, etag: str | None, max_bytes: int) -> Fetched: ...

    def get_range(self, key: str, start: int, etag: str) -> Fetched | None: ...


def _client_error(exc: ClientError, what: str) -> SourceError:
    err = exc.response.get("Error", {})
    code = str(err.get("Code", ""))
    status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
    if code in _NOT_FOUND or status == 404:
        reason = "not_found"
    elif code in _DENIED or status == 403:
        reason = "access_denied"
    elif code in _THROTTLED or (isinstance(status, int) and status >= 500):
        reason = "server_error"
    else:
        reason = "other"
    return SourceError(reason, f"{what}: {code or status} {err.get('Message', '')}".strip())


def translate(exc: Exception, what: str) -> SourceError:
    """Map a boto/botocore/OS failure to a SourceError with a bounded reason."""
    if isinstance(exc, SourceError):
        return exc
    if isinstance(exc, ClientError):
        return _client_error(exc, what)
    if isinstance(exc, ConnectTimeoutError | ReadTimeoutError | TimeoutError
                  | Urllib3ReadTimeoutError):
        return SourceError("timeout", f"{what}: timed out ({exc})")
    if isinstance(exc, EndpointConnectionError | ConnectionError | Urllib3ProtocolError):
        return SourceError("unreachable", f"{what}: endpoint unreachable ({exc})")
    if isinstance(exc, NoCredentialsError):
        return SourceError("access_denied", f"{what}: no AWS credentials found")
    if isinstance(exc, FileNotFoundError | NotADirectoryError):
        return SourceError("not_found", f"{what}: no such file or directory")
    if isinstance(exc, PermissionError):
        return SourceError("access_denied", f"{what}: permission denied")
    if isinstance(exc, BotoCoreError | OSError):
        return SourceError("unreachable", f"{what}: {type(exc).__name__}: {exc}")
    return SourceError("other", f"{what}: {type(exc).__name__}: {exc}")


def _read_body(read1: Callable[[int], bytes], size: int, limit: int, deadline: float,
               what: str, monotonic: Callable[[], float]) -> bytes:
    """Up to `limit` bytes into one buffer of the announced size, a chunk at a time (`read1`
    returns after one socket read), checking the overall deadline between chunks."""
    buf = bytearray(size)
    got = 0
    while True:
        if monotonic() > deadline:
            raise SourceError("timeout", f"{what}: body not complete before its deadline "
                              f"({got} of {size} bytes; under {MIN_READ_RATE // 1024} KiB/s)")
        chunk = read1(min(_CHUNK, max(len(buf) - got, 1)))
        if not chunk:
            break
        end = got + len(chunk)
        if end > limit:
            raise SourceError("too_large", f"{what}: over the max_object_bytes limit of {limit}")
        if end > len(buf):  # more than announced (or no length given): grow
            buf.extend(bytes(end - len(buf)))
        buf[got:end] = chunk
        got = end
    del buf[got:]
    return bytes(buf)  # the buffer is freed on return: the copy does not outlive this call


class S3Store:
    """One bucket through a boto3 S3 client (AWS S3, minio, or any S3-compatible endpoint).

    `request_seconds` is what one request may take with its retries before its body starts
    (from the client's connect/read timeouts and attempts)."""

    def __init__(self, client: Any, bucket: str, request_seconds: float = 60.0,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self._client = client
        self.bucket = bucket
        self._request_seconds = request_seconds
        self._monotonic = monotonic

    def describe(self, key: str) -> str:
        return f"s3://{self.bucket}/{key}"

    def budget(self, size: int) -> float:
        return self._request_seconds + size / MIN_READ_RATE

    def _body(self, resp: dict[str, Any], started: float, limit: int, what: str) -> bytes:
        body = resp["Body"]
        size = int(resp.get("ContentLength", 0))
        raw: Any = getattr(body, "_raw_stream", None)  # urllib3's: has read1, botocore's not
        read1: Callable[[int], bytes] = body.read
        if raw is not None and hasattr(raw, "read1"):
            def read1(n: int) -> bytes:
                return bytes(raw.read1(n, decode_content=False))
        try:
            data = _read_body(read1, size, limit, started + self.budget(size), what,
                              self._monotonic)
        except SourceError:
            raise
        except Exception as exc:
            raise translate(exc, what) from None
        finally:
            body.close()
        if size and len(data) != size:
            raise SourceError("unreachable", f"{what}: connection closed after {len(data)} of "
                              f"{size} bytes")
        return data

    def list_objects(self, prefix: str) -> list[ObjectInfo]:
        out: list[ObjectInfo] = []
        try:
            pages = self._client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=prefix)
            for page in pages:
                for obj in page.get("Contents", []):
                    out.append(ObjectInfo(obj["Key"], str(obj.get("ETag", "")),
                                          obj["LastModified"].timestamp(), int(obj["Size"])))
        except Exception as exc:
            raise translate(exc, f"listing {self.describe(prefix)}") from None
        return out

    def list_children(self, prefix: str) -> list[str]:
        """Immediate 'folders' under prefix (with Delimiter), without listing their contents."""
        out: list[str] = []
        try:
            pages = self._client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=prefix, Delimiter="/")
            for page in pages:
                out.extend(cp["Prefix"] for cp in page.get("CommonPrefixes", []))
        except Exception as exc:
            raise translate(exc, f"listing {self.describe(prefix)}") from None
        return out

    def get(self, key: str, etag: str | None, max_bytes: int) -> Fetched:
        kwargs: dict[str, Any] = {"Bucket": self.bucket, "Key": key}
        if etag:
            kwargs["IfNoneMatch"] = etag
        started = self._monotonic()
        try:
            resp = self._client.get_object(**kwargs)
        except ClientError as exc:
            code = str(exc.response.get("Error", {}).get("Code", ""))
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            if etag and (code in ("304", "NotModified") or status == 304):
                return Fetched(None, etag, 0.0, 0)
            raise translate(exc, f"reading {self.describe(key)}") from None
        except Exception as exc:
            raise translate(exc, f"reading {self.describe(key)}") from None
        size = int(resp.get("ContentLength", 0))
        if size > max_bytes:
            resp["Body"].close()
            raise SourceError("too_large", f"{self.describe(key)}: {size} bytes is over the "
                              f"max_object_bytes limit of {max_bytes}")
        data = self._body(resp, started, max_bytes, f"reading {self.describe(key)}")
        return Fetched(data, str(resp.get("ETag", "")), resp["LastModified"].timestamp(),
                       len(data))

    def get_range(self, key: str, start: int, etag: str) -> Fetched | None:
        """Bytes from `start` to the end, only of the version with `etag` (None otherwise)."""
        started = self._monotonic()
        try:
            resp = self._client.get_object(Bucket=self.bucket, Key=key, Range=f"bytes={start}-",
                                           IfMatch=etag)
        except ClientError as exc:
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            if status in (412, 416):  # replaced since it was listed, or shorter than `start`
                return None
            raise translate(exc, f"reading {self.describe(key)}") from None
        except Exception as exc:
            raise translate(exc, f"reading {self.describe(key)}") from None
        data = self._body(resp, started, 1 << 62, f"reading {self.describe(key)}")
        if resp.get("ResponseMetadata", {}).get("HTTPStatusCode") != 206:
            return None  # the endpoint ignored the range
        return Fetched(data, str(resp.get("ETag", "")), resp["LastModified"].timestamp(),
                       len(data))


def _tag(st: os.stat_result) -> str:
    """The directory source's ETag: a same-size rewrite that keeps the mtime (`cp -p`,
    `touch -r`) still changes the ctime, a replacement (rename over) the inode."""
    return f"{st.st_ino}-{st.st_ctime_ns}-{st.st_mtime_ns}-{st.st_size}"


class DirectoryStore:
    """A local directory laid out like a bucket (exported logs, offline use).

    The ETag stand-in is the file's inode, ctime, mtime and size, so an unchanged file is not
    read again. Only regular files are read: a FIFO or device is opened non-blocking, checked
    and refused, never read (a FIFO would block a refresh for ever).
    """

    def __init__(self, root: str | Path, monotonic: Callable[[], float] = time.monotonic
                 ) -> None:
        self.root = Path(root)
        self._monotonic = monotonic

    def describe(self, key: str) -> str:
        return str(self.root / key)

    def budget(self, size: int) -> float:
        """Local reads: 10 s plus the slowest rate (network mounts included) for the size."""
        return 10.0 + size / MIN_READ_RATE

    def list_objects(self, prefix: str) -> list[ObjectInfo]:
        base = self.root / prefix
        if not self.root.is_dir():
            raise SourceError("not_found", f"{self.root}: no such directory")

        def unreadable(exc: OSError) -> None:
            if not isinstance(exc, FileNotFoundError):  # absent: simply no objects
                raise exc

        out: list[ObjectInfo] = []
        try:
            for dirpath, _dirs, files in os.walk(base, onerror=unreadable):
                for name in files:
                    path = Path(dirpath) / name
                    st = path.stat()
                    out.append(ObjectInfo(path.relative_to(self.root).as_posix(), _tag(st),
                                          st.st_mtime, st.st_size))
        except OSError as exc:
            raise translate(exc, f"listing {base}") from None
        return out

    def list_children(self, prefix: str) -> list[str]:
        base = self.root / prefix
        if not base.is_dir():
            raise SourceError("not_found", f"{base}: no such directory")
        try:
            return sorted(f"{p.relative_to(self.root).as_posix()}/" for p in base.iterdir()
                          if p.is_dir())
        except OSError as exc:
            raise translate(exc, f"listing {base}") from None

    def _open(self, path: Path) -> tuple[int, os.stat_result]:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            os.close(fd)
            raise SourceError("other", f"{path}: not a regular file (only regular files are "
                              f"read; a FIFO or device is refused)")
        return fd, st

    def _read(self, fd: int, size: int, limit: int, what: str) -> bytes:
        deadline = self._monotonic() + self.budget(size)
        with os.fdopen(fd, "rb", buffering=0) as fh:
            return _read_body(fh.read, size, limit, deadline, what, self._monotonic)

    def get(self, key: str, etag: str | None, max_bytes: int) -> Fetched:
        path = self.root / key
        try:
            fd, st = self._open(path)
            tag = _tag(st)
            if etag == tag or st.st_size > max_bytes:
                os.close(fd)
                if etag == tag:
                    return Fetched(None, tag, st.st_mtime, st.st_size)
                raise SourceError("too_large", f"{path}: {st.st_size} bytes is over the "
                                  f"max_object_bytes limit of {max_bytes}")
            data = self._read(fd, st.st_size, max_bytes, f"reading {path}")
        except SourceError:
            raise
        except OSError as exc:
            raise translate(exc, f"reading {path}") from None
        return Fetched(data, tag, st.st_mtime, len(data))

    def get_range(self, key: str, start: int, etag: str) -> Fetched | None:
        path = self.root / key
        try:
            fd, st = self._open(path)
            tag = _tag(st)
            if tag != etag or start > st.st_size:
                os.close(fd)
                return None
            os.lseek(fd, start, os.SEEK_SET)
            data = self._read(fd, st.st_size - start, 1 << 62, f"reading {path}")
        except SourceError:
            raise
        except OSError as exc:
            raise translate(exc, f"reading {path}") from None
        return Fetched(data, tag, st.st_mtime, len(data))
