"""Simulator health from simtrace through the real S3 endpoint (issue 13).

The exported figures are checked against simtrace.py's own reduction of the same local files on
every sample layout, and against deepracer-utils' SimtraceStabilityAnalyzer (`analyze()`,
`analyze_timing()`, through its own loading) on three-worker files with a wall clock. Reads are
checked on `deepracer_exporter_object_requests_total`: a new iteration's CSV is read once, a
known one never again; a bad CSV is a counted side failure that keeps the last good figures.
"""

from __future__ import annotations

import json
import logging
import math
import shutil
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from conftest import upload_dir
from deepracer_exporter.app import Exporter, StoreFactory, make_s3_client
from deepracer_exporter.config import ModelConfig
from deepracer_exporter.layouts import EVALUATION, TRAINING, simtrace_key
from deepracer_exporter.modelcache import DeriveSettings, ModelCache
from deepracer_exporter.polling import IDLE_AFTER, SAFETY_NET
from deepracer_exporter.s3store import S3Store
from deepracer_exporter.simtrace import (
    IterationSteps,
    WorkerSteps,
    iteration_steps,
    parse_simtrace,
    timing,
    worker_steps,
)
from helpers import Samples, config_from, exporter_for, pick, refresh, s3_yaml, value
from test_simtrace import reference, write_wall_clock_model

SIMULATOR_FAMILIES = (
    "deepracer_iteration_step_seconds", "deepracer_iteration_real_time_factor",
    "deepracer_iteration_training_seconds", "deepracer_iteration_policy_seconds",
    "deepracer_model_step_p95_seconds", "deepracer_model_step_mean_seconds",
    "deepracer_model_real_time_factor", "deepracer_model_simtrace_iteration",
    "deepracer_evaluation_step_seconds", "deepracer_evaluation_real_time_factor")
PER_ITERATION = SIMULATOR_FAMILIES[:4]
TRAINING_SAMPLES = ["sample-drfc-1-logs", "sample-drfc-3-logs", "sample-console-logs",
                    "sample-droa-solution-logs"]


def config(endpoint: str, bucket: str, models: dict[str, str | list[str]], extra: str = ""
           ) -> Any:
    out = s3_yaml(endpoint) + extra + "models:\n"
    for name, where in models.items():
        rounds = where if isinstance(where, list) else [where]
        out += (f"  - name: {name}\n    bucket: {bucket}\n    rounds: [{', '.join(rounds)}]\n")
    return config_from(out)


def requests(got: Samples, model: str) -> dict[str, float]:
    return {dict(k)["result"]: v for k, v in
            pick(got, "deepracer_exporter_object_requests_total", model=model).items()}


def simulator_samples(got: Samples, model: str) -> Samples:
    return {k: v for k, v in got.items()
            if k[0] in SIMULATOR_FAMILIES and ("model", model) in k[1]}


def by_label(got: Samples, name: str, label: str, /, **labels: Any) -> dict[str, float]:
    return {dict(k)[label]: v for k, v in pick(got, name, **labels).items()}


# --- what simtrace.py makes of the local files ---------------------------------------------


def local_files(root: Path, model: str) -> dict[tuple[str, str | None, int, int], WorkerSteps]:
    """(kind, run, worker, iteration) -> figures of every simtrace file of a local model."""
    out = {}
    for path in sorted((root / model).rglob("*-iteration.csv")):
        key = simtrace_key(path.relative_to(root).as_posix(), model)
        assert key is not None, path
        out[(key.kind, key.run, key.worker, key.iteration)] = worker_steps(
            parse_simtrace(path.read_bytes()))
    return out


def expected_iterations(files: dict[tuple[str, str | None, int, int], WorkerSteps]
                        ) -> dict[int, IterationSteps]:
    training = [(w, it, ws) for (kind, _, w, it), ws in files.items() if kind == TRAINING]
    out = {}
    for it in sorted({it for _, it, _ in training}):
        merged = iteration_steps(it, [ws for _, i, ws in training if i == it])
        if merged is not None:
            out[it] = merged
    return out


