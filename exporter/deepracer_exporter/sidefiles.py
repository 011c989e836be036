"""Pure parsing of what sits beside the training metrics: evaluation runs, model metadata,
hyperparameters and the checkpoint index (their keys are in layouts.py). No I/O here.

Evaluation files (one per evaluation run) are `{"metrics": [record, ...]}`, one record per trial,
as the simapp's `EvalMetrics` writes them: `trial`, `completion_percentage` (integer percent),
`elapsed_time_in_milliseconds`, `episode_status`, `crash_count`, `immobilized_count`,
`off_track_count`, `reversed_count`, `reset_count` (the sum of the four), `metric_time` and
`start_time` (simulation clock). No phase, no reward. What the samples and the simapp show:
- a completed lap is `completion_percentage == 100`. In a continuous evaluation (DRfC's
  default `DR_EVAL_IS_CONTINUOUS=True`) every lap but the last is written while the episode goes
  on, so its `episode_status` is "In progress" although the lap is complete (sample-drfc-1:
  trials 1 and 2 are "In progress" at 100 %, trial 3 is "Lap complete"). Status alone undercounts;
  a record is a completed lap when completion is 100 or the status is "Lap complete";
- off-track/crash resets do not end a trial: they are counted in the `*_count` fields and the
  lap goes on (sample-droa trial 1: `off_track_count` 1, completed in 30.9 s);
- a trial that never finished (status "Time up", or "Off track" etc. when resets ran out) has
  completion below 100; a run whose first lap timed out has one record with `trial` 0;
- `elapsed_time_in_milliseconds` of a completed record is that lap's time (penalties included).
"""


from __future__ import annotations

import math
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from .layouts import evaluation_run_time
from .parse import MetricsFileError, decode_json, metrics_records

MAX_LABEL_LENGTH = 64
UNKNOWN = "unknown"
MAX_HYPERPARAMETERS = 64

# ---------------------------------------------------------------------------------------------
# Evaluation runs

_COUNT_FIELDS = ("off_track_count", "crash_count", "reversed_count", "immobilized_count")


@dataclass(frozen=True)
class EvaluationRun:
    run_id: str
    timestamp: float | None  # Unix seconds of the run's time, from its name
    trials: int  # valid records
    completed_laps: int
    completion_ratio: float | None  # mean completion over trials, 0..1; None without trials
    lap_seconds_mean: float | None  # completed laps only; None without one
    lap_seconds_best: float | None
    resets: int  # sum of reset_count
    off_track: int
    crashes: int
    reversed: int
    immobilized: int
    skipped: int  # invalid records dropped

    @property
    def completed_ratio(self) -> float | None:
        """Share of trials that completed the lap (0..1)."""
        return self.completed_laps / self.trials if self.trials else None


