"""The simulated training must look like real DRfC output to the exporter and to deepracer-utils."""

from __future__ import annotations

import itertools
import json
import statistics
import threading
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import pytest

from deepracer_exporter.simulate import (
    STATUSES,
    TrainingSimulator,
    TrainingSpec,
    generate_documents,
    hyperparameters_key,
    key_for,
    run_simulation,
)

SAMPLES = Path(__file__).resolve().parents[2] / "shared" / "samples"
FIELDS = [
    "reward_score", "metric_time", "start_time", "elapsed_time_in_milliseconds", "episode",
    "trial", "phase", "completion_percentage", "episode_status",
]


def records(body: bytes) -> list[dict[str, Any]]:
    doc = json.loads(body)
    assert list(doc) == ["metrics", "version", "best_model_metric"]
    assert doc["version"] == 2.0 and doc["best_model_metric"] == "progress"
    recs: list[dict[str, Any]] = doc["metrics"]
    return recs


def training(recs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r for r in recs if r["phase"] == "training"]


def test_field_set_and_order_match_the_samples() -> None:
    sample = SAMPLES / "sample-drfc-3-logs" / "metrics" / "TrainingMetrics.json"
    if sample.exists():
        assert list(json.loads(sample.read_bytes())["metrics"][0]) == FIELDS
    docs = generate_documents(TrainingSpec(episodes_between_training=30, workers=3, seed=4), 600)
    assert sorted(docs) == [0, 1, 2]
    for body in docs.values():
        recs = records(body)
        assert recs
        for r in recs:
            assert list(r) == FIELDS
            assert r["phase"] in ("training", "evaluation")
            assert r["episode_status"] in STATUSES
            for field in FIELDS:
                if field not in ("phase", "episode_status"):
                    assert type(r[field]) is int, (field, r)
            assert 0 <= r["completion_percentage"] <= 100
            assert r["reward_score"] >= 0
            assert r["metric_time"] == r["start_time"] + r["elapsed_time_in_milliseconds"]
            assert (r["episode_status"] == "Lap complete") == (r["completion_percentage"] == 100)


def test_simulation_clock_increases_per_worker() -> None:
    docs = generate_documents(TrainingSpec(episodes_between_training=12, workers=2, seed=9), 600)
    for body in docs.values():
        recs = records(body)
        for prev, cur in itertools.pairwise(recs):
            assert cur["start_time"] >= prev["metric_time"]


def test_episode_and_trial_numbering() -> None:
    spec = TrainingSpec(episodes_between_training=30, workers=3, seed=2)
    docs = generate_documents(spec, 30 * 8 + 5)  # 8 iterations and a partial one
    w0 = training(records(docs[0]))
    assert [r["episode"] for r in w0] == list(range(1, len(w0) + 1))
    # worker 0 resets trial every iteration (its share is 10 episodes)
    assert [r["trial"] for r in w0] == [(i % 10) + 1 for i in range(len(w0))]
    for w in (1, 2):
        recs = records(docs[w])
        assert all(r["phase"] == "training" for r in recs), "only worker 0 evaluates"
        assert [r["episode"] for r in recs] == list(range(1, len(recs) + 1))
        assert all(r["trial"] == r["episode"] for r in recs)
    assert sum(len(training(records(b))) for b in docs.values()) == 245


def test_uneven_split_goes_to_lowest_workers() -> None:
    spec = TrainingSpec(episodes_between_training=20, workers=3, seed=5)
    assert spec.shares() == [7, 7, 6]
    assert TrainingSpec(episodes_between_training=22, workers=4).shares() == [6, 6, 5, 5]
    docs = generate_documents(spec, 20 * 6)
    counts = [len(training(records(docs[w]))) for w in range(3)]
    assert counts == [42, 42, 36]
    assert max(r["trial"] for r in records(docs[0])) == 7


