"""Where each log format keeps what: the object-key layouts of every training, evaluation and
simtrace file the exporter reads (deepracer-for-cloud, the console export, DeepRacer on AWS), in
one place. Pure functions of key strings: no I/O, no parsing of contents.
"""

from __future__ import annotations

import calendar
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

TRAINING = "training"
EVALUATION = "evaluation"

# ---------------------------------------------------------------------------------------------
# Keys: evaluation runs and training files in every layout

_STAMP14 = r"\d{14}"  # YYYYmmddHHMMSS
_ISO = r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d{1,6})?Z"
_ID = r"[A-Za-z0-9_-]+"

# Relative to `<prefix>/metrics/`. Named groups: stamp (14 digits), unix (Unix seconds),
# iso (ISO 8601 UTC), id (the console/DRoA job id).
_EVALUATION_LAYOUTS = (
    # DRfC today and the console export: evaluation/evaluation-<YYYYmmddHHMMSS>[-<id>].json
    re.compile(rf"^evaluation/evaluation-(?P<stamp>{_STAMP14})(?:-(?P<id>{_ID}))?\.json$"),
    # DRfC before the evaluation/ folder: EvaluationMetrics-<YYYYmmddHHMMSS>.json, and its
    # head-to-model opponent file EvaluationMetrics-<Unix seconds>.json
    re.compile(rf"^EvaluationMetrics-(?:(?P<stamp>{_STAMP14})|(?P<unix>\d{{9,11}}))\.json$"),
    # DRoA: evaluation/<ISO time>-<model name>-evaluation-<id>.json
    re.compile(rf"^evaluation/(?P<iso>{_ISO})-.+-evaluation-(?P<id>{_ID})\.json$"),
)
_TRAINING_EXPORTS = (
    # console export: training/training-<YYYYmmddHHMMSS>-<id>.json
    re.compile(rf"^training/training-(?P<stamp>{_STAMP14})(?:-(?P<id>{_ID}))?\.json$"),
    # DRoA: training/<ISO time>-<model name>-training-<id>.json
    re.compile(rf"^training/(?P<iso>{_ISO})-.+-training-(?P<id>{_ID})\.json$"),
)
_WORKER_FILE = re.compile(r"^TrainingMetrics(?:_(\d+))?\.json$")
_MAX_ID = 32


def _relative(key: str, metrics_prefix: str) -> str | None:
    if not key.startswith(metrics_prefix):
        return None
    return key[len(metrics_prefix):]


def _run_from_match(m: re.Match[str]) -> tuple[str, float | None] | None:
    """(run id, Unix seconds) from a layout match; None when the time in the name is no date.

    The run id starts with the run's time as YYYYmmddHHMMSS (UTC for ISO and Unix names, as
    written for DRfC's local-time names), so run ids sort chronologically across layouts; the
    job id, when the name has one, follows after a dash to keep runs of the same second apart.
    """
    groups = m.groupdict()
    if groups.get("stamp"):
        try:
            parsed = datetime.strptime(groups["stamp"], "%Y%m%d%H%M%S")
        except ValueError:
            return None
        stamp: str = groups["stamp"]
        seconds: float = float(calendar.timegm(parsed.timetuple()))
    elif groups.get("unix"):
        seconds = float(int(groups["unix"]))
        stamp = datetime.fromtimestamp(seconds, UTC).strftime("%Y%m%d%H%M%S")
    elif groups.get("iso"):
        try:
            parsed = datetime.fromisoformat(groups["iso"].replace("Z", "+00:00"))
        except ValueError:
            return None
        seconds = parsed.timestamp()
        stamp = parsed.strftime("%Y%m%d%H%M%S")
    else:  # pragma: no cover - every layout has a time group
        return None
    run_id = f"{stamp}-{groups['id'][:_MAX_ID]}" if groups.get("id") else stamp
    return run_id, seconds


def _match_run(rel: str, layouts: Sequence[re.Pattern[str]]) -> tuple[str, float | None] | None:
    for layout in layouts:
        m = layout.match(rel)
        if m:
            return _run_from_match(m)
    return None


def evaluation_run_key(key: str, metrics_prefix: str) -> str | None:
    """Run id of an evaluation metrics file under `metrics_prefix` (`<prefix>/metrics/`).

    Recognised: `evaluation/evaluation-<YYYYmmddHHMMSS>.json` (DRfC),
    `EvaluationMetrics-<YYYYmmddHHMMSS|Unix seconds>.json` (older DRfC),
    `evaluation/evaluation-<YYYYmmddHHMMSS>-<id>.json` (console) and
    `evaluation/<ISO time>-<name>-evaluation-<id>.json` (DRoA). None for anything else
    (TrainingMetrics files, the training/ folder, other names, deeper folders).
    """
    rel = _relative(key, metrics_prefix)
    if rel is None:
        return None
    run = _match_run(rel, _EVALUATION_LAYOUTS)
    return run[0] if run else None


