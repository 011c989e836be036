"""The simulated training must look like real DRfC output to the exporter and to deepracer-utils."""

from __future__ import annotations

import itertools
import json
import math
import socket
import statistics
import threading
from collections import Counter, defaultdict
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from telegraf.protocol import Line

from deepracer_exporter.layouts import evaluation_run_key
from deepracer_exporter.sidefiles import (
    hyperparameter_values,
    model_info_labels,
    parse_checkpoints,
    parse_evaluation,
)
from deepracer_exporter.simulate import (
    SIMTRACE_COLUMNS,
    STATUSES,
    TrainingSimulator,
    TrainingSpec,
    UdpPusher,
    clone_prefix,
    evaluation_key,
    evaluation_simtrace_key,
    generate_documents,
    generate_files,
    hyperparameters_key,
    key_for,
    parse_push_target,
    run_simulation,
    simtrace_key,
)
from deepracer_exporter.telegraf_listener import parse_line

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


def test_run_simulation_writes_documents_and_the_other_files_once() -> None:
    store: dict[str, bytes] = {}
    writes: Counter[str] = Counter()
    stop = threading.Event()

    def put(key: str, body: bytes) -> None:
        store[key] = body
        writes[key] += 1
        if sum(len(training(records(v))) for k, v in store.items()
               if k.startswith("a/metrics/TrainingMetrics")) >= 40:
            stop.set()

    models = [
        ("a", TrainingSpec(episodes_between_training=10, workers=2, seed=1)),
        ("b", TrainingSpec(episodes_between_training=10, seed=2)),
    ]
    thread = threading.Thread(target=run_simulation, args=(put, models, 0.0, stop, 4))
    thread.start()
    thread.join(timeout=30)
    assert not thread.is_alive()
    # 4 iterations of "a" (workers in folders 0/ and 1/), 4 of "b" (one worker: no folder)
    assert {k for k in store if "simtrace" in k and k.startswith("a/")} == {
        f"a/{w}/training-simtrace/{i}-iteration.csv" for w in (0, 1) for i in range(4)}
    assert {k for k in store if "simtrace" in k and k.startswith("b/")} == {
        f"b/training-simtrace/{i}-iteration.csv" for i in range(4)}
    for prefix in ("a", "b"):
        for key in ("ip/hyperparameters.json", "model/model_metadata.json"):
            assert writes[f"{prefix}/{key}"] == 1
        assert f"{prefix}/model/deepracer_checkpoints.json" in store
    assert all(n == 1 for k, n in writes.items() if k.endswith(".csv"))
    assert json.loads(store["b/ip/hyperparameters.json"])["num_episodes_between_training"] == 10
    # what was uploaded equals the simulator's own documents after the same number of ticks
    a = [len(training(records(store[key_for("a", w)]))) for w in (0, 1)]
    assert sum(a) == 40
    sim = TrainingSimulator(models[0][1])
    sim.advance(40)
    assert store[key_for("a", 0)] == sim.document(0)


def test_run_simulation_starts_clone_rounds_and_keeps_two() -> None:
    store: dict[str, bytes] = {}
    deleted: list[str] = []
    stop = threading.Event()

    def put(key: str, body: bytes) -> None:
        store[key] = body
        if key.startswith("m-4/"):
            stop.set()

    def delete(key: str) -> None:
        deleted.append(key)
        del store[key]

    spec = TrainingSpec(episodes_between_training=4, max_episodes=8, seed=3)
    thread = threading.Thread(target=run_simulation,
                              args=(put, [("m", spec)], 0.0, stop, 4),
                              kwargs={"delete_object": delete})
    thread.start()
    thread.join(timeout=30)
    assert not thread.is_alive()
    assert [clone_prefix("m", n) for n in (1, 2, 3)] == ["m", "m-2", "m-3"]
    rounds = {key.split("/")[0] for key in store}
    assert rounds == {"m-3", "m-4"}, "round k deletes round k - 2 (m at m-3, m-2 at m-4)"
    assert {key.split("/")[0] for key in deleted} == {"m", "m-2"}
    # the model's metrics document goes last, so a half-deleted round is never a new model
    first = [k for k in deleted if k.startswith("m/")]
    assert first[-1] == "m/metrics/TrainingMetrics.json"
    # each round is a whole training of max_episodes; a clone starts with a better policy
    done = training(records(store[key_for("m-3", 0)]))
    assert [r["episode"] for r in done] == list(range(1, 9))
    assert TrainingSimulator(replace(spec, pretrained_iterations=30)).skill(0) > \
        3 * TrainingSimulator(spec).skill(0)


