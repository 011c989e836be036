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

Everything is deterministic for a `TrainingSpec.seed` (`random.Random(seed)`), and chunking does
not matter: `advance(1)` n times writes the same records as `advance(n)` or
`generate_documents(spec, n)`.
"""

from __future__ import annotations

import heapq
import json
import logging
import math
import random
import threading
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass

__all__ = [
    "STATUSES",
    "TrainingSimulator",
    "TrainingSpec",
    "generate_documents",
    "hyperparameters_key",
    "key_for",
    "run_simulation",
]

log = logging.getLogger(__name__)

STATUSES = ("Lap complete", "Off track", "Crashed", "Reversed", "Time up", "Immobilized")
# Outcomes of a failed episode and their weights: off track dominates real logs.
_FAILURES = ("Off track", "Crashed", "Reversed", "Time up", "Immobilized")
_FAILURE_CUM_WEIGHTS = (0.88, 0.91, 0.95, 0.97, 1.0)
_DOC_TAIL = '], "version": 2.0, "best_model_metric": "progress"}'


@dataclass(frozen=True)
class TrainingSpec:
    """Parameters of one simulated training (one model, one round).

    `learning_speed` scales how fast the policy improves: with 1.0 the mean completion is about
    half way at iteration `midpoint_iterations`; 2.0 gets there twice as fast.
    """

    episodes_between_training: int = 20
    workers: int = 1
    seed: int = 0
    learning_speed: float = 1.0
    midpoint_iterations: float = 30.0
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

    def shares(self) -> list[int]:
        """Training episodes per iteration of each worker (extra ones to the lowest indexes)."""
        base, extra = divmod(self.episodes_between_training, self.workers)
        return [base + (1 if w < extra else 0) for w in range(self.workers)]


def key_for(prefix: str, worker: int) -> str:
    """Object key of a worker's metrics: `<prefix>/metrics/TrainingMetrics[_<n>].json`."""
    suffix = "" if worker == 0 else f"_{worker}"
    return _join(prefix, f"metrics/TrainingMetrics{suffix}.json")


def hyperparameters_key(prefix: str) -> str:
    return _join(prefix, "ip/hyperparameters.json")


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


class TrainingSimulator:
    """Per-worker record lists of a training in progress; `advance` appends episodes."""

    def __init__(self, spec: TrainingSpec) -> None:
        self.spec = spec
        self._rng = random.Random(spec.seed)
        self._shares = spec.shares()
        self._records: list[list[str]] = [[] for _ in range(spec.workers)]
        # Simulation clock (ms) of each worker; real workers start ~27-31 s after launch.
        self._clock = [27_000 + self._rng.randint(0, 3_500) for _ in range(spec.workers)]
        self._episode = [0] * spec.workers  # last training episode number per worker
        self._drift = 0.0  # slow random walk on top of the logistic learning curve
        self._iteration = 0  # iterations whose training episodes are all written
        self._episodes = 0  # training episodes written, all workers
        self._pending: deque[tuple[int, str]] = deque()  # (worker, record) of this iteration
        self._pending_eval: list[str] = []
        self._last_trial0 = 0
        self._changed: set[int] = set()

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
        x = (iteration * self.spec.learning_speed - self.spec.midpoint_iterations) / (
            self.spec.midpoint_iterations / 3.5)
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
            worker, rec = self._pending.popleft()
            self._records[worker].append(rec)
            self._changed.add(worker)
            self._episodes += 1
            added += 1
            if not self._pending:
                if self._pending_eval:
                    self._records[0].extend(self._pending_eval)
                    self._changed.add(0)
                    self._pending_eval = []
                self._iteration += 1
        return added

    def _plan_iteration(self) -> None:
        """Draw the whole next iteration (all workers and the evaluation) at once.

        Drawing per iteration keeps the random stream independent of how callers chunk
        `advance`; workers' records are merged by their time since the iteration started,
        which is the order parallel workers would write them.
        """
        rng = self._rng
        self._drift = max(-0.12, min(0.12, self._drift * 0.8 + rng.gauss(0.0, 0.03)))
        skill = max(0.0, min(1.0, self.skill(self._iteration) + self._drift))
        streams: list[list[tuple[int, int, str]]] = []
        for w, share in enumerate(self._shares):
            begin = self._clock[w]
            clock = begin
            stream: list[tuple[int, int, str]] = []
            for trial in range(1, share + 1):
                self._episode[w] += 1
                episode = self._episode[w]
                rec, clock = self._episode_record(
                    skill, clock, episode, trial if w == 0 else episode, "training")
                stream.append((clock - begin, w, rec))
            if w == 0:
                self._last_trial0 = share
            streams.append(stream)
            self._clock[w] = clock
        self._pending = deque((w, rec) for _, w, rec in heapq.merge(*streams))

        lo, hi = self.spec.eval_episodes
        n_eval = lo + min(hi - lo, int(rng.expovariate(1.2)))
        evals = []
        clock = self._clock[0]
        for _ in range(n_eval):
            rec, clock = self._episode_record(
                min(1.0, skill + 0.04), clock, self._episode[0], self._last_trial0, "evaluation")
            evals.append(rec)
        self._pending_eval = evals
        # Worker 0 goes straight on after evaluating; the others wait for the trainer.
        self._clock[0] = clock + rng.randint(40, 1_200)
        for w in range(1, self.spec.workers):
            self._clock[w] += rng.randint(25_000, 40_000)

    def _episode_record(self, skill: float, clock: int, episode: int, trial: int,
                        phase: str) -> tuple[str, int]:
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
        rec = _record(reward, start, elapsed, episode, trial, phase, completion, status)
        return rec, start + elapsed

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


def run_simulation(
    put_object: Callable[[str, bytes], None],
    models: list[tuple[str, TrainingSpec]],
    interval_s: float,
    stop: threading.Event,
    episodes_per_tick: int = 1,
) -> None:
    """Advance every model each `interval_s` and upload what changed, until `stop` is set.

    `models` is a list of (prefix, spec). Each model's hyperparameters are written once; a
    worker document is written whenever it changed. A failing `put_object` (e.g. minio not up
    yet) is logged and retried on the next tick instead of ending the simulation.
    """
    sims = [(prefix, TrainingSimulator(spec)) for prefix, spec in models]
    unsent_hparams = {prefix for prefix, _ in sims}
    dirty: dict[str, set[int]] = {prefix: set() for prefix, _ in sims}
    while not stop.is_set():
        for prefix, sim in sims:
            if prefix in unsent_hparams and _put(put_object, hyperparameters_key(prefix),
                                                 sim.hyperparameters()):
                unsent_hparams.discard(prefix)
            sim.advance(episodes_per_tick)
            dirty[prefix] |= sim.take_changed()
            for worker in sorted(dirty[prefix]):
                if _put(put_object, key_for(prefix, worker), sim.document(worker)):
                    dirty[prefix].discard(worker)
        stop.wait(interval_s)


def _put(put_object: Callable[[str, bytes], None], key: str, body: bytes) -> bool:
    try:
        put_object(key, body)
    except Exception as exc:  # any client error: keep simulating, retry next tick
        log.warning("simulate: writing %s failed: %s", key, exc)
        return False
    return True