def test_evaluation_repeats_last_training_episode() -> None:
    spec = TrainingSpec(episodes_between_training=20, workers=2, seed=11)
    recs = records(generate_documents(spec, 20 * 30)[0])
    per_iteration: Counter[int] = Counter()
    last_training: dict[str, Any] | None = None
    for r in recs:
        if r["phase"] == "training":
            last_training = r
            continue
        assert last_training is not None, "evaluation before any training"
        assert r["episode"] == last_training["episode"]
        assert r["trial"] == last_training["trial"] == 10  # worker 0 share of 20 over 2
        per_iteration[r["episode"]] += 1
    # one evaluation block after each of the 30 iterations, at its last training episode
    assert sorted(per_iteration) == [10 * i for i in range(1, 31)]
    assert all(2 <= n <= 6 for n in per_iteration.values())
    assert len(set(per_iteration.values())) > 1, "evaluation count should vary"


def test_evaluation_appended_when_iteration_training_is_done() -> None:
    sim = TrainingSimulator(TrainingSpec(episodes_between_training=20, workers=3, seed=1))
    assert sim.advance(19) == 19
    assert sim.iterations == 0
    assert all(r["phase"] == "training" for r in records(sim.document(0)))
    # in flight: no worker exceeds its share of the current iteration
    counts = [len(records(b)) for b in sim.documents().values()]
    assert sum(counts) == 19 and all(c <= s for c, s in zip(counts, [7, 7, 6], strict=True))
    sim.advance(1)
    assert sim.iterations == 1 and sim.episodes == 20
    recs = records(sim.document(0))
    assert recs[-1]["phase"] == "evaluation" and len(training(recs)) == 7
    assert [len(records(sim.document(w))) for w in (1, 2)] == [7, 6]


def test_workers_write_interleaved() -> None:
    sim = TrainingSimulator(TrainingSpec(episodes_between_training=30, workers=3, seed=3))
    sim.advance(9)
    counts = [sim.record_count(w) for w in range(3)]
    assert all(c >= 1 for c in counts), counts  # parallel workers, not one after the other


def test_take_changed_reports_written_workers() -> None:
    sim = TrainingSimulator(TrainingSpec(episodes_between_training=4, workers=2, seed=1))
    assert sim.take_changed() == set()
    sim.advance(4)
    assert sim.take_changed() == {0, 1}
    assert sim.take_changed() == set()


def test_deterministic_for_a_seed_and_independent_of_chunking() -> None:
    spec = TrainingSpec(episodes_between_training=20, workers=3, seed=42)
    a = generate_documents(spec, 500)
    assert a == generate_documents(spec, 500)
    sim = TrainingSimulator(spec)
    for chunk in [1, 7, 13, 100, 1, 378]:
        sim.advance(chunk)
    assert sim.documents() == a
    other = generate_documents(TrainingSpec(episodes_between_training=20, workers=3, seed=43), 500)
    assert other != a


