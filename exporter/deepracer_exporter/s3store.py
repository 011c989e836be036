"""The S3 (or minio) object store, through a botocore client.

botocore, not boto3: boto3's resource layer and s3transfer are never used here, and importing
them costs about 80 ms of every start (`python -X importtime`); the client, its credential chain
(environment, profile, instance role) and its retries are botocore's either way.
"""

from __future__ import annotations

import gzip
import os
import threading
import time
from collections.abc import Callable
from typing import Any

import botocore.loaders
import botocore.session
import msgspec
from botocore.config import Config as BotoConfig
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectTimeoutError,
    DataNotFoundError,
    EndpointConnectionError,
    NoCredentialsError,
    ReadTimeoutError,
)
from urllib3.exceptions import ProtocolError as Urllib3ProtocolError
from urllib3.exceptions import ReadTimeoutError as Urllib3ReadTimeoutError

from .config import S3Settings
from .sources import (
    MIN_READ_RATE,
    ClientSetupError,
    Fetched,
    ObjectInfo,
    SourceError,
    read_body,
    translate,
)

_NOT_FOUND = {"NoSuchKey", "NoSuchBucket", "404", "NotFound"}
_DENIED = {"AccessDenied", "403", "InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken",
           "InvalidToken", "AllAccessDisabled"}
_THROTTLED = {"SlowDown", "Throttling", "ThrottlingException", "RequestLimitExceeded",
              "ServiceUnavailable", "InternalError", "503", "500"}

# What the exporter sends (a LIST is billed like 12.5 GETs), and the statuses kept as they are;
# any other status counts as its class (`4xx`, `5xx`), a request without an answer as `error`.
OPERATIONS = ("ListObjectsV2", "GetObject")
_STATUSES = frozenset({200, 206, 304, 403, 404, 412, 416, 500, 503})
_AT_ZERO = (("ListObjectsV2", "200"), ("GetObject", "200"), ("GetObject", "206"),
            ("GetObject", "304"))


class RequestCounter:
    """Every request an S3 client sends, each attempt of a retried one included, by operation
    and HTTP status: what S3 bills. Counted on botocore's `response-received` event, which
    follows every attempt, answered or not."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: dict[tuple[str, str], int] = dict.fromkeys(_AT_ZERO, 0)

    def watch(self, client: Any) -> None:
        client.meta.events.register("response-received.s3", self._received)

    def _received(self, event_name: str = "", response_dict: dict[str, Any] | None = None,
                  **_: Any) -> None:
        operation = event_name.rsplit(".", 1)[-1]
        if operation not in OPERATIONS:
            operation = "other"
        if response_dict is None:
            status = "error"
        else:
            code = int(response_dict.get("status_code") or 0)
            status = str(code) if code in _STATUSES else f"{code // 100}xx"
        with self._lock:
            self._counts[(operation, status)] = self._counts.get((operation, status), 0) + 1

    def counts(self) -> tuple[tuple[str, str, int], ...]:
        """(operation, status, requests), sorted."""
        with self._lock:
            return tuple((op, status, n) for (op, status), n in sorted(self._counts.items()))



class _JSONFiles(botocore.loaders.JSONFileLoader):
    """botocore's data files (`<path>.json` or `<path>.json.gz`), decoded by msgspec: botocore's
    own file loader decodes them with Python's json into OrderedDicts, about 30 ms of every
    process that creates an S3 client (the S3 model, its endpoint rules, the partitions).
    Which files exist is botocore's own `exists`."""

    def load_file(self, file_path: str) -> Any:
        for ext, opener in ((".json", open), (".json.gz", gzip.open)):
            try:
                with opener(file_path + ext, "rb") as fp:
                    return msgspec.json.decode(fp.read())
            except (FileNotFoundError, IsADirectoryError):
                continue
        return None


class _S3ModelLoader(botocore.loaders.Loader):
    """botocore's data loader, same search paths (AWS_DATA_PATH, ~/.aws/models, botocore's
    data), knowing only the S3 service: botocore's `list_available_services` lists the
    directories of all of its ~400 services to check that the one asked for exists, twice
    per client (model and paginators), about 20 ms."""

    def list_available_services(self, type_name: str) -> list[str]:
        try:
            self.list_api_versions("s3", type_name)
        except DataNotFoundError:
            return []
        return ["s3"]


