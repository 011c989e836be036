"""One log line per failure, not one per refresh (repeated at most every 10 minutes), and one
line per record."""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Hashable

REPEAT_SECONDS = 600.0
# What a log reader may take for the end of a line, or a terminal for a command: C0 controls
# but tab and newline (a configuration error lists its problems one per line), DEL, C1
# controls (NEL, U+0085, among them) and the Unicode line and paragraph separators.
_LINE_BREAKING = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u2028\u2029]")


def _escape(match: re.Match[str]) -> str:
    return match.group().encode("unicode_escape").decode("ascii")


class LineFormatter(logging.Formatter):
    """Writes what would break a log line escaped (`\\x85`, `\\u2028`), wherever it comes
    from: model names and discovered prefixes (which may hold C1 controls and separators; C0
    ones are refused in them), object keys, pushed tags, exception messages. A traceback keeps
    its newlines."""

    def format(self, record: logging.LogRecord) -> str:
        return _LINE_BREAKING.sub(_escape, super().format(record))


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