def test_run_simulation_retries_failed_writes() -> None:
    store: dict[str, bytes] = {}
    stop = threading.Event()
    failures: Counter[str] = Counter()

    def flaky(key: str, body: bytes) -> None:
        failures[key] += 1
        if failures[key] <= 2:
            raise ConnectionError("minio not up yet")
        store[key] = body
        if key == "m/metrics/TrainingMetrics.json":  # the documents go last in a tick
            stop.set()

    # the whole training happens in the first tick: only a retry can still deliver it
    models = [("m", TrainingSpec(episodes_between_training=4, max_episodes=8, seed=1))]
    thread = threading.Thread(target=run_simulation, args=(flaky, models, 0.01, stop, 8))
    thread.start()
    thread.join(timeout=5)
    stop.set()
    thread.join()
    assert set(store) == {
        "m/ip/hyperparameters.json", "m/model/model_metadata.json", "m/training_params.yaml",
        "m/model/deepracer_checkpoints.json", "m/training-simtrace/0-iteration.csv",
        "m/training-simtrace/1-iteration.csv", "m/metrics/TrainingMetrics.json"}
    assert all(n == 3 for n in failures.values())
    recs = training(records(store[key_for("m", 0)]))
    assert [r["episode"] for r in recs] == list(range(1, 9))


# -- DRfC's metrics push ------------------------------------------------------------------------

def episode_line(model: str, worker: int, rec: dict[str, Any]) -> str:
    """What deepracer-simapp's s3_metrics.py sends per record, through pytelegraf itself."""
    return str(Line("dr_training_episodes",
                    {"reward": rec["reward_score"], "progress": rec["completion_percentage"],
                     "elapsed_time": rec["elapsed_time_in_milliseconds"]},
                    {"phase": rec["phase"], "status": rec["episode_status"], "model": model,
                     "worker": str(worker)}).to_line_protocol())


def epoch_line(model: str, epoch: int, entropy: Any, kl: Any, loss: Any) -> str:
    """What the trainer's rl_coach patch sends per epoch (float32 means), through pytelegraf."""
    return str(Line("dr_sagemaker_epochs",
                    {"surrogate_loss": np.float32(loss), "kl_divergence": np.float32(kl),
                     "entropy": np.float32(entropy), "epoch": epoch},
                    {"model": model}).to_line_protocol())


def test_push_lines_are_what_the_drfc_containers_send() -> None:
    """Step by step: every new record's episode line (pytelegraf's own formatting, escapes
    included), and after an iteration's last training episode the num_epochs epoch lines."""
    model = "my model,v2=x"
    spec = TrainingSpec(episodes_between_training=6, workers=2, seed=4, num_epochs=4)
    sim = TrainingSimulator(spec)
    counts = [0, 0]
    updates = 0
    for _ in range(6 * 5 + 2):
        before = sim.iterations
        sim.advance(1)
        lines = sim.take_push_lines(model)
        new = []
        for w in range(2):
            recs = records(sim.document(w))
            new += [episode_line(model, w, r) for r in recs[counts[w]:]]
            counts[w] = len(recs)
        episodes = [x for x in lines if x.startswith("dr_training_episodes,")]
        assert sorted(episodes) == sorted(new)
        epochs = lines[len(episodes):]
        if sim.iterations == before:
            assert epochs == []
            continue
        # the trainer's update follows the iteration's last episode and worker 0's evaluation
        assert "phase=training" in lines[0]
        assert all("phase=evaluation" in x for x in episodes[1:]) and len(episodes) >= 3
        assert epochs == [epoch_line(model, *e) for e in sim.policy_update(before)]
        assert [parse_line(x).fields["epoch"] for x in epochs] == [0.0, 1.0, 2.0, 3.0]
        assert {parse_line(x).tags["model"] for x in lines} == {model}
        updates += 1
    assert updates == 5
    assert sim.take_push_lines(model) == []