def expected_runs(files: dict[tuple[str, str | None, int, int], WorkerSteps]
                  ) -> dict[str, IterationSteps]:
    out = {}
    for (kind, run, _, _), ws in files.items():
        if kind == EVALUATION and run is not None:
            merged = iteration_steps(0, [ws])
            assert merged is not None
            out[run] = merged
    return out


def assert_close(got: dict[str, float], want: dict[str, float | None]) -> None:
    """Exported samples equal the expected figures (None: no sample) to 1e-12."""
    assert set(got) == {k for k, v in want.items() if v is not None}
    for k, v in got.items():
        assert v == pytest.approx(want[k], rel=1e-12, abs=1e-12), k


def assert_exported(got: Samples, model: str,
                    files: dict[tuple[str, str | None, int, int], WorkerSteps],
                    full: bool = False) -> None:
    iterations = expected_iterations(files)
    assert iterations
    stats = ("mean", "p95", "max") if full else ("mean", "p95")
    for stat in ("mean", "p95", "max"):
        assert_close(by_label(got, "deepracer_iteration_step_seconds", "iteration",
                              model=model, stat=stat),
                     {str(it): getattr(s, stat) if stat in stats else None
                      for it, s in iterations.items()})
    assert_close(by_label(got, "deepracer_iteration_real_time_factor", "iteration", model=model),
                 {str(it): s.real_time_factor for it, s in iterations.items()})
    timings = timing({it: ws for (kind, _, w, it), ws in files.items()
                      if kind == TRAINING and w == 0})
    assert_close(by_label(got, "deepracer_iteration_training_seconds", "iteration", model=model),
                 {str(t.iteration): t.training_seconds for t in timings})
    assert_close(by_label(got, "deepracer_iteration_policy_seconds", "iteration", model=model),
                 {str(t.iteration): t.policy_seconds for t in timings})
    latest = iterations[max(iterations)]
    assert value(got, "deepracer_model_simtrace_iteration", model=model) == latest.iteration
    assert value(got, "deepracer_model_step_p95_seconds", model=model) == latest.p95
    assert value(got, "deepracer_model_step_mean_seconds", model=model) == latest.mean
    assert_close(by_label(got, "deepracer_model_real_time_factor", "model", model=model),
                 {model: latest.real_time_factor})
    runs = expected_runs(files)
    for stat in ("mean", "p95", "max"):
        assert_close(by_label(got, "deepracer_evaluation_step_seconds", "run", model=model,
                              stat=stat), {r: getattr(s, stat) for r, s in runs.items()})
    assert_close(by_label(got, "deepracer_evaluation_real_time_factor", "run", model=model),
                 {r: s.real_time_factor for r, s in runs.items()})
    # each run's step timing sits beside its lap times: the same run ids
    assert set(runs) <= set(by_label(got, "deepracer_evaluation_trials", "run", model=model))


@pytest.mark.parametrize("sample", TRAINING_SAMPLES)
def test_every_layout_exports_what_simtrace_computes(s3: Any, bucket: str, s3_endpoint: str,
                                                     samples: Path, sample: str) -> None:
    upload_dir(s3, bucket, samples / sample, "m")
    got = refresh(exporter_for(config(s3_endpoint, bucket, {"m": "m"})))
    assert value(got, "deepracer_exporter_refresh_success", model="m") == 1
    assert sum(pick(got, "deepracer_exporter_refresh_errors_total", model="m").values()) == 0
    files = local_files(samples, sample)
    assert_exported(got, "m", files)
    workers = {w for kind, _, w, _ in files if kind == TRAINING}
    assert len(workers) == (3 if sample == "sample-drfc-3-logs" else 1)
    assert expected_runs(files), "every sample layout has evaluation simtrace"


def test_full_stats_add_max_and_wall_clock_gives_rtf_and_timing(
        s3: Any, bucket: str, s3_endpoint: str, samples: Path) -> None:
    """`iteration_stats: full` adds the max step time per iteration; the DeepRacer on AWS export
    has a wall clock, so real-time factor and the training/policy split are exported."""
    upload_dir(s3, bucket, samples / "sample-droa-solution-logs", "m")
    got = refresh(exporter_for(config(s3_endpoint, bucket, {"m": "m"},
                                      extra="iteration_stats: full\n")))
    files = local_files(samples, "sample-droa-solution-logs")
    assert_exported(got, "m", files, full=True)
    assert pick(got, "deepracer_iteration_policy_seconds", model="m")
    assert pick(got, "deepracer_evaluation_real_time_factor", model="m")