def make_client(s3: S3Settings) -> Any:
    """An S3 client with bounded timeouts and retries (standard mode backs off)."""
    try:
        return _client(s3)
    except BotoCoreError as exc:
        raise ClientSetupError(str(exc)) from None


def _client(s3: S3Settings) -> Any:
    session = botocore.session.Session(profile=s3.profile)
    data_path = session.get_config_variable("data_path")
    session.register_component("data_loader", _S3ModelLoader(
        extra_search_paths=[os.path.expanduser(os.path.expandvars(p))
                            for p in data_path.split(os.pathsep)] if data_path else None,
        file_loader=_JSONFiles()))
    config = BotoConfig(
        connect_timeout=s3.connect_timeout,
        read_timeout=s3.read_timeout,
        retries={"total_max_attempts": s3.max_attempts, "mode": "standard"},
        s3={"addressing_style": "path"} if s3.endpoint_url else None,
        max_pool_connections=32,
    )
    return session.create_client(
        "s3", endpoint_url=s3.endpoint_url, region_name=s3.region or "us-east-1",
        aws_access_key_id=s3.access_key_id, aws_secret_access_key=s3.secret_access_key,
        aws_session_token=s3.session_token, config=config)


def request_seconds(client: Any) -> float:
    """The longest one request of this S3 client can take before its body: every attempt's
    connect and read timeouts plus standard-mode backoff between them (2^i s, capped at 20)."""
    config = client.meta.config
    attempts = int((config.retries or {}).get("total_max_attempts", 3))
    backoff = sum(min(20.0, 2.0**i) for i in range(1, attempts))
    return (float(config.connect_timeout) + float(config.read_timeout)) * attempts + backoff


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


def translate_s3(exc: Exception, what: str) -> SourceError:
    """Map a botocore/urllib3 failure (or an OS one) to a SourceError with a bounded reason."""
    if isinstance(exc, ClientError):
        return _client_error(exc, what)
    if isinstance(exc, ConnectTimeoutError | ReadTimeoutError | Urllib3ReadTimeoutError):
        return SourceError("timeout", f"{what}: timed out ({exc})")
    if isinstance(exc, EndpointConnectionError | Urllib3ProtocolError):
        return SourceError("unreachable", f"{what}: endpoint unreachable ({exc})")
    if isinstance(exc, NoCredentialsError):
        return SourceError("access_denied", f"{what}: no AWS credentials found")
    if isinstance(exc, BotoCoreError):
        return SourceError("unreachable", f"{what}: {type(exc).__name__}: {exc}")
    return translate(exc, what)


class S3Store:
    """One bucket through a botocore S3 client (AWS S3, minio, or any S3-compatible endpoint).

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

    def _body(self, resp: dict[str, Any], started: float, limit: int, what: str
              ) -> bytearray:
        body = resp["Body"]
        size = int(resp.get("ContentLength", 0))
        raw: Any = getattr(body, "_raw_stream", None)  # urllib3's: has read1, botocore's not
        read1: Callable[[int], bytes] = body.read
        if raw is not None and hasattr(raw, "read1"):
            def read1(n: int) -> bytes:
                return bytes(raw.read1(n, decode_content=False))
        try:
            data = read_body(read1, size, limit, started + self.budget(size), what,
                              self._monotonic)
        except SourceError:
            raise
        except Exception as exc:
            raise translate_s3(exc, what) from None
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
            raise translate_s3(exc, f"listing {self.describe(prefix)}") from None
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
            raise translate_s3(exc, f"listing {self.describe(prefix)}") from None
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
            raise translate_s3(exc, f"reading {self.describe(key)}") from None
        except Exception as exc:
            raise translate_s3(exc, f"reading {self.describe(key)}") from None
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
            raise translate_s3(exc, f"reading {self.describe(key)}") from None
        except Exception as exc:
            raise translate_s3(exc, f"reading {self.describe(key)}") from None
        data = self._body(resp, started, 1 << 62, f"reading {self.describe(key)}")
        if resp.get("ResponseMetadata", {}).get("HTTPStatusCode") != 206:
            return None  # the endpoint ignored the range
        return Fetched(data, str(resp.get("ETag", "")), resp["LastModified"].timestamp(),
                       len(data))
