"""The immutable state one refresh produces and every scrape reads."""

from __future__ import annotations

import math
from dataclasses import dataclass

from .analysis import ModelAnalysis
from .config import DEFAULT_ITERATION_STATS
from .config import IterationStats as IterationStatSelection
from .derive import Derived
from .sidefiles import Checkpoints, EvaluationRun
from .simtrace import IterationSteps, IterationTiming
from .telegraf_listener import PolicyState, PushState


@dataclass(frozen=True)
class Health:
    success: bool
    duration_seconds: float
    last_success: float | None  # Unix seconds
    errors: tuple[tuple[str, int], ...]  # (reason, count) for every reason, zeros included
    downloaded: int
    not_modified: int
    tail: int  # grown objects read by their new tail only (ranged GET)
    downloaded_bytes: int
    poll_interval: float = 0.0  # seconds between the model's refreshes now (polling.py)
    last_error: str | None = None


@dataclass(frozen=True)
class SimulatorIteration:
    """One training iteration's simulator figures from its simtrace files (workers merged)."""

    iteration: int  # master iteration, as the other per-iteration families number it
    steps: IterationSteps | None  # None when no file of the iteration has a step interval
    timing: IterationTiming | None  # None without wall-clock data (worker 0)


@dataclass(frozen=True)
class Simulator:
    """What the model's simtrace files say; `ModelExtras.simulator` is None without any.
    Evaluation runs are those exported (`ModelExtras.evaluation_runs`) that have simtrace."""

    iterations: tuple[SimulatorIteration, ...]  # latest round, latest `max_iterations`, in order
    evaluation_runs: tuple[tuple[str, IterationSteps], ...]  # (run id, its files merged)

    def latest(self) -> SimulatorIteration | None:
        """The latest iteration with step timing: what the current-state families show."""
        return next((it for it in reversed(self.iterations) if it.steps is not None), None)


@dataclass(frozen=True)
class ModelExtras:
    """What sits beside the training metrics: evaluation runs, metadata, checkpoints."""

    evaluation_runs: tuple[EvaluationRun, ...] = ()  # the latest `max_evaluation_runs`
    evaluation_run_count: int = 0
    best_evaluation_lap: float | None = None
    metadata: tuple[tuple[str, str], ...] = ()  # bounded _info labels of model_metadata.json
    action_space: tuple[tuple[str, float], ...] = ()
    hyperparameters: tuple[tuple[str, float], ...] = ()
    hyperparameter_info: tuple[tuple[str, str], ...] = ()
    checkpoints: Checkpoints | None = None
    checkpoints_updated: float | None = None  # LastModified of deepracer_checkpoints.json
    simulator: Simulator | None = None  # None when the model has no simtrace file
    analysis: ModelAnalysis | None = None  # simtrace's episodes, actions and positions
    policy: PolicyState | None = None  # from an export's trainer log (logreader.py)


@dataclass(frozen=True)
class ModelSnapshot:
    name: str
    bucket: str  # bucket, or the directory for a local source
    prefix: str  # latest round's prefix
    source: str  # s3 | directory
    derived: Derived | None  # last good data; None until the first success
    last_update: float | None  # newest LastModified of the metrics objects
    health: Health
    extras: ModelExtras = ModelExtras()
    history_max_age: float = math.inf  # seconds; from config (per model or global)

    def history_exported(self, now: float) -> bool:
        """False while the model is idle: its metrics objects unchanged for longer than
        `history_max_age`. An idle model exports only its current-state families, so a bucket
        of old models does not cost Prometheus their whole history."""
        return self.last_update is None or now - self.last_update <= self.history_max_age


@dataclass(frozen=True)
class Snapshot:
    models: tuple[ModelSnapshot, ...]
    discovery: tuple[tuple[str, bool], ...]  # (source label, last listing succeeded)
    refresh_interval: float
    rolling_window: int
    created: float
    iteration_stats: IterationStatSelection = DEFAULT_ITERATION_STATS  # (phase, family, stats)
    push: PushState | None = None  # DRfC's metrics push, when the UDP listener is on
    s3_requests: tuple[tuple[str, str, int], ...] = ()  # (operation, status, count); S3 only

    def pushed(self, model: ModelSnapshot) -> PolicyState | None:
        """The trainer's policy figures for the model: pushed by DRfC's containers or followed
        in its container's log (both keyed by the S3 prefix the training writes to, so matched
        to the model's latest round), else read from its export's trainer log."""
        live = self.push.models.get(model.prefix) if self.push is not None else None
        return live if live is not None else model.extras.policy

    def unmatched_push_models(self) -> int:
        """Model tags pushed that match no watched model (their data is kept, bounded, in case
        the model is found later, but not exported)."""
        if self.push is None:
            return 0
        return len(set(self.push.models) - {m.prefix for m in self.models})
