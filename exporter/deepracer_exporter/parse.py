"""Document bytes -> values: the one JSON reader of every document, and TrainingMetrics records
straight into compact columns.

A worker's document is kept only as typed numpy columns (about 30 bytes per episode): merging
workers and rounds into iterations needs every value for the medians, so the records and the
bytes are dropped right after this step.

One rule decides which records count, however a document is read (whole, by its new tail, with
invalid records beside the valid ones): a record is a JSON object whose `episode`, `trial`,
`reward_score`, `completion_percentage` and `elapsed_time_in_milliseconds` are JSON numbers (not
strings, not booleans) and whose `phase` and `episode_status` are strings (`_Record`), with values
in range (`_validate`). Other records are dropped and counted in `Columns.skipped`.

Decoding: msgspec decodes a document straight into `_Record` structs, no dicts (about 4x faster
than json + numpy from dicts at 100k episodes; /work/notes/decode-readme.md). What it refuses but
Python's json module reads - the NaN and Infinity literals `json.dump` writes, lone surrogates, a
BOM, UTF-16 - is read with Python's json and the same rule. Every document, side documents too,
goes through `decode_json`'s hardening: an integer too long for a float reads as a float (inf
beyond float range, so no OverflowError or digit-limit ValueError later), and nesting too deep
to decode makes a record invalid or, elsewhere, the document malformed.
"""

from __future__ import annotations

import codecs
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import msgspec
import numpy as np
import numpy.typing as npt

PHASES = ("training", "evaluation")
STATUSES = ("lap_complete", "off_track", "crashed", "reversed", "time_up", "immobilized",
            "in_progress", "other")
_STATUS_CODE = {
    "Lap complete": 0, "Off track": 1, "Crashed": 2, "Reversed": 3, "Time up": 4,
    "Immobilized": 5, "In progress": 6,
}
_OTHER = len(STATUSES) - 1
_PHASE_CODE = {p: i for i, p in enumerate(PHASES)}
LAP_COMPLETE = 0

IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]
Int8Array = npt.NDArray[np.int8]


class MetricsFileError(Exception):
    """A document that cannot be used at all (not JSON, wrong shape, nested too deeply)."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True, eq=False)
class Columns:
    """One worker's valid records, in file order."""

    episode: IntArray
    trial: IntArray
    phase: Int8Array
    status: Int8Array
    reward: FloatArray
    completion: FloatArray  # percent, 0..100, as the file has it
    elapsed_ms: FloatArray
    skipped: int  # records dropped as invalid

    def __len__(self) -> int:
        return int(self.episode.shape[0])

    @property
    def nbytes(self) -> int:
        return sum(a.nbytes for a in (self.episode, self.trial, self.phase, self.status,
                                      self.reward, self.completion, self.elapsed_ms))


def empty_columns(skipped: int = 0) -> Columns:
    return Columns(np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.int8),
                   np.zeros(0, np.int8), np.zeros(0), np.zeros(0), np.zeros(0), skipped)


class _Record(msgspec.Struct, gc=False):
    """The fields of a TrainingMetrics record the exporter reads; others are ignored."""

    episode: float
    trial: float
    phase: str
    episode_status: str
    reward_score: float
    completion_percentage: float
    elapsed_time_in_milliseconds: float


class _Document(msgspec.Struct, gc=False, forbid_unknown_fields=True):
    """The layout the simapp writes. Decoding into it proves every member but `metrics` is a
    scalar; any other layout is read member by member."""

    metrics: list[_Record]
    version: str | float | None = None
    best_model_metric: str | float | None = None


class _SimappRecord(msgspec.Struct, gc=False):
    """A record exactly as the simapp writes it: integer episode, trial and time, a phase and
    status it knows. Every such record is a valid `_Record` with the same values, and decoding
    into it allocates far less (no string per phase and status, small integers shared): decode
    and columns take about 25% less time. A document with any other record is decoded into
    `_Record` as before."""

    episode: int
    trial: int
    phase: Literal["training", "evaluation"]
    episode_status: Literal["Lap complete", "Off track", "Crashed", "Reversed", "Time up",
                            "Immobilized", "In progress"]
    reward_score: int | float
    completion_percentage: int | float
    elapsed_time_in_milliseconds: int