def test_push_lines_without_episodes_are_the_trainers_alone() -> None:
    spec = TrainingSpec(episodes_between_training=5, seed=6)
    sim = TrainingSimulator(spec)
    sim.advance(5 * 3 + 1)
    lines = sim.take_push_lines("m", episodes=False)
    assert len(lines) == 3 * spec.num_epochs
    assert all(x.startswith("dr_sagemaker_epochs,model=m entropy=") for x in lines)


def test_policy_updates_look_like_ppo_training() -> None:
    """Entropy near ln(14) at first, falling slowly and steadily; a clone's starts lower; KL
    grows over an update's epochs; the surrogate loss is small and mostly negative."""
    spec = TrainingSpec(seed=7)
    sim = TrainingSimulator(spec)
    updates = [sim.policy_update(i) for i in range(150)]
    assert all(len(u) == spec.num_epochs for u in updates)
    assert all(isinstance(v, np.float32) for u in updates for e in u for v in e[1:])
    entropy = [statistics.mean(float(e[1]) for e in u) for u in updates]
    ceiling = math.log(14)
    assert ceiling - 0.15 < entropy[0] <= ceiling
    windows = [statistics.mean(entropy[i:i + 10]) for i in range(0, 150, 10)]
    assert all(a > b for a, b in itertools.pairwise(windows)), windows
    assert 0.5 < entropy[0] - entropy[-1] < 1.2  # slowly: still far from deterministic
    assert max(abs(a - b) for a, b in itertools.pairwise(entropy)) < 0.1
    for u in updates:
        kl = [float(e[2]) for e in u]
        assert all(0 < k < 0.1 for k in kl)
        assert kl == sorted(kl)
    losses = [float(e[3]) for u in updates for e in u]
    assert all(-0.2 < x < 0.01 for x in losses)
    assert sum(x < 0 for x in losses) > 0.95 * len(losses)
    clone = TrainingSimulator(replace(spec, pretrained_iterations=30))
    assert clone.policy_update(0)[0][1] < updates[0][0][1] - 0.2


def test_push_lines_deterministic_and_independent_of_chunking_and_taking() -> None:
    spec = TrainingSpec(episodes_between_training=7, workers=3, seed=12)
    whole = TrainingSimulator(spec)
    whole.advance(7 * 9 + 3)
    lines = whole.take_push_lines("p")
    assert len([x for x in lines if x.startswith("dr_sagemaker_epochs")]) == 9 * 3
    pieces = TrainingSimulator(spec)
    got = []
    for chunk in [1, 5, 30, 7, 1, 22]:
        pieces.advance(chunk)
        got += pieces.take_push_lines("p")
    assert got == lines
    # taking lines draws nothing from the training's own generators
    untaken = TrainingSimulator(spec)
    untaken.advance(7 * 9 + 3)
    assert untaken.documents() == pieces.documents() == whole.documents()
    assert untaken.take_files() == whole.take_files()
    other = TrainingSimulator(replace(spec, seed=13))
    other.advance(7 * 9 + 3)
    assert other.take_push_lines("p") != lines


