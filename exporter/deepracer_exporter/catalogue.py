"""The metric catalogue: every family the exporter exposes, declared once.

An entry gives a family's name, type, labels, HELP, unit, docs section and where its value
comes from. The custom collector (collector.py) builds the small families from it at every
refresh, the cached renderer (render.py) renders the per-iteration ones from it, and the metric
tables of docs/metrics.md are generated from it (`python -m deepracer_exporter.catalogue
docs/metrics.md`; a test fails when they are not current). Adding a family is one entry plus
its value function.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from . import __version__, analysis, sidefiles
from .cloudwatchlogs import CloudWatchState
from .config import DEFAULT_ITERATION_STATS, FULL_ITERATION_STATS
from .config import IterationStats as IterationStatSelection
from .derive import STATS, Derived, FloatArray, IterationTable
from .dockerlogs import DockerState
from .parse import PHASES, STATUSES
from .simtrace import IterationSteps
from .snapshot import ModelSnapshot, Simulator, SimulatorIteration, Snapshot
from .telegraf_listener import RESULTS as PUSH_RESULTS
from .telegraf_listener import PolicyState

Sample = tuple[tuple[str, ...], float]  # label values in the family's label order, value

CACHED = " Cached: refreshed in the background every {interval:g}s."

# docs/metrics.md's sections, in the order they appear there:
# (marker, heading, text under the heading).
SECTIONS = {
    "state": ("metrics", "Current state, one series per model (and phase)", ""),
    "iteration": ("metrics", "Per iteration (labels model, phase, round, iteration; the latest "
                  "`max_iterations` iterations)", ""),
    "laps": ("metrics", "Fastest laps", ""),
    "evaluation": ("metrics", "Evaluation runs, model metadata, checkpoints", (
        "Evaluation runs are the files DRfC writes per evaluation "
        "(`metrics/evaluation/evaluation-<time>.json`,\nearlier "
        "`metrics/EvaluationMetrics-<time>.json`) and the console/DRoA exports'\n"
        "`metrics/evaluation/*.json`. `run` is a sortable id made from the time in the file "
        "name (plus the\nconsole's job id); the latest `max_evaluation_runs` (default 10) runs "
        "are exported. A trial counts\nas a completed lap when its completion is 100 % (in a "
        "continuous evaluation every lap but the last\nis written \"In progress\") or its "
        "status is \"Lap complete\".")),
    "simulator": ("metrics", "Simulator health, from simtrace", (
        "Only for models with simtrace files (`training-simtrace/<N>-iteration.csv` per worker, "
        "console/DRoA\n`sim-trace/...`, `evaluation-<time>/evaluation-simtrace/`), each read "
        "once. Per iteration: the latest\nround's latest `max_iterations` iterations, workers "
        "merged, `iteration` numbered like the other\nper-iteration families; absent while "
        "the model is idle (`history_max_age`). Step time is simulated\nseconds between "
        "consecutive steps of an episode: the car acts 15 times per simulated second\n"
        "(0.0667 s). Real-time factor and the training/policy split need simulators that write "
        "`wall_clock`.")),
    "analysis": ("metrics", "Training analysis, from simtrace", (
        "What deepracer-utils' training-analysis notebook computes from the same simtrace "
        "files (`simulation_agg`,\n`ActionBreakdownUtils`), live: per iteration (the "
        "simulator families' iterations) the episodes'\nmean speed, distance and projected lap "
        "time, and the latest iteration's action usage. The model's\npage draws the episodes "
        "on the track. Details: docs/analysis.md.")),
    "policy": ("metrics", "Policy training, from the trainer (optional)", (
        "From the trainer's `Policy training>` lines or DRfC's metrics push: the trainer "
        "container's log\n(`docker` section), CloudWatch Logs (`cloudwatch`), DRfC's push "
        "(`telegraf: {listen: ...}`, simapp\n5.3.x), or the log file of a console/DeepRacer-on-"
        "AWS export; matched to a model by "
        "its latest round's prefix (see\ndocs/compose.md, \"Policy metrics per DeepRacer "
        "version\").")),
    "health": ("health", "Exporter health", ""),
}


@dataclass(frozen=True, kw_only=True)
class Family:
    name: str  # as exposed: counters end in _total, nothing else does
    type: str  # gauge | counter
    labels: tuple[str, ...]
    help: str  # HELP text; "{window}" becomes rolling_window
    section: str  # key of SECTIONS
    doc: str = ""  # the docs' meaning when it says more than HELP
    unit: str = ""  # base unit, also the name's suffix: seconds, ratio, bytes

    def help_text(self, snapshot: Snapshot) -> str:
        return (self.help.format(window=snapshot.rolling_window)
                + CACHED.format(interval=snapshot.refresh_interval))


@dataclass(frozen=True, kw_only=True)
class ModelFamily(Family):
    """Current state of one model: exported for every model, idle ones included."""

    values: Callable[[Snapshot, ModelSnapshot], Iterable[Sample]]  # labels after `model`
    # One sample per simtrace iteration: rendered as text by render.SimtraceRenderer and kept
    # while the model's simtrace figures are unchanged, not rebuilt by the collector every refresh.
    simtrace_iterations: bool = False


@dataclass(frozen=True, kw_only=True)
class ExporterFamily(Family):
    """Not tied to one model."""

    values: Callable[[Snapshot], Iterable[Sample]]


@dataclass(frozen=True, kw_only=True)
class IterationFamily(Family):
    """One series per (model, phase, round, iteration) and extra label value; rendered as
    cached text by render.py. `column` gives one value per `extra_values` entry for every row of
    the model's `IterationTable`, shape (rows, len(extra_values)) or (rows,) for one value (NaN:
    no sample); `stat_key` names the family in `iteration_stats`, which selects the stats
    exported."""

    extra_values: tuple[str, ...] = ("",)
    stat_key: str | None = None
    column: Callable[[IterationTable], FloatArray]


@dataclass(frozen=True, kw_only=True)
class SeriesReport(Family):
    """Computed by the collector from everything else it and the renderer expose."""


def _derived(fn: Callable[[Derived], Iterable[Sample]]
             ) -> Callable[[Snapshot, ModelSnapshot], Iterable[Sample]]:
    """A value taken from the model's derived data; none until its first good refresh."""
    return lambda _s, m: fn(m.derived) if m.derived is not None else ()


