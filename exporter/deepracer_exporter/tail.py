"""Read a grown TrainingMetrics document by its new tail only.

The simulator rewrites the whole document after every episode, but the new document is the old
one with records inserted before the closing `]` of the metrics array. So after a full read we
remember where that `]` is, the bytes just before it and everything from it to the end (the
trailer). When the object grows, a ranged GET starting `TAIL_CHECK` bytes before the old `]`
brings those bytes again (they must be identical), the new records, and the trailer (it must be
identical too). Anything else - a shorter object, other bytes, another layout, new records that
are not strict JSON - falls back to a full read. The new records are decoded by the same code
and rule as a full read (`parse.array_columns`), so a file gives the same columns whether it
was read whole or in pieces. At 100k episodes this makes a refresh of a grown file about 5x
cheaper (docs/bench.md).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from .parse import Columns, MetricsFileError, array_columns, empty_columns, read_metrics

TAIL_CHECK = 4096
# After the metrics array: only scalar members, then the end of the object.
_TRAILER = re.compile(rb'\]\s*(?:,\s*"(?:[^"\\]|\\.)*"\s*:\s*(?:"(?:[^"\\]|\\.)*"|[-+0-9.eE]+|true'
                      rb'|false|null)\s*)*\}\s*$')
_JSON_SPACE = b" \t\n\r"


@dataclass(frozen=True)
class Mark:
    """Where a document's metrics array ends, and what surrounds that point."""

    size: int  # bytes in the document
    close: int  # offset of the `]` closing the metrics array
    before: bytes  # up to TAIL_CHECK bytes just before `close`
    trailer: bytes  # body[close:]

    @property
    def range_start(self) -> int:
        return self.close - len(self.before)


def decode(body: bytes | bytearray) -> tuple[Columns, Mark | None]:
    """Read a whole document: its columns, and a Mark when its layout allows tail reads.
    Raises MetricsFileError("malformed") for a document that cannot be used."""
    columns, flat = read_metrics(body)
    if not flat or not len(columns) + columns.skipped:
        return columns, None  # the last `]` might close something else, or nothing to follow
    return columns, _mark(body)


def _mark(body: bytes | bytearray) -> Mark | None:
    close = body.rfind(b"]")
    if close <= 0 or not _TRAILER.match(body, close):
        return None
    before = body[max(0, close - TAIL_CHECK):close]
    if not before.rstrip().endswith(b"}"):
        return None
    return Mark(len(body), close, bytes(before), bytes(body[close:]))


def appended(chunk: bytes | bytearray, mark: Mark) -> tuple[Columns, Mark] | None:
    """Columns of the records new in `chunk` (the object from `mark.range_start` on), or None
    if the object is not the old document with records appended."""
    n = len(mark.before)
    close = len(chunk) - len(mark.trailer)
    if close < n or chunk[:n] != mark.before or chunk[close:] != mark.trailer:
        return None
    new = chunk[n:close].strip(_JSON_SPACE)
    if not new:
        columns = empty_columns()
    elif not new.startswith(b","):
        return None
    else:
        try:
            columns = array_columns(b"[" + new[1:] + b"]")
        except MetricsFileError:
            return None
    start = mark.range_start
    window = chunk[max(0, close - TAIL_CHECK):close]
    return columns, Mark(start + len(chunk), start + close, bytes(window), mark.trailer)


def concat(old: Columns, new: Columns) -> Columns:
    return Columns(
        episode=np.concatenate((old.episode, new.episode)),
        trial=np.concatenate((old.trial, new.trial)),
        phase=np.concatenate((old.phase, new.phase)),
        status=np.concatenate((old.status, new.status)),
        reward=np.concatenate((old.reward, new.reward)),
        completion=np.concatenate((old.completion, new.completion)),
        elapsed_ms=np.concatenate((old.elapsed_ms, new.elapsed_ms)),
        skipped=old.skipped + new.skipped,
    )