def test_three_workers_with_wall_clock_match_deepracer_utils(s3: Any, bucket: str,
                                                             s3_endpoint: str, samples: Path,
                                                             tmp_path: Path) -> None:
    """Each exported figure equals deepracer-utils' analyze()/analyze_timing() of the same files
    (loaded its own way), workers merged by its OVERALL rules, to 1e-9."""
    model = tmp_path / "m"
    shutil.copytree(samples / "sample-drfc-3-logs", model)
    write_wall_clock_model(samples / "sample-drfc-3-logs", model, seed=7)
    upload_dir(s3, bucket, model, "m")
    got = refresh(exporter_for(config(s3_endpoint, bucket, {"m": "m"})))
    ref, ref_timing, _ = reference(model)
    assert set(ref["worker"]) == {0, 1, 2}
    rows = list(ref.groupby("iteration"))
    assert len(rows) == len(pick(got, "deepracer_iteration_step_seconds", model="m",
                                 stat="mean"))
    for it, g in rows:
        n = g["count"].to_numpy(dtype=float)
        mean = float(np.average(g["avg_ms"], weights=n)) / 1000
        labels = {"model": "m", "iteration": int(it)}
        assert math.isclose(value(got, "deepracer_iteration_step_seconds", stat="mean",
                                  **labels), mean, rel_tol=1e-9)
        assert math.isclose(value(got, "deepracer_iteration_step_seconds", stat="p95",
                                  **labels), g["p95_ms"].mean() / 1000, rel_tol=1e-9)
        assert math.isclose(value(got, "deepracer_iteration_real_time_factor", **labels),
                            g["rtf"].mean(), rel_tol=1e-9)
    for r in ref_timing.itertuples():
        labels = {"model": "m", "iteration": int(r.iteration)}
        assert math.isclose(value(got, "deepracer_iteration_training_seconds", **labels),
                            r.train_time_s, rel_tol=1e-9)
        policy = pick(got, "deepracer_iteration_policy_seconds", **labels)
        if np.isnan(r.policy_time_s):
            assert not policy
        else:
            assert math.isclose(next(iter(policy.values())), r.policy_time_s, rel_tol=1e-9)
    last = ref[ref["iteration"] == ref["iteration"].max()]
    assert value(got, "deepracer_model_simtrace_iteration", model="m") == last["iteration"].max()
    assert math.isclose(value(got, "deepracer_model_real_time_factor", model="m"),
                        last["rtf"].mean(), rel_tol=1e-9)


# --- reads -----------------------------------------------------------------------------------


def upload_training(s3: Any, bucket: str, samples: Path, iterations: Iterable[int],
                    sample: str = "sample-drfc-1-logs") -> None:
    local = samples / sample
    for path in (local / "metrics").glob("TrainingMetrics*.json"):
        s3.put_object(Bucket=bucket, Key=f"m/metrics/{path.name}", Body=path.read_bytes())
    for it in iterations:
        put_iteration(s3, bucket, samples, it)


def put_metrics(s3: Any, bucket: str, samples: Path, iterations: int, episodes: int = 0
                ) -> None:
    """The sample's TrainingMetrics.json as it was after `iterations` iterations (20 episodes
    each) and `episodes` more: the simulator writes an iteration's simtrace file as the next
    iteration starts, and that is when the exporter lists the simtrace folders again."""
    doc = json.loads((samples / "sample-drfc-1-logs/metrics/TrainingMetrics.json").read_bytes())
    doc["metrics"] = [r for r in doc["metrics"] if r["episode"] <= 20 * iterations + episodes]
    s3.put_object(Bucket=bucket, Key="m/metrics/TrainingMetrics.json",
                  Body=json.dumps(doc).encode())


def iteration_body(samples: Path, it: int) -> bytes:
    return (samples / f"sample-drfc-1-logs/training-simtrace/{it}-iteration.csv").read_bytes()


