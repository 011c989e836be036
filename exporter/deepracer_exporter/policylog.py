"""The trainer's own log: `Policy training>` and `Checkpoint>` lines, as every simapp prints them.

rl_coach's clipped PPO agent prints one line per optimisation epoch on stdout
(`screen.log_dict(..., prefix="Policy training")`, colours off in simapp's training worker):

    Policy training> Surrogate loss=-0.0228..., KL divergence=1.10...e-05, Entropy=2.83...,
    training epoch=0, learning_rate=0.0003

`training epoch` restarts at 0 for every policy update; after the update's epochs the trainer
saves a checkpoint,

    Checkpoint> Saving in path=['./checkpoint_sagemaker/agent/<N>_Step-<steps>.ckpt']

N counting the updates from 1 (`0_Step-0` is the untrained network saved at start). The update
numbered N follows the episodes of training iteration N - 1 (0-based, as `Training> ...
Training iteration=` and the exporter number them), so that is the iteration its epochs get.

The same lines reach the exporter three ways: the log files of console and DeepRacer-on-AWS
exports (logreader.py), container logs through the Docker Engine (dockerlogs.py), and,
re-streamed by DRfC's `rl_coach` container, with a compose prefix (`rl_coach_1  | `). A line is
found wherever its marker is in the text, so prefixes (compose names, Docker timestamps) and
`\\r`-separated progress output around it do not matter.

When a Checkpoint line is missing (SAC prints none; a log cut short), an update that starts
(its epoch is not above the previous line's) closes the one before: that update takes the
iteration after the last checkpoint seen, as the next checkpoint would have named it. Before any
checkpoint the epochs give the latest values only, never a guessed iteration.
"""

from __future__ import annotations

import math
import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass

POLICY_MARKER = "Policy training>"
CHECKPOINT_MARKER = "Checkpoint> Saving in path="
MAX_LOG_LINE = 4096  # longer lines are not the trainer's; they are skipped, not parsed

_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_ARGS_PREFIX = re.compile(r"Training Worker Args: Namespace\(.*?\bs3_prefix='([^']{1,512})'")
_PAIR = re.compile(r"\s*([A-Za-z_][A-Za-z_ ]*?)\s*=\s*([^,]*)")
_CHECKPOINT = re.compile(r"/(\d{1,9})_Step-(\d{1,15})\.ckpt")
_FIELDS = {"Surrogate loss": "surrogate_loss", "KL divergence": "kl_divergence",
           "Entropy": "entropy", "training epoch": "epoch"}


class LogLineError(ValueError):
    """A line with a trainer marker whose values cannot be read."""


@dataclass(frozen=True)
class Epoch:
    """One `Policy training>` line."""

    surrogate_loss: float
    kl_divergence: float
    entropy: float
    epoch: int


@dataclass(frozen=True)
class Checkpoint:
    """One `Checkpoint> Saving in path=[...<number>_Step-<steps>.ckpt]` line."""

    number: int
    steps: int


def split_lines(text: str) -> Iterator[str]:
    """Lines of a log chunk; `\\r` separates lines too (progress output rewrites a line)."""
    for line in text.split("\n"):
        yield from line.split("\r")


def parse_line(line: str) -> Epoch | Checkpoint | None:
    """The trainer's record in one line, None for any other line; LogLineError when a marker
    is there but its values are not (non-finite values included)."""
    if len(line) > MAX_LOG_LINE:
        return None
    at = line.find(POLICY_MARKER)
    if at >= 0:
        return _epoch(_ANSI.sub("", line[at + len(POLICY_MARKER):]))
    at = line.find(CHECKPOINT_MARKER)
    if at >= 0:
        found = _CHECKPOINT.search(line, at)
        if found is None:
            raise LogLineError("a Checkpoint line without '<N>_Step-<steps>.ckpt'")
        return Checkpoint(int(found.group(1)), int(found.group(2)))
    return None


def worker_prefix(line: str) -> str | None:
    """The S3 prefix the trainer writes to, from the `Training Worker Args: Namespace(...)` line
    every simapp prints first (without a trailing slash); None for any other line."""
    found = _ARGS_PREFIX.search(line) if len(line) <= MAX_LOG_LINE else None
    return found.group(1).rstrip("/") if found else None


def _epoch(rest: str) -> Epoch:
    values: dict[str, str] = {}
    for part in rest.split(","):
        found = _PAIR.fullmatch(part.rstrip())
        if found and found.group(1) in _FIELDS:
            values[_FIELDS[found.group(1)]] = found.group(2).strip()
    if len(values) != len(_FIELDS):
        raise LogLineError("a Policy training line without loss, KL, entropy and epoch")
    try:
        loss, kl, entropy = (float(values[k]) for k in ("surrogate_loss", "kl_divergence",
                                                       "entropy"))
        epoch = int(values["epoch"])
    except ValueError:
        raise LogLineError("a Policy training value is not a number") from None
    if not all(math.isfinite(v) for v in (loss, kl, entropy)) or not 0 <= epoch <= 10**9:
        raise LogLineError("a Policy training value is not finite")
    return Epoch(loss, kl, entropy, epoch)


