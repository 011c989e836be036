"""Simulated DeepRacer training: TrainingMetrics documents that look like a real DRfC run.

Used by `deepracer-exporter demo`, `deepracer-exporter simulate` (compose stack), the benchmarks
and the tests, so the project never needs to ship real training logs.

What it reproduces from real DRfC output (one `TrainingMetrics[_<n>].json` per worker):

* `num_episodes_between_training` is the total per iteration over all workers; worker `w` runs
  its share, the remainder of an uneven split going to the lowest worker indexes.
* Worker 0 numbers episodes 1..N and resets `trial` to 1 every iteration; after each
  iteration it writes 2..6 evaluation records repeating its last training episode and trial.
* Workers 1.. number episodes 1..N with `trial == episode` and never evaluate.
* `start_time`/`metric_time` are a per-worker simulation clock in ms (workers 1.. pause while the
  trainer trains; worker 0 spends that time evaluating).
* The policy improves noisily and roughly logistically with iterations: completion, reward and
  the share of "Lap complete" grow, completed lap times fall toward a floor, failed episodes are
  short, rewards follow completion.

Beside the metrics documents it writes what the simapp and DRfC write next to them (keys relative
to the model prefix, formats as in deepracer-utils' DRfC samples and the simapp's writers):

* `ip/hyperparameters.json`, `model/model_metadata.json` (14 discrete actions) and DRfC's
  `training_params.yaml` (WORLD_NAME `DEMO_TRACK`) at the start;
* `model/deepracer_checkpoints.json` after each iteration's evaluation (simapp `S3Metrics.update`:
  last and best checkpoint by mean evaluation progress, `time_stamp` on the simulation clock);
* one simtrace CSV per worker and iteration when that worker's share of the iteration is done:
  `training-simtrace/<N>-iteration.csv` for one worker, `<worker>/training-simtrace/...` for
  several, columns `SIMTRACE_COLUMNS` (the simapp's `StepMetrics`, `wall_clock` included). Steps
  tick at 15 per simulated second with jitter and rare hiccups; `TrainingSpec.simulator_speed`
  below 1 stretches them and slows simulated time against the wall clock (a host that cannot
  keep up). Worker 0's rows are the same episodes as its training records (same start and end).
  The car drives a track of its own (`demo_track`, written as the simulator's `.npy` waypoint
  file by `demo_track_npy`): X, Y along it from each episode's start (moved on 5 % of the lap
  per episode, as DRfC's round robin), the action (steering and speed, written as `steer` and
  `throttle`) chosen more often for the curve as the policy learns, off-track episodes ending
  over the border;
* every `evaluation_every` iterations an evaluation run of the current policy, as
  `dr-start-evaluation` writes it: `metrics/evaluation/evaluation-<YYYYmmddHHMMSS>.json`
  (continuous, `evaluation_trials` laps, off-track resets with a 5 s penalty) and its simtrace
  `evaluation-<YYYYmmddHHMMSS>/evaluation-simtrace/0-iteration.csv`.

The wall clock is simulated too (`TrainingSpec.start_unix` plus simulated seconds, with the
policy update between iterations taking about `policy_update_s`), so simtrace files are
deterministic; only the live writer names evaluation runs after the real time it writes them.

It can also push what DRfC's containers push to Telegraf when `DR_TELEGRAF_HOST` is set
(`take_push_lines`, sent by `UdpPusher`; formats in telegraf_listener's docstring): the
simulator's `dr_training_episodes` line for every record it writes, and after each iteration the
trainer's `num_epochs` `dr_sagemaker_epochs` lines of the policy update (entropy falling slowly as
the policy learns, KL divergence growing over an update's epochs, a small negative surrogate
loss), as pytelegraf formats them: one line per datagram, fields and tags sorted, integers with
`i`, the trainer's float32 values widened to doubles, no timestamp.

Everything is deterministic for a `TrainingSpec.seed` (`random.Random(seed)`), and chunking does
not matter: `advance(1)` n times writes the same records (and `take_files` and
`take_push_lines` return the same) as `advance(n)` or `generate_documents(spec, n)`. Simtrace
rows, evaluation runs and policy updates come from their own generators seeded per (seed, worker,
iteration), drawn only when taken, so the metrics documents are the same whether or not anyone
asks for them.
"""

from __future__ import annotations

import functools
import heapq
import io
import json
import logging
import math
import random
import socket
import threading
import time
from array import array
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime

import numpy as np
import numpy.typing as npt

__all__ = [
    "SIMTRACE_COLUMNS",
    "STATUSES",
    "TrainingSimulator",
    "TrainingSpec",
    "UdpPusher",
    "clone_prefix",
    "evaluation_key",
    "evaluation_simtrace_key",
    "generate_documents",
    "generate_files",
    "hyperparameters_key",
    "key_for",
    "line_protocol",
    "parse_push_target",
    "run_simulation",
    "simtrace_key",
]

log = logging.getLogger(__name__)

STATUSES = ("Lap complete", "Off track", "Crashed", "Reversed", "Time up", "Immobilized")
# Outcomes of a failed episode and their weights: off track dominates real logs.
_FAILURES = ("Off track", "Crashed", "Reversed", "Time up", "Immobilized")
_FAILURE_CUM_WEIGHTS = (0.88, 0.91, 0.95, 0.97, 1.0)
_DOC_TAIL = '], "version": 2.0, "best_model_metric": "progress"}'

# The simapp's StepMetrics, in its order (markov/metrics/constants.py). The simapp writes str()
# of each value; positions and progress are rounded to 4 decimals here (as its SIM_TRACE_LOG line
# does) to keep a long demo's bucket small. deepracer-utils drops obstacle_crash_counter.
SIMTRACE_COLUMNS = (
    "episode", "steps", "X", "Y", "yaw", "steer", "throttle", "action", "reward", "done",
    "all_wheels_on_track", "progress", "closest_waypoint", "track_len", "tstamp",
    "episode_status", "pause_duration", "obstacle_crash_counter", "wall_clock",
)
_SIMTRACE_STATUS = {"Lap complete": "lap_complete", "Off track": "off_track",
                    "Crashed": "crashed", "Reversed": "reversed", "Time up": "time_up",
                    "Immobilized": "immobilized"}
