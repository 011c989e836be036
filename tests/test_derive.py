"""Derivation where deepracer-utils is weak, plus property-based checks of parse + derive."""

from __future__ import annotations

import json
import math
import tracemalloc
from typing import Any

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from deepracer_exporter.derive import RoundInput, _unique, derive, split_episodes
from deepracer_exporter.parse import MetricsFileError, parse_document, parse_records
from deepracer_exporter.simulate import TrainingSimulator, TrainingSpec, generate_documents


def columns(docs: dict[int, bytes]) -> dict[int, Any]:
    return {w: parse_document(body) for w, body in docs.items()}


def test_split_gives_extra_episodes_to_lowest_workers() -> None:
    assert split_episodes(20, 3) == [7, 7, 6]
    assert split_episodes(30, 3) == [10, 10, 10]
    assert split_episodes(5, 1) == [5]


def test_uneven_split_uses_hyperparameters_where_deepracer_utils_cannot() -> None:
    """20 episodes over 3 workers: worker 2 plays 6 per iteration, not worker 0's 7."""
    spec = TrainingSpec(episodes_between_training=20, workers=3, seed=3)
    docs = generate_documents(spec, 20 * 12)
    cols = columns(docs)
    right = derive([RoundInput(cols, episodes_between_training=20)])
    assert right.episodes_per_iteration_source == "hyperparameters"
    assert right.episodes_per_iteration == 20
    training = {it.iteration: it.episodes for it in right.iterations if it.phase == "training"}
    assert training == dict.fromkeys(range(12), 20)
    # Without hyperparameters, worker 0's max(trial) (deepracer-utils' rule) misplaces worker 2.
    utils_like = derive([RoundInput(cols)])
    assert utils_like.episodes_per_iteration_source == "trial"
    counts = [it.episodes for it in utils_like.iterations if it.phase == "training"]
    assert counts != [20] * 12


def test_first_iteration_in_progress_is_iteration_zero() -> None:
    sim = TrainingSimulator(TrainingSpec(episodes_between_training=20, workers=2, seed=4))
    sim.advance(7)
    d = derive([RoundInput(columns(sim.documents()))])
    assert d.latest_iteration == 0
    assert {it.iteration for it in d.iterations} == {0}
    with_hyper = derive([RoundInput(columns(sim.documents()), episodes_between_training=20)])
    assert with_hyper.latest_iteration == 0


def test_evaluation_joins_the_iteration_it_evaluates() -> None:
    docs = generate_documents(TrainingSpec(episodes_between_training=10, seed=6), 50)
    d = derive([RoundInput(columns(docs), episodes_between_training=10)])
    evaluation = sorted(it.iteration for it in d.iterations if it.phase == "evaluation")
    assert evaluation == [0, 1, 2, 3, 4]
    assert all(2 <= it.episodes <= 6 for it in d.iterations if it.phase == "evaluation")


def test_rounds_continue_iteration_numbering() -> None:
    first = columns(generate_documents(TrainingSpec(episodes_between_training=10, seed=7), 45))
    second = columns(generate_documents(TrainingSpec(episodes_between_training=10, seed=8), 30))
    d = derive([RoundInput(first, 10), RoundInput(second, 10)])
    rounds = {(it.round, it.iteration) for it in d.iterations if it.phase == "training"}
    assert {i for r, i in rounds if r == 1} == {0, 1, 2, 3, 4}
    assert {i for r, i in rounds if r == 2} == {5, 6, 7}
    assert d.latest_round == 2 and d.latest_iteration == 7


