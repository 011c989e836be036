"""Evaluation runs, console/DRoA training layout, model metadata, hyperparameters, checkpoints.

Expected values are computed here from the raw sample JSON, independently of layouts.py and
sidefiles.py.
"""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from deepracer_exporter.config import ModelConfig
from deepracer_exporter.layouts import evaluation_run_key, evaluation_run_time, select_training_keys
from deepracer_exporter.modelcache import DeriveSettings, LargeReads, ModelCache
from deepracer_exporter.parse import MetricsFileError, parse_document
from deepracer_exporter.sidefiles import (
    HYPERPARAMETER_INFO_LABELS,
    MAX_LABEL_LENGTH,
    MODEL_INFO_LABELS,
    EvaluationRun,
    action_space_bounds,
    best_evaluated_lap,
    bounded,
    hyperparameter_info_labels,
    hyperparameter_values,
    latest_runs,
    model_info_labels,
    parse_checkpoints,
    parse_evaluation,
)
from deepracer_exporter.simulate import TrainingSimulator, TrainingSpec, key_for
from deepracer_exporter.sources import DirectoryStore

MP = "rl-deepracer-sagemaker/metrics/"


def _sample_keys(samples: Path) -> list[tuple[str, str, Path]]:
    """(key, metrics prefix, path) of every JSON file, keyed as it would be in a bucket."""
    out = []
    for path in sorted(samples.rglob("*.json")):
        rel = path.relative_to(samples)
        out.append((rel.as_posix(), f"{rel.parts[0]}/metrics/", path))
    return out


def _evaluation_files(samples: Path) -> list[tuple[str, str, Path]]:
    return [(k, mp, p) for k, mp, p in _sample_keys(samples) if "valuation" in p.name]


def _expected(records: list[dict[str, Any]]) -> dict[str, Any]:
    done = [r for r in records
            if r["completion_percentage"] == 100 or r["episode_status"] == "Lap complete"]
    laps = [r["elapsed_time_in_milliseconds"] / 1000 for r in done]
    return {
        "trials": len(records),
        "completed_laps": len(done),
        "completion_ratio": sum(r["completion_percentage"] for r in records) / 100 / len(records),
        "lap_seconds_mean": sum(laps) / len(laps) if laps else None,
        "lap_seconds_best": min(laps) if laps else None,
        "resets": sum(r["reset_count"] for r in records),
        "off_track": sum(r["off_track_count"] for r in records),
        "crashes": sum(r["crash_count"] for r in records),
        "reversed": sum(r["reversed_count"] for r in records),
        "immobilized": sum(r["immobilized_count"] for r in records),
    }


# --- keys ----------------------------------------------------------------------------------


def test_every_sample_evaluation_file_is_a_run_and_nothing_else_is(samples: Path) -> None:
    evaluation = 0
    for key, mp, path in _sample_keys(samples):
        run = evaluation_run_key(key, mp)
        if "valuation" in path.name:
            evaluation += 1
            assert run is not None, key
        else:
            assert run is None, key
    assert evaluation == 10  # 3 + 3 DRfC, 2 console, 1 DRoA, 1 DRoA evaluation-only


@pytest.mark.parametrize(("rel", "run_id"), [
    ("evaluation/evaluation-20240102030405.json", "20240102030405"),
    ("EvaluationMetrics-20220709200242.json", "20220709200242"),
    ("EvaluationMetrics-1657396962.json", "20220709200242"),  # DRfC head-to-model: Unix seconds
    ("evaluation/evaluation-20220612082523-IBZwYd0MRMqgwKlAe7bb0A.json",
     "20220612082523-IBZwYd0MRMqgwKlAe7bb0A"),
    ("evaluation/2026-03-07T17:52:00.898Z-deepracerindy-evaluation-9oJ3QbS0SYm7Iag.json",
     "20260307175200-9oJ3QbS0SYm7Iag"),
    ("evaluation/2026-03-07T17:52:00Z-my-model-evaluation-x.json", "20260307175200-x"),
])
def test_evaluation_layouts(rel: str, run_id: str) -> None:
    assert evaluation_run_key(MP + rel, MP) == run_id