class _SimappDocument(msgspec.Struct, gc=False, forbid_unknown_fields=True):
    metrics: list[_SimappRecord]
    version: str | float | None = None
    best_model_metric: str | float | None = None


_SIMAPP = msgspec.json.Decoder(_SimappDocument)
_DOCUMENT = msgspec.json.Decoder(_Document)
_MEMBERS = msgspec.json.Decoder(dict[str, msgspec.Raw])
_RECORDS = msgspec.json.Decoder(list[_Record])
_ITEMS = msgspec.json.Decoder(list[msgspec.Raw])
_RECORD = msgspec.json.Decoder(_Record)
# What makes msgspec give up on a document that Python's json may still read.
_UNDECODED = (msgspec.DecodeError, RecursionError, UnicodeDecodeError)
_SHAPE = 'expected a JSON object {"metrics": [...]}'
_JSON_SPACE = b" \t\n\r"


def _malformed(what: str, message: str) -> MetricsFileError:
    return MetricsFileError("malformed", f"{what}: {message}" if what else message)


def _int(text: str) -> int | float:
    """A JSON integer as Python's json reads it, unless it is too long for a float (over 300
    characters): then a float (inf beyond float range)."""
    return int(text) if len(text) <= 300 else float(text)


def _loads(body: bytes | bytearray, what: str) -> Any:
    """Python's json, hardened; RecursionError (nesting too deep) is left to the caller."""
    try:
        return json.loads(body, parse_int=_int)
    except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError
        hint = " (truncated or being rewritten?)" if body.strip() else " (empty)"
        raise _malformed(what, f"not valid JSON{hint}: {exc}") from None


def decode_json(body: bytes | bytearray, what: str = "") -> Any:
    """Any document -> Python values, as Python's json reads it (NaN and Infinity too), with
    integers too long for a float read as floats. Raises MetricsFileError("malformed") for
    anything else, nesting too deep to decode included; `what` names the document."""
    try:
        return _loads(body, what)
    except RecursionError:
        raise _malformed(what, "nested too deeply") from None


def metrics_records(body: bytes | bytearray, what: str = "") -> tuple[list[Any], bool]:
    """A `{"metrics": [...], ...}` document -> its records as Python values, and whether every
    other member is a scalar. A record nested too deeply to decode reads as None (an invalid
    record); deep nesting anywhere else makes the document malformed."""
    try:
        doc = _loads(body, what)
    except RecursionError:
        shallow = _without_deep_records(body)
        try:
            doc = _loads(shallow, what) if shallow is not None else None
        except RecursionError:
            doc = None
        if doc is None:
            raise _malformed(what, "nested too deeply") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("metrics"), list):
        raise _malformed(what, _SHAPE)
    records: list[Any] = doc["metrics"]
    return records, all(not isinstance(v, list | dict) for k, v in doc.items() if k != "metrics")


def read_metrics(body: bytes | bytearray) -> tuple[Columns, bool]:
    """A TrainingMetrics document -> its columns, and whether every member but `metrics` is a
    scalar (then the document's last `]` closes the metrics array; see tail.py).

    Raises MetricsFileError("malformed") when it is not `{"metrics": [...], ...}` JSON.
    """
    if not _utf8(body):
        return _tolerant(body)
    try:
        return _columns(_SIMAPP.decode(body).metrics, 0), True
    except (msgspec.ValidationError, OverflowError):
        pass  # a record not as the simapp writes it, or an integer past a float's range
    except _UNDECODED:
        return _tolerant(body)
    try:
        return _columns(_DOCUMENT.decode(body).metrics, 0), True
    except msgspec.ValidationError:
        pass  # another layout, or a record of the wrong type: member by member below
    except _UNDECODED:
        return _tolerant(body)
    try:
        members = _MEMBERS.decode(body)
    except msgspec.ValidationError:
        raise _malformed("", _SHAPE) from None
    except _UNDECODED:
        return _tolerant(body)
    metrics = members.get("metrics")
    if metrics is None or not _starts_with(metrics, b"["):
        raise _malformed("", _SHAPE)
    flat = not any(_starts_with(v, b"[") or _starts_with(v, b"{")
                   for k, v in members.items() if k != "metrics")
    return _array(metrics), flat