def iteration_stats(spec: TrainingSpec, iterations: int) -> dict[int, list[dict[str, Any]]]:
    docs = generate_documents(spec, spec.episodes_between_training * iterations)
    share0 = spec.shares()[0]
    by_iter: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for w, body in docs.items():
        share = spec.shares()[w]
        for r in training(records(body)):
            # like deepracer-utils, but with each worker's own share
            by_iter[(r["episode"] - 1) // (share0 if w == 0 else share)].append(r)
    assert sorted(by_iter) == list(range(iterations))
    assert all(len(v) == spec.episodes_between_training for v in by_iter.values())
    return by_iter


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_training_improves(seed: int) -> None:
    spec = TrainingSpec(episodes_between_training=20, workers=2, seed=seed)
    by_iter = iteration_stats(spec, 40)

    def mean_completion(its: range) -> float:
        return float(statistics.mean(r["completion_percentage"] for i in its for r in by_iter[i]))

    def mean_reward(its: range) -> float:
        return float(statistics.mean(r["reward_score"] for i in its for r in by_iter[i]))

    def laps(its: range) -> int:
        return sum(r["episode_status"] == "Lap complete" for i in its for r in by_iter[i])

    first, last = range(5), range(35, 40)
    assert mean_completion(last) > mean_completion(first) + 20
    assert mean_reward(last) > mean_reward(first)
    assert laps(last) > laps(first)


def test_lap_times_fall_toward_the_floor_and_failures_are_short() -> None:
    spec = TrainingSpec(episodes_between_training=20, seed=7, best_lap_s=9.0, initial_lap_s=20.0)
    by_iter = iteration_stats(spec, 80)

    def lap_ms(its: range) -> list[int]:
        return [r["elapsed_time_in_milliseconds"] for i in its for r in by_iter[i]
                if r["episode_status"] == "Lap complete"]

    early, late = lap_ms(range(15, 35)), lap_ms(range(60, 80))
    assert early and late
    assert statistics.median(late) < statistics.median(early)
    assert min(early + late) >= 9.0 * 0.97 * 1000
    assert statistics.median(late) < 11_000
    failed = [r["elapsed_time_in_milliseconds"] for v in by_iter.values() for r in v
              if r["episode_status"] != "Lap complete"]
    assert statistics.median(failed) < statistics.median(early + late)


def test_rewards_correlate_with_completion() -> None:
    recs = training(records(generate_documents(TrainingSpec(seed=3), 1000)[0]))
    low = [r["reward_score"] for r in recs if r["completion_percentage"] < 20]
    high = [r["reward_score"] for r in recs if r["completion_percentage"] >= 80]
    assert low and high and statistics.mean(high) > 3 * statistics.mean(low)


def test_advance_stops_at_max_episodes() -> None:
    sim = TrainingSimulator(TrainingSpec(episodes_between_training=10, max_episodes=25, seed=1))
    assert sim.advance(20) == 20 and not sim.finished
    assert sim.advance(20) == 5 and sim.finished
    assert sim.advance(1) == 0
    assert len(training(records(sim.document(0)))) == 25
    # generate_documents is not capped (benchmarks)
    spec = TrainingSpec(episodes_between_training=10, max_episodes=25, seed=1)
    assert len(training(records(generate_documents(spec, 40)[0]))) == 40


def test_invalid_specs_are_rejected() -> None:
    with pytest.raises(ValueError):
        TrainingSpec(episodes_between_training=2, workers=3)
    with pytest.raises(ValueError):
        TrainingSpec(workers=0)
    with pytest.raises(ValueError):
        TrainingSpec(eval_episodes=(5, 2))
    with pytest.raises(ValueError):
        TrainingSpec(best_lap_s=30.0, initial_lap_s=20.0)


def test_keys_and_hyperparameters() -> None:
    assert key_for("rl-sagemaker", 0) == "rl-sagemaker/metrics/TrainingMetrics.json"
    assert key_for("m/", 2) == "m/metrics/TrainingMetrics_2.json"
    assert TrainingSimulator.key_for("", 1) == "metrics/TrainingMetrics_1.json"
    assert hyperparameters_key("m") == "m/ip/hyperparameters.json"
    spec = TrainingSpec(episodes_between_training=30, workers=3, max_episodes=900, batch_size=128)
    hp = json.loads(TrainingSimulator(spec).hyperparameters())
    assert hp["num_episodes_between_training"] == 30
    assert hp["term_cond_max_episodes"] == 900
    assert hp["batch_size"] == 128
    sample = SAMPLES / "sample-drfc-3-logs" / "ip" / "hyperparameters.json"
    if sample.exists():
        assert set(hp) == set(json.loads(sample.read_bytes()))
    else:
        assert {"lr", "discount_factor", "beta_entropy", "num_epochs"} <= set(hp)


def test_deepracer_utils_loads_generated_files(tmp_path: Path) -> None:
    metrics_mod = pytest.importorskip("deepracer.logs.metrics")
    spec = TrainingSpec(episodes_between_training=30, workers=3, seed=8)
    iterations = 12
    docs = generate_documents(spec, 30 * iterations)
    paths = []
    for w, body in docs.items():
        path = tmp_path / key_for("model", w)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(body)
        paths.append(path)
    tm = metrics_mod.TrainingMetrics(None, fname=str(paths[0]))
    for w in (1, 2):
        tm.addRound(None, fname=str(paths[w]), training_round=1, worker=w)
    assert tm.episodes_per_iteration == 10
    summary = tm.getSummary()
    assert summary.shape[0] == iterations
    assert list(summary["train_episodes"]) == [30] * iterations
    assert all(2 <= n <= 6 for n in summary["eval_episodes"])
    completion = summary["train_completion"]
    assert completion.iloc[-3:].mean() > completion.iloc[:3].mean()


def test_deepracer_utils_single_worker(tmp_path: Path) -> None:
    metrics_mod = pytest.importorskip("deepracer.logs.metrics")
    path = tmp_path / "TrainingMetrics.json"
    path.write_bytes(generate_documents(TrainingSpec(seed=1), 20 * 15 + 7)[0])
    summary = metrics_mod.TrainingMetrics(None, fname=str(path)).getSummary()
    assert summary.shape[0] == 16  # 15 full iterations and the one in progress
    assert summary["train_episodes"].iloc[-1] == 7


def test_run_simulation_writes_documents_and_hyperparameters_once() -> None:
    store: dict[str, bytes] = {}
    writes: Counter[str] = Counter()
    stop = threading.Event()

    def put(key: str, body: bytes) -> None:
        store[key] = body
        writes[key] += 1
        if sum(len(training(records(v))) for k, v in store.items() if "/metrics/" in k
               and k.startswith("a/")) >= 40:
            stop.set()

    models = [
        ("a", TrainingSpec(episodes_between_training=10, workers=2, seed=1)),
        ("b", TrainingSpec(episodes_between_training=10, seed=2)),
    ]
    thread = threading.Thread(target=run_simulation, args=(put, models, 0.0, stop, 4))
    thread.start()
    thread.join(timeout=30)
    assert not thread.is_alive()
    assert set(store) == {
        "a/ip/hyperparameters.json", "a/metrics/TrainingMetrics.json",
        "a/metrics/TrainingMetrics_1.json", "b/ip/hyperparameters.json",
        "b/metrics/TrainingMetrics.json",
    }
    assert writes["a/ip/hyperparameters.json"] == 1 and writes["b/ip/hyperparameters.json"] == 1
    assert json.loads(store["b/ip/hyperparameters.json"])["num_episodes_between_training"] == 10
    # what was uploaded equals the simulator's own documents after the same number of ticks
    a = [len(training(records(store[key_for("a", w)]))) for w in (0, 1)]
    assert sum(a) == 40
    sim = TrainingSimulator(models[0][1])
    sim.advance(40)
    assert store[key_for("a", 0)] == sim.document(0)


def test_run_simulation_retries_failed_writes() -> None:
    store: dict[str, bytes] = {}
    stop = threading.Event()
    failures: Counter[str] = Counter()

    def flaky(key: str, body: bytes) -> None:
        if failures[key] < 2:
            failures[key] += 1
            raise ConnectionError("minio not up yet")
        store[key] = body
        if len(store) == 2:
            stop.set()

    # the whole training happens in the first tick: only a retry can still deliver it
    models = [("m", TrainingSpec(episodes_between_training=4, max_episodes=8, seed=1))]
    thread = threading.Thread(target=run_simulation, args=(flaky, models, 0.01, stop, 8))
    thread.start()
    thread.join(timeout=5)
    stop.set()
    thread.join()
    assert set(store) == {"m/ip/hyperparameters.json", "m/metrics/TrainingMetrics.json"}
    recs = training(records(store[key_for("m", 0)]))
    assert [r["episode"] for r in recs] == list(range(1, 9))
