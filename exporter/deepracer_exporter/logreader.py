"""The trainer's log in a console or DeepRacer-on-AWS export: the policy figures after the job.

Exports hold the trainer's whole stdout beside the metrics, written when the job ends:

- console: `<prefix>/logs/training/training-<time>-<id>-sagemaker.log`
- DeepRacer on AWS: `<prefix>/logs/training/<ISO time>-<job>-training.log`

The newest such file (by name, which starts with its time) is read once per ETag and folded by
policylog.read_log, which closes an update left without its checkpoint at the end. Its
LastModified is the figures' `last_epoch_time` (the log has no timestamps). The folder is listed
on the first refresh and then at most every `LIST_SECONDS`, and only for a model whose training
file is an export's: a DRfC model costs no request more.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable
from typing import Protocol

from .policylog import PolicyState, read_log
from .sources import Fetched, ObjectInfo, SourceError

LIST_SECONDS = 600.0
SUFFIXES = ("-sagemaker.log", "-training.log")


class _Store(Protocol):
    def list_objects(self, prefix: str) -> list[ObjectInfo]: ...
    def get(self, key: str, etag: str | None, max_bytes: int) -> Fetched: ...


class TrainerLog:
    """One model's export log: the figures of its newest training log file, kept between
    refreshes. A failed read keeps the figures read before (the caller counts the failure)."""

    def __init__(self, max_iterations: int = 1000,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self._max_iterations = max_iterations
        self._monotonic = monotonic
        self._listed = -math.inf
        self._latest: ObjectInfo | None = None
        self._read: tuple[str, str] | None = None  # (key, etag) the figures come from
        self.state: PolicyState | None = None
        self.unreadable_lines = 0

    def refresh(self, store: _Store, prefix: str, training_keys: Iterable[str], max_bytes: int,
                failed: Callable[[str, SourceError], None]) -> PolicyState | None:
        """The figures, listing and reading only when due; `failed(key, error)` is told of a
        failure, which leaves the figures as they were. Only a model whose training file is an
        export's (`<prefix>/metrics/training/*.json`, among `training_keys`) is looked at: a
        DRfC model (`TrainingMetrics*.json`) never has such a log and costs no request."""
        if not any(k.startswith(f"{prefix}/metrics/training/") for k in training_keys):
            return None
        folder = f"{prefix}/logs/training/"
        if self._monotonic() - self._listed >= LIST_SECONDS:
            try:
                found = [o for o in store.list_objects(folder) if o.key.endswith(SUFFIXES)]
            except SourceError as exc:
                failed(folder, exc)
                return self.state
            self._listed = self._monotonic()
            self._latest = max(found, key=lambda o: o.key.rpartition("/")[2], default=None)
        latest = self._latest
        if latest is None or self._read == (latest.key, latest.etag):
            return self.state
        try:
            got = store.get(latest.key, None, max_bytes)
        except SourceError as exc:
            failed(latest.key, exc)
            return self.state
        text = bytes(got.body or b"").decode("utf-8", "replace")
        state, self.unreadable_lines = read_log(text, got.last_modified, self._max_iterations)
        self.state = state if state.epochs else None
        self._read = (latest.key, got.etag)
        return self.state
