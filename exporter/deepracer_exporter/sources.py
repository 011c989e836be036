"""Object stores: S3 (or minio) through a boto3 client, and a local directory of the same layout.

Both answer the two questions the refresher asks: which objects are under a prefix, and what is
in one object unless it is unchanged since the ETag we hold (a conditional GET). Every failure
is raised as `SourceError` with a bounded `reason`, which becomes a metric label.
"""

from __future__ import annotations

import os
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

REASONS = ("not_found", "access_denied", "unreachable", "timeout", "server_error", "malformed",
           "too_large", "other")

_NOT_FOUND = {"NoSuchKey", "NoSuchBucket", "404", "NotFound"}
_DENIED = {"AccessDenied", "403", "InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken",
           "InvalidToken", "AllAccessDisabled"}
_THROTTLED = {"SlowDown", "Throttling", "ThrottlingException", "RequestLimitExceeded",
              "ServiceUnavailable", "InternalError", "503", "500"}


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
    if isinstance(exc, ConnectTimeoutError | ReadTimeoutError | TimeoutError):
        return SourceError("timeout", f"{what}: timed out ({exc})")
    if isinstance(exc, EndpointConnectionError | ConnectionError):
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


class S3Store:
    """One bucket through a boto3 S3 client (AWS S3, minio, or any S3-compatible endpoint)."""

    def __init__(self, client: Any, bucket: str) -> None:
        self._client = client
        self.bucket = bucket

    def describe(self, key: str) -> str:
        return f"s3://{self.bucket}/{key}"

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
        body = resp["Body"]
        try:
            size = int(resp.get("ContentLength", 0))
            if size > max_bytes:
                raise SourceError("too_large", f"{self.describe(key)}: {size} bytes is over the "
                                  f"max_object_bytes limit of {max_bytes}")
            data = body.read(max_bytes + 1)
            if len(data) > max_bytes:
                raise SourceError("too_large", f"{self.describe(key)}: over the "
                                  f"max_object_bytes limit of {max_bytes}")
        except SourceError:
            raise
        except Exception as exc:
            raise translate(exc, f"reading {self.describe(key)}") from None
        finally:
            body.close()
        return Fetched(data, str(resp.get("ETag", "")), resp["LastModified"].timestamp(),
                       len(data))


    def get_range(self, key: str, start: int, etag: str) -> Fetched | None:
        """Bytes from `start` to the end, only of the version with `etag` (None otherwise)."""
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
        body = resp["Body"]
        try:
            data = body.read()
        except Exception as exc:
            raise translate(exc, f"reading {self.describe(key)}") from None
        finally:
            body.close()
        if resp.get("ResponseMetadata", {}).get("HTTPStatusCode") != 206:
            return None  # the endpoint ignored the range
        return Fetched(data, str(resp.get("ETag", "")), resp["LastModified"].timestamp(),
                       len(data))


class DirectoryStore:
    """A local directory laid out like a bucket (exported logs, offline use).

    The ETag stand-in is the file's mtime and size, so an unchanged file is not read again.
    """

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def describe(self, key: str) -> str:
        return str(self.root / key)

    def list_objects(self, prefix: str) -> list[ObjectInfo]:
        base = self.root / prefix
        if not self.root.is_dir():
            raise SourceError("not_found", f"{self.root}: no such directory")
        out: list[ObjectInfo] = []
        try:
            for dirpath, _dirs, files in os.walk(base):
                for name in files:
                    path = Path(dirpath) / name
                    st = path.stat()
                    out.append(ObjectInfo(path.relative_to(self.root).as_posix(),
                                          f"{st.st_mtime_ns}-{st.st_size}", st.st_mtime,
                                          st.st_size))
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

    def get(self, key: str, etag: str | None, max_bytes: int) -> Fetched:
        path = self.root / key
        try:
            st = path.stat()
            tag = f"{st.st_mtime_ns}-{st.st_size}"
            if etag == tag:
                return Fetched(None, tag, st.st_mtime, st.st_size)
            if st.st_size > max_bytes:
                raise SourceError("too_large", f"{path}: {st.st_size} bytes is over the "
                                  f"max_object_bytes limit of {max_bytes}")
            with path.open("rb") as fh:
                data = fh.read(max_bytes + 1)
        except SourceError:
            raise
        except OSError as exc:
            raise translate(exc, f"reading {path}") from None
        if len(data) > max_bytes:
            raise SourceError("too_large", f"{path}: over the max_object_bytes limit")
        return Fetched(data, tag, st.st_mtime, len(data))

    def get_range(self, key: str, start: int, etag: str) -> Fetched | None:
        path = self.root / key
        try:
            with path.open("rb") as fh:
                st = os.fstat(fh.fileno())
                tag = f"{st.st_mtime_ns}-{st.st_size}"
                if tag != etag or start > st.st_size:
                    return None
                fh.seek(start)
                data = fh.read()
        except OSError as exc:
            raise translate(exc, f"reading {path}") from None
        return Fetched(data, tag, st.st_mtime, len(data))