@pytest.mark.parametrize("rel", [
    "TrainingMetrics.json",
    "TrainingMetrics_1.json",
    "training/training-20220611205309-EHNgTNY2T9-77qXhqjBi6A.json",
    "training/2026-03-06T18:33:59.511Z-deepracerindy-training-ACGVRmRuFNU9NkQ.json",
    "evaluation/evaluation-2024010203040.json",  # 13 digits
    "evaluation/evaluation-20241302030405.json",  # month 13: not a time
    "evaluation/evaluation-20240102030405.json.tmp",
    "evaluation/old/evaluation-20240102030405.json",  # deeper folder
    "EvaluationMetrics-20240102030405-extra.json",
    "EvaluationMetrics.json",
    "evaluation/2026-03-07T17:52:00.898Z-deepracerindy-training-9oJ3.json",
    "evaluation-20240102030405.json",  # outside evaluation/
])
def test_not_evaluation_runs(rel: str) -> None:
    assert evaluation_run_key(MP + rel, MP) is None


def test_evaluation_key_needs_the_metrics_prefix() -> None:
    key = "other/metrics/evaluation/evaluation-20240102030405.json"
    assert evaluation_run_key(key, MP) is None
    assert evaluation_run_key(key, "other/metrics/") == "20240102030405"


def test_run_ids_sort_chronologically_across_layouts() -> None:
    keys = [
        "evaluation/2026-03-07T17:52:00.898Z-m-evaluation-a.json",
        "EvaluationMetrics-20220709200242.json",
        "evaluation/evaluation-20220612082523-zzz.json",
        "EvaluationMetrics-1700000000.json",
        "evaluation/evaluation-20240102030405.json",
    ]
    ids = [evaluation_run_key(MP + k, MP) for k in keys]
    assert all(ids)
    times = [evaluation_run_time(i) for i in ids if i]
    assert sorted(ids, key=str) == [ids[i] for i in sorted(range(5), key=lambda i: times[i])]


def test_run_time_is_unix_seconds() -> None:
    assert evaluation_run_time("20260307175200-9oJ3") == datetime(
        2026, 3, 7, 17, 52, tzinfo=UTC).timestamp()
    assert evaluation_run_time("not-a-time") is None


def worker_of(key: str, metrics_prefix: str) -> int | None:
    """The worker index a key is read as when it is alone in its listing."""
    return next(iter(select_training_keys([key], metrics_prefix)), None)


def test_training_key_sample_layouts(samples: Path) -> None:
    seen = {}
    for key, mp, _path in _sample_keys(samples):
        seen[key] = worker_of(key, mp)
    assert seen["sample-drfc-3-logs/metrics/TrainingMetrics.json"] == 0
    assert seen["sample-drfc-3-logs/metrics/TrainingMetrics_2.json"] == 2
    assert seen["sample-console-logs/metrics/training/"
                "training-20220611205309-EHNgTNY2T9-77qXhqjBi6A.json"] == 0
    assert seen["sample-droa-solution-logs/metrics/training/"
                "2026-03-06T18:33:59.511Z-deepracerindy-training-ACGVRmRuFNU9NkQ.json"] == 0
    for key, index in seen.items():
        if "/metrics/" not in key or "valuation" in key:
            assert index is None, key
    # the exports really are single-worker TrainingMetrics documents
    for key, index in seen.items():
        if key.split("/")[2:3] == ["training"]:
            assert index == 0
            assert len(parse_document((samples / key).read_bytes())) > 0


@pytest.mark.parametrize("rel", [
    "training/training-20220611205309.json.bak",
    "training/sub/training-20220611205309-x.json",
    "training/2026-03-06T18:33:59.511Z-m-evaluation-x.json",
    "TrainingMetrics-1.json",
    "TrainingMetrics_x.json",
    "evaluation/evaluation-20220612082523-x.json",
    "training-20220611205309-x.json",
])
def test_not_training_files(rel: str) -> None:
    assert select_training_keys([MP + rel], MP) == {}


