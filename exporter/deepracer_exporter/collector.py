"""Snapshot -> metric families (client_python's custom collector protocol), from the catalogue.

Every `collect()` builds fresh families from the current snapshot, so a model or iteration that
vanished from the data vanishes from /metrics too. The per-iteration families, nearly all of the
series, are rendered by `render.IterationRenderer` and `render.SimtraceRenderer` instead, which
reuse unchanged models' text; this collector only counts them, for the per-model series
self-report.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from .catalogue import FAMILIES, ExporterFamily, Family, ModelFamily, SeriesReport
from .config import IterationStats as IterationStatSelection
from .derive import Derived
from .render import sample_count
from .snapshot import ModelSnapshot, Snapshot

MetricFamily = GaugeMetricFamily | CounterMetricFamily


def _family(f: Family, snapshot: Snapshot) -> MetricFamily:
    kind = CounterMetricFamily if f.type == "counter" else GaugeMetricFamily
    return kind(f.name, f.help_text(snapshot), labels=list(f.labels))


class SnapshotCollector(Collector):
    """`simtrace_samples(model)`: how many samples `render.SimtraceRenderer` rendered for the
    model (the families it renders are skipped here), for the series self-report."""

    def __init__(self, get_snapshot: Callable[[], Snapshot],
                 simtrace_samples: Callable[[str], int] = lambda _model: 0) -> None:
        self._get = get_snapshot
        self._simtrace_samples = simtrace_samples
        # model -> (derived, selection, per-iteration samples): counted once per derived result
        self._counts: dict[str, tuple[Derived, IterationStatSelection, int]] = {}

    def _iteration_samples(self, m: ModelSnapshot, snapshot: Snapshot) -> int:
        if m.derived is None or not m.history_exported(snapshot.created):
            return 0
        cached = self._counts.get(m.name)
        if (cached is not None and cached[0] is m.derived
                and cached[1] == snapshot.iteration_stats):
            return cached[2]
        n = sample_count(m.derived, snapshot.iteration_stats)
        self._counts[m.name] = (m.derived, snapshot.iteration_stats, n)
        return n

    def collect(self) -> Iterator[MetricFamily]:
        snap = self._get()
        series = {m.name: 0 for m in snap.models}
        out: list[MetricFamily] = []
        report: MetricFamily | None = None
        for f in FAMILIES:
            if isinstance(f, ModelFamily) and f.simtrace_iterations:
                continue
            if isinstance(f, ModelFamily):
                family = _family(f, snap)
                for m in snap.models:
                    for labels, value in f.values(snap, m):
                        family.add_metric([m.name, *labels], value)
                        series[m.name] += 1
                out.append(family)
            elif isinstance(f, ExporterFamily):
                family = _family(f, snap)
                for labels, value in f.values(snap):
                    family.add_metric(list(labels), value)
                out.append(family)
            elif isinstance(f, SeriesReport):
                report = _family(f, snap)
                out.append(report)
        if report is not None:
            for m in snap.models:
                report.add_metric([m.name], series[m.name] + 1  # + this sample
                                  + self._iteration_samples(m, snap)
                                  + self._simtrace_samples(m.name))
        self._counts = {n: c for n, c in self._counts.items() if n in series}
        yield from out
