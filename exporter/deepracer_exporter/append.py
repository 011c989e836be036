"""Read a grown TrainingMetrics document by its new tail only.

The simulator rewrites the whole document after every episode, but the new document is the old
one with records inserted before the closing `]` of the metrics array. So after a full read we
remember where that `]` is, the bytes just before it and everything from it to the end (the
trailer). When the object grows, a ranged GET starting `TAIL_CHECK` bytes before the old `]`
brings those bytes again (they must be identical), the new records, and the trailer (it must be
identical too). Anything else - a shorter object, other bytes, another layout - falls back to a
full read. At 100k episodes this makes a refresh of a grown file about 5x cheaper
(docs/bench.md).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

import numpy as np

from .parse import Columns, load_document, parse_records

TAIL_CHECK = 4096
# After the metrics array: only scalar members, then the end of the object.
_TRAILER = re.compile(rb'\]\s*(?:,\s*"(?:[^"\\]|\\.)*"\s*:\s*(?:"(?:[^"\\]|\\.)*"|[-+0-9.eE]+|true'
                      rb'|false|null)\s*)*\}\s*$')
_DECODER = json.JSONDecoder()


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


def decode(body: bytes) -> tuple[list[Any], Mark | None]:
    """Decode a whole document: its records, and a Mark when its layout allows tail reads."""
    doc = load_document(body)
    records: list[Any] = doc["metrics"]
    return records, _mark(body, doc)


def _mark(body: bytes, doc: dict[str, Any]) -> Mark | None:
    if not doc["metrics"] or any(isinstance(v, list | dict) for k, v in doc.items()
                                 if k != "metrics"):
        return None  # the last `]` might close something else
    close = body.rfind(b"]")
    if close <= 0 or not _TRAILER.match(body, close):
        return None
    before = body[max(0, close - TAIL_CHECK):close]
    if not before.rstrip().endswith(b"}"):
        return None
    return Mark(len(body), close, before, body[close:])


def appended(chunk: bytes, mark: Mark) -> tuple[list[Any], Mark] | None:
    """New records in `chunk` (the object from `mark.range_start` on), or None if the object
    is not the old document with records appended."""
    n = len(mark.before)
    if chunk[:n] != mark.before:
        return None
    text = chunk[n:]
    records: list[Any] = []
    pos = 0
    try:
        decoded = text.decode()
    except UnicodeDecodeError:
        return None
    while True:
        while pos < len(decoded) and decoded[pos].isspace():
            pos += 1
        if decoded.startswith("]", pos):
            break
        if not decoded.startswith(",", pos):
            return None
        try:
            record, pos = _DECODER.raw_decode(decoded, pos + 1 + _spaces(decoded, pos + 1))
        except json.JSONDecodeError:
            return None
        records.append(record)
    close_rel = n + len(decoded[:pos].encode())
    trailer = chunk[close_rel:]
    if trailer != mark.trailer:
        return None
    window = chunk[:close_rel]
    start = mark.range_start
    return records, Mark(start + len(chunk), start + close_rel, window[-TAIL_CHECK:], trailer)


def _spaces(text: str, pos: int) -> int:
    end = pos
    while end < len(text) and text[end].isspace():
        end += 1
    return end - pos


def concat(old: Columns, new_records: list[Any]) -> Columns:
    new = parse_records(new_records)
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