def _one(value: float | None) -> list[Sample]:
    return [] if value is None else [((), float(value))]


def _status_column(t: IterationTable) -> FloatArray:
    """Episodes per outcome; no sample for an outcome that did not occur."""
    return np.where(t.status_episodes > 0, t.status_episodes, np.nan)


def _best_laps(d: Derived) -> list[Sample]:
    ranks: dict[str, int] = {}
    out: list[Sample] = []
    for lap in d.best_laps:
        ranks[lap.phase] = ranks.get(lap.phase, 0) + 1
        out.append(((lap.phase, str(ranks[lap.phase]), str(lap.round), str(lap.iteration),
                     str(lap.episode), str(lap.worker)), lap.seconds))
    return out


def _run_values(fn: Callable[[sidefiles.EvaluationRun], Iterable[Sample]]
                ) -> Callable[[Snapshot, ModelSnapshot], Iterable[Sample]]:
    """Samples of every exported evaluation run, labelled by run."""
    return lambda _s, m: [((run.run_id, *labels), v) for run in m.extras.evaluation_runs
                          for labels, v in fn(run)]


def _run_lap_seconds(run: sidefiles.EvaluationRun) -> list[Sample]:
    if run.lap_seconds_mean is None or run.lap_seconds_best is None:
        return []
    return [(("mean",), run.lap_seconds_mean), (("min",), run.lap_seconds_best)]


def _info(values: tuple[tuple[str, str], ...], names: tuple[str, ...]) -> list[Sample]:
    if not values:
        return []
    found = dict(values)
    return [(tuple(found.get(k, sidefiles.UNKNOWN) for k in names), 1.0)]


def _checkpoints(m: ModelSnapshot) -> list[Sample]:
    cps = m.extras.checkpoints
    if cps is None:
        return []
    return [((kind, ), float(cp.number)) for kind, cp in (("last", cps.last), ("best", cps.best))
            if cp is not None and cp.number is not None]


def _checkpoint_metrics(m: ModelSnapshot) -> list[Sample]:
    cps = m.extras.checkpoints
    if cps is None:
        return []
    return [((kind,), cp.eval_metric) for kind, cp in (("last", cps.last), ("best", cps.best))
            if cp is not None and cp.eval_metric is not None]


def _checkpoints_updated(m: ModelSnapshot) -> list[Sample]:
    if m.extras.checkpoints is None:
        return []
    return _one(m.extras.checkpoints_updated)


def _pushed(fn: Callable[[PolicyState], Iterable[Sample]]
            ) -> Callable[[Snapshot, ModelSnapshot], Iterable[Sample]]:
    """A value from what DRfC's containers pushed for the model; none without a push."""
    def values(s: Snapshot, m: ModelSnapshot) -> Iterable[Sample]:
        state = s.pushed(m)
        return fn(state) if state is not None else ()
    return values


def _iteration_entropy(s: Snapshot, m: ModelSnapshot) -> Iterable[Sample]:
    state = s.pushed(m)
    if state is None or not m.history_exported(s.created):
        return ()
    return [((str(iteration),), entropy) for iteration, entropy in state.iteration_entropy]


def _cloudwatch(s: Snapshot, fn: Callable[[CloudWatchState], list[Sample]]) -> list[Sample]:
    """A figure of the CloudWatch Logs source; none without a `cloudwatch` section."""
    return fn(s.push.cloudwatch) if s.push is not None and s.push.cloudwatch is not None else []


def _docker(s: Snapshot, fn: Callable[[DockerState], list[Sample]]) -> list[Sample]:
    """A figure of the Docker source; none without a `docker` section."""
    return fn(s.push.docker) if s.push is not None and s.push.docker is not None else []


def _simulator(fn: Callable[[Simulator], Iterable[Sample]]
               ) -> Callable[[Snapshot, ModelSnapshot], Iterable[Sample]]:
    """A value from the model's simtrace figures; none for a model without simtrace."""
    return lambda _s, m: fn(m.extras.simulator) if m.extras.simulator is not None else ()


def _latest_steps(fn: Callable[[SimulatorIteration, IterationSteps], float | None]
                  ) -> Callable[[Snapshot, ModelSnapshot], Iterable[Sample]]:
    """A figure of the latest iteration with step timing (current state: idle models too)."""
    def values(sim: Simulator) -> list[Sample]:
        it = sim.latest()
        return [] if it is None or it.steps is None else _one(fn(it, it.steps))
    return _simulator(values)


def _simulator_iterations(fn: Callable[[Snapshot, SimulatorIteration], Iterable[Sample]]
                          ) -> Callable[[Snapshot, ModelSnapshot], Iterable[Sample]]:
    """Per-iteration simulator samples, labelled by iteration; none while the model is idle,
    like the other per-iteration families."""
    def values(s: Snapshot, m: ModelSnapshot) -> Iterable[Sample]:
        sim = m.extras.simulator
        if sim is None or not m.history_exported(s.created):
            return ()
        return [((str(it.iteration), *labels), v) for it in sim.iterations
                for labels, v in fn(s, it)]
    return values


def _analysis_iterations(fn: Callable[[analysis.IterationAnalysis], Iterable[Sample]]
                         ) -> Callable[[Snapshot, ModelSnapshot], Iterable[Sample]]:
    """Per-iteration analysis samples, labelled by iteration; none while the model is idle."""
    def values(s: Snapshot, m: ModelSnapshot) -> Iterable[Sample]:
        a = m.extras.analysis
        if a is None or not m.history_exported(s.created):
            return ()
        return [((str(it.iteration), *labels), v) for it in a.iterations
                for labels, v in fn(it)]
    return values


def _action_shares(m: ModelSnapshot) -> list[Sample]:
    """The latest iteration's share of rows per action (discrete: index, steering angle and
    speed from model_metadata.json) or per steering x speed cell (continuous)."""
    a = m.extras.analysis
    if a is None:
        return []
    latest = a.latest()
    if latest.grid is not None:
        total = latest.grid.sum()
        return [(("", steer, speed), float(latest.grid[i, j] / total) if total else 0.0)
                for i, steer in enumerate(analysis.STEERING_CELLS)
                for j, speed in enumerate(analysis.SPEED_CELLS)]
    named = {act.index: act for act in a.actions}
    shares = latest.shares()
    indices = sorted(set(named) | set(range(len(shares))))
    return [((str(i), f"{named[i].steering_angle:g}" if i in named else "",
              f"{named[i].speed:g}" if i in named else ""),
             float(shares[i]) if i < len(shares) else 0.0) for i in indices]


