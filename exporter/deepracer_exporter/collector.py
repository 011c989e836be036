"""Snapshot -> metric families (client_python's custom collector protocol).

Every `collect()` builds fresh families from the current snapshot, so a model or iteration that
vanished from the data vanishes from /metrics too. The per-iteration families, nearly all of the
series, are rendered by `render.IterationRenderer` instead, which reuses unchanged models' text.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from . import __version__, extras
from .parse import PHASES, STATUSES
from .snapshot import Snapshot


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
        yield from self._extras(snap, gauge)
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
    def _extras(snap: Snapshot, gauge: Callable[..., GaugeMetricFamily]
                ) -> Iterator[GaugeMetricFamily]:
        run_labels = ["model", "run"]
        runs = gauge("deepracer_evaluation_runs", "Evaluation runs found (all rounds).",
                     ["model"])
        started = gauge("deepracer_evaluation_timestamp_seconds",
                        "Start of the evaluation run, from its file name, Unix seconds.",
                        run_labels)
        trials = gauge("deepracer_evaluation_trials", "Trials in the evaluation run.",
                       run_labels)
        laps = gauge("deepracer_evaluation_completed_laps",
                     "Completed laps (completion 100%) in the evaluation run.", run_labels)
        completion = gauge("deepracer_evaluation_completion_ratio",
                           "Mean completion of the evaluation run's trials, 0..1.", run_labels)
        lap_s = gauge("deepracer_evaluation_lap_seconds",
                      "Lap time of the run's completed laps (stat mean or min).",
                      [*run_labels, "stat"])
        resets = gauge("deepracer_evaluation_resets", "Resets in the evaluation run by cause.",
                       [*run_labels, "reason"])
        best_eval = gauge("deepracer_model_best_evaluation_lap_seconds",
                          "Fastest completed lap over all evaluation runs.", ["model"])
        metadata = gauge("deepracer_model_metadata_info",
                         "model_metadata.json of the latest round (always 1).",
                         ["model", *extras.MODEL_INFO_LABELS])
        action = gauge("deepracer_model_action_space",
                       "Action space bounds from model_metadata.json (speed m/s, degrees).",
                       ["model", "bound"])
        hyper = gauge("deepracer_model_hyperparameter",
                      "Numeric hyperparameters of the latest round (ip/hyperparameters.json).",
                      ["model", "name"])
        hyper_info = gauge("deepracer_model_hyperparameters_info",
                           "Text hyperparameters of the latest round (always 1).",
                           ["model", *extras.HYPERPARAMETER_INFO_LABELS])
        checkpoint = gauge("deepracer_model_checkpoint",
                           "Checkpoint number from model/deepracer_checkpoints.json.",
                           ["model", "kind"])
        checkpoint_ts = gauge("deepracer_model_checkpoint_timestamp_seconds",
                              "LastModified of model/deepracer_checkpoints.json, Unix seconds.",
                              ["model"])
        for m in snap.models:
            x = m.extras
            if x.evaluation_run_count:
                runs.add_metric([m.name], x.evaluation_run_count)
            for run in x.evaluation_runs:
                labels = [m.name, run.run_id]
                if run.timestamp is not None:
                    started.add_metric(labels, run.timestamp)
                trials.add_metric(labels, run.trials)
                laps.add_metric(labels, run.completed_laps)
                if run.completion_ratio is not None:
                    completion.add_metric(labels, run.completion_ratio)
                if run.lap_seconds_mean is not None and run.lap_seconds_best is not None:
                    lap_s.add_metric([*labels, "mean"], run.lap_seconds_mean)
                    lap_s.add_metric([*labels, "min"], run.lap_seconds_best)
                for reason, n in (("off_track", run.off_track), ("crashed", run.crashes),
                                  ("reversed", run.reversed), ("immobilized", run.immobilized)):
                    resets.add_metric([*labels, reason], n)
            if x.best_evaluation_lap is not None:
                best_eval.add_metric([m.name], x.best_evaluation_lap)
            if x.metadata:
                values = dict(x.metadata)
                metadata.add_metric([m.name, *(values.get(k, extras.UNKNOWN)
                                               for k in extras.MODEL_INFO_LABELS)], 1)
            for bound, v in x.action_space:
                action.add_metric([m.name, bound], v)
            for name, v in x.hyperparameters:
                hyper.add_metric([m.name, name], v)
            if x.hyperparameter_info:
                values = dict(x.hyperparameter_info)
                hyper_info.add_metric([m.name, *(values.get(k, extras.UNKNOWN)
                                                 for k in extras.HYPERPARAMETER_INFO_LABELS)], 1)
            if x.checkpoints is not None:
                for kind, cp in (("last", x.checkpoints.last), ("best", x.checkpoints.best)):
                    if cp is not None and cp.number is not None:
                        checkpoint.add_metric([m.name, kind], cp.number)
                if x.checkpoints_updated is not None:
                    checkpoint_ts.add_metric([m.name], x.checkpoints_updated)
        yield from (runs, started, trials, laps, completion, lap_s, resets, best_eval, metadata,
                    action, hyper, hyper_info, checkpoint, checkpoint_ts)

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
                           "GET answered 304), unchanged (listing ETag unchanged, no GET) or "
                           "tail (grown object, only its new records read).",
                           ["model", "result"])
        downloaded = counter("deepracer_exporter_downloaded_bytes",
                             "Bytes of object bodies downloaded.", ["model"])
        models = gauge("deepracer_exporter_models", "Models watched.", [])
        built = gauge("deepracer_exporter_snapshot_timestamp_seconds",
                      "Unix time the served snapshot was built (one per refresh cycle).", [])
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
            requests.add_metric([m.name, "tail"], h.tail)
            downloaded.add_metric([m.name], h.downloaded_bytes)
        models.add_metric([], len(snap.models))
        built.add_metric([], snap.created)
        for source, ok in snap.discovery:
            discovery.add_metric([source], 1 if ok else 0)
        build.add_metric([__version__], 1)
        yield from (success, duration, last_ok, errors, requests, downloaded, models, built,
                    discovery, build)