def test_run_simulation_pushes_each_rounds_lines_tagged_with_its_prefix() -> None:
    store: dict[str, bytes] = {}
    pushed: list[str] = []
    stop = threading.Event()

    def put(key: str, body: bytes) -> None:
        store[key] = body

    def push(line: str) -> None:
        pushed.append(line)
        if line.startswith("dr_sagemaker_epochs,model=m-2 "):
            stop.set()

    spec = TrainingSpec(episodes_between_training=4, max_episodes=8, seed=3)
    thread = threading.Thread(target=run_simulation, args=(put, [("m", spec)], 0.0, stop, 4),
                              kwargs={"push": push})
    thread.start()
    thread.join(timeout=30)
    assert not thread.is_alive()
    first = TrainingSimulator(spec)
    first.advance(8)
    expected = first.take_push_lines("m")
    assert pushed[:len(expected)] == expected
    rest = pushed[len(expected):]
    assert rest and all(",model=m-2," in x or ",model=m-2 " in x for x in rest)
    assert sum(x.startswith("dr_sagemaker_epochs") for x in rest) == spec.num_epochs


def test_a_failing_push_never_stops_the_simulation() -> None:
    store: dict[str, bytes] = {}
    stop = threading.Event()
    calls = 0

    def put(key: str, body: bytes) -> None:
        store[key] = body
        if len(training(records(store[key_for("m", 0)]) if key_for("m", 0) in store
                        else [])) >= 12:
            stop.set()

    def push(line: str) -> None:
        nonlocal calls
        calls += 1
        raise OSError("network is unreachable")

    models = [("m", TrainingSpec(episodes_between_training=4, seed=1))]
    thread = threading.Thread(target=run_simulation, args=(put, models, 0.0, stop, 1),
                              kwargs={"push": push})
    thread.start()
    thread.join(timeout=30)
    stop.set()
    thread.join()
    assert len(training(records(store[key_for("m", 0)]))) >= 12
    assert calls >= 12  # tried every tick, lost each time


def test_udp_pusher_sends_one_line_per_datagram_and_survives_bad_targets() -> None:
    receiver = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    receiver.bind(("127.0.0.1", 0))
    receiver.settimeout(5)
    port = receiver.getsockname()[1]
    targets: list[tuple[str, int] | None] = [None]
    pusher = UdpPusher(lambda: targets[-1])
    try:
        pusher("dropped: nowhere to send yet")
        targets.append(("no-such-host.invalid", port))
        pusher("dropped: the name does not resolve")
        pusher("dropped too")
        assert (pusher.sent, pusher.failed) == (0, 2)
        targets.append(("localhost", port))
        pusher("dr_sagemaker_epochs,model=a entropy=1.5,epoch=0i,kl_divergence=0.01,"
               "surrogate_loss=-0.02")
        pusher("second")
        assert receiver.recv(65535) == (b"dr_sagemaker_epochs,model=a entropy=1.5,epoch=0i,"
                                        b"kl_divergence=0.01,surrogate_loss=-0.02\n")
        assert receiver.recv(65535) == b"second\n"
        assert (pusher.sent, pusher.failed) == (2, 2)
    finally:
        pusher.close()
        receiver.close()


@pytest.mark.parametrize("text,expected", [
    ("exporter:8092", ("exporter", 8092)),
    ("127.0.0.1:9", ("127.0.0.1", 9)),
    ("exporter", None), (":8092", None), ("exporter:0", None), ("exporter:65536", None),
    ("exporter:udp", None),
])
def test_parse_push_target(text: str, expected: tuple[str, int] | None) -> None:
    if expected is None:
        with pytest.raises(ValueError, match="HOST:PORT"):
            parse_push_target(text)
    else:
        assert parse_push_target(text) == expected


# -- the other files of a training: formats and parsers ----------------------------------------


def write_tree(root: Path, files: dict[str, bytes]) -> None:
    for key, body in files.items():
        path = root / key
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(body)