def evaluation_run_time(run_id: str) -> float | None:
    """Unix seconds of a run id made by `evaluation_run_key` (whole seconds, UTC)."""
    try:
        parsed = datetime.strptime(run_id[:14], "%Y%m%d%H%M%S")
    except ValueError:
        return None
    return float(calendar.timegm(parsed.timetuple()))


def select_training_keys(keys: Iterable[str], metrics_prefix: str) -> dict[int, str]:
    """Worker index -> the key to read, from one round's listing.

    `TrainingMetrics.json` is worker 0 and `TrainingMetrics_<n>.json` worker n (DRfC); a console
    or DRoA export (`training/training-<time>-<id>.json`,
    `training/<ISO time>-<name>-training-<id>.json`) has the document shape of a single worker,
    so it is worker 0. DRfC's `TrainingMetrics*.json` files win: when any is present, exports in
    `training/` are ignored (they would be a second copy of worker 0). Otherwise the newest
    export is worker 0; newest means the latest time in its name (ties: the larger id), not
    LastModified, so the choice does not change when an old export is copied again.
    """
    workers: dict[int, str] = {}
    exports: list[tuple[str, str]] = []
    for key in keys:
        rel = _relative(key, metrics_prefix)
        if rel is None:
            continue
        m = _WORKER_FILE.match(rel)
        if m:
            workers[int(m.group(1)) if m.group(1) else 0] = key
            continue
        run = _match_run(rel, _TRAINING_EXPORTS)
        if run:
            exports.append((run[0], key))
    if workers:
        return workers
    if exports:
        return {0: max(exports)[1]}
    return {}


# ---------------------------------------------------------------------------------------------
# Simtrace files


@dataclass(frozen=True)
class SimtraceKey:
    """What one simtrace object is: a training iteration of a worker, or an evaluation run."""

    kind: str  # TRAINING or EVALUATION
    worker: int
    iteration: int
    run: str | None  # evaluation: the run id of its metrics file; DRoA training: the job folder


_N = r"(?P<it>\d{1,9})-iteration\.csv"
_SIMTRACE_TRAINING = (
    re.compile(rf"^training-simtrace/{_N}$"),  # DRfC, one worker
    re.compile(rf"^(?P<worker>\d{{1,3}})/training-simtrace/{_N}$"),  # DRfC, several workers
    re.compile(rf"^sim-trace/training/training-simtrace/{_N}$"),  # console export
    re.compile(rf"^sim-trace/training/(?P<job>[^/]+)/training-simtrace/{_N}$"),  # DRoA
)
_SIMTRACE_EVALUATION = (
    re.compile(rf"^(?P<folder>evaluation-\d{{14}})/evaluation-simtrace/{_N}$"),  # DRfC
    re.compile(rf"^sim-trace/evaluation/(?P<folder>[^/]+)/evaluation-simtrace/{_N}$"),  # console
)
_FOLDER = re.compile(r"^(?:training-simtrace|sim-trace|\d{1,3}|evaluation-\d{14})$")


def _under(key: str, prefix: str) -> str | None:
    if not prefix:
        return key
    head = prefix.rstrip("/") + "/"
    return key[len(head):] if key.startswith(head) else None


def _evaluation_run(folder: str) -> str | None:
    """The run id evaluation_run_key gives the run's metrics file, which is named like the folder:
    `evaluation-<time>` (DRfC), `<time>-<id>` for `evaluation-<time>-<id>.json` (console),
    `<ISO time>-<name>-evaluation-<id>` (DRoA)."""
    for name in (f"evaluation/{folder}.json", f"evaluation/evaluation-{folder}.json"):
        run = evaluation_run_key(name, "")
        if run is not None:
            return run
    return None


def simtrace_key(key: str, prefix: str) -> SimtraceKey | None:
    """Classify an object key under a model's prefix (`<prefix>/...`); None for anything else."""
    rel = _under(key, prefix)
    if rel is None:
        return None
    for layout in _SIMTRACE_TRAINING:
        m = layout.match(rel)
        if m:
            groups = m.groupdict()
            return SimtraceKey(TRAINING, int(groups.get("worker") or 0), int(groups["it"]),
                               groups.get("job"))
    for layout in _SIMTRACE_EVALUATION:
        m = layout.match(rel)
        if m:
            run = _evaluation_run(m.group("folder"))
            return SimtraceKey(EVALUATION, 0, int(m.group("it")), run) if run else None
    return None


def simtrace_folders(children: Iterable[str], prefix: str) -> tuple[str, ...]:
    """Of a model prefix's immediate folders (as `list_children` gives them), those that can hold
    simtrace files, so the cache lists them and not the checkpoints beside them."""
    out = []
    for child in children:
        rel = _under(child, prefix)
        if rel is not None and _FOLDER.match(rel.rstrip("/")):
            out.append(child)
    return tuple(sorted(out))