def _step_stats(steps: IterationSteps | None, full: bool) -> list[Sample]:
    if steps is None:
        return []
    out: list[Sample] = [(("mean",), steps.mean), (("p95",), steps.p95)]
    return [*out, (("max",), steps.max)] if full else out


def _iteration_step_stats(s: Snapshot, it: SimulatorIteration) -> list[Sample]:
    """mean and p95; max too with `iteration_stats: full` (every statistic of every family)."""
    return _step_stats(it.steps, s.iteration_stats == FULL_ITERATION_STATS)


def _simulator_runs(fn: Callable[[IterationSteps], Iterable[Sample]]
                    ) -> Callable[[Snapshot, ModelSnapshot], Iterable[Sample]]:
    """Samples of every exported evaluation run that has simtrace, labelled by run."""
    return _simulator(lambda sim: [((run, *labels), v) for run, steps in sim.evaluation_runs
                                   for labels, v in fn(steps)])


def _requests(m: ModelSnapshot) -> list[Sample]:
    h = m.health
    return [(("downloaded",), h.downloaded), (("not_modified",), h.not_modified),
            (("tail",), h.tail)]


MODEL = ("model",)
PHASE = ("model", "phase")
RUN = ("model", "run")

FAMILIES: tuple[Family, ...] = (
    # -- current state ---------------------------------------------------------------------
    ModelFamily(
        name="deepracer_model_info", type="gauge", section="state",
        labels=("model", "bucket", "prefix", "source"),
        help="Watched DeepRacer model (always 1).",
        doc="one per watched model; `prefix` is the latest round's prefix, `source` is `s3` or "
            "`directory` (then `bucket` is the directory)",
        values=lambda _s, m: [((m.bucket, m.prefix, m.source), 1.0)]),
    ModelFamily(
        name="deepracer_model_iteration", type="gauge", section="state", labels=MODEL,
        help="Latest training iteration (continues across rounds).",
        doc="latest master iteration that has training episodes",
        values=_derived(lambda d: _one(d.latest_iteration if d.latest_iteration >= 0
                                       else None))),
    ModelFamily(
        name="deepracer_model_iteration_episodes", type="gauge", section="state", labels=MODEL,
        help="Training episodes of the latest iteration so far; below "
             "deepracer_model_episodes_per_iteration while that iteration is unfinished.",
        doc="training episodes of the latest iteration so far (all workers); while it is below "
            "`deepracer_model_episodes_per_iteration` the iteration is unfinished: its "
            "per-iteration values still move and no rolling mean or plateau counts it",
        values=_derived(lambda d: _one(d.latest_iteration_episodes if d.latest_iteration >= 0
                                       else None))),
    ModelFamily(
        name="deepracer_model_round", type="gauge", section="state", labels=MODEL,
        help="Latest training round (1-based).", doc="latest round number",
        values=_derived(lambda d: _one(d.latest_round))),
    ModelFamily(
        name="deepracer_model_episodes_per_iteration", type="gauge", section="state",
        labels=MODEL, help="Training episodes per iteration, all workers together.",
        values=_derived(lambda d: _one(d.episodes_per_iteration))),
    ModelFamily(
        name="deepracer_model_workers", type="gauge", section="state", labels=MODEL,
        help="Workers (TrainingMetrics*.json files) in the latest round.",
        doc="number of `TrainingMetrics*.json` workers in the latest round",
        values=_derived(lambda d: _one(d.workers))),
    ModelFamily(
        name="deepracer_model_last_update_timestamp_seconds", type="gauge", section="state",
        labels=MODEL, unit="seconds",
        help="Newest LastModified of the model's metrics objects, Unix seconds.",
        doc="newest LastModified (Unix seconds) of the model's metrics objects; staleness is "
            "`time() - this`",
        values=lambda _s, m: _one(m.last_update)),
    ModelFamily(
        name="deepracer_model_finished", type="gauge", section="state", labels=MODEL,
        help="1 when the latest round reached term_cond_max_episodes.",
        doc="1 when the latest round reached `term_cond_max_episodes` of its hyperparameters, "
            "else 0",
        values=_derived(lambda d: _one(1 if d.finished else 0))),
    ModelFamily(
        name="deepracer_model_best_lap_seconds", type="gauge", section="state", labels=PHASE,
        unit="seconds", help="Fastest completed lap.",
        doc="fastest completed lap over all iterations",
        values=_derived(lambda d: [((p,), s) for p, s in d.best_lap.items()])),
    ModelFamily(
        name="deepracer_model_episodes_total", type="counter", section="state",
        labels=("model", "phase", "status"), help="Episodes by phase and outcome.",
        doc="episodes by outcome (every status present, zeros included)",
        values=_derived(lambda d: [((p, s), d.episodes_by_status.get((p, s), 0))
                                   for p in PHASES for s in STATUSES])),
    ModelFamily(
        name="deepracer_model_rolling_completion_ratio", type="gauge", section="state",
        labels=PHASE, unit="ratio",
        help="Rolling mean of per-iteration mean completion (0..1) at the latest iteration.",
        doc="rolling mean (window `rolling_window`) of the per-iteration mean completion, at "
            "the latest iteration",
        values=_derived(lambda d: [((p,), v) for p, v in d.rolling_completion.items()])),
    ModelFamily(
        name="deepracer_model_rolling_reward", type="gauge", section="state", labels=PHASE,
        help="Rolling mean of per-iteration mean reward at the latest iteration.",
        doc="same for mean reward",
        values=_derived(lambda d: [((p,), v) for p, v in d.rolling_reward.items()])),
    ModelFamily(
        name="deepracer_model_plateau_iterations", type="gauge", section="state",
        labels=("model", "phase", "metric"),
        help="Iterations since the rolling mean last reached a new maximum.",
        doc="iterations since the rolling mean (`metric` = `completion` or `reward`) last "
            "reached a new maximum",
        values=_derived(lambda d: [((p, k), n) for (p, k), n in d.plateau.items()])),
    ModelFamily(
        name="deepracer_model_skipped_records", type="gauge", section="state", labels=MODEL,
        help="Records dropped as invalid (missing fields, wrong types, NaN, out of range).",
        values=_derived(lambda d: _one(d.skipped_records))),
    ModelFamily(
        name="deepracer_model_iteration_history", type="gauge", section="state", labels=MODEL,
        help="1 when the model's per-iteration series are exported, 0 when it has been idle "
             "for longer than history_max_age.",
        doc="1 when the `deepracer_iteration_*` series of the model are exported; 0 when its "
            "metrics objects have not changed for longer than `history_max_age` (only the "
            "current-state families are exported then; history comes back when it is written "
            "to again)",
        values=lambda s, m: _one(1 if m.history_exported(s.created) else 0)),
    # -- per iteration (render.py) ---------------------------------------------------------
    IterationFamily(
        name="deepracer_iteration_reward", type="gauge", section="iteration",
        labels=("stat",), extra_values=STATS, stat_key="reward",
        help="Reward per episode.", column=lambda t: t.reward),
    IterationFamily(
        name="deepracer_iteration_completion_ratio", type="gauge", section="iteration",
        labels=("stat",), extra_values=STATS, stat_key="completion", unit="ratio",
        help="Track completion per episode, 0..1.",
        doc="track completion, 0..1 (completion_percentage / 100)",
        column=lambda t: t.completion),
    IterationFamily(
        name="deepracer_iteration_episode_seconds", type="gauge", section="iteration",
        labels=("stat",), extra_values=STATS, stat_key="episode_seconds", unit="seconds",
        help="Episode duration over all episodes (deepracer-utils 'time').",
        doc="episode duration over all episodes (deepracer-utils' `time`)",
        column=lambda t: t.episode_seconds),
    IterationFamily(
        name="deepracer_iteration_lap_seconds", type="gauge", section="iteration",
        labels=("stat",), extra_values=STATS, stat_key="lap_seconds", unit="seconds",
        help="Lap time of completed laps only.",
        doc="lap time of completed laps only; absent when no lap was completed",
        column=lambda t: t.lap_seconds),
    IterationFamily(
        name="deepracer_iteration_completed_ratio", type="gauge", section="iteration",
        labels=(), unit="ratio", help="Share of episodes that completed the lap, 0..1.",
        doc="share of episodes with status \"Lap complete\" (0..1)",
        column=lambda t: t.completed / t.episodes),
    IterationFamily(
        name="deepracer_iteration_episodes", type="gauge", section="iteration", labels=(),
        help="Episodes in the iteration.", doc="episode count",
        column=lambda t: t.episodes.astype(np.float64)),
    IterationFamily(
        name="deepracer_iteration_status_episodes", type="gauge", section="iteration",
        labels=("status",), extra_values=STATUSES, help="Episodes by outcome.",
        doc="episode count by outcome (only statuses that occurred)", column=_status_column),
    IterationFamily(
        name="deepracer_iteration_rolling_reward", type="gauge", section="iteration",
        labels=("stat",), extra_values=STATS, stat_key="rolling_reward",
        help="Rolling mean over {window} iterations of the reward statistic.",
        doc="rolling mean over the last `rolling_window` iterations of the reward stat "
            "(plotProgress' line)",
        column=lambda t: t.rolling_reward),
    IterationFamily(
        name="deepracer_iteration_rolling_completion_ratio", type="gauge",
        section="iteration", labels=("stat",), extra_values=STATS,
        stat_key="rolling_completion", unit="ratio",
        help="Rolling mean over {window} iterations of the completion statistic.",
        doc="same for completion", column=lambda t: t.rolling_completion),
    # -- fastest laps ----------------------------------------------------------------------
    ModelFamily(
        name="deepracer_best_lap_seconds", type="gauge", section="laps", unit="seconds",
        labels=("model", "phase", "rank", "round", "iteration", "episode", "worker"),
        help="Fastest completed laps, rank 1 first.",
        doc="the `top_laps` fastest completed laps (rank 1 = fastest); the notebook's \"best "
            "laps\" table",
        values=_derived(_best_laps)),
    # -- evaluation runs, metadata, checkpoints --------------------------------------------
    ModelFamily(
        name="deepracer_evaluation_runs", type="gauge", section="evaluation", labels=MODEL,
        help="Evaluation runs found (all rounds).",
        doc="evaluation runs found (all of them, all rounds)",
        values=lambda _s, m: _one(m.extras.evaluation_run_count or None)),
    ModelFamily(
        name="deepracer_evaluation_timestamp_seconds", type="gauge", section="evaluation",
        labels=RUN, unit="seconds",
        help="Start of the evaluation run, from its file name, Unix seconds.",
        doc="the run's time from its file name (DRfC names are local time, read as UTC)",
        values=_run_values(lambda r: _one(r.timestamp))),
    ModelFamily(
        name="deepracer_evaluation_trials", type="gauge", section="evaluation", labels=RUN,
        help="Trials in the evaluation run.", doc="trials in the run",
        values=_run_values(lambda r: _one(r.trials))),
    ModelFamily(
        name="deepracer_evaluation_completed_laps", type="gauge", section="evaluation",
        labels=RUN, help="Completed laps (completion 100%) in the evaluation run.",
        doc="completed laps", values=_run_values(lambda r: _one(r.completed_laps))),
    ModelFamily(
        name="deepracer_evaluation_completion_ratio", type="gauge", section="evaluation",
        labels=RUN, unit="ratio", help="Mean completion of the evaluation run's trials, 0..1.",
        doc="mean completion of the trials, 0..1",
        values=_run_values(lambda r: _one(r.completion_ratio))),
    ModelFamily(
        name="deepracer_evaluation_lap_seconds", type="gauge", section="evaluation",
        labels=(*RUN, "stat"), unit="seconds",
        help="Lap time of the run's completed laps (stat mean or min).",
        doc="`mean` and `min` lap time of completed trials (penalties included)",
        values=_run_values(_run_lap_seconds)),
    ModelFamily(
        name="deepracer_evaluation_resets", type="gauge", section="evaluation",
        labels=(*RUN, "reason"), help="Resets in the evaluation run by cause.",
        doc="resets by cause: `off_track`, `crashed`, `reversed`, `immobilized`",
        values=_run_values(lambda r: [(("off_track",), r.off_track), (("crashed",), r.crashes),
                                      (("reversed",), r.reversed),
                                      (("immobilized",), r.immobilized)])),
    ModelFamily(
        name="deepracer_model_best_evaluation_lap_seconds", type="gauge",
        section="evaluation", labels=MODEL, unit="seconds",
        help="Fastest completed lap over all evaluation runs.",
        values=lambda _s, m: _one(m.extras.best_evaluation_lap)),
    ModelFamily(
        name="deepracer_model_metadata_info", type="gauge", section="evaluation",
        labels=("model", *sidefiles.MODEL_INFO_LABELS),
        help="model_metadata.json of the latest round (always 1).",
        doc="`model/model_metadata.json` of the latest round; values cut to 64 characters, "
            "`unknown` when missing",
        values=lambda _s, m: _info(m.extras.metadata, sidefiles.MODEL_INFO_LABELS)),
    ModelFamily(
        name="deepracer_model_action_space", type="gauge", section="evaluation",
        labels=("model", "bound"),
        help="Action space bounds from model_metadata.json (speed m/s, degrees).",
        doc="`speed_min`, `speed_max` (m/s), `steering_angle_min`, `steering_angle_max` "
            "(degrees)",
        values=lambda _s, m: [((b,), v) for b, v in m.extras.action_space]),
    ModelFamily(
        name="deepracer_model_hyperparameter", type="gauge", section="evaluation",
        labels=("model", "name"),
        help="Numeric hyperparameters of the latest round (ip/hyperparameters.json).",
        doc="numeric values of `ip/hyperparameters.json` (batch_size, lr, discount_factor, ...)",
        values=lambda _s, m: [((n,), v) for n, v in m.extras.hyperparameters]),
    ModelFamily(
        name="deepracer_model_hyperparameters_info", type="gauge", section="evaluation",
        labels=("model", *sidefiles.HYPERPARAMETER_INFO_LABELS),
        help="Text hyperparameters of the latest round (always 1).",
        doc="text values of the hyperparameters",
        values=lambda _s, m: _info(m.extras.hyperparameter_info,
                                   sidefiles.HYPERPARAMETER_INFO_LABELS)),
    ModelFamily(
        name="deepracer_model_checkpoint", type="gauge", section="evaluation",
        labels=("model", "kind"), help="Checkpoint number from model/deepracer_checkpoints.json.",
        doc="number of the `last` and `best` checkpoint in `model/deepracer_checkpoints.json`",
        values=lambda _s, m: _checkpoints(m)),
    ModelFamily(
        name="deepracer_model_checkpoint_eval_metric", type="gauge", section="evaluation",
        labels=("model", "kind"),
        help="avg_eval_metric of the last and best checkpoint in deepracer_checkpoints.json.",
        doc="the trainer's evaluation metric of the `last` and `best` checkpoint "
            "(`avg_eval_metric`: mean completion percent, or reward when the model's "
            "`best_model_metric` is reward): what the trainer ranked the checkpoints by",
        values=lambda _s, m: _checkpoint_metrics(m)),
    ModelFamily(
        name="deepracer_model_checkpoint_timestamp_seconds", type="gauge",
        section="evaluation", labels=MODEL, unit="seconds",
        help="LastModified of model/deepracer_checkpoints.json, Unix seconds.",
        doc="LastModified of that file: when the trainer last saved a checkpoint",
        values=lambda _s, m: _checkpoints_updated(m)),
    # -- simulator health (simtrace) -------------------------------------------------------
    ModelFamily(
        name="deepracer_iteration_step_seconds", type="gauge", section="simulator",
        simtrace_iterations=True,
        labels=("model", "iteration", "stat"), unit="seconds",
        help="Simulated seconds between steps in the iteration, workers merged (stat mean, p95; "
             "max with iteration_stats full).",
        doc="simulated seconds between consecutive steps of an episode, all workers' files of "
            "the iteration merged as deepracer-utils' OVERALL line: `mean` (weighted by steps), "
            "`p95` (mean of the workers' p95), `max` only with `iteration_stats: full`; the "
            "target is 0.0667 (15 steps per simulated second)",
        values=_simulator_iterations(_iteration_step_stats)),
    ModelFamily(
        name="deepracer_iteration_real_time_factor", type="gauge", section="simulator",
        simtrace_iterations=True,
        labels=("model", "iteration"),
        help="Simulated seconds per wall-clock second in the iteration (mean over workers).",
        doc="simulated seconds per wall-clock second, mean of the workers'; 1 is real time, "
            "under 1 the host cannot keep up (only where simtrace has `wall_clock`)",
        values=_simulator_iterations(lambda _s, it: _one(
            it.steps.real_time_factor if it.steps is not None else None))),
    ModelFamily(
        name="deepracer_iteration_training_seconds", type="gauge", section="simulator",
        simtrace_iterations=True,
        labels=("model", "iteration"), unit="seconds",
        help="Wall-clock seconds worker 0 spent simulating the iteration's episodes.",
        doc="wall-clock span of worker 0's rows of the iteration: the time spent simulating "
            "(only with `wall_clock`)",
        values=_simulator_iterations(lambda _s, it: _one(
            it.timing.training_seconds if it.timing is not None else None))),
    ModelFamily(
        name="deepracer_iteration_policy_seconds", type="gauge", section="simulator",
        simtrace_iterations=True,
        labels=("model", "iteration"), unit="seconds",
        help="Wall-clock seconds from the iteration's last step to the next iteration's first "
             "(policy update and evaluation).",
        doc="wall-clock gap from worker 0's last row of the iteration to its first row of the "
            "next: the trainer updating the policy (and evaluating); absent for the latest "
            "iteration and where the next iteration's file is missing. Training over policy "
            "time is `deepracer_iteration_training_seconds / deepracer_iteration_policy_seconds`",
        values=_simulator_iterations(lambda _s, it: _one(
            it.timing.policy_seconds if it.timing is not None else None))),
    ModelFamily(
        name="deepracer_model_step_p95_seconds", type="gauge", section="simulator",
        labels=MODEL, unit="seconds",
        help="95th percentile of the step time in the latest iteration with simtrace.",
        doc="`p95` step time of the latest iteration with simtrace (workers merged); over "
            "0.090 means the simulator is too slow",
        values=_latest_steps(lambda _it, st: st.p95)),
    ModelFamily(
        name="deepracer_model_step_mean_seconds", type="gauge", section="simulator",
        labels=MODEL, unit="seconds",
        help="Mean step time in the latest iteration with simtrace.",
        doc="mean step time of that iteration; over 0.070 means performance problems",
        values=_latest_steps(lambda _it, st: st.mean)),
    ModelFamily(
        name="deepracer_model_real_time_factor", type="gauge", section="simulator",
        labels=MODEL, help="Real-time factor of the latest iteration with simtrace.",
        doc="real-time factor of that iteration (only with `wall_clock`)",
        values=_latest_steps(lambda _it, st: st.real_time_factor)),
    ModelFamily(
        name="deepracer_model_simtrace_iteration", type="gauge", section="simulator",
        labels=MODEL, help="The iteration the model's current simulator figures come from.",
        doc="the iteration those figures come from (numbered like `deepracer_model_iteration`, "
            "so the difference shows how far simtrace lags)",
        values=_latest_steps(lambda it, _st: it.iteration)),
    ModelFamily(
        name="deepracer_evaluation_step_seconds", type="gauge", section="simulator",
        labels=(*RUN, "stat"), unit="seconds",
        help="Simulated seconds between steps in the evaluation run (stat mean, p95, max).",
        doc="step time of an exported evaluation run (same `run` as "
            "`deepracer_evaluation_lap_seconds`): `mean`, `p95`, `max`",
        values=_simulator_runs(lambda st: _step_stats(st, True))),
    ModelFamily(
        name="deepracer_evaluation_real_time_factor", type="gauge", section="simulator",
        labels=RUN, help="Simulated seconds per wall-clock second in the evaluation run.",
        doc="real-time factor of the run (only with `wall_clock`)",
        values=_simulator_runs(lambda st: _one(st.real_time_factor))),
    # -- training analysis (simtrace) ---------------------------------------------------------
    ModelFamily(
        name="deepracer_iteration_speed_meters_per_second", type="gauge", section="analysis",
        simtrace_iterations=True,
        labels=("model", "iteration"),
        help="Mean over the iteration's training episodes of each episode's mean speed.",
        doc="mean over the iteration's episodes (all workers) of simulation_agg's `speed` (the "
            "episode's mean speed decision); rising while completion holds means the car "
            "learns to go faster",
        values=_analysis_iterations(lambda it: _one(it.speed))),
    ModelFamily(
        name="deepracer_iteration_distance_meters", type="gauge", section="analysis",
        simtrace_iterations=True,
        labels=("model", "iteration"),
        help="Mean distance driven per training episode in the iteration.",
        doc="mean of simulation_agg's `dist` over the iteration's episodes",
        values=_analysis_iterations(lambda it: _one(it.distance))),
    ModelFamily(
        name="deepracer_iteration_projected_lap_seconds", type="gauge", section="analysis",
        simtrace_iterations=True,
        labels=("model", "iteration", "stat"), unit="seconds",
        help="Episode time scaled to a full lap (time x 100 / progress) in the iteration "
             "(stat min, median).",
        doc="simulation_agg's `time_if_complete` of the iteration's episodes: `min` (the most "
            "promising episode) and `median`; a lap time to expect before laps complete",
        values=_analysis_iterations(lambda it: [
            ((stat,), v) for stat, v in (("min", it.projected_min),
                                         ("median", it.projected_median)) if v is not None])),
    ModelFamily(
        name="deepracer_model_action_ratio", type="gauge", section="analysis",
        labels=("model", "action", "steering_angle", "speed"), unit="ratio",
        help="Share of the latest simtrace iteration's steps taken with each action.",
        doc="share of the latest iteration's simtrace rows per action: `action` is the "
            "index, `steering_angle` (degrees) and `speed` (m/s) from model_metadata.json; for "
            "a continuous action space `action` is empty and the labels are steering x speed "
            "cells (`-6..6`, `1..2`). One share near 1 means the policy collapsed onto one "
            "action",
        values=lambda _s, m: _action_shares(m)),
    # -- policy training (DRfC's metrics push) ----------------------------------------------
    ModelFamily(
        name="deepracer_policy_entropy", type="gauge", section="policy", labels=MODEL,
        help="Entropy of the policy at the latest policy-training epoch (pushed by the trainer).",
        doc="the trainer's entropy at the latest epoch; it should fall steadily while the "
            "policy learns",
        values=_pushed(lambda p: _one(p.entropy))),
    ModelFamily(
        name="deepracer_policy_kl_divergence", type="gauge", section="policy", labels=MODEL,
        help="KL divergence between the old and new policy at the latest epoch.",
        values=_pushed(lambda p: _one(p.kl_divergence))),
    ModelFamily(
        name="deepracer_policy_surrogate_loss", type="gauge", section="policy", labels=MODEL,
        help="PPO surrogate loss at the latest policy-training epoch.",
        values=_pushed(lambda p: _one(p.surrogate_loss))),
    ModelFamily(
        name="deepracer_policy_epochs_total", type="counter", section="policy", labels=MODEL,
        help="Policy-training epochs received since the exporter started.",
        values=_pushed(lambda p: _one(p.epochs))),
    ModelFamily(
        name="deepracer_policy_last_epoch_timestamp_seconds", type="gauge", section="policy",
        labels=MODEL, unit="seconds",
        help="Unix time of the latest epoch: received (push), printed (container log) or the "
             "export log file's last write.",
        values=_pushed(lambda p: _one(p.last_epoch_time))),
    ModelFamily(
        name="deepracer_iteration_policy_entropy", type="gauge", section="policy",
        labels=("model", "iteration"),
        help="Mean entropy over the policy-training epochs that followed the iteration.",
        doc="mean entropy of the policy update after each training iteration (the iteration is "
            "the model's latest one when the update starts); follows `history_max_age` like "
            "the other per-iteration families",
        values=_iteration_entropy),
    ModelFamily(
        name="deepracer_push_episodes_total", type="counter", section="policy", labels=MODEL,
        help="Episode lines pushed by the simulator since the exporter started.",
        values=_pushed(lambda p: _one(p.episodes))),
    # -- exporter health -------------------------------------------------------------------
    ModelFamily(
        name="deepracer_exporter_refresh_success", type="gauge", section="health",
        labels=MODEL,
        help="1 if the model's last refresh succeeded (else last good data is served).",
        doc="1 if the last refresh of the model succeeded, else 0 (the last good data is still "
            "served)",
        values=lambda _s, m: _one(1 if m.health.success else 0)),
    ModelFamily(
        name="deepracer_exporter_refresh_duration_seconds", type="gauge", section="health",
        labels=MODEL, unit="seconds", help="Duration of the model's last refresh.",
        values=lambda _s, m: _one(m.health.duration_seconds)),
    ModelFamily(
        name="deepracer_exporter_last_refresh_success_timestamp_seconds", type="gauge",
        section="health", labels=MODEL, unit="seconds",
        help="Unix time of the model's last successful refresh.",
        doc="Unix time of the last successful refresh",
        values=lambda _s, m: _one(m.health.last_success)),
    ModelFamily(
        name="deepracer_exporter_refresh_errors_total", type="counter", section="health",
        labels=("model", "reason"), help="Failed refreshes by reason.",
        doc="failed refreshes; reason in `not_found`, `access_denied`, `unreachable`, "
            "`timeout`, `server_error`, `malformed`, `too_large`, `other`; all created at 0",
        values=lambda _s, m: [((r,), n) for r, n in m.health.errors]),
    ModelFamily(
        name="deepracer_exporter_object_requests_total", type="counter", section="health",
        labels=("model", "result"),
        help="Objects read (metrics, side documents, simtrace): downloaded, not_modified "
             "(conditional GET answered 304) or tail (grown object, only its new records read).",
        doc="objects read (metrics, evaluation and side documents, simtrace CSVs): "
            "`downloaded` (read in full), `tail` (grown: only the new "
            "records read with a ranged GET) or `not_modified` (conditional GET answered 304); "
            "every S3 request is in `deepracer_exporter_s3_requests_total`",
        values=lambda _s, m: _requests(m)),
    ModelFamily(
        name="deepracer_exporter_refresh_interval_seconds", type="gauge", section="health",
        labels=MODEL, unit="seconds",
        help="Seconds between the model's refreshes now (longer while finished or idle).",
        doc="seconds between two refreshes of the model now: `refresh_interval` while it "
            "trains, up to `max_refresh_interval` once it is finished or unchanged for 10 "
            "minutes (docs/polling.md)",
        values=lambda _s, m: _one(m.health.poll_interval or None)),
    ModelFamily(
        name="deepracer_exporter_downloaded_bytes_total", type="counter", section="health",
        labels=MODEL, unit="bytes", help="Bytes of object bodies downloaded.",
        values=lambda _s, m: _one(m.health.downloaded_bytes)),
    SeriesReport(
        name="deepracer_exporter_series", type="gauge", section="health", labels=MODEL,
        help="Series the model contributes to this exposition (per-iteration ones included).",
        doc="series of this exposition that carry the model's label, this one included: what "
            "the model costs Prometheus (see docs/bench.md, Sizing)"),
    ExporterFamily(
        name="deepracer_exporter_s3_requests_total", type="counter", section="health",
        labels=("operation", "status"),
        help="S3 requests sent (every attempt), by operation and HTTP status.",
        doc="every S3 request sent, retries included, discovery included: what S3 bills "
            "(`operation` `ListObjectsV2` or `GetObject`; `status` the HTTP status, `error` "
            "without an answer); the usual ones created at 0; only with an S3 source",
        values=lambda s: [((op, status), n) for op, status, n in s.s3_requests]),
    ExporterFamily(
        name="deepracer_exporter_models", type="gauge", section="health", labels=(),
        help="Models watched.", values=lambda s: [((), len(s.models))]),
    ExporterFamily(
        name="deepracer_exporter_snapshot_timestamp_seconds", type="gauge", section="health",
        labels=(), unit="seconds",
        help="Unix time the served snapshot was built (one per refresh cycle).",
        doc="Unix time the served snapshot was built (once per refresh cycle)",
        values=lambda s: [((), s.created)]),
    ExporterFamily(
        name="deepracer_exporter_discovery_success", type="gauge", section="health",
        labels=("source",), help="1 if the last listing of a discover entry succeeded.",
        doc="1 if the last listing of a `discover` entry succeeded (`source` is "
            "`s3://bucket/prefix` or the directory)",
        values=lambda s: [((src,), 1 if ok else 0) for src, ok in s.discovery]),
    ExporterFamily(
        name="deepracer_exporter_push_lines_total", type="counter", section="health",
        labels=("result",), help="Lines received on the metrics-push listener, by result.",
        doc="lines received on the `telegraf` listener: `policy` and `episode` (used), "
            "`other_measurement`, `malformed`, `too_long`, `model_limit` (more model tags than "
            "held), `rate_limited` (dropped); only when the listener is on",
        values=lambda s: [] if s.push is None or not s.push.listening else [
            ((r,), s.push.lines.get(r, 0)) for r in PUSH_RESULTS]),
    ExporterFamily(
        name="deepracer_exporter_push_unmatched_models", type="gauge", section="health",
        labels=(), help="Model tags pushed that match no watched model's latest prefix.",
        values=lambda s: [] if s.push is None else [((), s.unmatched_push_models())]),
    ExporterFamily(
        name="deepracer_exporter_docker_containers_followed", type="gauge", section="health",
        labels=(), help="Trainer containers whose log is being followed through the Docker "
                        "Engine.",
        doc="containers matching `docker.containers` whose log is followed now; only with a "
            "`docker` section",
        values=lambda s: _docker(s, lambda d: [((), d.followed)])),
    ExporterFamily(
        name="deepracer_exporter_docker_errors_total", type="counter", section="health",
        labels=("reason",), help="Failed Docker Engine requests and broken log streams, by "
                                 "reason.",
        doc="failed Docker Engine requests and log streams: `unreachable` (no socket, dockerd "
            "stopped), `access_denied` (the socket's group is not the exporter's), `timeout`, "
            "`api_error` (an HTTP error answer), `protocol`; all created at 0",
        values=lambda s: _docker(s, lambda d: [((r,), n) for r, n in d.errors.items()])),
    ExporterFamily(
        name="deepracer_exporter_docker_lines_total", type="counter", section="health",
        labels=("result",), help="Trainer lines read from container logs, by result.",
        doc="lines of the followed containers' logs that the trainer writes: `policy` "
            "(Policy training), `checkpoint`, `unreadable` (a marker with values that are not "
            "numbers)",
        values=lambda s: _docker(s, lambda d: [((r,), n) for r, n in d.lines.items()])),
    ExporterFamily(
        name="deepracer_exporter_cloudwatch_errors_total", type="counter", section="health",
        labels=("reason",), help="Failed CloudWatch Logs reads, by reason.",
        doc="failed reads of the `cloudwatch` log group, reasons as "
            "`deepracer_exporter_refresh_errors_total`; all created at 0",
        values=lambda s: _cloudwatch(s, lambda c: [((r,), n) for r, n in c.errors.items()])),
    ExporterFamily(
        name="deepracer_exporter_cloudwatch_lines_total", type="counter", section="health",
        labels=("result",), help="Trainer lines read from CloudWatch Logs, by result.",
        doc="trainer lines read from the `cloudwatch` log group: `policy`, `checkpoint`, "
            "`unreadable`",
        values=lambda s: _cloudwatch(s, lambda c: [((r,), n) for r, n in c.lines.items()])),
    ExporterFamily(
        name="deepracer_exporter_build_info", type="gauge", section="health",
        labels=("version",), help="Exporter version (always 1).",
        values=lambda _s: [((__version__,), 1)]),
)