def test_files_follow_the_drfc_layout() -> None:
    files = generate_files(TrainingSpec(episodes_between_training=20, workers=2, seed=5,
                                        evaluation_every=3), 20 * 7, prefix="p")
    runs = sorted(k for k in files if k.startswith("p/metrics/evaluation/"))
    stamps = [k.rsplit("-", 1)[1].removesuffix(".json") for k in runs]
    assert len(runs) == 2 and stamps == sorted(set(stamps))  # after iterations 2 and 5
    assert runs == [evaluation_key("p", s) for s in stamps]
    assert set(files) == {
        "p/ip/hyperparameters.json", "p/model/model_metadata.json", "p/training_params.yaml",
        "p/model/deepracer_checkpoints.json", key_for("p", 0), key_for("p", 1),
        *runs, *(evaluation_simtrace_key("p", s) for s in stamps),
        *(simtrace_key("p", w, 2, i) for w in (0, 1) for i in range(7)),
    }
    assert simtrace_key("p", 1, 2, 6) == "p/1/training-simtrace/6-iteration.csv"
    assert simtrace_key("p", 0, 1, 6) == "p/training-simtrace/6-iteration.csv"
    assert evaluation_simtrace_key("p", stamps[0]) == \
        f"p/evaluation-{stamps[0]}/evaluation-simtrace/0-iteration.csv"


def test_model_metadata_and_hyperparameters_parse_like_the_samples(samples: Path) -> None:
    files = generate_files(TrainingSpec(seed=1, batch_size=128), 20)
    sample = samples / "sample-drfc-1-logs"
    ours = model_info_labels(files["model/model_metadata.json"])
    theirs = model_info_labels((sample / "model" / "model_metadata.json").read_bytes())
    assert {k: v for k, v in ours.items() if k != "version"} == \
        {k: v for k, v in theirs.items() if k != "version"}
    assert ours["action_count"] == "14" and ours["version"] == "5"
    hp = hyperparameter_values(files["ip/hyperparameters.json"])
    assert set(hp) == set(hyperparameter_values(
        (sample / "ip" / "hyperparameters.json").read_bytes()))
    assert hp["batch_size"] == 128 and hp["term_cond_max_episodes"] == 5000


def test_checkpoints_follow_worker_0_evaluations() -> None:
    spec = TrainingSpec(episodes_between_training=10, workers=2, seed=6)
    sim = TrainingSimulator(spec)
    assert "model/deepracer_checkpoints.json" not in sim.take_files()
    best = -1.0
    for iteration in range(12):
        sim.advance(10)
        body = sim.take_files()["model/deepracer_checkpoints.json"]
        cps = parse_checkpoints(body)
        # independently: the mean completion of this iteration's evaluation records
        evals = [r for r in records(sim.document(0)) if r["phase"] == "evaluation"
                 and r["episode"] == 5 * (iteration + 1)]
        metric = statistics.mean(r["completion_percentage"] for r in evals)
        assert cps.last is not None and cps.best is not None
        assert cps.last.number == iteration and cps.last.eval_metric == pytest.approx(metric)
        assert cps.last.sim_time_seconds == evals[-1]["metric_time"] / 1000
        best = max(best, metric)
        assert cps.best.eval_metric == pytest.approx(best)
        assert "model/deepracer_checkpoints.json" not in sim.take_files()
    steps = [int(n.split("-")[1].removesuffix(".ckpt")) for n in (cps.last.name,)]
    assert steps[0] > 0


