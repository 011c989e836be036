"""The immutable state one refresh produces and every scrape reads."""

from __future__ import annotations

from dataclasses import dataclass

from .derive import Derived


@dataclass(frozen=True)
class Health:
    success: bool
    duration_seconds: float
    last_success: float | None  # Unix seconds
    errors: tuple[tuple[str, int], ...]  # (reason, count) for every reason, zeros included
    downloaded: int
    not_modified: int
    unchanged: int
    downloaded_bytes: int
    last_error: str | None = None


@dataclass(frozen=True)
class ModelSnapshot:
    name: str
    bucket: str  # bucket, or the directory for a local source
    prefix: str  # latest round's prefix
    source: str  # s3 | directory
    derived: Derived | None  # last good data; None until the first success
    last_update: float | None  # newest LastModified of the metrics objects
    health: Health


@dataclass(frozen=True)
class Snapshot:
    models: tuple[ModelSnapshot, ...]
    discovery: tuple[tuple[str, bool], ...]  # (source label, last listing succeeded)
    refresh_interval: float
    rolling_window: int
    created: float