def parse_document(body: bytes | bytearray) -> Columns:
    """The columns of a TrainingMetrics document (`read_metrics` without the layout flag)."""
    return read_metrics(body)[0]


def array_columns(data: bytes | bytearray) -> Columns:
    """A JSON array of records (what a tail read brings) -> columns, by the same rule.

    Raises MetricsFileError("malformed") for anything msgspec does not decode; the caller then
    reads the whole document, which gives the same columns for these records.
    """
    if not _utf8(data):
        raise _malformed("", "not UTF-8")
    return _array(data)


def parse_records(records: list[Any]) -> Columns:
    """Python values (e.g. from Python's json) -> columns; invalid records are dropped and
    counted, never raised."""
    try:
        return _columns(msgspec.convert(records, list[_Record]), 0)
    except msgspec.ValidationError:
        pass
    valid = []
    for record in records:
        try:
            valid.append(msgspec.convert(record, _Record))
        except msgspec.ValidationError:
            continue
    return _columns(valid, len(records) - len(valid))


def _utf8(data: bytes | bytearray) -> bool:
    """msgspec does not check the UTF-8 of strings it skips; Python's json refuses the whole
    document, so both must see a document that is UTF-8 (ASCII, as `json.dump` writes, is)."""
    if data.isascii():
        return True
    try:
        codecs.decode(data, "utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _starts_with(raw: msgspec.Raw, prefix: bytes) -> bool:
    return memoryview(raw)[:1].tobytes() == prefix


def _tolerant(body: bytes | bytearray) -> tuple[Columns, bool]:
    records, flat = metrics_records(body)
    return parse_records(records), flat


def _array(data: bytes | bytearray | msgspec.Raw) -> Columns:
    try:
        return _columns(_RECORDS.decode(data), 0)
    except msgspec.ValidationError:
        pass  # not an array, or a record of the wrong type
    except _UNDECODED as exc:
        raise _malformed("", f"not decoded: {exc}") from None
    try:
        items = _ITEMS.decode(data)
    except (msgspec.DecodeError, RecursionError, UnicodeDecodeError):
        raise _malformed("", "expected a JSON array of records") from None
    valid = []
    for item in items:
        try:
            valid.append(_RECORD.decode(item))
        except msgspec.ValidationError:
            continue
        except _UNDECODED as exc:
            raise _malformed("", f"not decoded: {exc}") from None
    return _columns(valid, len(items) - len(valid))


def _columns(records: Sequence[_Record | _SimappRecord], dropped: int) -> Columns:
    n = len(records)
    cols: list[np.ndarray[Any, Any]] = [
        np.fromiter((r.episode for r in records), np.float64, n),
        np.fromiter((r.trial for r in records), np.float64, n),
        np.fromiter((_PHASE_CODE.get(r.phase, -1) for r in records), np.int8, n),
        np.fromiter((_STATUS_CODE.get(r.episode_status, _OTHER) for r in records), np.int8, n),
        np.fromiter((r.reward_score for r in records), np.float64, n),
        np.fromiter((r.completion_percentage for r in records), np.float64, n),
        np.fromiter((r.elapsed_time_in_milliseconds for r in records), np.float64, n),
    ]
    return _validate(cols, dropped)


def _validate(cols: list[np.ndarray[Any, Any]], dropped: int) -> Columns:
    episode, trial, phase, status, reward, completion, elapsed = cols
    with np.errstate(invalid="ignore"):
        ok = (
            np.isfinite(episode) & (episode >= 1) & (episode < 2**40)
            & (episode == np.floor(episode))
            & np.isfinite(trial) & (trial >= 0) & (trial < 2**40)
            & (phase >= 0) & (status >= 0)
            & np.isfinite(reward) & (np.abs(reward) < 1e15)
            & np.isfinite(completion) & (completion >= 0) & (completion <= 100)
            & np.isfinite(elapsed) & (elapsed >= 0) & (elapsed < 1e12)
        )
    valid = int(np.count_nonzero(ok))
    # Every record valid (the usual case): the columns as they are, no copies in fresh memory.
    keep: slice | npt.NDArray[np.bool_] = slice(None) if valid == ok.size else ok
    return Columns(
        episode=episode[keep].astype(np.int64),
        trial=trial[keep].astype(np.int64),
        phase=phase[keep].astype(np.int8, copy=False),
        status=status[keep].astype(np.int8, copy=False),
        reward=reward[keep].astype(np.float64, copy=False),
        completion=completion[keep].astype(np.float64, copy=False),
        elapsed_ms=elapsed[keep].astype(np.float64, copy=False),
        skipped=dropped + ok.size - valid,
    )


# ---------------------------------------------------------------------------------------------
# Nesting too deep to decode: found by bracket depth, without recursion

_BRACKETS = np.frombuffer(b"[]{},:", np.uint8)
_OPENING = np.frombuffer(b"[{", np.uint8)
_CLOSING = np.frombuffer(b"]}", np.uint8)
_COMMA, _COLON, _LBRACE, _LBRACKET = b",:{["
_SHALLOW = 100  # records nested at most this deep are certainly decodable


def _structure(body: bytes | bytearray
               ) -> tuple[IntArray, npt.NDArray[np.uint8], IntArray]:
    """Offsets and characters of the brackets, commas and colons outside strings, and the
    nesting depth after each (numpy over the whole body: no recursion, no Python loop)."""
    b = np.frombuffer(body, np.uint8)
    quotes = np.flatnonzero(b == ord('"'))
    slashes = np.flatnonzero(b == ord("\\"))
    if quotes.size and slashes.size:
        # A quote is escaped when an odd run of backslashes ends right before it.
        first = np.r_[True, np.diff(slashes) != 1]
        starts = slashes[first]
        ends = np.r_[slashes[np.flatnonzero(first)[1:] - 1], slashes[-1]]
        i = np.minimum(np.searchsorted(ends, quotes - 1), ends.size - 1)
        escaped = (ends[i] == quotes - 1) & ((ends[i] - starts[i]) % 2 == 0)
        quotes = quotes[~escaped]
    marks = np.flatnonzero(np.isin(b, _BRACKETS))
    marks = marks[np.searchsorted(quotes, marks) % 2 == 0]  # an even number of quotes before
    chars = b[marks]
    step = np.isin(chars, _OPENING).astype(np.int64) - np.isin(chars, _CLOSING)
    return marks, chars, np.cumsum(step)


def _without_deep_records(body: bytes | bytearray) -> bytes | None:
    """`body` with each record of its top-level metrics array that is nested too deeply to
    decode replaced by `null`; None when there is no such record."""
    marks, chars, depth = _structure(body)
    if not marks.size or chars[0] != _LBRACE:
        return None
    for colon in np.flatnonzero((chars == _COLON) & (depth == 1))[::-1]:  # the last one wins
        if colon + 1 >= marks.size or chars[colon + 1] != _LBRACKET:
            continue
        value = body[marks[colon] + 1:marks[colon + 1]]
        try:
            key = json.loads(body[marks[colon - 1] + 1:marks[colon]])
        except (ValueError, RecursionError):
            return None
        if key == "metrics" and not value.strip(_JSON_SPACE):
            return _replace_deep(body, marks, chars, depth, int(colon) + 1)
    return None


def _replace_deep(body: bytes | bytearray, marks: IntArray, chars: npt.NDArray[np.uint8],
                  depth: IntArray, opening: int) -> bytes | None:
    closed = np.flatnonzero(depth[opening:] == 1)
    if not closed.size:
        return None  # never closed: truncated
    closing = opening + int(closed[0])
    inside = np.arange(opening + 1, closing)
    bounds = np.r_[opening, inside[(depth[inside] == 2) & (chars[inside] == _COMMA)], closing]
    deepest = np.maximum.reduceat(depth[opening:closing + 1], bounds[:-1] - opening)
    pieces = []
    done = 0
    for k in np.flatnonzero(deepest > 2 + _SHALLOW):
        start, end = int(marks[bounds[k]]) + 1, int(marks[bounds[k + 1]])
        try:
            json.loads(body[start:end], parse_int=_int)
        except RecursionError:
            pieces += [body[done:start], b"null"]
            done = end
        except ValueError:
            continue  # not JSON: decoding the whole document says so
    if not pieces:
        return None
    return b"".join([*pieces, body[done:]])
