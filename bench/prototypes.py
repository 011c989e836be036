"""Candidate speed-ups, measured beside the exporter's own code; none of it is used by the exporter.

- `decoders()`: faster JSON decoders for `parse.decode_document` when they are installed
  (orjson: drop-in `loads`; msgspec: decodes straight into typed structs, no dicts).
- `TailReader`: refresh a grown file by fetching only its new tail (S3 Range GET), checked
  against the last bytes seen, instead of downloading and re-parsing the whole file.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from deepracer_exporter import parse
from deepracer_exporter.parse import Columns

try:
    import msgspec
except ImportError:
    msgspec = None
else:
    class _Record(msgspec.Struct):
        episode: float
        trial: float
        phase: str
        episode_status: str
        reward_score: float
        completion_percentage: float
        elapsed_time_in_milliseconds: float

    class _Document(msgspec.Struct):
        metrics: list[_Record]


def decoders() -> dict[str, Callable[[bytes], Columns]]:
    """Name -> bytes-to-Columns for every candidate decoder importable here."""
    out: dict[str, Callable[[bytes], Columns]] = {}
    try:
        import orjson

        def with_orjson(body: bytes) -> Columns:
            return parse.parse_records(orjson.loads(body)["metrics"])

        out["orjson"] = with_orjson
    except ImportError:
        pass
    if msgspec is not None:
        decoder = msgspec.json.Decoder(_Document)

        def with_msgspec(body: bytes) -> Columns:
            recs = decoder.decode(body).metrics  # a typed record is rejected -> json fallback
            n = len(recs)
            cols: list[np.ndarray[Any, Any]] = [
                np.fromiter((r.episode for r in recs), np.float64, n),
                np.fromiter((r.trial for r in recs), np.float64, n),
                np.fromiter((parse._PHASE_CODE.get(r.phase, -1) for r in recs), np.int8, n),
                np.fromiter((parse._STATUS_CODE.get(r.episode_status, parse._OTHER)
                             for r in recs), np.int8, n),
                np.fromiter((r.reward_score for r in recs), np.float64, n),
                np.fromiter((r.completion_percentage for r in recs), np.float64, n),
                np.fromiter((r.elapsed_time_in_milliseconds for r in recs), np.float64, n),
            ]
            return parse._validate(cols, 0)

        out["msgspec"] = with_msgspec
    return out


def concat(a: Columns, b: Columns) -> Columns:
    return Columns(*(np.concatenate((getattr(a, f), getattr(b, f))) for f in (
        "episode", "trial", "phase", "status", "reward", "completion", "elapsed_ms")),
        skipped=a.skipped + b.skipped)


OVERLAP = 4096


@dataclass
class TailState:
    end: int  # offset just past the last record's closing brace
    overlap: bytes  # the OVERLAP bytes before `end`, to check the file only grew
    columns: Columns


def _records_end(body: bytes) -> int:
    """Offset just past the last record: the `]` closing `metrics` is the last `]` in DRfC files."""
    close = body.rfind(b"]")
    if close < 0:
        raise ValueError("no closing bracket")
    return body.rfind(b"}", 0, close) + 1


def full_state(body: bytes) -> TailState:
    cols = parse.parse_document(body)
    end = _records_end(body)
    return TailState(end, body[max(0, end - OVERLAP):end], cols)


def grow(state: TailState, chunk: bytes, chunk_start: int) -> TailState | None:
    """New state from the file's bytes from `chunk_start` on, or None: fall back to a full GET.

    `chunk` must begin with the stored overlap (same bytes where the old records ended);
    what follows is `, {record}, ...], "version": ...}`.
    """
    k = state.end - chunk_start
    if k != len(state.overlap) or chunk[:k] != state.overlap:
        return None
    rest = chunk[k:]
    close = rest.rfind(b"]")
    if close < 0:
        return None
    body = rest[:close].lstrip()
    if not body:
        return state
    if not body.startswith(b","):
        return None
    cols = parse.parse_document(b'{"metrics": [' + body[1:] + b"]}")
    end = chunk_start + k + rest.rfind(b"}", 0, close) + 1
    new_overlap = chunk[: end - chunk_start][-OVERLAP:]
    return TailState(end, new_overlap, concat(state.columns, cols))