def test_select_training_keys(samples: Path) -> None:
    drfc = [k for k, _, _ in _sample_keys(samples) if k.startswith("sample-drfc-3-logs/")]
    assert select_training_keys(drfc, "sample-drfc-3-logs/metrics/") == {
        i: f"sample-drfc-3-logs/metrics/TrainingMetrics{'' if i == 0 else f'_{i}'}.json"
        for i in range(3)}
    old = MP + "training/training-20220611205309-zzz.json"
    new = MP + "training/2026-03-06T18:33:59.511Z-m-training-aaa.json"
    newer = MP + "training/training-20260306183400-bbb.json"
    assert select_training_keys([new, old, MP + "model/x.json"], MP) == {0: new}
    assert select_training_keys([old, newer, new], MP) == {0: newer}
    # DRfC files win over exports, so worker 0 is never read twice
    assert select_training_keys([new, MP + "TrainingMetrics.json"], MP) == {
        0: MP + "TrainingMetrics.json"}
    assert select_training_keys([MP + "evaluation/evaluation-20240102030405.json"], MP) == {}


# --- evaluation runs ---------------------------------------------------------------------------


def test_parse_evaluation_matches_raw_samples(samples: Path) -> None:
    for key, mp, path in _evaluation_files(samples):
        run_id = evaluation_run_key(key, mp)
        assert run_id is not None
        run = parse_evaluation(run_id, path.read_bytes())
        expected = _expected(json.loads(path.read_bytes())["metrics"])
        assert run.run_id == run_id
        assert run.skipped == 0
        for field, value in expected.items():
            got = getattr(run, field)
            assert got == pytest.approx(value), (key, field)
        assert run.timestamp == evaluation_run_time(run_id)


def test_continuous_laps_in_progress_count_as_completed(samples: Path) -> None:
    """DRfC-1's continuous evaluation writes laps 1 and 2 as "In progress" at 100 %."""
    path = sorted((samples / "sample-drfc-1-logs" / "metrics").glob("EvaluationMetrics-*"))[0]
    records = json.loads(path.read_bytes())["metrics"]
    by_status = sum(r["episode_status"] == "Lap complete" for r in records)
    run = parse_evaluation("x", path.read_bytes())
    assert by_status < len(records)
    assert run.completed_laps == len(records) == run.trials
    assert run.completed_ratio == 1.0


def test_incomplete_and_invalid_records() -> None:
    doc = {"metrics": [
        {"trial": 1, "completion_percentage": 100, "elapsed_time_in_milliseconds": 12000,
         "episode_status": "Lap complete", "off_track_count": 2, "crash_count": 1,
         "reversed_count": 0, "immobilized_count": 0, "reset_count": 3},
        {"trial": 1, "completion_percentage": 37, "elapsed_time_in_milliseconds": 180000,
         "episode_status": "Time up"},  # counts missing: 0, reset_count = their sum
        {"trial": 2, "completion_percentage": 100, "elapsed_time_in_milliseconds": 11000,
         "episode_status": "In progress", "immobilized_count": 1},
        {"completion_percentage": 101, "elapsed_time_in_milliseconds": 1},
        {"completion_percentage": 50, "elapsed_time_in_milliseconds": -1},
        {"completion_percentage": "100", "elapsed_time_in_milliseconds": 1},
        {"completion_percentage": 100, "elapsed_time_in_milliseconds": 1, "off_track_count": -1},
        {"completion_percentage": 100, "elapsed_time_in_milliseconds": 1, "crash_count": 1.5},
        {"completion_percentage": 100, "elapsed_time_in_milliseconds": 1, "reset_count": True},
        "not a record",
        None,
    ]}
    run = parse_evaluation("20240102030405", json.dumps(doc).encode())
    assert run.trials == 3
    assert run.skipped == 8
    assert run.completed_laps == 2
    assert run.completion_ratio == pytest.approx((100 + 37 + 100) / 300)
    assert run.lap_seconds_best == 11.0
    assert run.lap_seconds_mean == 11.5
    assert (run.off_track, run.crashes, run.reversed, run.immobilized) == (2, 1, 0, 1)
    assert run.resets == 3 + 0 + 1
    assert run.timestamp == datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC).timestamp()


def test_run_without_trials_or_laps() -> None:
    empty = parse_evaluation("r", b'{"metrics": []}')
    assert (empty.trials, empty.completed_laps, empty.completion_ratio) == (0, 0, None)
    assert empty.completed_ratio is None and empty.timestamp is None
    dnf = parse_evaluation("r", json.dumps({"metrics": [
        {"trial": 0, "completion_percentage": 12, "elapsed_time_in_milliseconds": 5000,
         "episode_status": "Time up"}]}).encode())
    assert dnf.completed_laps == 0
    assert dnf.lap_seconds_best is None and dnf.lap_seconds_mean is None
    assert best_evaluated_lap([dnf, empty]) is None