def put_iteration(s3: Any, bucket: str, samples: Path, it: int, body: bytes | None = None
                  ) -> None:
    s3.put_object(Bucket=bucket, Key=f"m/training-simtrace/{it}-iteration.csv",
                  Body=iteration_body(samples, it) if body is None else body)


def step_means(got: Samples) -> dict[str, float]:
    return by_label(got, "deepracer_iteration_step_seconds", "iteration", model="m", stat="mean")


def mean_of(samples: Path, it: int) -> float:
    steps = worker_steps(parse_simtrace(iteration_body(samples, it))).steps
    assert steps is not None
    return steps.mean


def test_new_iteration_read_once_known_never_again(s3: Any, bucket: str, s3_endpoint: str,
                                                   samples: Path) -> None:
    for it in range(5):
        put_iteration(s3, bucket, samples, it)
    put_metrics(s3, bucket, samples, 6)
    exporter = exporter_for(config(s3_endpoint, bucket, {"m": "m"}))
    got = refresh(exporter)
    first = requests(got, "m")
    assert first["downloaded"] == 1 + 5  # the metrics file and five CSVs
    assert set(step_means(got)) == {str(i) for i in range(5)}
    bytes_before = value(got, "deepracer_exporter_downloaded_bytes_total", model="m")

    put_iteration(s3, bucket, samples, 5)
    put_metrics(s3, bucket, samples, 7)
    got = refresh(exporter)
    second = requests(got, "m")
    assert second["downloaded"] - first["downloaded"] == 1  # the new CSV, none known
    assert second["tail"] - first["tail"] == 1  # the metrics file grew
    assert value(got, "deepracer_exporter_downloaded_bytes_total", model="m") - bytes_before \
        > len(iteration_body(samples, 5))  # and the tail of the metrics file
    assert step_means(got)["5"] == mean_of(samples, 5)
    assert value(got, "deepracer_model_simtrace_iteration", model="m") == 5

    got = refresh(exporter)
    third = requests(got, "m")
    assert third == second  # nothing changed: the metrics listing only, no object read


def test_only_the_latest_max_iterations_are_read(s3: Any, bucket: str, s3_endpoint: str,
                                                 samples: Path) -> None:
    upload_training(s3, bucket, samples, range(12))
    got = refresh(exporter_for(config(s3_endpoint, bucket, {"m": "m"},
                                      extra="max_iterations: 4\n")))
    assert requests(got, "m")["downloaded"] == 1 + 4
    assert set(step_means(got)) == {"8", "9", "10", "11"}


@pytest.mark.parametrize("case", ["truncated", "not CSV"])
def test_bad_csv_keeps_last_good_figures_and_counts_malformed(
        s3: Any, bucket: str, s3_endpoint: str, samples: Path, case: str,
        caplog: pytest.LogCaptureFixture) -> None:
    for it in range(3):
        put_iteration(s3, bucket, samples, it)
    put_metrics(s3, bucket, samples, 4)
    exporter = exporter_for(config(s3_endpoint, bucket, {"m": "m"}))
    good = refresh(exporter)
    good_means = step_means(good)
    current = {n: value(good, n, model="m") for n in (
        "deepracer_model_step_p95_seconds", "deepracer_model_step_mean_seconds",
        "deepracer_model_simtrace_iteration")}
    assert current["deepracer_model_simtrace_iteration"] == 2
    body = iteration_body(samples, 3)
    bad = body[: len(body) // 2] if case == "truncated" else b'{"metrics": []}\n'
    # a new iteration written badly, and a known one overwritten badly (a new ETag)
    put_iteration(s3, bucket, samples, 3, bad)
    put_iteration(s3, bucket, samples, 1, bad)
    put_metrics(s3, bucket, samples, 5)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="deepracer_exporter"):
        got = refresh(exporter)
        again = refresh(exporter)
    # The new iteration's file is read at its key at once; the known one overwritten is found
    # by the listing that follows a failed read.
    assert value(got, "deepracer_exporter_refresh_errors_total", model="m",
                 reason="malformed") == 1
    assert value(again, "deepracer_exporter_refresh_errors_total", model="m",
                 reason="malformed") == 2
    for snap in (got, again):
        assert value(snap, "deepracer_exporter_refresh_success", model="m") == 1
        assert step_means(snap) == good_means  # iteration 1 keeps its figures, 3 has none
        assert {n: value(snap, n, model="m") for n in current} == current
        assert pick(snap, "deepracer_iteration_reward", model="m")
    assert requests(again, "m")["downloaded"] == requests(got, "m")["downloaded"] + 1
    settled = refresh(exporter)  # each bad file read once: not again at the same ETag
    assert requests(settled, "m")["downloaded"] == requests(again, "m")["downloaded"]
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 2 and all("malformed" in w for w in warnings), warnings
    # written again in full (a new ETag): read at the next listing of its folder (a reload
    # here; the 6-hour safety net otherwise), and its figures appear
    put_iteration(s3, bucket, samples, 3)
    exporter.reload(exporter.refresher.config)
    fixed = refresh(exporter)
    assert step_means(fixed)["3"] == mean_of(samples, 3)
    assert value(fixed, "deepracer_model_simtrace_iteration", model="m") == 3