def test_evaluation_runs_parse_and_get_faster() -> None:
    spec = TrainingSpec(seed=2, evaluation_every=4, learning_speed=2.0)
    files = generate_files(spec, 20 * 40)
    runs = []
    for key in sorted(files):
        run_id = evaluation_run_key(key, "metrics/")
        if run_id is not None:
            runs.append(parse_evaluation(run_id, files[key]))
    assert len(runs) == 10
    for run in runs:
        assert run.trials == 3 and run.skipped == 0 and run.timestamp is not None
        assert run.completed_laps == 3 and run.lap_seconds_best is not None
    assert runs[-1].lap_seconds_best < runs[0].lap_seconds_best  # type: ignore[operator]
    assert runs[-1].resets < runs[0].resets
    assert [r.timestamp for r in runs] == sorted({r.timestamp for r in runs})
    doc = json.loads(files[next(k for k in files if k.startswith("metrics/evaluation/"))])
    # continuous evaluation as in sample-drfc-1: laps follow each other, the last is complete
    trials = doc["metrics"]
    assert [t["episode_status"] for t in trials] == ["In progress"] * 2 + ["Lap complete"]
    assert all(b["start_time"] == a["metric_time"] for a, b in itertools.pairwise(trials))


def simtrace_rows(body: bytes) -> list[dict[str, str]]:
    lines = body.decode().splitlines()
    header = lines[0].split(",")
    return [dict(zip(header, line.split(","), strict=True)) for line in lines[1:]]


def test_simtrace_columns_extend_the_samples(samples: Path) -> None:
    sample = samples / "sample-drfc-1-logs" / "training-simtrace" / "0-iteration.csv"
    theirs = sample.read_text().splitlines()[0].split(",")
    files = generate_files(TrainingSpec(seed=1), 20)
    ours = files["training-simtrace/0-iteration.csv"].decode().splitlines()[0].split(",")
    assert ours == list(SIMTRACE_COLUMNS)
    assert ours[:len(theirs)] == theirs
    assert ours[len(theirs):] == ["obstacle_crash_counter", "wall_clock"]


def test_simtrace_rows_are_the_training_episodes() -> None:
    spec = TrainingSpec(episodes_between_training=30, workers=3, seed=7)
    files = generate_files(spec, 30 * 3)
    for w in range(3):
        recs = training(records(files[key_for("", w)]))
        for iteration in range(3):
            rows = simtrace_rows(files[simtrace_key("", w, 3, iteration)])
            by_episode: dict[int, list[dict[str, str]]] = defaultdict(list)
            for row in rows:
                by_episode[int(row["episode"])].append(row)
            mine = recs[10 * iteration:10 * (iteration + 1)]
            assert sorted(by_episode) == [r["episode"] - 1 for r in mine]
            for rec in mine:
                ep = by_episode[rec["episode"] - 1]
                assert ep[0]["episode_status"] == "prepare"
                assert [r["done"] for r in ep] == ["False"] * (len(ep) - 1) + ["True"]
                last = ep[-1]
                assert round(float(last["tstamp"]) * 1000) == rec["metric_time"]
                assert rec["start_time"] / 1000 < float(ep[0]["tstamp"])
                status = rec["episode_status"].lower().replace(" ", "_")
                assert last["episode_status"] == status
                assert int(float(last["progress"])) == rec["completion_percentage"]
                assert [float(r["steps"]) for r in ep] == list(range(1, len(ep) + 1))


def stability(root: Path) -> tuple[Any, Any]:
    logs = pytest.importorskip("deepracer.logs")
    stab = pytest.importorskip("deepracer.logs.stability")
    drl = logs.DeepRacerLog(str(root))
    drl.load_training_trace()
    analyzer = stab.SimtraceStabilityAnalyzer(drl.df)
    return analyzer.analyze(), analyzer.analyze_timing()


@pytest.mark.parametrize("workers", [1, 3])
def test_deepracer_utils_loads_simtrace_with_sane_step_timing(tmp_path: Path,
                                                              workers: int) -> None:
    spec = TrainingSpec(episodes_between_training=15, workers=workers, seed=8,
                        policy_update_s=40.0)
    write_tree(tmp_path, generate_files(spec, 15 * 6))
    steps, timing = stability(tmp_path)
    assert sorted(set(steps["worker"])) == list(range(workers))
    assert sorted(set(steps["iteration"])) == list(range(6))
    # 15 steps per simulated second with jitter: the samples show 66.8 ms mean, p95 80-100 ms
    assert steps["avg_ms"].between(60, 73).all()
    assert steps["p95_ms"].between(70, 90).all()
    assert steps["rtf"].between(0.9, 1.0).all()
    assert list(timing["iteration"]) == list(range(6))
    assert (timing["train_time_s"] > 5).all()
    policy = timing["policy_time_s"].dropna()
    assert len(policy) == 5 and policy.between(40 * 0.8, 40 * 1.25 + 60).all()


