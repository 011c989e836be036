"""The per-iteration families, rendered once per derived result and reused until it changes.

They are nearly all of the series, and a model's derived result only changes when its files do,
so each model's lines (and, once a scraper asks for gzip, their gzip member) are kept with the
`Derived` object they came from:
a refresh where nothing changed renders nothing, and one changed model costs only its own lines.
Gzip members may be concatenated into one valid stream (RFC 1952), which is how the compressed
body is assembled without compressing it again. The small families (model state, health) still
go through the custom collector every refresh.

A family's lines are one `%` template filled in one call: the template is joined from per-row
label prefixes (per iteration, not per sample) and the values are formatted by `%r` in C, so no
Python code runs per sample. The values come straight from the columns of `Derived.table`, with
no Python object per row. The families, their labels and which stats are exported come from the
catalogue (`catalogue.ITERATION_FAMILIES`, `Snapshot.iteration_stats`).
"""

from __future__ import annotations

import gzip
import math
import threading
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from .catalogue import ITERATION_FAMILIES, SIMTRACE_FAMILIES, IterationFamily
from .config import DEFAULT_ITERATION_STATS
from .config import IterationStats as IterationStatSelection
from .derive import Derived, IterationTable
from .parse import PHASES
from .snapshot import ModelSnapshot, Snapshot

_GZIP_LEVEL = 6
BoolArray = npt.NDArray[np.bool_]


def escape(value: str) -> str:
    return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")


def _suffixes(family: IterationFamily) -> list[tuple[str, ...]]:
    """Bit code of the samples present in a row -> ("", suffix per present sample): joined with
    the row's label prefix as separator, they give the row's template lines."""
    label = family.labels[0] if family.labels else None
    ends = [f',{label}="{v}"}} %r\n' if label else "} %r\n" for v in family.extra_values]
    return [("", *(e for j, e in enumerate(ends) if code >> j & 1))
            for code in range(1 << len(ends))]


_SUFFIXES = {f.name: _suffixes(f) for f in ITERATION_FAMILIES}


def _selected(family: IterationFamily, stats: IterationStatSelection) -> BoolArray:
    """(phase, extra value) -> exported, from `iteration_stats`."""
    if family.stat_key is None:
        return np.ones((len(PHASES), len(family.extra_values)), np.bool_)
    chosen = {phase: s for phase, key, s in stats if key == family.stat_key}
    return np.array([[v in chosen.get(p, ()) for v in family.extra_values] for p in PHASES],
                    np.bool_)


@dataclass(frozen=True)
class _Table:
    """One family's samples of one model: values (row, extra value) and which are exported."""

    values: npt.NDArray[np.float64]
    mask: BoolArray


def _tables(table: IterationTable, stats: IterationStatSelection) -> list[_Table]:
    out = []
    for f in ITERATION_FAMILIES:
        values = np.asarray(f.column(table), np.float64).reshape(len(table), len(f.extra_values))
        out.append(_Table(values, _selected(f, stats)[table.phase] & np.isfinite(values)))
    return out


def sample_count(derived: Derived, stats: IterationStatSelection) -> int:
    """Per-iteration samples `model_lines` renders for this derived result and selection."""
    return sum(int(t.mask.sum()) for t in _tables(derived.table, stats))


def model_lines(model: str, derived: Derived,
                stats: IterationStatSelection = DEFAULT_ITERATION_STATS) -> list[bytes]:
    """One text block per family (in ITERATION_FAMILIES order) with this model's samples."""
    rows = derived.table
    label = escape(model).replace("%", "%%")  # the label is part of a % template
    prefixes = [f'{{model="{label}",phase="{PHASES[p]}",round="{r}",iteration="{i}"'
                for p, r, i in zip(rows.phase.tolist(), rows.round.tolist(),
                                   rows.iteration.tolist(), strict=True)]
    blocks = []
    for f, table in zip(ITERATION_FAMILIES, _tables(rows, stats), strict=True):
        weights = 1 << np.arange(len(f.extra_values))
        codes = (table.mask @ weights).tolist()
        ends = _SUFFIXES[f.name]
        template = "".join([(f.name + p).join(ends[c])
                            for p, c in zip(prefixes, codes, strict=True)])
        blocks.append((template % tuple(table.values[table.mask].tolist())).encode())
    return blocks


def _gzip_families(heads: tuple[bytes, ...], members: list[tuple[bytes, ...]]
                   ) -> tuple[bytes, ...]:
    """Per family: its head, then each model's gzip member of it (concatenated members are one
    valid gzip stream)."""
    out: list[bytes] = []
    for i, head in enumerate(heads):
        out.append(gzip.compress(head, _GZIP_LEVEL))
        out.extend(m[i] for m in members if m[i])
    return tuple(out)


class _Parts:
    """One model's text per family, and their gzip members made on first demand."""

    def __init__(self, plain: tuple[bytes, ...]) -> None:
        self.plain = plain
        self._gzipped: tuple[bytes, ...] | None = None
        self._lock = threading.Lock()

    def gzipped(self) -> tuple[bytes, ...]:
        with self._lock:
            if self._gzipped is None:
                self._gzipped = tuple(gzip.compress(p, _GZIP_LEVEL) if p else b""
                                      for p in self.plain)
            return self._gzipped


class _Chunks(_Parts):
    """One model's per-iteration lines, with the derived result they came from."""

    def __init__(self, derived: Derived, stats: IterationStatSelection, exported: bool,
                 plain: tuple[bytes, ...]) -> None:
        self.derived = derived
        self.stats = stats
        self.exported = exported  # False: the model is idle, its history is not exported
        super().__init__(plain)



