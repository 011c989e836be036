"""Candidate decoders, measured beside the exporter's own path; none of it is used by the exporter.

`decoders()`: the alternatives to the exporter's msgspec path that issue 16 weighed, when they
are installed (orjson: a fast `loads` into dicts, then the exporter's record rule). The
tail-read prototype that used to live here is the exporter's own path (`deepracer_exporter.tail`),
measured as such in part 5.
"""

from __future__ import annotations

from collections.abc import Callable

from deepracer_exporter import parse
from deepracer_exporter.parse import Columns


def decoders() -> dict[str, Callable[[bytes], Columns]]:
    """Name -> bytes-to-Columns for every candidate decoder importable here."""
    out: dict[str, Callable[[bytes], Columns]] = {}
    try:
        import orjson
    except ImportError:
        return out

    def with_orjson(body: bytes) -> Columns:
        return parse.parse_records(orjson.loads(body)["metrics"])

    out["orjson"] = with_orjson
    return out