def test_lap_time_counts_completed_laps_only() -> None:
    records = [
        {"episode": 1, "trial": 1, "phase": "training", "reward_score": 10,
         "completion_percentage": 100, "elapsed_time_in_milliseconds": 12000,
         "episode_status": "Lap complete"},
        {"episode": 2, "trial": 2, "phase": "training", "reward_score": 1,
         "completion_percentage": 10, "elapsed_time_in_milliseconds": 2000,
         "episode_status": "Off track"},
    ]
    d = derive([RoundInput({0: parse_records(records)})])
    it = d.iterations[0]
    assert it.episode_seconds[0] == 7.0  # deepracer-utils' `time`: failed episode included
    assert it.lap_seconds == (12.0, 12.0, 12.0, 12.0)
    assert it.completed_ratio == 0.5
    assert d.best_lap == {"training": 12.0}


def test_rolling_matches_pandas_with_gaps() -> None:
    from deepracer_exporter.derive import _rolling

    rng = np.random.default_rng(1)
    values = rng.normal(size=(200, 3)) * 1000  # columns are rolled each on its own
    values[rng.random((200, 3)) < 0.3] = np.nan
    for window in (1, 3, 5, 17, 400):
        want = pd.DataFrame(values).rolling(window, min_periods=1).mean().to_numpy()
        np.testing.assert_allclose(_rolling(values, window), want, atol=1e-9, equal_nan=True)
    assert _rolling(np.zeros((0, 4)), 5).shape == (0, 4)


def test_plateau_counts_iterations_since_best() -> None:
    spec = TrainingSpec(episodes_between_training=10, seed=9, learning_speed=4.0)
    d = derive([RoundInput(columns(generate_documents(spec, 10 * 60)), 10)])
    rows = [it for it in d.iterations if it.phase == "training"]
    series = [it.rolling_completion[0] for it in rows]
    best = int(np.argmax(series))
    assert d.plateau[("training", "completion")] == len(series) - 1 - best


FIELDS = {
    "episode": st.one_of(st.integers(-5, 500), st.floats(allow_nan=True), st.text(max_size=3),
                         st.none()),
    "trial": st.one_of(st.integers(-1, 50), st.floats(), st.none()),
    "phase": st.sampled_from(["training", "evaluation", "other", 3, None]),
    "reward_score": st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(),
                              st.booleans(), st.text(max_size=2)),
    "completion_percentage": st.one_of(st.floats(-10, 200), st.integers(-1, 101),
                                       st.just(float("nan"))),
    "elapsed_time_in_milliseconds": st.one_of(st.floats(-1, 1e7), st.integers(0, 10**7),
                                              st.just(float("inf"))),
    "episode_status": st.sampled_from(["Lap complete", "Off track", "Crashed", "weird", 1, None,
                                       []]),
}
record = st.fixed_dictionaries({}, optional=FIELDS)
documents = st.lists(st.one_of(record, st.integers(), st.none()), max_size=60)


def finite_numbers(d: Any) -> list[float]:
    out: list[float] = []
    for it in d.iterations:
        out += [*it.reward, *it.completion, *it.episode_seconds, *(it.lap_seconds or ()),
                it.completed_ratio, it.episodes]
    out += list(d.best_lap.values())
    out += [lap.seconds for lap in d.best_laps]
    return out


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(workers=st.lists(documents, min_size=1, max_size=3), hyper=st.sampled_from([None, 5, 20]))
def test_arbitrary_records_never_raise_or_yield_nan(workers: list[list[Any]],
                                                    hyper: int | None) -> None:
    cols = {w: parse_records(recs) for w, recs in enumerate(workers)}
    for w, recs in enumerate(workers):
        assert len(cols[w]) + cols[w].skipped == len(recs)
    d = derive([RoundInput(cols, hyper)], top_laps=3)
    for number in finite_numbers(d):
        assert math.isfinite(number)
    for it in d.iterations:
        assert 0 <= it.completion[2] <= it.completion[3] <= 1
        assert 0 <= it.completed_ratio <= 1


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=200) | st.text(max_size=200).map(str.encode))
def test_arbitrary_bytes_raise_only_the_documented_error(body: bytes) -> None:
    try:
        parse_document(body)
    except MetricsFileError as exc:
        assert exc.reason == "malformed"


