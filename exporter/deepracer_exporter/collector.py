"""Snapshot -> metric families (client_python's custom collector protocol).

Every `collect()` builds fresh families from the current snapshot, so a model or iteration that
vanished from the data vanishes from /metrics too.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from . import __version__
from .derive import STATS
from .parse import PHASES, STATUSES
from .snapshot import Snapshot

_ITER_LABELS = ["model", "phase", "round", "iteration"]


def _finite(value: float) -> bool:
    return not math.isnan(value) and not math.isinf(value)


class SnapshotCollector(Collector):
    def __init__(self, get_snapshot: Callable[[], Snapshot]) -> None:
        self._get = get_snapshot

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        snap = self._get()
        cached = (f" Cached: refreshed in the background every {snap.refresh_interval:g}s.")

        def gauge(name: str, doc: str, labels: list[str]) -> GaugeMetricFamily:
            return GaugeMetricFamily(name, doc + cached, labels=labels)

        def counter(name: str, doc: str, labels: list[str]) -> CounterMetricFamily:
            return CounterMetricFamily(name, doc + cached, labels=labels)

        yield from self._model_state(snap, gauge, counter)
        yield from self._iterations(snap, gauge)
        yield from self._health(snap, gauge, counter)

    @staticmethod
    def _model_state(snap: Snapshot, gauge: Callable[..., GaugeMetricFamily],
                     counter: Callable[..., CounterMetricFamily]
                     ) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        info = gauge("deepracer_model_info", "Watched DeepRacer model (always 1).",
                     ["model", "bucket", "prefix", "source"])
        iteration = gauge("deepracer_model_iteration",
                          "Latest training iteration (continues across rounds).", ["model"])
        rnd = gauge("deepracer_model_round", "Latest training round (1-based).", ["model"])
        epi = gauge("deepracer_model_episodes_per_iteration",
                    "Training episodes per iteration, all workers together.", ["model"])
        workers = gauge("deepracer_model_workers",
                        "Workers (TrainingMetrics*.json files) in the latest round.", ["model"])
        updated = gauge("deepracer_model_last_update_timestamp_seconds",
                        "Newest LastModified of the model's metrics objects, Unix seconds.",
                        ["model"])
        finished = gauge("deepracer_model_finished",
                         "1 when the latest round reached term_cond_max_episodes.", ["model"])
        best = gauge("deepracer_model_best_lap_seconds", "Fastest completed lap.",
                     ["model", "phase"])
        episodes = counter("deepracer_model_episodes", "Episodes by phase and outcome.",
                           ["model", "phase", "status"])
        roll_c = gauge("deepracer_model_rolling_completion_ratio",
                       "Rolling mean of per-iteration mean completion (0..1) at the latest "
                       "iteration.", ["model", "phase"])
        roll_r = gauge("deepracer_model_rolling_reward",
                       "Rolling mean of per-iteration mean reward at the latest iteration.",
                       ["model", "phase"])
        plateau = gauge("deepracer_model_plateau_iterations",
                        "Iterations since the rolling mean last reached a new maximum.",
                        ["model", "phase", "metric"])
        skipped = gauge("deepracer_model_skipped_records",
                        "Records dropped as invalid (missing fields, wrong types, NaN, out of "
                        "range).", ["model"])
        best_laps = gauge("deepracer_best_lap_seconds", "Fastest completed laps, rank 1 first.",
                          ["model", "phase", "rank", "round", "iteration", "episode", "worker"])
        for m in snap.models:
            info.add_metric([m.name, m.bucket, m.prefix, m.source], 1)
            if m.last_update is not None:
                updated.add_metric([m.name], m.last_update)
            d = m.derived
            if d is None:
                continue
            if d.latest_iteration >= 0:
                iteration.add_metric([m.name], d.latest_iteration)
            rnd.add_metric([m.name], d.latest_round)
            epi.add_metric([m.name], d.episodes_per_iteration)
            workers.add_metric([m.name], d.workers)
            finished.add_metric([m.name], 1 if d.finished else 0)
            skipped.add_metric([m.name], d.skipped_records)
            for phase, seconds in d.best_lap.items():
                best.add_metric([m.name, phase], seconds)
            for phase in PHASES:
                for status in STATUSES:
                    episodes.add_metric([m.name, phase, status],
                                        d.episodes_by_status.get((phase, status), 0))
            for phase, value in d.rolling_completion.items():
                roll_c.add_metric([m.name, phase], value)
            for phase, value in d.rolling_reward.items():
                roll_r.add_metric([m.name, phase], value)
            for (phase, metric), n in d.plateau.items():
                plateau.add_metric([m.name, phase, metric], n)
            ranks: dict[str, int] = {}
            for lap in d.best_laps:
                ranks[lap.phase] = ranks.get(lap.phase, 0) + 1
                best_laps.add_metric([m.name, lap.phase, str(ranks[lap.phase]), str(lap.round),
                                      str(lap.iteration), str(lap.episode), str(lap.worker)],
                                     lap.seconds)
        yield from (info, iteration, rnd, epi, workers, updated, finished, best, episodes,
                    roll_c, roll_r, plateau, skipped, best_laps)

    @staticmethod
    def _iterations(snap: Snapshot, gauge: Callable[..., GaugeMetricFamily]
                    ) -> Iterator[GaugeMetricFamily]:
        window = snap.rolling_window
        stat_labels = [*_ITER_LABELS, "stat"]
        reward = gauge("deepracer_iteration_reward", "Reward per episode.", stat_labels)
        completion = gauge("deepracer_iteration_completion_ratio",
                           "Track completion per episode, 0..1.", stat_labels)
        episode_s = gauge("deepracer_iteration_episode_seconds",
                          "Episode duration over all episodes (deepracer-utils 'time').",
                          stat_labels)
        lap_s = gauge("deepracer_iteration_lap_seconds", "Lap time of completed laps only.",
                      stat_labels)
        completed = gauge("deepracer_iteration_completed_ratio",
                          "Share of episodes that completed the lap, 0..1.", _ITER_LABELS)
        count = gauge("deepracer_iteration_episodes", "Episodes in the iteration.", _ITER_LABELS)
        status = gauge("deepracer_iteration_status_episodes", "Episodes by outcome.",
                       [*_ITER_LABELS, "status"])
        roll_r = gauge("deepracer_iteration_rolling_reward",
                       f"Rolling mean over {window} iterations of the reward statistic.",
                       stat_labels)
        roll_c = gauge("deepracer_iteration_rolling_completion_ratio",
                       f"Rolling mean over {window} iterations of the completion statistic.",
                       stat_labels)
        for m in snap.models:
            if m.derived is None:
                continue
            for it in m.derived.iterations:
                base = [m.name, it.phase, str(it.round), str(it.iteration)]
                for k, stat in enumerate(STATS):
                    labels = [*base, stat]
                    reward.add_metric(labels, it.reward[k])
                    completion.add_metric(labels, it.completion[k])
                    episode_s.add_metric(labels, it.episode_seconds[k])
                    if it.lap_seconds is not None:
                        lap_s.add_metric(labels, it.lap_seconds[k])
                    if _finite(it.rolling_reward[k]):
                        roll_r.add_metric(labels, it.rolling_reward[k])
                    if _finite(it.rolling_completion[k]):
                        roll_c.add_metric(labels, it.rolling_completion[k])
                completed.add_metric(base, it.completed_ratio)
                count.add_metric(base, it.episodes)
                for name, n in it.status_episodes:
                    status.add_metric([*base, name], n)
        yield from (reward, completion, episode_s, lap_s, completed, count, status, roll_r,
                    roll_c)

    @staticmethod
    def _health(snap: Snapshot, gauge: Callable[..., GaugeMetricFamily],
                counter: Callable[..., CounterMetricFamily]
                ) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        success = gauge("deepracer_exporter_refresh_success",
                        "1 if the model's last refresh succeeded (else last good data is "
                        "served).", ["model"])
        duration = gauge("deepracer_exporter_refresh_duration_seconds",
                         "Duration of the model's last refresh.", ["model"])
        last_ok = gauge("deepracer_exporter_last_refresh_success_timestamp_seconds",
                        "Unix time of the model's last successful refresh.", ["model"])
        errors = counter("deepracer_exporter_refresh_errors", "Failed refreshes by reason.",
                         ["model", "reason"])
        requests = counter("deepracer_exporter_object_requests",
                           "Metrics objects checked: downloaded, not_modified (conditional "
                           "GET answered 304) or unchanged (listing ETag unchanged, no GET).",
                           ["model", "result"])
        downloaded = counter("deepracer_exporter_downloaded_bytes",
                             "Bytes of object bodies downloaded.", ["model"])
        models = gauge("deepracer_exporter_models", "Models watched.", [])
        discovery = gauge("deepracer_exporter_discovery_success",
                          "1 if the last listing of a discover entry succeeded.", ["source"])
        build = gauge("deepracer_exporter_build_info", "Exporter version (always 1).",
                      ["version"])
        for m in snap.models:
            h = m.health
            success.add_metric([m.name], 1 if h.success else 0)
            duration.add_metric([m.name], h.duration_seconds)
            if h.last_success is not None:
                last_ok.add_metric([m.name], h.last_success)
            for reason, n in h.errors:
                errors.add_metric([m.name, reason], n)
            requests.add_metric([m.name, "downloaded"], h.downloaded)
            requests.add_metric([m.name, "not_modified"], h.not_modified)
            requests.add_metric([m.name, "unchanged"], h.unchanged)
            downloaded.add_metric([m.name], h.downloaded_bytes)
        models.add_metric([], len(snap.models))
        for source, ok in snap.discovery:
            discovery.add_metric([source], 1 if ok else 0)
        build.add_metric([__version__], 1)
        yield from (success, duration, last_ok, errors, requests, downloaded, models, discovery,
                    build)