@pytest.mark.parametrize("body", [
    b"", b"   ", b"{", b"[]", b'{"metrics": {}}', b'{"trials": []}', b"\xff\xfe", b"null",
    b'{"metrics": [{"completion_percentage": 100', b'"metrics"',
])
def test_malformed_evaluation(body: bytes) -> None:
    with pytest.raises(MetricsFileError) as err:
        parse_evaluation("r", body)
    assert err.value.reason == "malformed"


def _run(run_id: str, best: float | None) -> EvaluationRun:
    return EvaluationRun(run_id, evaluation_run_time(run_id), 1, int(best is not None), 1.0,
                         best, best, 0, 0, 0, 0, 0, 0)


def test_latest_runs_and_best_lap(samples: Path) -> None:
    runs = [parse_evaluation(rid, p.read_bytes()) for k, mp, p in _evaluation_files(samples)
            if (rid := evaluation_run_key(k, mp))]
    ids = sorted(r.run_id for r in runs)
    latest = latest_runs(reversed(runs), 4)
    assert [r.run_id for r in latest] == ids[-4:]
    assert latest_runs(runs, 0) == ()
    assert latest_runs(runs, -1) == ()
    assert len(latest_runs(runs, 100)) == len(runs)
    laps = [r["elapsed_time_in_milliseconds"] / 1000 for _, _, p in _evaluation_files(samples)
            for r in json.loads(p.read_bytes())["metrics"] if r["completion_percentage"] == 100]
    assert best_evaluated_lap(runs) == pytest.approx(min(laps))
    assert best_evaluated_lap([]) is None
    mixed = [_run("20240101000000", 20.0), _run("20230101000000", None),
             _run("20250101000000", 19.5)]
    assert best_evaluated_lap(mixed) == 19.5
    assert [r.run_id for r in latest_runs(mixed, 2)] == ["20240101000000", "20250101000000"]


# --- model metadata ----------------------------------------------------------------------------


@pytest.mark.parametrize("sample", ["sample-drfc-1-logs", "sample-drfc-3-logs"])
def test_model_info_labels_samples(samples: Path, sample: str) -> None:
    body = (samples / sample / "model" / "model_metadata.json").read_bytes()
    raw = json.loads(body)
    labels = model_info_labels(body)
    assert tuple(labels) == MODEL_INFO_LABELS
    assert labels == {
        "action_space_type": raw["action_space_type"],
        "action_count": str(len(raw["action_space"])),
        "sensors": ",".join(sorted(raw["sensor"])),
        "neural_network": raw["neural_network"],
        "training_algorithm": raw["training_algorithm"],
        "version": str(raw["version"]),
    }
    bounds = action_space_bounds(body)
    assert bounds == {
        "speed_min": min(a["speed"] for a in raw["action_space"]),
        "speed_max": max(a["speed"] for a in raw["action_space"]),
        "steering_angle_min": min(a["steering_angle"] for a in raw["action_space"]),
        "steering_angle_max": max(a["steering_angle"] for a in raw["action_space"]),
    }


def test_model_info_continuous_and_defaults() -> None:
    continuous = {
        "action_space": {"steering_angle": {"high": 25.0, "low": -25.0},
                         "speed": {"high": 4.0, "low": 0.5}},
        "sensor": ["SECTOR_LIDAR", "FRONT_FACING_CAMERA", "SECTOR_LIDAR"],
        "neural_network": "DEEP_CONVOLUTIONAL_NETWORK_SHALLOW",
        "training_algorithm": "SAC", "action_space_type": "Continuous", "version": 5,
    }
    body = json.dumps(continuous).encode()
    assert model_info_labels(body) == {
        "action_space_type": "continuous", "action_count": "n/a",
        "sensors": "FRONT_FACING_CAMERA,SECTOR_LIDAR",
        "neural_network": "DEEP_CONVOLUTIONAL_NETWORK_SHALLOW", "training_algorithm": "sac",
        "version": "5",
    }
    assert action_space_bounds(body) == {"speed_min": 0.5, "speed_max": 4.0,
                                         "steering_angle_min": -25.0, "steering_angle_max": 25.0}
    # old metadata: only an action list; the simapp's defaults apply
    old = model_info_labels(b'{"action_space": [{"steering_angle": 0, "speed": 1}]}')
    assert old == {"action_space_type": "discrete", "action_count": "1", "sensors": "unknown",
                   "neural_network": "DEEP_CONVOLUTIONAL_NETWORK_SHALLOW",
                   "training_algorithm": "clipped_ppo", "version": "unknown"}
    odd = model_info_labels(json.dumps({"action_space": 3, "sensor": [1], "version": None,
                                        "neural_network": {"x": 1}}).encode())
    assert odd["action_space_type"] == odd["action_count"] == odd["sensors"] == "unknown"
    assert odd["version"] == odd["neural_network"] == "unknown"
    assert action_space_bounds(b'{"action_space": [{"speed": "fast"}, 3]}') == {}