MODEL_FAMILIES = tuple(f for f in FAMILIES if isinstance(f, ModelFamily))
SIMTRACE_FAMILIES = tuple(f for f in MODEL_FAMILIES if f.simtrace_iterations)
ITERATION_FAMILIES = tuple(f for f in FAMILIES if isinstance(f, IterationFamily))


# -- docs/metrics.md -----------------------------------------------------------------------------

def _type(f: Family) -> str:
    return f"{f.type} (1)" if "(always 1)" in f.help else f.type


_PROPER = ("Unix",)  # words whose capital stays at the start of a meaning


def _meaning(f: Family) -> str:
    """HELP as a table cell: without its full stop, and lower case unless the first word is a
    name or an acronym (KL, PPO, Unix)."""
    if f.doc:
        return f.doc.strip()
    text = f.help.format(window="`rolling_window`").rstrip(".")
    first = text.split(" ", 1)[0]
    if first in _PROPER or first[1:2].isupper():
        return text
    return text[:1].lower() + text[1:]


def _stat_cell(f: IterationFamily, phase: str, selection: IterationStatSelection) -> str:
    if f.stat_key is None:
        return "(no stat)"
    chosen = next(s for p, k, s in selection if (p, k) == (phase, f.stat_key))
    return ", ".join(chosen) or "none"


