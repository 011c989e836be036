"""What to request when: the polling policy of each model and of discovery, in one place.

Every S3 request is billed (LIST 12.5 times a GET), so the exporter asks only for what can have
changed since its last look:

* A model's metrics folder is listed every `refresh_interval` while it trains. A model that
  reached its episode limit (`finished`) is listed every `max_refresh_interval` from then on; one
  whose metrics have not changed for IDLE_AFTER (stopped early, crashed) backs off by doubling
  its interval up to `max_refresh_interval`. Any change brings it back to `refresh_interval`, so
  a training restarted on a backed-off model is noticed within `max_refresh_interval` plus one
  `refresh_interval`.
* Its side files (hyperparameters, model metadata) and simtrace folders are read again when the
  metrics listing says the training was replaced (a key appeared or went, an object shrank); the
  checkpoint index and the simtrace files of the iterations that ended when the latest iteration
  changed (both are written once per iteration; modelcache reads those files by GET at their
  expected keys); everything at least every SAFETY_NET seconds of polling, in case a file was
  replaced without any of that.
* Discovery lists the bucket's root every DISCOVER_CYCLES refresh cycles (once a minute at the
  default 15 s), so a new training is found within that. A new prefix is checked at once (one
  LIST of its `metrics/`) and, while young (first seen less than IDLE_AFTER ago), at every root
  listing; the others known not to be models are re-checked RECHECKS per root listing, least
  recently checked first, so 1,000 of them cost a few LISTs a minute however many there are.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable

IDLE_AFTER = 600.0  # seconds without a change before an unfinished model backs off
SAFETY_NET = 6 * 3600.0  # side files and simtrace folders are read at least this often
DISCOVER_CYCLES = 4  # refresh cycles between two listings of a discover entry's root
RECHECKS = 4  # non-model prefixes re-checked per root listing

ObjectState = tuple[str, str, int]  # key, ETag, size of one listed metrics object


def cycles(interval: float, refresh_interval: float) -> int:
    """Refresh cycles in `interval` (at least one). Counted in cycles, not seconds, so a cycle
    that starts a little early or late never skips a due refresh."""
    return max(1, round(interval / refresh_interval))


class ModelPolling:
    """When one model is refreshed, and what a refresh reads beside its metrics.

    `due()` tells the refresher whether to refresh the model this cycle; `listed()` compares a
    new metrics listing with the last one; `side_files()` and `per_iteration()` say what else
    to read; `scheduled()` sets the next refresh from what the refresh found."""

    def __init__(self, monotonic: Callable[[], float], clock: Callable[[], float]) -> None:
        self._monotonic = monotonic
        self._clock = clock
        self._skip = 0  # refresh cycles to let pass before the next refresh
        self.interval = 0.0  # seconds until the next refresh, as last scheduled
        self._listing: frozenset[ObjectState] | None = None
        self._replaced = True  # the first listing, a key appeared or went, an object shrank
        self._changed = False  # the last listing differs from the one before
        self._last_change = monotonic()
        self._iteration: int | None = None
        self._side_read = -math.inf
        self._iteration_read = -math.inf
        self._retry = False
        self._awaited: dict[str, float] = {}  # evaluation run -> when first awaited

    def due(self) -> bool:
        """Asked once per refresh cycle while the model is not being refreshed."""
        if self._skip > 0:
            self._skip -= 1
            return False
        return True

    def wake(self) -> None:
        """Refresh at the next cycle, reading everything again (a reload, new settings)."""
        self._skip = 0
        self._retry = True

    def listed(self, objects: Iterable[ObjectState]) -> None:
        state = frozenset(objects)
        old = self._listing
        if old is not None and state != old:
            self._changed = True
            self._last_change = self._monotonic()
            sizes = {key: size for key, _, size in old}
            self._replaced = self._replaced or ({k for k, _, _ in state} != set(sizes) or any(
                size < sizes[key] for key, _, size in state))
        self._listing = state

    def side_files(self) -> bool:
        """Whether this refresh reads the hyperparameters and the model metadata (asked once
        per refresh, after `listed`)."""
        now = self._monotonic()
        due = self._replaced or self._retry or now - self._side_read >= SAFETY_NET
        if due:
            self._side_read = now
        return due

    def per_iteration(self, iteration: int | None, side_files: bool,
                      awaited: Iterable[str] = ()) -> bool:
        """Whether this refresh reads the checkpoint index and lists the simtrace folders
        (`iteration`: the latest one now; `awaited`: evaluation runs whose simtrace is not found
        yet, looked for at every refresh during IDLE_AFTER from their first mention; asked once
        per refresh, after `side_files`)."""
        now = self._monotonic()
        self._awaited = {run: self._awaited.get(run, now) for run in awaited}
        due = (side_files or iteration != self._iteration
               or now - self._iteration_read >= SAFETY_NET
               or any(now - since < IDLE_AFTER for since in self._awaited.values()))
        self._replaced = self._retry = False
        self._iteration = iteration
        if due:
            self._iteration_read = now
        return due

    def retry(self) -> None:
        """A side read failed: read everything again at the next refresh."""
        self._retry = True

    def scheduled(self, ok: bool, finished: bool, newest: float | None,
                  refresh_interval: float, max_interval: float) -> float:
        """Set the next refresh; returns the interval. A failed refresh is retried at the next
        cycle; a finished model waits `max_interval` unless it changed just now; an unchanged
        one doubles its interval once nothing changed for IDLE_AFTER (by the exporter's own
        watch, or by the objects' LastModified for what was old when it started)."""
        now = self._monotonic()
        longest = max(refresh_interval, max_interval)
        quiet = now - self._last_change
        if newest is not None:
            quiet = max(quiet, self._clock() - newest)
        if not ok or self._changed:
            interval = refresh_interval
        elif finished:
            interval = longest
        elif quiet >= IDLE_AFTER:  # long quiet already (an old model at start): longest at once
            interval = min(longest, max(refresh_interval, 2 * self.interval,
                                        quiet - IDLE_AFTER))
        else:
            interval = refresh_interval
        self._changed = False
        self._skip = cycles(interval, refresh_interval) - 1
        self.interval = interval
        return interval


class DiscoveryPolling:
    """What discovery of one `discover` entry lists: its root every DISCOVER_CYCLES refresh
    cycles, and of the prefixes found there, which to check for training metrics."""

    def __init__(self, monotonic: Callable[[], float]) -> None:
        self._monotonic = monotonic
        self._skip = 0
        self._first_listing = True
        self._seen: dict[str, float] = {}  # prefix -> when first seen (-inf: at the start)
        self._checked: dict[str, float] = {}  # non-model prefix -> when last checked
        self._models: set[str] = set()  # prefixes found holding training metrics
        self.models: list[str] = []  # what the last root listing found
        self.ok = True  # the last root listing succeeded

    def due(self) -> bool:
        """Asked once per refresh cycle."""
        if self._skip > 0:
            self._skip -= 1
            return False
        return True

    def wake(self) -> None:
        self._skip = 0

    def listed(self, ok: bool) -> None:
        """A root listing was tried: the next one DISCOVER_CYCLES later, or at the next cycle
        after a failure."""
        self.ok = ok
        self._skip = DISCOVER_CYCLES - 1 if ok else 0

    def to_check(self, children: Iterable[str], known: set[str]) -> list[str]:
        """Of the prefixes of a root listing, those whose `metrics/` to list now: new ones,
        young ones, and RECHECKS of the others, least recently checked first. `known` (models
        already) are never listed."""
        now = self._monotonic()
        present = [c for c in children if c not in known]
        for prefix in present:
            self._seen.setdefault(prefix, -math.inf if self._first_listing else now)
        self._first_listing = False
        gone = set(self._seen) - set(present) - known
        for prefix in gone:
            self._seen.pop(prefix, None)
            self._checked.pop(prefix, None)
        fresh = [p for p in present if p not in self._checked
                 or now - self._seen[p] < IDLE_AFTER]
        rest = sorted((p for p in present if p not in fresh), key=lambda p: self._checked[p])
        return fresh + rest[:RECHECKS]

    def checked(self, prefix: str, model: bool) -> None:
        if model:
            self._checked.pop(prefix, None)
            self._models.add(prefix)
        else:
            self._checked[prefix] = self._monotonic()
            self._models.discard(prefix)

    def is_model(self, prefix: str) -> bool:
        """Whether the prefix held training metrics when last checked."""
        return prefix in self._models