def test_label_values_are_bounded() -> None:
    long = "N" * 500
    labels = model_info_labels(json.dumps({
        "action_space": [], "neural_network": long, "version": "\x00\n 4 \t",
        "sensor": [f"SENSOR_{i:03d}" for i in range(40)], "training_algorithm": long,
        "action_space_type": long}).encode())
    assert set(labels) == set(MODEL_INFO_LABELS)
    assert all(0 < len(v) <= MAX_LABEL_LENGTH for v in labels.values())
    assert labels["neural_network"] == "N" * MAX_LABEL_LENGTH
    assert labels["version"] == "4"
    assert bounded("") == bounded("   ") == bounded(None) == bounded(True) == "unknown"
    assert bounded(float("nan")) == "unknown"
    assert bounded(2.5) == "2.5"


# --- hyperparameters ---------------------------------------------------------------------------


@pytest.mark.parametrize("sample", ["sample-drfc-1-logs", "sample-drfc-3-logs"])
def test_hyperparameters_samples(samples: Path, sample: str) -> None:
    body = (samples / sample / "ip" / "hyperparameters.json").read_bytes()
    raw = json.loads(body)
    values = hyperparameter_values(body)
    assert values == {k: float(v) for k, v in raw.items()
                      if isinstance(v, int | float) and not isinstance(v, bool)}
    assert values["num_episodes_between_training"] == raw["num_episodes_between_training"]
    assert hyperparameter_info_labels(body) == {
        "exploration_type": raw["exploration_type"], "loss_type": raw["loss_type"]}


def test_hyperparameters_bounded_and_typed() -> None:
    doc: dict[str, Any] = {"lr": "3e-4", "batch_size": 64, "flag": True, "nan": float("inf"),
                           "Bad-Name": 1, "x" * 65: 1, "exploration_type": "e-greedy",
                           "nested": {"a": 1}, "loss_type": 5}
    doc.update({f"p{i:03d}": i for i in range(100)})
    body = json.dumps(doc).encode()
    values = hyperparameter_values(body)
    assert values["lr"] == 3e-4 and values["batch_size"] == 64.0
    for name in ("flag", "nan", "Bad-Name", "x" * 65, "exploration_type", "nested"):
        assert name not in values
    assert len(values) == 64
    assert hyperparameter_info_labels(body) == {"exploration_type": "e-greedy", "loss_type": "5"}
    assert tuple(hyperparameter_info_labels(b"{}")) == HYPERPARAMETER_INFO_LABELS
    assert set(hyperparameter_info_labels(b"{}").values()) == {"unknown"}


# --- checkpoints -------------------------------------------------------------------------------


def test_parse_checkpoints() -> None:
    body = json.dumps({
        "best_checkpoint": {"name": "12_Step-3456.ckpt", "avg_eval_metric": 87.5,
                            "time_stamp": 1234.5},
        "last_checkpoint": {"name": "15_Step-4321.ckpt", "avg_eval_metric": 40.0,
                            "time_stamp": 2345.25},
    }).encode()
    cps = parse_checkpoints(body)
    assert cps.best is not None and cps.last is not None
    assert (cps.best.number, cps.best.name, cps.best.eval_metric, cps.best.sim_time_seconds) == (
        12, "12_Step-3456.ckpt", 87.5, 1234.5)
    assert (cps.last.number, cps.last.eval_metric, cps.last.sim_time_seconds) == (
        15, 40.0, 2345.25)