def default_series_per_iteration(phase: str, statuses: int = 1) -> int:
    """Series of one iteration and phase in the default set, with `statuses` outcomes seen."""
    stats = sum(len(s) for p, _, s in DEFAULT_ITERATION_STATS if p == phase)
    plain = sum(1 for f in ITERATION_FAMILIES if f.stat_key is None and f.labels == ())
    return stats + plain + statuses


def _iteration_text() -> str:
    t, e = (default_series_per_iteration(p) for p in PHASES)
    full = len(STATS) * sum(1 for f in ITERATION_FAMILIES if f.stat_key is not None)
    return (
        "Which `stat` values are exported is set by `iteration_stats` (`default` below, `full` "
        "for all four\nin both phases, or a mapping overriding the default per phase and "
        f"family). With the default set an\niteration has {t} series in training and {e} in "
        f"evaluation, plus one per further outcome that occurred\n({t + e + 2} with two "
        f"outcomes per phase); `full` exports {full} stat series per phase instead of\n"
        f"{t - 3} and {e - 3}. A model idle for longer than `history_max_age` (default 7d) "
        "exports none of these\nfamilies (see `deepracer_model_iteration_history`). Lower "
        "`max_iterations` for many models\n(`shard` spreads them over several exporters).")


def _table(families: Sequence[Family], marker: str) -> list[str]:
    if families and isinstance(families[0], IterationFamily):
        rows = ["| family | extra labels | default stats, training | default stats, evaluation "
                "| meaning |", "|---|---|---|---|---|"]
        for f in families:
            assert isinstance(f, IterationFamily)
            rows.append(f"| `{f.name}` | {', '.join(f.labels)} | "
                        f"{_stat_cell(f, PHASES[0], DEFAULT_ITERATION_STATS)} | "
                        f"{_stat_cell(f, PHASES[1], DEFAULT_ITERATION_STATS)} | {_meaning(f)} |")
        return rows
    rows = ["| family | type | labels | meaning |", "|---|---|---|---|"]
    rows += [f"| `{f.name}` | {_type(f)} | {', '.join(f.labels)} | {_meaning(f)} |"
             for f in families]
    return rows


