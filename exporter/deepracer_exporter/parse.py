"""TrainingMetrics JSON bytes -> compact columns.

A worker's document is kept only as typed numpy columns (about 30 bytes per episode): merging
workers and rounds into iterations needs every value for the medians, so the raw dicts and the
bytes are dropped right after this step.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

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
    """A metrics document that cannot be used at all (not JSON, wrong shape)."""

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


def load_document(body: bytes) -> dict[str, Any]:
    """Decode a metrics document, checking it is `{"metrics": [...], ...}`."""
    try:
        doc = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        hint = " (truncated or being rewritten?)" if body.strip() else " (empty)"
        raise MetricsFileError("malformed", f"not valid JSON{hint}: {exc}") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("metrics"), list):
        raise MetricsFileError("malformed", 'expected a JSON object {"metrics": [...]}')
    return doc


def decode_document(body: bytes) -> list[Any]:
    """Decode a TrainingMetrics document and return its `metrics` list."""
    records: list[Any] = load_document(body)["metrics"]
    return records


def parse_records(records: list[Any]) -> Columns:
    """Validate records into columns; invalid records are dropped and counted, never raised."""
    if not records:
        return empty_columns()
    try:
        return _validate(*_fast(records))
    except (KeyError, TypeError, ValueError, OverflowError):
        return _validate(*_slow(records))


def parse_document(body: bytes) -> Columns:
    return parse_records(decode_document(body))


def _fast(records: list[Any]) -> tuple[list[np.ndarray[Any, Any]], int]:
    n = len(records)
    cols: list[np.ndarray[Any, Any]] = [
        np.fromiter((r["episode"] for r in records), np.float64, n),
        np.fromiter((r["trial"] for r in records), np.float64, n),
        np.fromiter((_PHASE_CODE.get(r["phase"], -1) for r in records), np.int8, n),
        np.fromiter((_STATUS_CODE.get(r["episode_status"], _OTHER) for r in records), np.int8, n),
        np.fromiter((r["reward_score"] for r in records), np.float64, n),
        np.fromiter((r["completion_percentage"] for r in records), np.float64, n),
        np.fromiter((r["elapsed_time_in_milliseconds"] for r in records), np.float64, n),
    ]
    if any(not isinstance(r["episode_status"], str) for r in records):
        raise TypeError("episode_status")
    return cols, 0


def _number(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return math.nan
    return float(value)


def _slow(records: list[Any]) -> tuple[list[np.ndarray[Any, Any]], int]:
    rows = []
    dropped = 0
    for r in records:
        if not isinstance(r, dict):
            dropped += 1
            continue
        status = r.get("episode_status")
        phase = r.get("phase")
        rows.append((
            _number(r.get("episode")),
            _number(r.get("trial")),
            _PHASE_CODE.get(phase, -1) if isinstance(phase, str) else -1,
            _STATUS_CODE.get(status, _OTHER) if isinstance(status, str) else -1,
            _number(r.get("reward_score")),
            _number(r.get("completion_percentage")),
            _number(r.get("elapsed_time_in_milliseconds")),
        ))
    if not rows:
        return [np.zeros(0) for _ in range(7)], dropped
    table = list(zip(*rows, strict=True))
    cols: list[np.ndarray[Any, Any]] = [
        np.asarray(c, dtype=np.int8 if i in (2, 3) else np.float64) for i, c in enumerate(table)]
    return cols, dropped


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
    skipped = dropped + int(ok.size - np.count_nonzero(ok))
    return Columns(
        episode=episode[ok].astype(np.int64),
        trial=trial[ok].astype(np.int64),
        phase=phase[ok].astype(np.int8),
        status=status[ok].astype(np.int8),
        reward=reward[ok].astype(np.float64),
        completion=completion[ok].astype(np.float64),
        elapsed_ms=elapsed[ok].astype(np.float64),
        skipped=skipped,
    )