@dataclass(frozen=True)
class RenderedFamilies:
    """The per-iteration part of one exposition: plain text parts now, gzip parts on demand
    (`--once` and scrapers that do not ask for gzip never pay for compressing)."""

    plain: tuple[bytes, ...]
    heads: tuple[bytes, ...]  # per family, followed by its models' chunks
    chunks: tuple[_Chunks, ...]

    def gzipped(self) -> tuple[bytes, ...]:
        return _gzip_families(self.heads, [c.gzipped() for c in self.chunks])


class IterationRenderer:
    """Keeps each model's rendered per-iteration lines for as long as its `Derived`, the stats
    selection and its idle state are what they were rendered for."""

    def __init__(self) -> None:
        self._cache: dict[str, _Chunks] = {}

    def _chunks(self, m: ModelSnapshot, snapshot: Snapshot) -> _Chunks:
        assert m.derived is not None
        exported = m.history_exported(snapshot.created)
        cached = self._cache.get(m.name)
        if (cached is not None and cached.derived is m.derived
                and cached.stats == snapshot.iteration_stats and cached.exported == exported):
            return cached
        plain = (tuple(model_lines(m.name, m.derived, snapshot.iteration_stats)) if exported
                 else (b"",) * len(ITERATION_FAMILIES))
        chunks = _Chunks(m.derived, snapshot.iteration_stats, exported, plain)
        self._cache[m.name] = chunks
        return chunks

    def render(self, snapshot: Snapshot) -> RenderedFamilies:
        """Every per-iteration family for the snapshot's models; the parts are the cached
        chunks themselves, not copies."""
        current = {m.name: self._chunks(m, snapshot) for m in snapshot.models
                   if m.derived is not None}
        self._cache = current  # models that vanished are forgotten
        plain: list[bytes] = []
        heads: list[bytes] = []
        for i, family in enumerate(ITERATION_FAMILIES):
            head = (f"# HELP {family.name} {family.help_text(snapshot)}\n"
                    f"# TYPE {family.name} {family.type}\n").encode()
            heads.append(head)
            plain.append(head)
            plain.extend(c.plain[i] for c in current.values() if c.plain[i])
        return RenderedFamilies(tuple(plain), tuple(heads), tuple(current.values()))


class _Simtrace(_Parts):
    """One model's simtrace-family lines, with the figures they came from."""

    def __init__(self, key: tuple[object, ...], plain: tuple[bytes, ...], samples: int) -> None:
        super().__init__(plain)
        self.key = key
        self.samples = samples

    def fits(self, key: tuple[object, ...]) -> bool:
        """Same simulator and analysis objects (identity), same idle state and selection."""
        return (self.key[0] is key[0] and self.key[1] is key[1]
                and self.key[2:] == key[2:])



def _number(value: float) -> str:
    """A sample value as the text format writes it (`%r`, as the other families)."""
    v = float(value)
    if math.isfinite(v):
        return repr(v)
    return "NaN" if math.isnan(v) else ("+Inf" if v > 0 else "-Inf")


def simtrace_lines(m: ModelSnapshot, snapshot: Snapshot) -> tuple[tuple[bytes, ...], int]:
    """One text block per family of `SIMTRACE_FAMILIES` with this model's samples, and their
    number: the catalogue's own values."""
    model = escape(m.name)
    blocks, count = [], 0
    for f in SIMTRACE_FAMILIES:
        names = f.labels[1:]
        lines = []
        for labels, value in f.values(snapshot, m):
            pairs = "".join(f',{n}="{escape(v)}"' for n, v in zip(names, labels, strict=True))
            lines.append(f'{f.name}{{model="{model}"{pairs}}} {_number(value)}\n')
        count += len(lines)
        blocks.append("".join(lines).encode())
    return tuple(blocks), count


class SimtraceRenderer:
    """The per-iteration families of simtrace (simulator health, training analysis), kept per
    model while its simtrace figures, idle state and stats selection are unchanged: a finished
    model's thousands of such samples cost nothing per refresh (the collector would build and
    format them every time)."""

    def __init__(self) -> None:
        self._cache: dict[str, _Simtrace] = {}

    def samples(self, model: str) -> int:
        """Samples of `model` in the last render (for the per-model series self-report)."""
        cached = self._cache.get(model)
        return cached.samples if cached is not None else 0

    def render(self, snapshot: Snapshot) -> RenderedSimtrace:
        current: dict[str, _Simtrace] = {}
        for m in snapshot.models:
            key = (m.extras.simulator, m.extras.analysis, m.history_exported(snapshot.created),
                   snapshot.iteration_stats)
            cached = self._cache.get(m.name)
            if cached is None or not cached.fits(key):
                cached = _Simtrace(key, *simtrace_lines(m, snapshot))
            current[m.name] = cached
        self._cache = current
        heads = tuple((f"# HELP {f.name} {f.help_text(snapshot)}\n"
                       f"# TYPE {f.name} {f.type}\n").encode() for f in SIMTRACE_FAMILIES)
        return RenderedSimtrace(heads, tuple(current.values()))


@dataclass(frozen=True)
class RenderedSimtrace:
    heads: tuple[bytes, ...]
    chunks: tuple[_Simtrace, ...]

    @property
    def plain(self) -> tuple[bytes, ...]:
        out: list[bytes] = []
        for i, head in enumerate(self.heads):
            out.append(head)
            out.extend(c.plain[i] for c in self.chunks if c.plain[i])
        return tuple(out)

    def gzipped(self) -> tuple[bytes, ...]:
        return _gzip_families(self.heads, [c.gzipped() for c in self.chunks])