def mean_with(mean: float, count: int, value: float) -> float:
    """The mean of `count` values (the first `count - 1` averaging `mean`) and `value`, without
    overflow: a convex combination of finite numbers stays finite (halved to compute, then
    clamped at the largest float against the last rounding)."""
    if count <= 1:
        return value
    half = (mean / 2) * ((count - 1) / count) + (value / 2) / count
    largest = sys.float_info.max
    return math.copysign(largest, half) if abs(half) > largest / 2 else half * 2


@dataclass(frozen=True)
class PolicyState:
    """The trainer's policy figures for one model, from the push or from its log."""

    entropy: float | None = None
    kl_divergence: float | None = None
    surrogate_loss: float | None = None
    epoch: int | None = None
    epochs: int = 0  # epochs received since the exporter started
    last_epoch_time: float | None = None  # Unix seconds
    episodes: int = 0  # episode lines received from the simulator
    last_episode_time: float | None = None
    # (iteration, mean entropy over that iteration's policy-training epochs), oldest first
    iteration_entropy: tuple[tuple[int, float], ...] = ()


LINE_RESULTS = ("policy", "checkpoint", "unreadable")  # what `read_line` counts


def read_line(line: str) -> tuple[Epoch | Checkpoint | None, str | None]:
    """`parse_line` and the line's counted result: `policy`, `checkpoint`, `unreadable` (a
    marker whose values are not numbers), or None for any other line."""
    try:
        record = parse_line(line)
    except LogLineError:
        return None, "unreadable"
    if isinstance(record, Epoch):
        return record, "policy"
    return record, "checkpoint" if isinstance(record, Checkpoint) else None


class PolicyTrack:
    """Folds one training's epochs (and checkpoints) into a PolicyState, keeping the latest
    `max_iterations` iterations' mean entropy. Not thread-safe: its owner locks."""

    def __init__(self, max_iterations: int = 1000) -> None:
        self._max_iterations = max_iterations
        self.state = PolicyState()
        self._by_iteration: dict[int, float] = {}
        self._iteration: int | None = None  # iteration of the update under way, when known
        self._mean = 0.0
        self._count = 0  # epochs of the update under way
        self._checkpoint: int | None = None  # number of the last checkpoint seen

    def epoch(self, e: Epoch, now: float, iteration: int | None = None) -> None:
        """One epoch. `iteration` (the push's way) names the update's iteration when it starts;
        without it the update waits for its checkpoint."""
        s = self.state
        if s.epoch is None or e.epoch <= s.epoch or self._count == 0:
            self._close()
            self._iteration, self._mean, self._count = iteration, 0.0, 0
        self._count += 1
        self._mean = mean_with(self._mean, self._count, e.entropy)
        if self._iteration is not None:
            self._record(self._iteration, self._mean)
        self.state = PolicyState(
            e.entropy, e.kl_divergence, e.surrogate_loss, e.epoch, s.epochs + 1, now,
            s.episodes, s.last_episode_time, self._entropies())

    def take(self, record: Epoch | Checkpoint | None, now: float) -> None:
        """One line's record (see `read_line`); None changes nothing."""
        if isinstance(record, Epoch):
            self.epoch(record, now)
        elif isinstance(record, Checkpoint):
            self.checkpoint(record)

    def checkpoint(self, c: Checkpoint) -> None:
        """Checkpoint N closes update N: its epochs belong to iteration N - 1."""
        if self._count and self._iteration is None and c.number > 0:
            self._iteration = c.number - 1
            self._record(self._iteration, self._mean)
            self.state = _with_entropies(self.state, self._entropies())
        self._checkpoint = c.number
        self._count = 0

    def flush(self) -> None:
        """The log has ended: an update without its checkpoint is closed as a new one would."""
        self._close()
        self._count = 0
        self.state = _with_entropies(self.state, self._entropies())

    def episode(self, now: float) -> None:
        s = self.state
        self.state = PolicyState(s.entropy, s.kl_divergence, s.surrogate_loss, s.epoch,
                                 s.epochs, s.last_epoch_time, s.episodes + 1, now,
                                 s.iteration_entropy)

    def _close(self) -> None:
        """An update ends without its checkpoint: it takes the iteration after the last one."""
        if self._count and self._iteration is None and self._checkpoint is not None:
            self._record(self._checkpoint, self._mean)
            self._checkpoint += 1

    def _record(self, iteration: int, mean: float) -> None:
        by = self._by_iteration
        by[iteration] = mean
        while len(by) > self._max_iterations:
            del by[min(by)]

    def _entropies(self) -> tuple[tuple[int, float], ...]:
        return tuple(sorted(self._by_iteration.items()))


def _with_entropies(s: PolicyState, entropies: tuple[tuple[int, float], ...]) -> PolicyState:
    return PolicyState(s.entropy, s.kl_divergence, s.surrogate_loss, s.epoch, s.epochs,
                       s.last_epoch_time, s.episodes, s.last_episode_time, entropies)


def read_log(text: str, now: float, max_iterations: int = 1000) -> tuple[PolicyState, int]:
    """A whole log's policy figures and the number of marker lines that could not be read."""
    track = PolicyTrack(max_iterations)
    bad = 0
    for line in split_lines(text):
        record, result = read_line(line)
        bad += result == "unreadable"
        track.take(record, now)
    track.flush()
    return track.state, bad