def test_slow_simulator_stretches_steps_and_slows_simulated_time(tmp_path: Path) -> None:
    healthy, slow = tmp_path / "healthy", tmp_path / "slow"
    write_tree(healthy, generate_files(TrainingSpec(seed=9), 20 * 4))
    write_tree(slow, generate_files(TrainingSpec(seed=9, simulator_speed=0.4), 20 * 4))
    fast_steps, _ = stability(healthy)
    slow_steps, _ = stability(slow)
    assert slow_steps["avg_ms"].between(150, 185).all()  # about 6 steps per simulated second
    assert (slow_steps["p95_ms"] > 90).all()  # deepracer-analysis' "performance problem" line
    assert slow_steps["rtf"].between(0.36, 0.4).all()
    # same episodes (same metrics), fewer steps
    assert slow_steps["count"].sum() < 0.5 * fast_steps["count"].sum()


def test_files_are_deterministic_and_independent_of_chunking() -> None:
    spec = TrainingSpec(episodes_between_training=12, workers=2, seed=10, evaluation_every=2)
    whole = generate_files(spec, 12 * 9 + 5)
    assert whole == generate_files(spec, 12 * 9 + 5)
    sim = TrainingSimulator(spec)
    pieces: dict[str, bytes] = {}
    for chunk in [1, 5, 30, 7, 1, 69]:
        sim.advance(chunk)
        new = sim.take_files()
        once = set(new) - {"model/deepracer_checkpoints.json"}  # rewritten every iteration
        assert not once & set(pieces), "every other file is handed out once"
        pieces.update(new)
    pieces.update({key_for("", w): b for w, b in sim.documents().items()})
    assert pieces == whole
    # a worker's simtrace appears when its own share of the iteration is written
    sim = TrainingSimulator(spec)
    sim.take_files()
    seen_at = {}
    for _ in range(12):
        sim.advance(1)
        for key in sim.take_files():
            seen_at[key] = (len(training(records(sim.document(0)))), sim.record_count(1))
    assert seen_at["0/training-simtrace/0-iteration.csv"][0] == 6
    assert seen_at["1/training-simtrace/0-iteration.csv"][1] == 6


