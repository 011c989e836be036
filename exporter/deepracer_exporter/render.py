"""The per-iteration families, rendered once per derived result and reused until it changes.

They are nearly all of the series (about 55 per iteration and model), and a model's derived
result only changes when its files do, so each model's lines (and their gzip member) are kept
with the `Derived` object they came from: a refresh where nothing changed renders nothing, and
one changed model costs only its own lines. Gzip members may be concatenated into one valid
stream (RFC 1952), which is how the compressed body is assembled without compressing it again.
The small families (model state, health) still go through the custom collector every refresh.
"""

from __future__ import annotations

import gzip
from collections.abc import Callable
from dataclasses import dataclass

from .derive import STATS, Derived, IterationStats
from .snapshot import Snapshot

_GZIP_LEVEL = 6


@dataclass(frozen=True)
class Family:
    name: str
    help: str  # "{window}" is replaced by rolling_window
    samples: Callable[[IterationStats], list[tuple[str, float]]]  # (extra labels, value)


def _stats(values: tuple[float, float, float, float] | None) -> list[tuple[str, float]]:
    if values is None:
        return []
    return [(f',stat="{stat}"', v) for stat, v in zip(STATS, values, strict=True)
            if v == v and v not in (float("inf"), float("-inf"))]


FAMILIES = (
    Family("deepracer_iteration_reward", "Reward per episode.",
           lambda it: _stats(it.reward)),
    Family("deepracer_iteration_completion_ratio", "Track completion per episode, 0..1.",
           lambda it: _stats(it.completion)),
    Family("deepracer_iteration_episode_seconds",
           "Episode duration over all episodes (deepracer-utils 'time').",
           lambda it: _stats(it.episode_seconds)),
    Family("deepracer_iteration_lap_seconds", "Lap time of completed laps only.",
           lambda it: _stats(it.lap_seconds)),
    Family("deepracer_iteration_completed_ratio",
           "Share of episodes that completed the lap, 0..1.",
           lambda it: [("", it.completed_ratio)]),
    Family("deepracer_iteration_episodes", "Episodes in the iteration.",
           lambda it: [("", float(it.episodes))]),
    Family("deepracer_iteration_status_episodes", "Episodes by outcome.",
           lambda it: [(f',status="{s}"', float(n)) for s, n in it.status_episodes]),
    Family("deepracer_iteration_rolling_reward",
           "Rolling mean over {window} iterations of the reward statistic.",
           lambda it: _stats(it.rolling_reward)),
    Family("deepracer_iteration_rolling_completion_ratio",
           "Rolling mean over {window} iterations of the completion statistic.",
           lambda it: _stats(it.rolling_completion)),
)


def escape(value: str) -> str:
    return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")


def model_lines(model: str, derived: Derived) -> list[bytes]:
    """One text block per family (in FAMILIES order) with this model's samples."""
    blocks: list[list[str]] = [[] for _ in FAMILIES]
    label = escape(model)
    for it in derived.iterations:
        base = (f'{{model="{label}",phase="{it.phase}",round="{it.round}",'
                f'iteration="{it.iteration}"')
        for block, family in zip(blocks, FAMILIES, strict=True):
            for extra, value in family.samples(it):
                block.append(f"{family.name}{base}{extra}}} {float(value)!r}\n")
    return [("".join(b)).encode() for b in blocks]


@dataclass(frozen=True)
class _Chunks:
    derived: Derived
    plain: tuple[bytes, ...]
    gzipped: tuple[bytes, ...]


class IterationRenderer:
    """Keeps each model's rendered per-iteration lines for as long as its `Derived` is current."""

    def __init__(self) -> None:
        self._cache: dict[str, _Chunks] = {}

    def _chunks(self, model: str, derived: Derived) -> _Chunks:
        cached = self._cache.get(model)
        if cached is not None and cached.derived is derived:
            return cached
        plain = tuple(model_lines(model, derived))
        chunks = _Chunks(derived, plain, tuple(gzip.compress(p, _GZIP_LEVEL) if p else b""
                                               for p in plain))
        self._cache[model] = chunks
        return chunks

    def render(self, snapshot: Snapshot) -> tuple[list[bytes], list[bytes]]:
        """(plain, gzip) parts of every per-iteration family for the snapshot's models; the
        parts are the cached chunks themselves, not copies."""
        current = {m.name: self._chunks(m.name, m.derived) for m in snapshot.models
                   if m.derived is not None}
        self._cache = current  # models that vanished are forgotten
        cached = f" Cached: refreshed in the background every {snapshot.refresh_interval:g}s."
        plain: list[bytes] = []
        gz: list[bytes] = []
        for i, family in enumerate(FAMILIES):
            text = family.help.format(window=snapshot.rolling_window)
            head = (f"# HELP {family.name} {text}{cached}\n"
                    f"# TYPE {family.name} gauge\n").encode()
            plain.append(head)
            gz.append(gzip.compress(head, _GZIP_LEVEL))
            for chunks in current.values():
                if chunks.plain[i]:
                    plain.append(chunks.plain[i])
                    gz.append(chunks.gzipped[i])
        return plain, gz
