"""One log line per failure, not one per refresh: repeated at most every 10 minutes."""

from __future__ import annotations

from collections.abc import Callable, Hashable

REPEAT_SECONDS = 600.0


class LogLimiter:
    """Says when a failure (or its recovery) is worth a log line.

    A failing thing is identified by `key`; its failure by `reason`. The first failure is
    logged, the same reason again only after REPEAT_SECONDS, another reason at once.
    """

    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        self._logged: dict[Hashable, tuple[str, float]] = {}

    def failed(self, key: Hashable, reason: str) -> bool:
        now = self._clock()
        last = self._logged.get(key)
        if last is not None and last[0] == reason and now - last[1] < REPEAT_SECONDS:
            return False
        self._logged[key] = (reason, now)
        return True

    def recovered(self, key: Hashable) -> bool:
        """True once after failures were logged for `key`."""
        return self._logged.pop(key, None) is not None