def generated_blocks() -> dict[str, str]:
    """Marker name -> the generated text between `<!-- NAME:begin ... -->` and `NAME:end`."""
    blocks: dict[str, list[str]] = {}
    for key, (marker, heading, text) in SECTIONS.items():
        lines = blocks.setdefault(marker, [])
        lines.append(f"### {heading}")
        body = _iteration_text() if key == "iteration" else text
        if body:
            lines += [*body.split("\n"), ""]
        lines += _table([f for f in FAMILIES if f.section == key], marker)
        lines.append("")
    return {marker: "\n".join(lines).rstrip("\n") for marker, lines in blocks.items()}


def update_generated(text: str) -> str:
    """A document's text with every generated block replaced by the catalogue's current one."""
    for marker, block in generated_blocks().items():
        begin = text.index(f"<!-- {marker}:begin")
        start = text.index("-->", begin) + len("-->")
        end = text.index(f"<!-- {marker}:end -->", start)
        text = f"{text[:start]}\n{block}\n{text[end:]}"
    return text


def main(argv: list[str]) -> int:
    """`python -m deepracer_exporter.catalogue [docs/metrics.md]`: print the generated blocks,
    or rewrite them in the given document."""
    if not argv:
        for marker, block in generated_blocks().items():
            print(f"<!-- {marker} -->\n{block}")
        return 0
    with open(argv[0], encoding="utf-8") as f:
        text = f.read()
    new = update_generated(text)
    if new != text:
        with open(argv[0], "w", encoding="utf-8") as f:
            f.write(new)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