@pytest.mark.parametrize("body", [b'{"metrics": null}', b'{"metrics": "x"}', b"{}", b"null",
                                  b'{"metrics": [1'])
def test_unusable_documents(body: bytes) -> None:
    with pytest.raises(MetricsFileError):
        parse_document(body)


def test_valid_empty_document() -> None:
    assert len(parse_document(json.dumps({"metrics": []}).encode())) == 0


def sorted_group_stats(gid: Any, ngroups: int, values: Any) -> Any:
    """Plain reference: each group sorted on its own (NaN last, ties in input order); the mean
    sums the sorted group; the median of an even count is the mean of the middle two."""
    out = np.full((ngroups, 4), np.nan)
    order = np.argsort(gid, kind="stable")
    bounds = np.cumsum(np.bincount(gid, minlength=ngroups))[:-1]
    for g, v in enumerate(np.split(values[order], bounds)):
        v = np.sort(v, kind="stable")
        if v.size:
            out[g] = (np.add.reduceat(v, [0])[0] / v.size,
                      (v[(v.size - 1) // 2] + v[v.size // 2]) / 2.0, v[0], v[-1])
    return out


def same_bits(a: Any, b: Any) -> bool:
    """Equal down to the sign of zero; any NaN equals any NaN (NaN is never exported)."""
    return a.shape == b.shape and bool(np.all((np.isnan(a) & np.isnan(b))
                                              | (a.view(np.int64) == b.view(np.int64))))


GROUPINGS = {
    # iterations of one worker: equal groups in order
    "in order": lambda rng: np.repeat(np.arange(300), 20),
    # workers concatenated: each worker's iterations in order, the groups interleaved
    "workers": lambda rng: np.concatenate([np.repeat(np.arange(300), 7)] * 3),
    "shuffled, empty groups": lambda rng: rng.choice(np.arange(0, 600, 3), 5000),
    # one group holding nearly everything: too sparse for the padded grid
    "lopsided": lambda rng: np.concatenate([np.zeros(5000, np.int64), np.arange(1, 2000)]),
    # more groups than int16 counts, dense and lopsided
    "40000 groups": lambda rng: rng.permutation(np.repeat(np.arange(40000), 2)),
    "40000 groups, lopsided": lambda rng: np.concatenate(
        [np.arange(40000), np.full(9000, 7)]),
    "one record": lambda rng: np.array([3]),
}


@pytest.mark.parametrize("values_kind", ["ties", "signed zeros", "nan", "spread"])
@pytest.mark.parametrize("grouping", sorted(GROUPINGS))
def test_grouped_stats_equal_a_plain_per_group_reference(grouping: str,
                                                         values_kind: str) -> None:
    from deepracer_exporter.derive import _phase_stats

    rng = np.random.default_rng(len(grouping) * 7 + len(values_kind))
    gid = GROUPINGS[grouping](rng).astype(np.int64)
    ngroups = int(gid.max()) + 2  # the last group stays empty
    n = gid.size
    choices = {"ties": [1.0, 2.0, 2.0, 0.5, 3.25],
               "signed zeros": [0.0, -0.0, 1.5, -1.5],
               "nan": [np.nan, 1.0, 2.0, 0.25]}
    if values_kind in choices:
        values = rng.choice(choices[values_kind], (3, n))
    else:
        values = rng.normal(size=(3, n)) * 10.0 ** rng.integers(-3, 4, (3, n))
    complete = rng.random(n) < 0.6
    got = _phase_stats(gid, ngroups, values, complete)
    want = [*(sorted_group_stats(gid, ngroups, v) for v in values),
            sorted_group_stats(gid[complete], ngroups, values[-1][complete])]
    assert got.shape == (4, ngroups, 4)
    for j, w in enumerate(want):
        assert same_bits(got[j], w), (grouping, values_kind, j)


def test_table_rows_agree_with_the_columns() -> None:
    spec = TrainingSpec(episodes_between_training=10, workers=2, seed=5)
    d = derive([RoundInput(columns(generate_documents(spec, 10 * 30)), 10)], max_iterations=12)
    t = d.table
    assert len(d.iterations) == len(t) and len({it.iteration for it in d.iterations}) == 12
    for i, it in enumerate(d.iterations):
        assert (it.iteration, it.episodes) == (t.iteration[i], t.episodes[i])
        assert it.reward == tuple(t.reward[i]) and it.rolling_completion == tuple(
            t.rolling_completion[i])
        assert (it.lap_seconds is None) == (t.completed[i] == 0)
        assert sum(k for _, k in it.status_episodes) == it.episodes
    assert d == derive([RoundInput(columns(generate_documents(spec, 10 * 30)), 10)],
                       max_iterations=12)


@pytest.mark.parametrize("iters", [[], [3], [0, 0, 1, 1, 1, 4, 9, 9], [2, 2, 2], [0, 1, 0, 1],
                                   [5, 3, 3, 8, 0]])
def test_unique_without_a_sort_equals_numpy(iters: list[int]) -> None:
    values = np.array(iters, np.int64)
    keys, inverse = _unique(values)
    want_keys, want_inverse = np.unique(values, return_inverse=True)
    assert keys.tolist() == want_keys.tolist()
    assert inverse.tolist() == want_inverse.reshape(-1).tolist()


def _peak_derive_bytes(cols: dict[int, Any], window: int) -> int:
    tracemalloc.start()
    try:
        derive([RoundInput(cols, episodes_between_training=1)], rolling_window=window)
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_rolling_window_does_not_multiply_memory() -> None:
    """20,000 iterations (one episode each): a window of 1000 needs no more memory than one of
    5 (issue 24: every window was materialised, ~700 MiB more)."""
    cols = columns(generate_documents(TrainingSpec(episodes_between_training=1, seed=5), 20000))
    small, large = _peak_derive_bytes(cols, 5), _peak_derive_bytes(cols, 1000)
    assert large < 2 * small, (small, large)


def test_unfinished_iteration_is_kept_out_of_rolling_means() -> None:
    """6 of 10 episodes of iteration 4 played: its own stats are there, but no rolling mean
    counts it, and the model-level rolling values and plateau are those of iteration 3."""
    spec = TrainingSpec(episodes_between_training=10, seed=6)
    done = derive([RoundInput(columns(generate_documents(spec, 40)), 10)])
    live = derive([RoundInput(columns(generate_documents(spec, 46)), 10)])
    assert done.unfinished_iteration == -1 and done.latest_iteration_episodes == 10
    assert live.unfinished_iteration == 4 and live.latest_iteration_episodes == 6
    last = [it for it in live.iterations if it.phase == "training"][-1]
    assert last.iteration == 4 and last.episodes == 6 and not math.isnan(last.reward[0])
    assert all(math.isnan(v) for v in (*last.rolling_reward, *last.rolling_completion))
    assert live.rolling_reward == done.rolling_reward
    assert live.rolling_completion == done.rolling_completion
    assert live.plateau == done.plateau
    same = [it for it in live.iterations if it.iteration < 4]
    assert same == [it for it in done.iterations if it.iteration < 4]


def test_a_finished_training_has_no_unfinished_iteration() -> None:
    """The episode limit ends the training mid-iteration: that last iteration counts."""
    spec = TrainingSpec(episodes_between_training=10, seed=6)
    d = derive([RoundInput(columns(generate_documents(spec, 45)), 10, max_episodes=45)])
    assert d.finished and d.unfinished_iteration == -1 and d.latest_iteration_episodes == 5
    last = [it for it in d.iterations if it.phase == "training"][-1]
    assert not math.isnan(last.rolling_reward[0])
