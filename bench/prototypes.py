"""Candidate speed-ups, measured beside the exporter's own code; none of it is used by the exporter.

`decoders()`: faster JSON decoders for `parse.decode_document` when they are installed
(orjson: drop-in `loads`; msgspec: decodes straight into typed structs, no dicts).
The tail-read prototype that used to live here is now the exporter's own path
(`deepracer_exporter.append`), measured as such in part 5.
"""

from __future__ import annotations

from collections.abc import Callable
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
