"""Object stores: what a model's logs are read from, and a local directory of the same layout.

The S3 (or minio) store is in s3store.py, so an exporter that reads only directories never
loads botocore.

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
from typing import Protocol

REASONS = ("not_found", "access_denied", "unreachable", "timeout", "server_error", "malformed",
           "too_large", "other")

# A body must arrive at this mean rate at least (after the request's own time): 64 KiB/s is far
# below any working link, and bounds a 256 MiB object to about 70 minutes.
MIN_READ_RATE = 64 * 1024
_CHUNK = 1024 * 1024
_MIN_CHUNK = 64 * 1024  # what is asked for past the announced size (or without one)


class ClientSetupError(Exception):
    """The S3 client cannot be made at all (e.g. a profile that does not exist)."""


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

    body: bytes | bytearray | None
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


def translate(exc: Exception, what: str) -> SourceError:
    """Map an OS-level failure (or any other) to a SourceError with a bounded reason; the S3
    client's own exceptions are mapped by `s3store.translate_s3`, which falls back to this."""
    if isinstance(exc, SourceError):
        return exc
    if isinstance(exc, TimeoutError):
        return SourceError("timeout", f"{what}: timed out ({exc})")
    if isinstance(exc, ConnectionError):
        return SourceError("unreachable", f"{what}: endpoint unreachable ({exc})")
    if isinstance(exc, FileNotFoundError | NotADirectoryError):
        return SourceError("not_found", f"{what}: no such file or directory")
    if isinstance(exc, PermissionError):
        return SourceError("access_denied", f"{what}: permission denied")
    if isinstance(exc, OSError):
        return SourceError("unreachable", f"{what}: {type(exc).__name__}: {exc}")
    return SourceError("other", f"{what}: {type(exc).__name__}: {exc}")


def read_body(read1: Callable[[int], bytes], size: int, limit: int, deadline: float,
               what: str, monotonic: Callable[[], float]) -> bytearray:
    """Up to `limit` bytes into one buffer of the announced size, a chunk at a time (`read1`
    returns after one socket read), checking the overall deadline between chunks.

    The buffer itself is returned: a body is never written to after this, and a `bytes` copy
    (or joining the chunks) would touch the body's size in fresh memory once more, about 13 ms
    of a 25 MB read in a new process and twice the memory while it lasts."""
    buf = bytearray(size)
    got = 0
    while True:
        if monotonic() > deadline:
            raise SourceError("timeout", f"{what}: body not complete before its deadline "
                              f"({got} of {size} bytes; under {MIN_READ_RATE // 1024} KiB/s)")
        chunk = read1(min(_CHUNK, max(len(buf) - got, _MIN_CHUNK)))
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
    return buf


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

    def _read(self, fd: int, size: int, limit: int, what: str) -> bytearray:
        deadline = self._monotonic() + self.budget(size)
        with os.fdopen(fd, "rb", buffering=0) as fh:
            return read_body(fh.read, size, limit, deadline, what, self._monotonic)

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