def test_demo_prints_the_progress_page_first() -> None:
    import subprocess
    import sys
    import urllib.request

    proc = subprocess.Popen([sys.executable, "-m", "deepracer_exporter.cli", "demo",
                             "--listen", "127.0.0.1:0", "--interval", "0.05s"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        lines = [proc.stdout.readline() for _ in range(3)]
        assert "DeepRacer exporter demo" in lines[0]
        assert lines[1].split()[0] == "progress:" and lines[2].split()[0] == "metrics:"
        page, metrics = lines[1].split()[1], lines[2].split()[1]
        assert metrics == page + "metrics" and page.endswith("/")
        with urllib.request.urlopen(page, timeout=10) as response:
            assert response.status == 200
            assert "text/html" in response.headers["Content-Type"]
    finally:
        proc.terminate()
        proc.communicate(timeout=15)


# --- the demo's own track and where the car drives on it ----------------------------------------


def test_demo_track_is_a_trackio_file_and_its_length_is_the_simtraces(tmp_path: Path) -> None:
    from deepracer.tracks import TrackIO
    from shapely.geometry import Polygon

    from deepracer_exporter.analysis import world_name
    from deepracer_exporter.simulate import DEMO_TRACK, demo_track_npy
    from deepracer_exporter.track import TrackFiles

    (tmp_path / f"{DEMO_TRACK}.npy").write_bytes(demo_track_npy())
    theirs = TrackIO(str(tmp_path)).load_track(DEMO_TRACK)
    mine = TrackFiles(tmp_path).load(DEMO_TRACK)
    assert mine is not None and np.array_equal(mine.centre, theirs.center_line)
    road = Polygon(theirs.outer_border).difference(Polygon(theirs.inner_border))
    assert road.is_valid and 18 < road.area < 21  # 18.3 m by 1.07 m
    files = generate_files(TrainingSpec(seed=3), 20)
    assert world_name(files["training_params.yaml"]) == DEMO_TRACK
    rows = simtrace_rows(files["training-simtrace/0-iteration.csv"])
    length = float(np.sum(np.hypot(*np.diff(theirs.center_line, axis=0).T)))
    (written,) = {float(r["track_len"]) for r in rows}
    assert written == pytest.approx(length, rel=1e-3)


def test_cars_stay_on_the_track_until_they_leave_it(tmp_path: Path) -> None:
    """Rows of the episodes that stay on the track lie on it; an episode that ends off the track
    or crashed ends beyond a border; the round-robin start moves each episode's start on."""
    from deepracer.tracks import TrackIO
    from shapely.geometry import Point, Polygon

    from deepracer_exporter.simulate import DEMO_TRACK, demo_track_npy

    (tmp_path / f"{DEMO_TRACK}.npy").write_bytes(demo_track_npy())
    track = TrackIO(str(tmp_path)).load_track(DEMO_TRACK)
    road = Polygon(track.outer_border).difference(Polygon(track.inner_border))
    files = generate_files(TrainingSpec(seed=4, episodes_between_training=20), 20 * 30)
    episodes: dict[int, list[dict[str, str]]] = defaultdict(list)
    for it in range(30):
        for row in simtrace_rows(files[f"training-simtrace/{it}-iteration.csv"]):
            episodes[int(row["episode"])].append(row)
    ends = Counter(ep[-1]["episode_status"] for ep in episodes.values())
    assert ends["lap_complete"] > 0 and ends["off_track"] > 0
    for ep in episodes.values():
        inside = [road.contains(Point(float(r["X"]), float(r["Y"]))) for r in ep]
        if ep[-1]["episode_status"] in ("off_track", "crashed"):
            assert all(inside[:-6]) and not inside[-1]
        else:
            assert all(inside)
    starts = {(round(float(ep[0]["X"]), 1), round(float(ep[0]["Y"]), 1))
              for ep in episodes.values()}
    assert len(starts) >= 15  # 20 start positions, 5 % of the lap apart


def test_the_policy_settles_on_the_actions_the_curves_need() -> None:
    """Action usage as the exporter counts it: the most used action's share grows with skill,
    and each row's steering and speed are its action's, as model_metadata.json names them."""
    from deepracer_exporter.analysis import analyse, discrete_actions, reduce_file
    from deepracer_exporter.simtrace import parse_simtrace

    spec = TrainingSpec(seed=5, episodes_between_training=20, midpoint_iterations=10)
    files = generate_files(spec, 20 * 40)
    reduced = {}
    for it in range(40):
        got = reduce_file(parse_simtrace(files[f"training-simtrace/{it}-iteration.csv"]))
        assert got is not None
        reduced[(it, 0)] = got
    actions = discrete_actions(files["model/model_metadata.json"])
    result, _ = analyse(0, reduced, actions)
    assert result is not None
    top = [float(it.shares().max()) for it in result.iterations]
    assert np.mean(top[-5:]) > np.mean(top[:5]) + 0.1
    for row in simtrace_rows(files["training-simtrace/39-iteration.csv"]):
        a = actions[int(row["action"])]
        assert (float(row["steer"]), float(row["throttle"])) == (a.steering_angle, a.speed)