def test_csv_over_the_bound_is_too_large_and_never_read(s3: Any, bucket: str,
                                                       s3_endpoint: str, samples: Path) -> None:
    """The bound is checked on the listed size: no GET, one too_large error per ETag."""
    upload_training(s3, bucket, samples, range(2))
    metrics = (samples / "sample-drfc-1-logs/metrics/TrainingMetrics.json").stat().st_size
    header, rows = iteration_body(samples, 2).split(b"\n", 1)
    big = header + b"\n" + rows * (metrics // len(rows) + 2)
    put_iteration(s3, bucket, samples, 2, big)
    exporter = exporter_for(config(s3_endpoint, bucket, {"m": "m"},
                                   extra=f"max_object_bytes: {metrics + 1}\n"))
    got = refresh(exporter)
    again = refresh(exporter)
    for snap in (got, again):
        assert value(snap, "deepracer_exporter_refresh_success", model="m") == 1
        assert value(snap, "deepracer_exporter_refresh_errors_total", model="m",
                     reason="too_large") == 1
        assert set(step_means(snap)) == {"0", "1"}
        assert requests(snap, "m")["downloaded"] == 1 + 2


# --- models without simtrace, idle models, rounds ---------------------------------------------


@pytest.mark.parametrize("sample", ["sample-drfc-1-logs", "sample-console-logs"])
def test_model_without_simtrace_has_none_and_no_error(s3: Any, bucket: str, s3_endpoint: str,
                                                      samples: Path, sample: str) -> None:
    local = samples / sample
    for path in sorted((local / "metrics").rglob("*.json")):
        s3.put_object(Bucket=bucket, Key=f"m/{path.relative_to(local).as_posix()}",
                      Body=path.read_bytes())
    exporter = exporter_for(config(s3_endpoint, bucket, {"m": "m"}))
    for got in (refresh(exporter), refresh(exporter)):
        assert value(got, "deepracer_exporter_refresh_success", model="m") == 1
        assert sum(pick(got, "deepracer_exporter_refresh_errors_total", model="m").values()) == 0
        assert pick(got, "deepracer_iteration_reward", model="m")
        assert pick(got, "deepracer_evaluation_trials", model="m")
        assert simulator_samples(got, "m") == {}


def test_idle_model_keeps_current_state_only(s3: Any, bucket: str, s3_endpoint: str,
                                             samples: Path) -> None:
    upload_dir(s3, bucket, samples / "sample-droa-solution-logs", "m")  # has a wall clock
    cfg = config(s3_endpoint, bucket, {"m": "m"})
    active = refresh(exporter_for(cfg))
    eight_days_on = Exporter(cfg, StoreFactory(lambda: make_s3_client(cfg.s3)),
                             registry=CollectorRegistry(), clock=lambda: time.time() + 8 * 86400)
    idle = refresh(eight_days_on)
    assert not pick(idle, "deepracer_iteration_reward", model="m")  # the window is in force
    for name in SIMULATOR_FAMILIES:
        assert pick(active, name, model="m"), name
        if name in PER_ITERATION:
            assert not pick(idle, name, model="m"), name
        else:
            assert pick(idle, name, model="m") == pick(active, name, model="m"), name


def test_clone_round_numbers_iterations_like_the_metrics(s3: Any, bucket: str, s3_endpoint: str,
                                                         samples: Path) -> None:
    """A clone round's simulator counts from 0 again; its iterations are exported as the master
    iterations the other per-iteration families use, from the latest round only."""
    for prefix in ("r1", "r2"):
        upload_dir(s3, bucket, samples / "sample-drfc-1-logs", prefix)
    got = refresh(exporter_for(config(s3_endpoint, bucket, {"m": ["r1", "r2"]})))
    round2 = {dict(k)["iteration"] for k in pick(got, "deepracer_iteration_episodes", model="m",
                                                 phase="training", round=2)}
    files = local_files(samples, "sample-drfc-1-logs")
    local = expected_iterations(files)
    offset = min(int(i) for i in round2)
    assert offset > max(local)
    means = step_means(got)
    assert set(means) == {str(offset + it) for it in local} and set(means) <= round2
    for it, s in local.items():
        assert means[str(offset + it)] == s.mean
    assert value(got, "deepracer_model_simtrace_iteration", model="m") == offset + max(local)
    # evaluation runs of both rounds: the same run ids, so exported once each
    assert set(by_label(got, "deepracer_evaluation_step_seconds", "run", model="m",
                        stat="mean")) == set(expected_runs(files))


# --- listing cost --------------------------------------------------------------------------


class CountingStore:
    """The real S3 store, with the listings made through it counted by kind and prefix."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.lists: list[tuple[str, str]] = []

    def describe(self, key: str) -> str:
        return str(self.inner.describe(key))

    def budget(self, size: int) -> float:
        return float(self.inner.budget(size))

    def list_objects(self, prefix: str) -> Any:
        self.lists.append(("objects", prefix))
        return self.inner.list_objects(prefix)

    def list_children(self, prefix: str) -> Any:
        self.lists.append(("children", prefix))
        return self.inner.list_children(prefix)

    def get(self, key: str, etag: str | None, max_bytes: int) -> Any:
        return self.inner.get(key, etag, max_bytes)

    def get_range(self, key: str, start: int, etag: str) -> Any:
        return self.inner.get_range(key, start, etag)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def watcher(s3: Any, bucket: str, clock: Clock) -> tuple[ModelCache, CountingStore]:
    store = CountingStore(S3Store(s3, bucket))
    model = ModelConfig(name="m", rounds=("m",), bucket=bucket)
    return ModelCache(model, store, DeriveSettings(), monotonic=clock), store


def test_listing_cost(s3: Any, bucket: str, samples: Path) -> None:
    """Unchanged: the metrics listing only. The model's folders are listed again when the
    training was replaced (a key of metrics/ appeared or went), when its latest iteration
    changed, while an evaluation run's file is awaited, and at the safety net."""
    upload_training(s3, bucket, samples, ())
    clock = Clock()
    w, store = watcher(s3, bucket, clock)
    w.refresh()
    assert store.lists == [("objects", "m/metrics/"), ("children", "m/")]
    store.lists.clear()
    w.refresh()
    assert store.lists == [("objects", "m/metrics/")]
    # simtrace appears while the metrics stay as they were: found by the safety net
    put_iteration(s3, bucket, samples, 0)
    clock.now += SAFETY_NET - 1
    store.lists.clear()
    w.refresh()
    assert store.lists == [("objects", "m/metrics/")]
    clock.now += 1
    store.lists.clear()
    snap = w.refresh()
    assert store.lists == [("objects", "m/metrics/"), ("children", "m/"),
                           ("objects", "m/training-simtrace/")]
    assert snap.extras.simulator is not None and len(snap.extras.simulator.iterations) == 1
    store.lists.clear()
    w.refresh()
    assert store.lists == [("objects", "m/metrics/")]
    # an evaluation run: its metrics file is a new key, so the folders are listed at once
    run = "20220709200509"
    local = samples / "sample-drfc-1-logs"
    s3.put_object(Bucket=bucket, Key=f"m/metrics/EvaluationMetrics-{run}.json",
                  Body=(local / f"metrics/EvaluationMetrics-{run}.json").read_bytes())
    csv = f"evaluation-{run}/evaluation-simtrace/0-iteration.csv"
    s3.put_object(Bucket=bucket, Key=f"m/{csv}", Body=(local / csv).read_bytes())
    store.lists.clear()
    snap = w.refresh()
    assert store.lists == [("objects", "m/metrics/"), ("children", "m/"),
                           ("objects", f"m/evaluation-{run}/"),
                           ("objects", "m/training-simtrace/")]
    assert snap.extras.simulator is not None
    assert [r for r, _ in snap.extras.simulator.evaluation_runs] == [run]
    store.lists.clear()
    w.refresh()
    assert store.lists == [("objects", "m/metrics/")]


def test_an_evaluation_file_written_after_its_metrics_is_looked_for_a_while(
        s3: Any, bucket: str, samples: Path) -> None:
    """An evaluation run's simtrace may land after its metrics file: its folder is listed at
    every refresh for IDLE_AFTER from the run's first mention, then no more."""
    upload_training(s3, bucket, samples, ())
    clock = Clock()
    w, store = watcher(s3, bucket, clock)
    w.refresh()
    run = "20220709200509"
    local = samples / "sample-drfc-1-logs"
    s3.put_object(Bucket=bucket, Key=f"m/metrics/EvaluationMetrics-{run}.json",
                  Body=(local / f"metrics/EvaluationMetrics-{run}.json").read_bytes())
    w.refresh()
    csv = f"evaluation-{run}/evaluation-simtrace/0-iteration.csv"
    s3.put_object(Bucket=bucket, Key=f"m/{csv}", Body=(local / csv).read_bytes())
    clock.now += IDLE_AFTER - 1
    store.lists.clear()
    snap = w.refresh()
    assert ("objects", f"m/evaluation-{run}/") in store.lists
    assert snap.extras.simulator is not None
    assert [r for r, _ in snap.extras.simulator.evaluation_runs] == [run]
    store.lists.clear()
    w.refresh()
    assert store.lists == [("objects", "m/metrics/")]  # found: not looked for again


def test_a_growing_training_lists_its_folders_when_an_iteration_ends(s3: Any, bucket: str,
                                                                      samples: Path) -> None:
    """Every episode rewrites the metrics file: that alone reads no simtrace; the first episode
    of the next iteration (the simulator wrote the last one's file as it started) reads that
    file at the key the previous one implies, with a GET (a LIST costs as much as 12.5)."""
    put_metrics(s3, bucket, samples, 4, 1)
    for it in range(4):
        put_iteration(s3, bucket, samples, it)
    clock = Clock()
    w, store = watcher(s3, bucket, clock)
    w.refresh()
    for episode in range(2, 5):
        put_metrics(s3, bucket, samples, 4, episode)
        clock.now += 15
        store.lists.clear()
        w.refresh()
        assert store.lists == [("objects", "m/metrics/")]
    put_iteration(s3, bucket, samples, 4)
    put_metrics(s3, bucket, samples, 5, 1)
    store.lists.clear()
    snap = w.refresh()
    assert store.lists == [("objects", "m/metrics/")]
    assert snap.extras.simulator is not None
    assert [it.iteration for it in snap.extras.simulator.iterations] == [0, 1, 2, 3, 4]
    # Two iterations ended between two refreshes: both files read; a missing one is read at
    # the next change.
    put_iteration(s3, bucket, samples, 5)
    put_iteration(s3, bucket, samples, 7)
    put_metrics(s3, bucket, samples, 7, 1)
    snap = w.refresh()
    assert [it.iteration for it in snap.extras.simulator.iterations] == [0, 1, 2, 3, 4, 5]
    put_iteration(s3, bucket, samples, 6)
    put_metrics(s3, bucket, samples, 8, 1)
    store.lists.clear()
    snap = w.refresh()
    assert store.lists == [("objects", "m/metrics/")]
    assert [it.iteration for it in snap.extras.simulator.iterations] == list(range(8))