STEP_HZ = 15.0  # the agent acts 15 times per simulated second
# The simulated training's own track (`demo_track`): its WORLD_NAME in training_params.yaml and
# the name of its waypoint file (<name>.npy in the exporter's tracks_dir).
DEMO_TRACK = "exporter_demo_loop"
_TRACK_WIDTH = 1.066  # metres, as the simulator's tracks
_DEMO_WAYPOINTS = 120
_FINE = 4000  # samples of the centre line to place the car by arc length
_ROUND_ROBIN = 0.05  # DRfC's DR_TRAIN_ROUND_ROBIN_ADVANCE_DIST: start moves on per episode
_EVAL_OFF_TRACK_PENALTY_S = 5.0  # DRfC's DR_EVAL_OFF_TRACK_PENALTY default
_EVAL_MAX_RESETS = 100  # DRfC's DR_EVAL_MAX_RESETS default
# The samples' action space: steering -30..30 by 10 degrees, speed 1 or 2 m/s.
_ACTIONS = tuple((-30.0 + 10.0 * (i // 2), 1.0 + (i % 2)) for i in range(14))
POLICY_MEASUREMENT = "dr_sagemaker_epochs"  # the trainer's, once per policy-training epoch
EPISODE_MEASUREMENT = "dr_training_episodes"  # the simulator's, once per metrics record
_POLICY_UPDATE = -1  # marks the end of an iteration (its policy update) in the write order


@dataclass(frozen=True)
class TrainingSpec:
    """Parameters of one simulated training (one model, one round).

    `learning_speed` scales how fast the policy improves: with 1.0 the mean completion is about
    half way at iteration `midpoint_iterations`; 2.0 gets there twice as fast.
    `pretrained_iterations` starts the policy that far up its learning curve (a clone).
    `simulator_speed` is how well the host keeps up: 1.0 is a healthy simulator (15 steps per
    simulated second, real-time factor about 1); 0.4 stretches steps to 2.5 times their length
    (6 per second) and runs simulated time at about 0.4 of the wall clock.
    """

    episodes_between_training: int = 20
    workers: int = 1
    seed: int = 0
    learning_speed: float = 1.0
    midpoint_iterations: float = 30.0
    pretrained_iterations: float = 0.0
    best_lap_s: float = 9.0  # floor the completed lap times fall toward
    initial_lap_s: float = 20.0  # pace of an untrained policy (seconds per full lap)
    max_skill: float = 0.92  # asymptotic skill (0..1); 1.0 would complete every lap
    eval_episodes: tuple[int, int] = (2, 6)  # evaluation records per iteration, inclusive
    max_episodes: int = 5000  # term_cond_max_episodes: training stops after this many episodes
    batch_size: int = 64
    learning_rate: float = 0.0003
    discount_factor: float = 0.95
    entropy: float = 0.01
    num_epochs: int = 3
    simulator_speed: float = 1.0
    policy_update_s: float = 30.0  # wall-clock seconds the trainer takes between iterations
    evaluation_every: int = 5  # an evaluation run after every n-th iteration; 0: none
    evaluation_trials: int = 3  # DRfC's DR_EVAL_NUMBER_OF_TRIALS default
    start_unix: float = 1_657_396_800.0  # wall clock at launch (the samples' 2022-07-09)

    def __post_init__(self) -> None:
        if self.workers < 1:
            raise ValueError("workers must be >= 1")
        if self.episodes_between_training < self.workers:
            raise ValueError("episodes_between_training must be >= workers (each runs >= 1)")
        lo, hi = self.eval_episodes
        if not 0 <= lo <= hi:
            raise ValueError("eval_episodes must be (min, max) with 0 <= min <= max")
        if not 0 < self.best_lap_s <= self.initial_lap_s:
            raise ValueError("need 0 < best_lap_s <= initial_lap_s")
        if self.learning_speed <= 0 or self.midpoint_iterations <= 0:
            raise ValueError("learning_speed and midpoint_iterations must be > 0")
        if not 0 < self.max_skill <= 1:
            raise ValueError("max_skill must be in (0, 1]")
        if self.max_episodes < 1:
            raise ValueError("max_episodes must be >= 1")
        if not 0 < self.simulator_speed <= 1:
            raise ValueError("simulator_speed must be in (0, 1]")
        if self.policy_update_s < 0 or self.pretrained_iterations < 0:
            raise ValueError("policy_update_s and pretrained_iterations must be >= 0")
        if self.evaluation_every < 0 or self.evaluation_trials < 1:
            raise ValueError("need evaluation_every >= 0 and evaluation_trials >= 1")

    def shares(self) -> list[int]:
        """Training episodes per iteration of each worker (extra ones to the lowest indexes)."""
        base, extra = divmod(self.episodes_between_training, self.workers)
        return [base + (1 if w < extra else 0) for w in range(self.workers)]

    @property
    def step_s(self) -> float:
        """Mean simulated seconds between two steps."""
        return 1.0 / STEP_HZ / self.simulator_speed


def key_for(prefix: str, worker: int) -> str:
    """Object key of a worker's metrics: `<prefix>/metrics/TrainingMetrics[_<n>].json`."""
    suffix = "" if worker == 0 else f"_{worker}"
    return _join(prefix, f"metrics/TrainingMetrics{suffix}.json")


def hyperparameters_key(prefix: str) -> str:
    return _join(prefix, "ip/hyperparameters.json")


def simtrace_key(prefix: str, worker: int, workers: int, iteration: int) -> str:
    """DRfC's simtrace key: `training-simtrace/<N>-iteration.csv` for a single worker,
    `<worker>/training-simtrace/<N>-iteration.csv` when there are several."""
    folder = "training-simtrace" if workers == 1 else f"{worker}/training-simtrace"
    return _join(prefix, f"{folder}/{iteration}-iteration.csv")


def evaluation_key(prefix: str, stamp: str) -> str:
    """`metrics/evaluation/evaluation-<YYYYmmddHHMMSS>.json` of a DRfC evaluation run."""
    return _join(prefix, f"metrics/evaluation/evaluation-{stamp}.json")


def evaluation_simtrace_key(prefix: str, stamp: str) -> str:
    return _join(prefix, f"evaluation-{stamp}/evaluation-simtrace/0-iteration.csv")


def clone_prefix(base: str, round_number: int) -> str:
    """Prefix of round `round_number` (1 = the base itself, then `<base>-2`, `<base>-3`...)."""
    return base if round_number <= 1 else f"{base.strip('/')}-{round_number}"


def stamp_of(unix: float) -> str:
    """YYYYmmddHHMMSS (UTC) of a Unix time, as DRfC names evaluation runs."""
    return datetime.fromtimestamp(unix, UTC).strftime("%Y%m%d%H%M%S")


def _join(prefix: str, rest: str) -> str:
    prefix = prefix.strip("/")
    return f"{prefix}/{rest}" if prefix else rest


def _record(reward: int, start: int, elapsed: int, episode: int, trial: int, phase: str,
            completion: int, status: str) -> str:
    # Hand-formatted (all values are ints or fixed strings): json.dumps per record would be the
    # bottleneck of a 100k-episode generation. Same field order and separators as DRfC writes.
    return (
        f'{{"reward_score": {reward}, "metric_time": {start + elapsed}, "start_time": {start}, '
        f'"elapsed_time_in_milliseconds": {elapsed}, "episode": {episode}, "trial": {trial}, '
        f'"phase": "{phase}", "completion_percentage": {completion}, '
        f'"episode_status": "{status}"}}'
    )


@dataclass(frozen=True)
class _Episode:
    """One episode as drawn: what both its metrics record and its simtrace rows show."""

    episode: int  # the worker's 1-based episode number (simtrace counts from 0)
    start_ms: int
    elapsed_ms: int
    completion: int
    status: str
    reward: int


@dataclass(frozen=True)
class _WorkerIteration:
    """A worker's share of one iteration, kept until its simtrace file is taken."""

    worker: int
    iteration: int
    episodes: tuple[_Episode, ...]
    wall_start: float  # simulated wall clock (s since launch) at its first episode's start
    rtf: float  # simulated seconds per wall-clock second


@dataclass(frozen=True)
class _EvaluationPlan:
    iteration: int
    skill: float
    wall_start: float  # s since launch


class TrainingSimulator:
    """Per-worker record lists of a training in progress; `advance` appends episodes."""

    def __init__(self, spec: TrainingSpec) -> None:
        self.spec = spec
        self._rng = random.Random(spec.seed)
        # Wall-clock draws have their own stream so the metrics records do not depend on them.
        self._wall_rng = random.Random(f"wall:{spec.seed}")
        self._shares = spec.shares()
        self._records: list[list[str]] = [[] for _ in range(spec.workers)]
        # Simulation clock (ms) of each worker; real workers start ~27-31 s after launch.
        self._clock = [27_000 + self._rng.randint(0, 3_500) for _ in range(spec.workers)]
        self._wall = [self._clock[w] / 1000.0 + self._wall_rng.uniform(5.0, 9.0)
                      for w in range(spec.workers)]
        self._episode = [0] * spec.workers  # last training episode number per worker
        self._drift = 0.0  # slow random walk on top of the logistic learning curve
        self._iteration = 0  # iterations whose training episodes are all written
        self._episodes = 0  # training episodes written, all workers
        # (worker, record, share of the iteration when it is the worker's last, else None)
        self._pending: deque[tuple[int, str, _WorkerIteration | None]] = deque()
        self._pending_eval: list[str] = []
        self._pending_checkpoint: tuple[float, float] | None = None  # (metric, sim time s)
        self._pending_run: _EvaluationPlan | None = None
        self._last_trial0 = 0
        self._changed: set[int] = set()
        self._steps = 0  # env steps of all training episodes so far (checkpoint names)
        self._steps_at_iteration = 0
        self._ready_traces: list[_WorkerIteration] = []
        self._ready_runs: list[_EvaluationPlan] = []
        self._checkpoint: dict[str, dict[str, object]] | None = None
        self._checkpoint_changed = False
        self._started = False
        # Write order for the push: a worker index per record, _POLICY_UPDATE after each
        # iteration (2 bytes a record, so a 100k-episode generation does not mind it).
        self._order = array("h")
        self._push_position = 0  # in _order: what take_push_lines has handed out
        self._push_records = [0] * spec.workers  # per worker: records handed out
        self._push_iteration = 0  # the next policy update to hand out
        self._update_steps = array("q")  # env steps when each policy update's checkpoint is saved
        self._log_position = 0  # in _order: what take_trainer_lines has handed out
        self._log_iteration = 0

    # -- state -------------------------------------------------------------------------------
    @property
    def iterations(self) -> int:
        """Completed iterations (all training episodes written, evaluation appended)."""
        return self._iteration

    @property
    def episodes(self) -> int:
        """Training episodes written so far, all workers together."""
        return self._episodes

    @property
    def finished(self) -> bool:
        """True once `max_episodes` (term_cond_max_episodes) training episodes are written."""
        return self._episodes >= self.spec.max_episodes

    def record_count(self, worker: int) -> int:
        return len(self._records[worker])

    def skill(self, iteration: int) -> float:
        """Noise-free skill (0..max_skill) of the policy at an iteration: a logistic curve."""
        trained = iteration * self.spec.learning_speed + self.spec.pretrained_iterations
        x = (trained - self.spec.midpoint_iterations) / (self.spec.midpoint_iterations / 3.5)
        return self.spec.max_skill / (1.0 + math.exp(-x))

    # -- simulation --------------------------------------------------------------------------
    def advance(self, n_episodes: int = 1) -> int:
        """Append the next `n_episodes` training episodes (all workers) in write order.

        When an iteration's last training episode is written, worker 0's evaluation records
        follow. Stops at `spec.max_episodes`; returns the number of training episodes added.
        """
        return self._advance(n_episodes, self.spec.max_episodes)

    def _advance(self, n_episodes: int, limit: int) -> int:
        added = 0
        while added < n_episodes and self._episodes < limit:
            if not self._pending:
                self._plan_iteration()
            worker, rec, done = self._pending.popleft()
            self._records[worker].append(rec)
            self._order.append(worker)
            self._changed.add(worker)
            self._episodes += 1
            added += 1
            if done is not None:
                self._ready_traces.append(done)
            if not self._pending:
                if self._pending_eval:
                    self._records[0].extend(self._pending_eval)
                    self._order.extend([0] * len(self._pending_eval))
                    self._changed.add(0)
                    self._pending_eval = []
                self._finish_iteration()
                self._order.append(_POLICY_UPDATE)
                self._update_steps.append(self._steps)
                self._iteration += 1
        return added

    def _finish_iteration(self) -> None:
        """Worker 0 has evaluated: the checkpoint index changes, maybe an evaluation run."""
        if self._pending_checkpoint is not None:
            metric, sim_time = self._pending_checkpoint
            name = f"{self._iteration}_Step-{self._steps_at_iteration}.ckpt"
            last: dict[str, object] = {"name": name, "avg_eval_metric": metric,
                                       "time_stamp": sim_time}
            best = last
            if self._checkpoint is not None:
                previous = self._checkpoint["best_checkpoint"]
                metric_before = previous["avg_eval_metric"]
                if isinstance(metric_before, float) and metric < metric_before:
                    best = previous
            self._checkpoint = {"best_checkpoint": best, "last_checkpoint": last}
            self._checkpoint_changed = True
            self._pending_checkpoint = None
        if self._pending_run is not None:
            self._ready_runs.append(self._pending_run)
            self._pending_run = None
        self._steps_at_iteration = self._steps

    def _plan_iteration(self) -> None:
        """Draw the whole next iteration (all workers and the evaluation) at once.

        Drawing per iteration keeps the random stream independent of how callers chunk
        `advance`; workers' records are merged by their time since the iteration started,
        which is the order parallel workers would write them.
        """
        rng = self._rng
        spec = self.spec
        self._drift = max(-0.12, min(0.12, self._drift * 0.8 + rng.gauss(0.0, 0.03)))
        skill = max(0.0, min(1.0, self.skill(self._iteration) + self._drift))
        streams: list[list[tuple[int, int, str, _WorkerIteration | None]]] = []
        wall = self._wall_rng
        wall_end = []
        for w, share in enumerate(self._shares):
            begin = self._clock[w]
            clock = begin
            stream: list[tuple[int, int, str, _WorkerIteration | None]] = []
            drawn: list[_Episode] = []
            for trial in range(1, share + 1):
                self._episode[w] += 1
                episode = self._episode[w]
                ep = self._draw_episode(skill, clock, episode)
                clock = ep.start_ms + ep.elapsed_ms
                drawn.append(ep)
                rec = _record(ep.reward, ep.start_ms, ep.elapsed_ms, episode,
                              trial if w == 0 else episode, "training", ep.completion,
                              ep.status)
                stream.append((clock - begin, w, rec, None))
                self._steps += _step_count(ep.elapsed_ms, spec.step_s)
            if w == 0:
                self._last_trial0 = share
            rtf = spec.simulator_speed * wall.uniform(0.95, 1.0)
            share_plan = _WorkerIteration(w, self._iteration, tuple(drawn),
                                          self._wall[w], rtf)
            last = stream[-1]
            stream[-1] = (last[0], last[1], last[2], share_plan)
            streams.append(stream)
            wall_end.append(self._wall[w] + (clock - begin) / 1000.0 / rtf)
            self._clock[w] = clock
        self._pending = deque((w, rec, done) for _, w, rec, done in heapq.merge(*streams))

        lo, hi = spec.eval_episodes
        n_eval = lo + min(hi - lo, int(rng.expovariate(1.2)))
        evals = []
        completions = []
        clock = self._clock[0]
        for _ in range(n_eval):
            ep = self._draw_episode(min(1.0, skill + 0.04), clock, self._episode[0])
            clock = ep.start_ms + ep.elapsed_ms
            completions.append(ep.completion)
            evals.append(_record(ep.reward, ep.start_ms, ep.elapsed_ms, self._episode[0],
                                 self._last_trial0, "evaluation", ep.completion, ep.status))
        self._pending_eval = evals
        eval_wall_end = wall_end[0] + (clock - self._clock[0]) / 1000.0 / spec.simulator_speed
        if completions:
            self._pending_checkpoint = (sum(completions) / len(completions), clock / 1000.0)
        # Worker 0 goes straight on after evaluating; the others wait for the trainer.
        self._clock[0] = clock + rng.randint(40, 1_200)
        for w in range(1, spec.workers):
            self._clock[w] += rng.randint(25_000, 40_000)
        # Wall clock: the trainer starts when the last worker is done, and every worker starts
        # the next iteration once the new policy is out (worker 0 also after evaluating).
        policy_done = max(wall_end) + spec.policy_update_s * wall.uniform(0.8, 1.25)
        for w in range(spec.workers):
            ready = max(policy_done, eval_wall_end) if w == 0 else policy_done
            self._wall[w] = ready + wall.uniform(0.3, 1.5)
        if spec.evaluation_every and (self._iteration + 1) % spec.evaluation_every == 0:
            self._pending_run = _EvaluationPlan(self._iteration, min(1.0, skill + 0.04),
                                                wall_end[0] + wall.uniform(2.0, 10.0))

    def _draw_episode(self, skill: float, clock: int, episode: int) -> _Episode:
        rng = self._rng
        spec = self.spec
        start = clock + rng.randint(30, 130)
        # Pace (s per full lap) of the current policy: falls from initial toward best.
        pace = spec.best_lap_s + (spec.initial_lap_s - spec.best_lap_s) * (1.0 - skill) ** 1.5
        if rng.random() < 0.9 * skill**1.5:
            completion = 100
            status = "Lap complete"
            lap = max(spec.best_lap_s * 0.97, pace * rng.gauss(1.0, 0.035))
            elapsed = int(lap * 1000)
        else:
            status = _FAILURES[_pick(rng.random())]
            mean = 6.0 + 55.0 * skill
            completion = min(99, 1 + int(rng.expovariate(1.0 / mean)))
            elapsed = int(pace * 10 * completion * rng.uniform(0.9, 1.25)) + 600
            if status == "Time up":
                elapsed += int(pace * 1000 * rng.uniform(0.3, 0.8))
            elif status == "Immobilized":
                elapsed += rng.randint(2_000, 4_000)
        reward = max(0, round(completion * (0.9 + 0.8 * skill) * rng.gauss(1.0, 0.12)
                              + rng.uniform(1.0, 4.0)))
        return _Episode(episode, start, elapsed, completion, status, reward)

    # -- output ------------------------------------------------------------------------------
    def document(self, worker: int) -> bytes:
        """The worker's whole TrainingMetrics document, as DRfC rewrites it after each episode."""
        return ('{"metrics": [' + ", ".join(self._records[worker]) + _DOC_TAIL).encode()

    def documents(self, workers: Iterable[int] | None = None) -> dict[int, bytes]:
        """Worker index -> document bytes (all workers, or the given ones)."""
        chosen = range(self.spec.workers) if workers is None else workers
        return {w: self.document(w) for w in chosen}

    def take_changed(self) -> set[int]:
        """Workers whose document changed since the last call (for incremental uploads)."""
        changed, self._changed = self._changed, set()
        return changed

    @staticmethod
    def key_for(prefix: str, worker: int) -> str:
        return key_for(prefix, worker)

    def take_files(self, prefix: str = "",
                   stamp: Callable[[float], str] | None = None) -> dict[str, bytes]:
        """Every object other than the metrics documents that appeared since the last call.

        The first call returns the hyperparameters and the model metadata; then simtrace
        files of worker iterations that finished, the checkpoint index when it changed and the
        evaluation runs. `stamp` names an evaluation run from its simulated Unix start time
        (default: that time as YYYYmmddHHMMSS); a live writer passes the real time instead.
        """
        name = stamp or stamp_of
        out: dict[str, bytes] = {}
        if not self._started:
            out[hyperparameters_key(prefix)] = self.hyperparameters()
            out[_join(prefix, "model/model_metadata.json")] = self.model_metadata()
            out[_join(prefix, "training_params.yaml")] = training_params()
            self._started = True
        for share in self._ready_traces:
            key = simtrace_key(prefix, share.worker, self.spec.workers, share.iteration)
            out[key] = self._simtrace(share)
        self._ready_traces = []
        if self._checkpoint_changed and self._checkpoint is not None:
            out[_join(prefix, "model/deepracer_checkpoints.json")] = json.dumps(
                self._checkpoint).encode()
            self._checkpoint_changed = False
        for plan in self._ready_runs:
            metrics, trace = self._evaluation_run(plan)
            run = name(self.spec.start_unix + plan.wall_start)
            out[evaluation_key(prefix, run)] = metrics
            out[evaluation_simtrace_key(prefix, run)] = trace
        self._ready_runs = []
        return out

    def hyperparameters(self) -> bytes:
        """`ip/hyperparameters.json` of this training (same keys as DRfC writes)."""
        spec = self.spec
        doc = {
            "batch_size": spec.batch_size,
            "beta_entropy": spec.entropy,
            "discount_factor": spec.discount_factor,
            "e_greedy_value": 1.0,
            "epsilon_steps": 10000,
            "exploration_type": "categorical",
            "loss_type": "huber",
            "lr": spec.learning_rate,
            "num_episodes_between_training": spec.episodes_between_training,
            "num_epochs": spec.num_epochs,
            "stack_size": 1,
            "term_cond_avg_score": 1000.0,
            "term_cond_max_episodes": spec.max_episodes,
        }
        return json.dumps(doc, indent=2).encode()

    @staticmethod
    def model_metadata() -> bytes:
        """`model/model_metadata.json`: the samples' discrete action space and camera."""
        doc = {
            "action_space": [{"steering_angle": steer, "speed": speed, "index": i}
                             for i, (steer, speed) in enumerate(_ACTIONS)],
            "sensor": ["FRONT_FACING_CAMERA"],
            "neural_network": "DEEP_CONVOLUTIONAL_NETWORK_SHALLOW",
            "version": "5",
            "training_algorithm": "clipped_ppo",
            "action_space_type": "discrete",
        }
        return json.dumps(doc, indent=4).encode()

    # -- DRfC's metrics push -----------------------------------------------------------------
    def policy_update(self, iteration: int) -> list[tuple[int, np.float32, np.float32,
                                                          np.float32]]:
        """(epoch, entropy, KL divergence, surrogate loss) of the `num_epochs` epochs of the
        policy update after `iteration`, as the float32 means the trainer sends.

        Entropy starts near ln(14) (a uniform choice among the 14 actions) and falls slowly as
        the policy trains (a clone's starts lower), a little within an update too; the KL
        divergence from the previous policy grows over an update's epochs and shrinks as
        training settles; the surrogate loss is small and negative, nearer 0 for a good policy.
        """
        spec = self.spec
        rng = random.Random(f"policy:{spec.seed}:{iteration}")
        trained = iteration * spec.learning_speed + spec.pretrained_iterations
        settled = 1.0 - math.exp(-trained / 90.0)
        entropy = math.log(len(_ACTIONS)) * (0.98 - 0.5 * settled) + rng.gauss(0.0, 0.015)
        kl = (0.004 + 0.012 * (1.0 - settled)) * rng.lognormvariate(0.0, 0.35)
        untrained = 1.0 - self.skill(iteration) / spec.max_skill
        loss = -(0.003 + 0.03 * untrained) * rng.lognormvariate(0.0, 0.3)
        return [(epoch,
                 np.float32(entropy - 0.004 * epoch + rng.gauss(0.0, 0.002)),
                 np.float32(kl * (0.4 + 0.6 * (epoch + 1)) * rng.uniform(0.9, 1.1)),
                 np.float32(loss * (1.0 + 0.3 * epoch) + rng.gauss(0.0, 0.001)))
                for epoch in range(spec.num_epochs)]

    def take_push_lines(self, prefix: str, episodes: bool = True) -> list[str]:
        """The lines DRfC's containers would have pushed since the last call, in write order.

        The simulator's `dr_training_episodes` line for every record written (all workers,
        worker 0's evaluation records included; none with `episodes=False`), and after each
        iteration the trainer's `dr_sagemaker_epochs` lines of its policy update. Both are
        tagged `model=<prefix>`: DRfC tags them with the S3 prefix the model is written to.
        """
        model = prefix.strip("/")
        lines: list[str] = []
        for i in range(self._push_position, len(self._order)):
            worker = self._order[i]
            if worker == _POLICY_UPDATE:
                for epoch, entropy, kl, loss in self.policy_update(self._push_iteration):
                    lines.append(line_protocol(
                        POLICY_MEASUREMENT,
                        {"entropy": entropy, "epoch": epoch, "kl_divergence": kl,
                         "surrogate_loss": loss},
                        {"model": model}))
                self._push_iteration += 1
                continue
            record = self._records[worker][self._push_records[worker]]
            self._push_records[worker] += 1
            if episodes:
                doc = json.loads(record)
                lines.append(line_protocol(
                    EPISODE_MEASUREMENT,
                    {"reward": doc["reward_score"], "progress": doc["completion_percentage"],
                     "elapsed_time": doc["elapsed_time_in_milliseconds"]},
                    {"phase": doc["phase"], "status": doc["episode_status"], "model": model,
                     "worker": str(worker)}))
        self._push_position = len(self._order)
        return lines

    def take_trainer_lines(self, prefix: str) -> list[str]:
        """The trainer's stdout since the last call, as the SageMaker container prints it
        (policylog.py reads it): at the first call its `Training Worker Args` line naming the
        S3 prefix and the untrained network's checkpoint 0; after each iteration the policy
        update's `Policy training>` lines (the pushed epochs' float32 values, printed as rl_coach
        prints them) and its `Checkpoint>` line, numbered from 1."""
        lines: list[str] = []
        if self._log_position == 0 and self._log_iteration == 0:
            lines += [f"Training Worker Args: Namespace(checkpoint_dir='./checkpoint_sagemaker', "
                      f"framework='tensorflow', s3_prefix='{prefix.strip('/')}')",
                      _checkpoint_line(0, 0)]
        for i in range(self._log_position, len(self._order)):
            if self._order[i] != _POLICY_UPDATE:
                continue
            iteration = self._log_iteration
            for epoch, entropy, kl, loss in self.policy_update(iteration):
                lines.append(f"Policy training> Surrogate loss={float(loss)!r}, "
                             f"KL divergence={float(kl)!r}, Entropy={float(entropy)!r}, "
                             f"training epoch={epoch}, learning_rate=0.0003")
            lines.append(_checkpoint_line(iteration + 1, self._update_steps[iteration]))
            self._log_iteration += 1
        self._log_position = len(self._order)
        return lines

    # -- simtrace and evaluation runs --------------------------------------------------------
    def _simtrace(self, share: _WorkerIteration) -> bytes:
        rng = random.Random(f"simtrace:{self.spec.seed}:{share.worker}:{share.iteration}")
        lines = [",".join(SIMTRACE_COLUMNS)]
        sim_zero = share.episodes[0].start_ms / 1000.0
        wall_zero = self.spec.start_unix + share.wall_start
        for ep in share.episodes:
            _episode_rows(lines, rng, ep.episode - 1, 0, ep.start_ms / 1000.0,
                          (ep.start_ms + ep.elapsed_ms) / 1000.0, ep.completion,
                          _SIMTRACE_STATUS[ep.status], ep.reward, self.spec.step_s, True,
                          lambda t: wall_zero + (t - sim_zero) / share.rtf,
                          self.skill(share.iteration), (ep.episode - 1) * _ROUND_ROBIN)
        return ("\n".join(lines) + "\n").encode()

    def _evaluation_run(self, plan: _EvaluationPlan) -> tuple[bytes, bytes]:
        """A continuous evaluation of `evaluation_trials` laps: (metrics file, its simtrace)."""
        spec = self.spec
        rng = random.Random(f"evaluation:{spec.seed}:{plan.iteration}")
        pace = spec.best_lap_s + (spec.initial_lap_s - spec.best_lap_s) * (1.0 - plan.skill) ** 1.5
        records = []
        lines = [",".join(SIMTRACE_COLUMNS)]
        clock = rng.uniform(6.5, 7.1)
        wall_zero = spec.start_unix + plan.wall_start
        rtf = spec.simulator_speed * rng.uniform(0.95, 1.0)
        steps = 0
        for trial in range(1, spec.evaluation_trials + 1):
            resets = min(_EVAL_MAX_RESETS + 1, _poisson(rng, 12.0 * (1.0 - plan.skill) ** 2))
            done = resets <= _EVAL_MAX_RESETS
            completion = 100 if done else rng.randint(20, 95)
            drive = max(spec.best_lap_s * 0.97, pace * rng.gauss(1.0, 0.02)) * completion / 100
            elapsed = drive + resets * (_EVAL_OFF_TRACK_PENALTY_S + rng.uniform(0.5, 1.5))
            last = trial == spec.evaluation_trials or not done
            status = ("Lap complete" if last else "In progress") if done else "Off track"
            start = clock
            clock = start + elapsed
            records.append({
                "completion_percentage": completion, "metric_time": round(clock * 1000),
                "start_time": round(start * 1000),
                "elapsed_time_in_milliseconds": round(clock * 1000) - round(start * 1000),
                "episode_status": status, "crash_count": 0, "immobilized_count": 0,
                "off_track_count": resets if done else _EVAL_MAX_RESETS, "reversed_count": 0,
                "reset_count": resets if done else _EVAL_MAX_RESETS, "trial": trial,
            })
            row_status = ("lap_complete" if last else "in_progress") if done else "off_track"
            steps = _episode_rows(lines, rng, trial - 1, steps, start, clock, completion,
                                  row_status, 0, spec.step_s, trial == 1,
                                  lambda t: wall_zero + t / rtf, plan.skill)
            if not done:
                break
        metrics = json.dumps({"metrics": records}).encode()
        return metrics, ("\n".join(lines) + "\n").encode()


def _loop(t: npt.NDArray[np.float64]) -> tuple[npt.NDArray[np.float64], ...]:
    """The demo track's centre line at parameters `t` (radians) and its unit left normal: an
    egg-shaped loop driven counter-clockwise, 18.3 m long, curve radii 1.2 to 6 m."""
    x = 4.3 + 3.6 * np.cos(t) + 0.3 * np.cos(2 * t)
    y = 2.7 + 2.1 * np.sin(t) + 0.2 * np.sin(2 * t)
    dx = -3.6 * np.sin(t) - 0.6 * np.sin(2 * t)
    dy = 2.1 * np.cos(t) + 0.4 * np.cos(2 * t)
    norm = np.hypot(dx, dy)
    return x, y, -dy / norm, dx / norm


def demo_track() -> npt.NDArray[np.float64]:
    """The simulated training's track in deepracer-utils' TrackIO layout (the simulator's
    routes/<name>.npy): (waypoints, 6) of centre x, y, inner x, y, outer x, y in metres, the first
    waypoint repeated at the end; inner is the left border (the car drives counter-clockwise)."""
    t = np.linspace(0.0, 2 * math.pi, _DEMO_WAYPOINTS + 1)
    x, y, nx, ny = _loop(t)
    half = _TRACK_WIDTH / 2
    out = np.column_stack([x, y, x + half * nx, y + half * ny, x - half * nx, y - half * ny])
    out[-1] = out[0]
    return out


def demo_track_npy() -> bytes:
    """`demo_track()` as the bytes of a .npy file."""
    buffer = io.BytesIO()
    np.save(buffer, demo_track(), allow_pickle=False)
    return buffer.getvalue()


@functools.cache
def _centre_line() -> tuple[npt.NDArray[np.float64], ...]:
    """The centre line finely sampled: arc-length fraction (0..1), x, y, left normal, curvature
    (1/m, positive to the left), and each waypoint's arc-length fraction."""
    t = np.linspace(0.0, 2 * math.pi, _FINE + 1)
    x, y, nx, ny = _loop(t)
    arc = np.concatenate([[0.0], np.cumsum(np.hypot(np.diff(x), np.diff(y)))])
    heading = np.unwrap(np.arctan2(-nx, ny))
    curvature = np.gradient(heading, arc)
    waypoints = np.linspace(0.0, 2 * math.pi, _DEMO_WAYPOINTS + 1)[:-1]
    at = np.interp(waypoints, t, arc / arc[-1])
    return arc / arc[-1], x, y, nx, ny, curvature, at, np.array([arc[-1]])


def _track_length() -> float:
    return float(_centre_line()[7][0])


def _place(fraction: float, lateral: float) -> tuple[float, float, float, float, int]:
    """x, y (metres) `lateral` metres left of the centre line at `fraction` of the lap, the
    heading (degrees), the centre line's curvature there and the closest waypoint (1-based)."""
    frac, x, y, nx, ny, curvature, at, _ = _centre_line()
    f = fraction % 1.0
    cx, cy = float(np.interp(f, frac, x)), float(np.interp(f, frac, y))
    lx, ly = float(np.interp(f, frac, nx)), float(np.interp(f, frac, ny))
    waypoint = int(np.searchsorted(at, f, side="right")) % _DEMO_WAYPOINTS
    return (cx + lateral * lx, cy + lateral * ly, math.degrees(math.atan2(-lx, ly)),
            float(np.interp(f, frac, curvature)), waypoint + 1)


def _choose_action(rng: random.Random, curvature: float, skill: float) -> int:
    """A policy that learns: with probability growing with skill the action whose steering is
    closest to what the curve needs (and the faster speed on the straighter parts), else any."""
    if rng.random() < 0.25 + 0.65 * skill:
        steer = max(-30.0, min(30.0, curvature * 30.0))
        speed = 2.0 if abs(curvature) < 0.45 else 1.0
        return min(range(len(_ACTIONS)), key=lambda i: (abs(_ACTIONS[i][0] - steer),
                                                        abs(_ACTIONS[i][1] - speed)))
    return rng.randrange(len(_ACTIONS))


def training_params() -> bytes:
    """`training_params.yaml` as DRfC's prepare-config.py uploads it beside the model (every
    scalar quoted): the simulator's configuration, its track as WORLD_NAME."""
    return ("---\n'JOB_TYPE': 'TRAINING'\n'RACE_TYPE': 'TIME_TRIAL'\n"
            f"'WORLD_NAME': '{DEMO_TRACK}'\n'CHANGE_START_POSITION': 'true'\n"
            f"'ROUND_ROBIN_ADVANCE_DIST': '{_ROUND_ROBIN}'\n").encode()


def _step_count(elapsed_ms: int, step_s: float) -> int:
    """Rows of an episode's simtrace: one per step, the first being the `prepare` row."""
    return max(2, round(elapsed_ms / 1000.0 / step_s))


def _poisson(rng: random.Random, mean: float) -> int:
    count, total = 0, rng.expovariate(1.0)
    while total < mean:
        count += 1
        total += rng.expovariate(1.0)
    return count


def _episode_rows(lines: list[str], rng: random.Random, episode: int, steps_before: int,
                  start: float, end: float, completion: int, final_status: str, reward: int,
                  step_s: float, prepare: bool, wall: Callable[[float], float],
                  skill: float = 0.5, start_at: float = 0.0) -> int:
    """Append one episode's rows (simulated seconds `start`..`end`); returns the step count.

    The first row comes 30-150 ms after the episode starts (`prepare`), the last is at `end`
    with `done` and the episode's status. Steps sit on a `step_s` grid with jitter (sd about
    12% of a step, as the samples show) and rare hiccups of 50-300 ms. The car drives the demo
    track from `start_at` (fraction of the lap) as far as its progress, wandering across the
    track less as `skill` grows; an episode that ends off the track or crashed drifts over the
    border in its last steps.
    """
    first = min(end - 0.001, start + rng.uniform(0.03, 0.15))
    n = _step_count(round((end - start) * 1000), step_s)
    span = end - first
    sigma = 0.12 * step_s / math.sqrt(2.0)
    final_progress = 100.0 if final_status in ("lap_complete", "in_progress") \
        else completion + rng.random()
    progress0 = rng.uniform(0.6, 1.0)
    per_step = reward / max(1, n - 1)
    previous = first
    on_track = final_status not in ("off_track", "crashed")
    lateral = rng.uniform(-0.1, 0.1)
    drift = min(6, n - 1)  # the last steps of an episode that leaves the track
    side = rng.choice((-1.0, 1.0))
    beyond = side * rng.uniform(0.6, 0.85)
    for k in range(n):
        if k == 0:
            t = first
        elif k == n - 1:
            t = end
        else:
            t = first + span * k / (n - 1) + rng.gauss(0.0, sigma)
            if rng.random() < 0.004:
                t += rng.uniform(0.05, 0.3)
            t = min(end - 0.001, max(previous + 0.005, t))
        t = round(t, 3)
        previous = t
        progress = final_progress if k == n - 1 else \
            progress0 + (final_progress - progress0) * k / (n - 1)
        lateral = max(-0.4, min(0.4, 0.85 * lateral
                                + rng.gauss(0.0, 0.05 * (1.3 - skill))))
        if not on_track and k > n - 1 - drift:
            lateral += (beyond - lateral) * (k - (n - 1 - drift)) / drift
        x, y, yaw, curvature, waypoint = _place(start_at + progress / 100.0, lateral)
        action = _choose_action(rng, curvature, skill)
        steer, throttle = _ACTIONS[action]
        last = k == n - 1
        if k == 0 and prepare:
            status, step_reward = "prepare", 0.0
        elif last:
            status = final_status
            step_reward = round(per_step, 4) if on_track else 0.001
        else:
            status, step_reward = "in_progress", round(per_step * rng.uniform(0.7, 1.3), 4)
        lines.append(
            f"{episode},{float(steps_before + k + 1)},{x:.4f},{y:.4f},{yaw:.4f},{steer},"
            f"{throttle},{action},{step_reward},{last},{on_track or not last},{progress:.4f},"
            f"{waypoint},{_track_length()},{t},{status},"
            f"0.0,0,{round(wall(t) + rng.gauss(0.0, 0.0005), 6)}")
    return steps_before + n


def _escape(text: str) -> str:
    """pytelegraf's escaping of measurements, tag keys and tag values (backslashes are not)."""
    return text.replace(",", "\\,").replace(" ", "\\ ").replace("=", "\\=")


def _field(value: object) -> str:
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value}i"
    return f"{value}"  # as str.format prints it: numpy's float32 widened to a double


def line_protocol(measurement: str, fields: dict[str, object], tags: dict[str, str]) -> str:
    """One line of InfluxDB line protocol exactly as pytelegraf's `Line.to_line_protocol`
    writes it (what DRfC's containers send): tags and fields sorted by name, integers with
    an `i` suffix, other numbers as `str.format` prints them (a float32 comes out widened to
    a double, `2.583181858062744`), no timestamp (numbers only: the containers send no
    string fields)."""
    tag_text = ",".join(f"{_escape(k)}={_escape(v)}" for k, v in sorted(tags.items()))
    field_text = ",".join(f"{_escape(k)}={_field(v)}" for k, v in sorted(fields.items())
                          if v is not None)
    return f"{_escape(measurement)}{',' + tag_text if tag_text else ''} {field_text}"


def parse_push_target(text: str) -> tuple[str, int]:
    """'HOST:PORT' (e.g. `exporter:8092`, DRfC's DR_TELEGRAF_HOST and DR_TELEGRAF_PORT) ->
    (host, port); ValueError otherwise."""
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"expected HOST:PORT such as exporter:8092, got {text!r}")
    return host, int(port)


class UdpPusher:
    """Sends lines the way DRfC's containers do (pytelegraf's TelegrafClient): each line and
    its newline in one UDP datagram, fire and forget.

    `target()` gives (host, port), or None while there is nowhere to send yet (the line is
    dropped, like a datagram to a listener that is not up). The host is resolved at every send,
    so a compose service that comes up later is found. A failing send (unknown host, network
    down) drops the line and never raises: it is counted in `failed` and logged when sending
    starts failing and when it works again, not for every line.
    """

    def __init__(self, target: Callable[[], tuple[str, int] | None]) -> None:
        self._target = target
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sent = 0
        self.failed = 0
        self._failing = False

    def __call__(self, line: str) -> None:
        try:
            target = self._target()
            if target is None:
                return
            self._sock.sendto(line.encode("utf-8") + b"\n", target)
        except OSError as exc:
            self.failed += 1
            if not self._failing:
                log.warning("simulate: pushing DRfC's metrics failed (%s); lines are dropped "
                            "until it works", exc)
                self._failing = True
            return
        self.sent += 1
        if self._failing:
            log.info("simulate: pushing to %s:%d works again (%d lines dropped so far)",
                     target[0], target[1], self.failed)
            self._failing = False

    def close(self) -> None:
        self._sock.close()


def _pick(u: float) -> int:
    for i, bound in enumerate(_FAILURE_CUM_WEIGHTS):
        if u < bound:
            return i
    return len(_FAILURE_CUM_WEIGHTS) - 1


def generate_documents(spec: TrainingSpec, episodes: int) -> dict[int, bytes]:
    """A whole training of `episodes` training episodes (all workers) at once.

    Produces exactly `episodes` even beyond `spec.max_episodes` (benchmarks want big files);
    the records equal those of `TrainingSimulator(spec).advance(episodes)` up to that cap.
    """
    sim = TrainingSimulator(spec)
    sim._advance(episodes, episodes)
    return sim.documents()


def generate_files(spec: TrainingSpec, episodes: int, prefix: str = "") -> dict[str, bytes]:
    """Every object of a training of `episodes` episodes (capped at `spec.max_episodes`), by
    key under `prefix`: what a DRfC model folder holds, simtrace and evaluation runs included."""
    sim = TrainingSimulator(spec)
    sim.advance(episodes)
    out = sim.take_files(prefix)
    out.update({key_for(prefix, w): body for w, body in sim.documents().items()})
    return out


@dataclass
class _Round:
    """The round a live model is in: its simulator and what is still to be written."""

    base: str
    spec: TrainingSpec
    number: int
    sim: TrainingSimulator
    dirty: set[int] = field(default_factory=set)
    unsent: dict[str, bytes] = field(default_factory=dict)
    written: set[str] = field(default_factory=set)
    last_stamp: float = 0.0

    @property
    def prefix(self) -> str:
        return clone_prefix(self.base, self.number)


def _start_round(base: str, spec: TrainingSpec, number: int, now: float) -> _Round:
    """Round 1 is `spec` itself; round k > 1 a clone: prefix `<base>-<k>`, another seed and a
    policy that starts half way up its learning curve (a clone starts from a trained model)."""
    round_spec = replace(spec, start_unix=now) if number == 1 else replace(
        spec, seed=spec.seed + 1000 * (number - 1), start_unix=now,
        pretrained_iterations=spec.pretrained_iterations + spec.midpoint_iterations)
    return _Round(base, spec, number, TrainingSimulator(round_spec))


def run_simulation(
    put_object: Callable[[str, bytes], None],
    models: list[tuple[str, TrainingSpec]],
    interval_s: float,
    stop: threading.Event,
    episodes_per_tick: int = 1,
    clock: Callable[[], float] = time.time,
    delete_object: Callable[[str], None] | None = None,
    push: Callable[[str], None] | None = None,
    push_episodes: bool = True,
    trainer_log: Callable[[str], None] | None = None,
) -> None:
    """Advance every model each `interval_s` and upload what changed, until `stop` is set.

    `models` is a list of (prefix, spec). A worker document is written whenever it changed,
    every other object (`TrainingSimulator.take_files`) once, evaluation runs named after the
    `clock` time they are written. When a model reaches `spec.max_episodes` and everything is
    written, it goes on with its next round, a clone (`clone_prefix`: `<prefix>-2`, `-3`...), so
    a demo left running keeps moving. With `delete_object`, starting round k deletes what round
    k - 2 wrote (a long demo keeps two rounds per model, and its bucket stays bounded). A failing
    write or delete (e.g. minio not up yet) is logged and retried on the next tick instead of
    ending the simulation.

    With `push` (e.g. a `UdpPusher`), each tick then hands it what DRfC's containers would
    have pushed meanwhile (`TrainingSimulator.take_push_lines`: the trainer's policy-update
    epochs after each iteration, and with `push_episodes` the simulator's episode lines),
    tagged with the round's prefix. A push that raises loses those lines, nothing more.

    With `trainer_log`, it is handed the first model's trainer stdout lines
    (`TrainingSimulator.take_trainer_lines`), every round's, as its SageMaker container prints
    them.
    """
    rounds = [_start_round(prefix, spec, 1, clock()) for prefix, spec in models]
    previous: list[_Round | None] = [None] * len(rounds)
    doomed: set[str] = set()
    while not stop.is_set():
        for i, current in enumerate(rounds):
            if current.sim.finished and not current.dirty and not current.unsent:
                older = previous[i]
                if delete_object is not None and older is not None:
                    doomed |= older.written
                previous[i] = current
                current = rounds[i] = _start_round(current.base, current.spec,
                                                   current.number + 1, clock())
                log.info("simulate: %s reached %d episodes, next round %s", current.base,
                         current.spec.max_episodes, current.prefix)
            current.sim.advance(episodes_per_tick)
            current.dirty |= current.sim.take_changed()

            def live_stamp(_simulated: float, state: _Round = current) -> str:
                state.last_stamp = max(float(math.floor(clock())), state.last_stamp + 1.0)
                return stamp_of(state.last_stamp)

            current.unsent.update(current.sim.take_files(current.prefix, live_stamp))
            for key in list(current.unsent):
                if _put(put_object, key, current.unsent[key]):
                    del current.unsent[key]
                    current.written.add(key)
            for worker in sorted(current.dirty):
                key = key_for(current.prefix, worker)
                if _put(put_object, key, current.sim.document(worker)):
                    current.dirty.discard(worker)
                    current.written.add(key)
            if push is not None:
                _push(push, current.sim.take_push_lines(current.prefix, push_episodes))
            if trainer_log is not None and i == 0:
                _push(trainer_log, current.sim.take_trainer_lines(current.prefix))
        if delete_object is not None:
            # Metrics documents last: the round stays a model until nothing else is left.
            for key in sorted(doomed, key=lambda k: "/metrics/TrainingMetrics" in k):
                if _call(delete_object, key):
                    doomed.discard(key)
        stop.wait(interval_s)


def _checkpoint_line(number: int, steps: int) -> str:
    return f"Checkpoint> Saving in path=['./checkpoint_sagemaker/agent/{number}_Step-{steps}.ckpt']"


def _push(push: Callable[[str], None], lines: list[str]) -> None:
    try:
        for line in lines:
            push(line)
    except Exception as exc:  # a push is fire and forget: the training goes on without it
        log.warning("simulate: pushing failed (%s); this tick's other lines are dropped", exc)


def _put(put_object: Callable[[str, bytes], None], key: str, body: bytes) -> bool:
    return _call(lambda k: put_object(k, body), key)


def _call(action: Callable[[str], None], key: str) -> bool:
    try:
        action(key)
    except Exception as exc:  # any client error: keep simulating, retry next tick
        log.warning("simulate: writing or deleting %s failed: %s", key, exc)
        return False
    return True