def test_checkpoints_legacy_and_partial() -> None:
    legacy = parse_checkpoints(json.dumps({
        "best_checkpoint": {"name": None, "avg_comp_pct": -1, "time_stamp": 1.6e9},
        "last_checkpoint": {"name": "3_Step-900.ckpt", "avg_comp_pct": 55.0},
    }).encode())
    assert legacy.best is None  # no evaluation finished yet
    assert legacy.last is not None
    assert (legacy.last.number, legacy.last.eval_metric, legacy.last.sim_time_seconds) == (
        3, 55.0, None)
    odd = parse_checkpoints(json.dumps({"last_checkpoint": {"name": "model.ckpt",
                                                            "time_stamp": "soon"}}).encode())
    assert odd.best is None and odd.last is not None
    assert (odd.last.number, odd.last.sim_time_seconds) == (None, None)
    long = parse_checkpoints(json.dumps({"last_checkpoint": {"name": "7_Step-1" + "9" * 200}})
                             .encode())
    assert long.last is not None and long.last.number == 7
    assert len(long.last.name) == MAX_LABEL_LENGTH


@pytest.mark.parametrize("body", [b"", b"not json", b"[]", b'{"checkpoint": "x"}', b"\xff"])
def test_malformed_checkpoints(body: bytes) -> None:
    with pytest.raises(MetricsFileError) as err:
        parse_checkpoints(body)
    assert err.value.reason == "malformed"


@pytest.mark.parametrize("func", [model_info_labels, action_space_bounds, hyperparameter_values,
                                  hyperparameter_info_labels])
@pytest.mark.parametrize("body", [b"", b"{", b"[1]", b'"text"', b"\xff"])
def test_malformed_metadata(func: Any, body: bytes) -> None:
    with pytest.raises(MetricsFileError) as err:
        func(body)
    assert err.value.reason == "malformed"


class WatchedReads(LargeReads):
    """The large-read bound, noting each size it is asked about; `asked` is set when a large
    one waits for (or takes) the slot."""

    def __init__(self, threshold: int) -> None:
        super().__init__(threshold=threshold, slots=1)
        self.sizes: list[int] = []
        self.asked = threading.Event()

    @contextlib.contextmanager
    def hold(self, size: int) -> Iterator[None]:
        self.sizes.append(size)
        if size >= self.threshold:
            self.asked.set()
        with super().hold(size):
            yield


def test_a_large_evaluation_file_waits_for_the_large_read_slot(tmp_path: Path) -> None:
    """An evaluation file is parsed into dicts (several times its size at the peak): a large one
    is read and parsed under the same bound as a large metrics file, one at a time."""
    sim = TrainingSimulator(TrainingSpec(episodes_between_training=10, workers=1, seed=3))
    sim.advance(20)
    (tmp_path / "m/metrics/evaluation").mkdir(parents=True)
    (tmp_path / key_for("m", 0)).write_bytes(sim.document(0))
    trial = {"episode": 1, "trial": 1, "phase": "evaluation", "reward_score": 10.0,
             "completion_percentage": 100, "elapsed_time_in_milliseconds": 12000,
             "episode_status": "Lap complete"}
    evaluation = json.dumps({"metrics": [trial] * 2000}).encode()
    (tmp_path / "m/metrics/evaluation/evaluation-20240101120000.json").write_bytes(evaluation)
    training_size = (tmp_path / key_for("m", 0)).stat().st_size
    reads = WatchedReads(threshold=len(evaluation))
    assert training_size < reads.threshold
    cache = ModelCache(ModelConfig(name="m", rounds=("m",), directory=str(tmp_path)),
                       DirectoryStore(tmp_path), DeriveSettings(), large_reads=reads)
    done: list[Any] = []
    with reads.hold(reads.threshold):  # another model's large read holds the slot
        reads.asked.clear()
        refreshing = threading.Thread(target=lambda: done.append(cache.refresh()))
        refreshing.start()
        assert reads.asked.wait(30)  # the evaluation file asked for the slot ...
        assert not done  # ... and waits for it
    refreshing.join(30)
    assert done and done[0].health.success
    assert [r.trials for r in done[0].extras.evaluation_runs] == [2000]
    assert len(evaluation) in reads.sizes