def _count(value: Any) -> int | None:
    """A non-negative integer count, None when it is not one."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    if not math.isfinite(value) or value < 0 or value >= 2**31 or value != math.floor(value):
        return None
    return int(value)


def _number(value: Any, low: float, high: float) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    number = float(value)
    return number if math.isfinite(number) and low <= number <= high else None


def _record(r: Any) -> tuple[float, float, bool, tuple[int, int, int, int], int] | None:
    """(completion %, elapsed ms, completed, counts, resets) or None for an unusable record.

    Completion and elapsed time are required. Counts may be missing (read as 0) but not invalid;
    a missing `reset_count` is the sum of the four counts, as the simapp computes it.
    """
    if not isinstance(r, dict):
        return None
    completion = _number(r.get("completion_percentage"), 0.0, 100.0)
    elapsed = _number(r.get("elapsed_time_in_milliseconds"), 0.0, 1e12)
    if completion is None or elapsed is None:
        return None
    counts = []
    for name in _COUNT_FIELDS:
        value = r.get(name, 0)
        n = _count(value)
        if n is None:
            return None
        counts.append(n)
    resets = _count(r.get("reset_count", sum(counts)))
    if resets is None:
        return None
    status = r.get("episode_status")
    completed = completion >= 100.0 or status == "Lap complete"
    return completion, elapsed, completed, (counts[0], counts[1], counts[2], counts[3]), resets


def parse_evaluation(run_id: str, body: bytes | bytearray) -> EvaluationRun:
    """One evaluation file -> its run summary. Raises MetricsFileError("malformed") when the
    document is not `{"metrics": [...]}`; invalid records are dropped and counted."""
    records, _ = metrics_records(body)
    parsed = [_record(r) for r in records]
    valid = [p for p in parsed if p is not None]
    laps = [p[1] / 1000.0 for p in valid if p[2]]
    totals = [sum(p[3][i] for p in valid) for i in range(4)]
    return EvaluationRun(
        run_id=run_id,
        timestamp=evaluation_run_time(run_id),
        trials=len(valid),
        completed_laps=len(laps),
        completion_ratio=(sum(p[0] for p in valid) / len(valid) / 100.0) if valid else None,
        lap_seconds_mean=sum(laps) / len(laps) if laps else None,
        lap_seconds_best=min(laps) if laps else None,
        resets=sum(p[4] for p in valid),
        off_track=totals[0],
        crashes=totals[1],
        reversed=totals[2],
        immobilized=totals[3],
        skipped=len(parsed) - len(valid),
    )


def latest_runs(runs: Iterable[EvaluationRun], n: int) -> tuple[EvaluationRun, ...]:
    """The newest `n` runs (by run id, which sorts chronologically), oldest first."""
    if n <= 0:
        return ()
    ordered = sorted(runs, key=lambda r: r.run_id)
    return tuple(ordered[-n:])


def best_evaluated_lap(runs: Iterable[EvaluationRun]) -> float | None:
    """Fastest completed evaluation lap over all runs, seconds."""
    best = [r.lap_seconds_best for r in runs if r.lap_seconds_best is not None]
    return min(best) if best else None


# ---------------------------------------------------------------------------------------------
# Model metadata and hyperparameters

MODEL_INFO_LABELS = ("action_space_type", "action_count", "sensors", "neural_network",
                     "training_algorithm", "version")
HYPERPARAMETER_INFO_LABELS = ("exploration_type", "loss_type")
_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,63}$")


def _json_object(body: bytes | bytearray, what: str) -> dict[str, Any]:
    doc = decode_json(body, what)
    if not isinstance(doc, dict):
        raise MetricsFileError("malformed", f"{what}: expected a JSON object")
    return doc


def bounded(value: Any) -> str:
    """A label value: strings and numbers as text (stripped, at most 64 characters, control
    characters removed), anything else or empty -> "unknown"."""
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        return UNKNOWN
    if isinstance(value, float) and not math.isfinite(value):
        return UNKNOWN
    text = "".join(c for c in str(value) if c.isprintable()).strip()[:MAX_LABEL_LENGTH].strip()
    return text or UNKNOWN


def _action_space_type(doc: dict[str, Any]) -> str:
    declared = doc.get("action_space_type")
    space = doc.get("action_space")
    if declared is None:
        # Old metadata has no type; the simapp then trains a discrete space.
        if isinstance(space, list):
            return "discrete"
        return "continuous" if isinstance(space, dict) else UNKNOWN
    return bounded(declared.lower() if isinstance(declared, str) else declared)


def model_info_labels(body: bytes | bytearray) -> dict[str, str]:
    """`model/model_metadata.json` -> the fixed label set `MODEL_INFO_LABELS`, every value bounded.

    `action_count` is the number of discrete actions, "n/a" for a continuous space. A missing
    `neural_network` / `training_algorithm` reads as the simapp's defaults
    (DEEP_CONVOLUTIONAL_NETWORK_SHALLOW, clipped_ppo); other missing or odd values are "unknown".
    `sensors` is the sorted, de-duplicated sensor list joined by ",".
    """
    doc = _json_object(body, "model_metadata.json")
    kind = _action_space_type(doc)
    space = doc.get("action_space")
    if kind == "continuous":
        count = "n/a"
    elif isinstance(space, list):
        count = str(len(space))
    else:
        count = UNKNOWN
    sensors = doc.get("sensor")
    if isinstance(sensors, list) and sensors and all(isinstance(s, str) for s in sensors):
        sensor_label = bounded(",".join(sorted({s.strip() for s in sensors if s.strip()})))
    elif isinstance(sensors, str):
        sensor_label = bounded(sensors)
    else:
        sensor_label = UNKNOWN
    algorithm = doc.get("training_algorithm", "clipped_ppo")
    return {
        "action_space_type": kind,
        "action_count": count,
        "sensors": sensor_label,
        "neural_network": bounded(doc.get("neural_network", "DEEP_CONVOLUTIONAL_NETWORK_SHALLOW")),
        "training_algorithm": bounded(algorithm.lower() if isinstance(algorithm, str)
                                      else algorithm),
        "version": bounded(doc.get("version")),
    }


def action_space_bounds(body: bytes | bytearray) -> dict[str, float]:
    """Speed (m/s) and steering angle (degrees) range of the action space: min/max over the
    discrete actions, or the `low`/`high` of a continuous space. Only the bounds that are there."""
    doc = _json_object(body, "model_metadata.json")
    space = doc.get("action_space")
    values: dict[str, list[float]] = {"speed": [], "steering_angle": []}
    if isinstance(space, list):
        for action in space:
            if not isinstance(action, dict):
                continue
            for field, seen in values.items():
                number = _number(action.get(field), -1e6, 1e6)
                if number is not None:
                    seen.append(number)
    elif isinstance(space, dict):
        for field, seen in values.items():
            rng = space.get(field)
            if isinstance(rng, dict):
                for end in ("low", "high"):
                    number = _number(rng.get(end), -1e6, 1e6)
                    if number is not None:
                        seen.append(number)
    out: dict[str, float] = {}
    for field, seen in values.items():
        if seen:
            out[f"{field}_min"] = min(seen)
            out[f"{field}_max"] = max(seen)
    return out


def _numeric(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        number = float(value)
    elif isinstance(value, str):
        # SageMaker-style hyperparameters may be strings; "3e-4" and "20" still count.
        try:
            number = float(value.strip())
        except ValueError:
            return None
    else:
        return None
    return number if math.isfinite(number) else None


def hyperparameter_values(body: bytes | bytearray) -> dict[str, float]:
    """`ip/hyperparameters.json` -> its numeric values by name (numbers or numeric strings).

    Bounded for use as a `name` label: only top-level keys that look like identifiers
    (`[a-z_][a-z0-9_]*`, at most 64 characters), at most 64 of them (alphabetically first).
    """
    doc = _json_object(body, "hyperparameters.json")
    out: dict[str, float] = {}
    for name in sorted(doc):
        if not isinstance(name, str) or not _NAME.match(name):
            continue
        number = _numeric(doc[name])
        if number is None:
            continue
        out[name] = number
        if len(out) >= MAX_HYPERPARAMETERS:
            break
    return out


def hyperparameter_info_labels(body: bytes | bytearray) -> dict[str, str]:
    """The string hyperparameters `HYPERPARAMETER_INFO_LABELS` (exploration_type, loss_type),
    bounded; "unknown" when missing."""
    doc = _json_object(body, "hyperparameters.json")
    return {name: bounded(doc.get(name)) for name in HYPERPARAMETER_INFO_LABELS}


# ---------------------------------------------------------------------------------------------
# Checkpoints

_CHECKPOINT_NUMBER = re.compile(r"^(\d{1,12})_Step-")


@dataclass(frozen=True)
class Checkpoint:
    name: str  # bounded label value
    number: int | None  # leading integer of "<n>_Step-<steps>.ckpt"
    eval_metric: float | None  # `avg_eval_metric` (older simapps: `avg_comp_pct`)
    sim_time_seconds: float | None  # `time_stamp`: the simulation clock, not wall time


@dataclass(frozen=True)
class Checkpoints:
    last: Checkpoint | None
    best: Checkpoint | None


def _checkpoint(entry: Any) -> Checkpoint | None:
    if not isinstance(entry, dict):
        return None
    name = entry.get("name")
    if not isinstance(name, str) or not name.strip():
        return None  # the simapp writes a null name before the first evaluation
    m = _CHECKPOINT_NUMBER.match(name.strip())
    metric = entry.get("avg_eval_metric", entry.get("avg_comp_pct"))
    return Checkpoint(
        name=bounded(name),
        number=int(m.group(1)) if m else None,
        eval_metric=_number(metric, -1e15, 1e15),
        sim_time_seconds=_number(entry.get("time_stamp"), 0.0, 1e12),
    )


def parse_checkpoints(body: bytes | bytearray) -> Checkpoints:
    """`model/deepracer_checkpoints.json` -> last and best checkpoint.

    Shape (simapp `TrainingMetrics.update`): `{"best_checkpoint": {"name": "12_Step-3456.ckpt",
    "avg_eval_metric": 87.5, "time_stamp": 1234.5}, "last_checkpoint": {...}}`. `time_stamp` is
    the simulation clock at the end of the evaluation (seconds since the simulation started),
    so it orders checkpoints within one training but is not a Unix time.
    """
    doc = _json_object(body, "deepracer_checkpoints.json")
    if "last_checkpoint" not in doc and "best_checkpoint" not in doc:
        raise MetricsFileError("malformed", "deepracer_checkpoints.json: no last_checkpoint "
                               "or best_checkpoint")
    return Checkpoints(last=_checkpoint(doc.get("last_checkpoint")),
                       best=_checkpoint(doc.get("best_checkpoint")))
