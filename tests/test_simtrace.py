"""Simulator step timing from simtrace CSVs equals deepracer-utils' SimtraceStabilityAnalyzer.

The reference is deepracer-utils 1.5.6 itself, loading the same files its own way
(`DeepRacerLog(folder).load_training_trace()` / `load_evaluation_trace()`), on every sample layout
of its source distribution, and on copies of those samples given a `wall_clock` column the way
newer simulators write it (the samples, except DeepRacer on AWS, predate it).
"""

from __future__ import annotations

import csv
import io
import math
import re
import tarfile
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from deepracer.logs import DeepRacerLog
from deepracer.logs.stability import SimtraceStabilityAnalyzer

from deepracer_exporter.layouts import (
    EVALUATION,
    TRAINING,
    SimtraceKey,
    evaluation_run_key,
    simtrace_folders,
    simtrace_key,
)
from deepracer_exporter.parse import MetricsFileError
from deepracer_exporter.simtrace import (
    IterationSteps,
    WorkerSteps,
    iteration_steps,
    parse_simtrace,
    timing,
    worker_steps,
)

TRAINING_SAMPLES = ["sample-drfc-1-logs", "sample-drfc-3-logs", "sample-console-logs",
                    "sample-droa-solution-logs"]
EVALUATION_SAMPLES = [*TRAINING_SAMPLES, "sample-droa-eval-only"]
TOL = 1e-9


def close(mine: float | None, reference: Any, scale: float = 1.0) -> bool:
    """`mine` (seconds) equals deepracer-utils' figure (`scale` units) to 1e-9, None as NaN."""
    if mine is None or reference is None or pd.isna(reference):
        return mine is None and (reference is None or pd.isna(reference))
    return math.isclose(mine * scale, float(reference), rel_tol=TOL, abs_tol=TOL)


def read_training(root: Path, sample: str) -> dict[tuple[int, int], WorkerSteps]:
    """Every training simtrace file of a sample model, keyed as the object store would have it."""
    out: dict[tuple[int, int], WorkerSteps] = {}
    for path in sorted((root / sample).rglob("*.csv")):
        key = simtrace_key(path.relative_to(root).as_posix(), sample)
        if key is not None and key.kind == TRAINING:
            assert (key.worker, key.iteration) not in out, path
            out[(key.worker, key.iteration)] = worker_steps(parse_simtrace(path.read_bytes()))
    return out


def merged(files: dict[tuple[int, int], WorkerSteps]) -> dict[int, IterationSteps]:
    out = {}
    for it in sorted({i for _, i in files}):
        got = iteration_steps(it, [w for (_, i), w in files.items() if i == it])
        if got is not None:
            out[it] = got
    return out


def assert_worker_rows(reference: pd.DataFrame, files: dict[tuple[int, int], WorkerSteps]
                       ) -> None:
    """Each (worker, iteration) row of analyze() against the file's figures."""
    assert len(reference) > 0
    with_steps = {k for k, w in files.items() if w.steps is not None}
    assert {(int(r.worker), int(r.iteration)) for r in reference.itertuples()} == with_steps
    for r in reference.itertuples():
        w = files[(int(r.worker), int(r.iteration))]
        assert w.steps is not None
        assert w.steps.count == r.count
        assert close(w.steps.mean, r.avg_ms, 1000), r
        assert close(w.steps.max, r.max_ms, 1000), r
        assert close(w.steps.p95, r.p95_ms, 1000), r
        assert close(w.steps.std, r.std_ms, 1000), r
        assert close(w.real_time_factor, r.rtf), r


def assert_merged(reference: pd.DataFrame, trace: pd.DataFrame,
                  got: dict[int, IterationSteps]) -> None:
    """Workers merged per iteration: against the OVERALL rules applied to the iteration's rows of
    analyze(), and count/mean/std/max also against analyze() on one frame where every worker's
    episodes are relabelled apart and counted as worker 0 (the pooled intervals)."""
    assert set(got) == {int(i) for i in reference["iteration"]}
    for it, g in reference.groupby("iteration"):
        m = got[int(it)]
        n = g["count"].to_numpy(dtype=float)
        avg = np.average(g["avg_ms"], weights=n)
        var = np.average(g["std_ms"] ** 2 + g["avg_ms"] ** 2, weights=n) - avg ** 2
        assert (m.workers, m.count) == (len(g), int(n.sum()))
        assert close(m.mean, avg, 1000)
        assert close(m.std, math.sqrt(var) if var > 0 else 0.0, 1000)
        assert close(m.max, g["max_ms"].max(), 1000)
        assert close(m.p95, g["p95_ms"].mean(), 1000)
        assert close(m.p95_worst, g["p95_ms"].max(), 1000)
        rtf = g["rtf"].dropna()
        assert close(m.real_time_factor, rtf.mean() if len(rtf) else None)
    pooled_trace = trace.copy()
    pooled_trace["episode"] = pooled_trace["worker"] * 1_000_000 + pooled_trace["episode"]
    pooled_trace["worker"] = 0
    pooled = SimtraceStabilityAnalyzer(pooled_trace).analyze()
    assert len(pooled) == len(got)
    for r in pooled.itertuples():
        m = got[int(r.iteration)]
        assert m.count == r.count
        assert close(m.mean, r.avg_ms, 1000)
        assert close(m.std, r.std_ms, 1000)
        assert close(m.max, r.max_ms, 1000)


def assert_timing(reference: pd.DataFrame, files: dict[tuple[int, int], WorkerSteps]) -> None:
    got = timing({it: w for (worker, it), w in files.items() if worker == 0})
    assert [t.iteration for t in got] == [int(i) for i in reference["iteration"]]
    for t, r in zip(got, reference.itertuples(), strict=True):
        assert close(t.training_seconds, r.train_time_s)
        assert close(t.policy_seconds, r.policy_time_s)
        assert close(t.ratio, r.ratio)


def reference(folder: Path) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    log = DeepRacerLog(str(folder))
    log.load_training_trace(ignore_metadata=True)
    return log.stability.analyze(), log.stability.analyze_timing(), log.df


# --- parity on the real samples ----------------------------------------------------------------


@pytest.mark.parametrize("sample", TRAINING_SAMPLES)
def test_training_samples_match_deepracer_utils(samples: Path, sample: str) -> None:
    ref, ref_timing, trace = reference(samples / sample)
    files = read_training(samples, sample)
    assert len(files) == trace.groupby(["worker", "iteration"]).ngroups
    assert_worker_rows(ref, files)
    assert_merged(ref, trace, merged(files))
    assert_timing(ref_timing, files)
    # only the DeepRacer on AWS sample was written by a simulator with a wall clock
    has_wall = sample == "sample-droa-solution-logs"
    assert (len(ref_timing) > 0) == has_wall
    assert all((w.real_time_factor is not None) == has_wall for w in files.values())


def test_continuous_action_sample_with_wall_clock_matches(samples: Path, tmp_path: Path) -> None:
    """The DeepRacer on AWS sample packed as a tarball: 15 iterations from a simulator that
    writes the wall clock, so real-time factor and policy time come from real data."""
    with tarfile.open(samples / "sample-continous-action-logs.tar.gz") as tar:
        tar.extractall(tmp_path, filter="data")
    (model,) = [p for p in tmp_path.iterdir() if p.is_dir()]
    ref, ref_timing, trace = reference(model)
    files = read_training(tmp_path, model.name)
    assert len(files) == 15
    assert_worker_rows(ref, files)
    assert_merged(ref, trace, merged(files))
    assert_timing(ref_timing, files)
    assert ref_timing["policy_time_s"].notna().sum() == 14
    assert all(w.real_time_factor is not None for w in files.values())


def test_prepare_inside_an_episode_ends_an_interval() -> None:
    """A `prepare` row inside an episode (a reset without a new episode number): the interval
    arriving at it is the reset, not a step, and is left out, as deepracer-utils does."""
    body = (b"episode,steps,tstamp,episode_status\n"
            b"0,1.0,10.0,prepare\n0,2.0,10.1,in_progress\n0,3.0,14.0,prepare\n"
            b"0,4.0,14.2,in_progress\n1,1.0,20.0,prepare\n1,2.0,20.05,in_progress\n")
    w = worker_steps(parse_simtrace(body))
    assert w.steps is not None and w.steps.count == 3
    assert w.steps.max == pytest.approx(0.2)
    frame = pd.read_csv(io.BytesIO(body)).assign(worker=0, iteration=0, wall_clock=math.nan)
    (ref,) = SimtraceStabilityAnalyzer(frame).analyze().itertuples()
    assert (ref.count, ref.max_ms) == (3, pytest.approx(200))
    assert close(w.steps.mean, ref.avg_ms, 1000) and close(w.steps.std, ref.std_ms, 1000)


def test_three_workers_are_three_workers(samples: Path) -> None:
    files = read_training(samples, "sample-drfc-3-logs")
    assert {w for w, _ in files} == {0, 1, 2}
    assert all(m.workers == 3 for m in merged(files).values())


@pytest.mark.parametrize("sample", EVALUATION_SAMPLES)
def test_evaluation_runs_match_deepracer_utils(samples: Path, sample: str) -> None:
    log = DeepRacerLog(str(samples / sample))
    log.load_evaluation_trace(ignore_metadata=True)
    ref = log.stability.analyze()
    split = re.compile(log.fh.evaluation_simtrace_split)
    by_stream = {}
    for path in (samples / sample).rglob("*.csv"):
        key = simtrace_key(path.relative_to(samples).as_posix(), sample)
        if key is not None and key.kind == EVALUATION:
            stream = split.search(str(path))
            assert stream is not None
            by_stream[stream.group(1)] = (key, worker_steps(parse_simtrace(path.read_bytes())))
    assert sorted(by_stream) == sorted(ref["stream"])
    for r in ref.itertuples():
        key, w = by_stream[r.stream]
        assert (key.worker, key.iteration) == (0, int(r.iteration))
        assert w.steps is not None and w.steps.count == r.count
        for mine, theirs in ((w.steps.mean, r.avg_ms), (w.steps.max, r.max_ms),
                             (w.steps.p95, r.p95_ms), (w.steps.std, r.std_ms)):
            assert close(mine, theirs, 1000), r
        assert close(w.real_time_factor, r.rtf)
    # each run's step timing can sit beside its lap times: same run id as its metrics file
    metrics = {evaluation_run_key(p.relative_to(samples).as_posix(), f"{sample}/metrics/")
               for p in (samples / sample / "metrics").rglob("*.json")}
    assert {key.run for key, _ in by_stream.values()} == metrics - {None}


# --- files with a wall clock, written as the simulator writes them ----------------------------


def with_wall_clock(body: bytes, start: float, slowdown: float, blank_row: int | None = None
                    ) -> tuple[bytes, float]:
    """The simtrace rows with a `wall_clock` column appended, as simulators since 2025 write it
    (Unix seconds as Python prints a float, last column): wall time runs `slowdown` times slower
    than simulated time from `start`. Returns the new body and the last wall-clock value."""
    rows = list(csv.reader(io.StringIO(body.decode())))
    header, records = rows[0], rows[1:]
    t0 = float(records[0][header.index("tstamp")])
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow([*header, "wall_clock"])
    last = start
    for i, rec in enumerate(records):
        wall = start + (float(rec[header.index("tstamp")]) - t0) * slowdown
        last = max(last, wall)
        writer.writerow([*rec, "" if i == blank_row else repr(wall)])
    return out.getvalue().encode(), last


def write_wall_clock_model(source: Path, target: Path, seed: int
                           ) -> dict[tuple[int, int], tuple[float, float, float]]:
    """Copy a DRfC sample's training simtrace with wall clocks: each worker and iteration its own
    slowdown, a policy-update pause between iterations. Returns, per (worker, iteration), the
    slowdown, the first and the last wall clock written."""
    rng = np.random.default_rng(seed)
    paths = sorted(source.rglob("training-simtrace/*-iteration.csv"))
    by_worker: dict[str, list[Path]] = {}
    for p in paths:
        by_worker.setdefault(p.parent.parent.relative_to(source).as_posix(), []).append(p)
    written = {}
    for folder, files in by_worker.items():
        clock = 1_772_822_267.79 + rng.uniform(0, 2)
        for p in sorted(files, key=lambda p: int(p.name.split("-")[0])):
            it = int(p.name.split("-")[0])
            worker = 0 if folder == "." else int(folder)
            slowdown = float(rng.uniform(0.9, 2.5))
            blank = 5 if (worker, it) == (0, 3) else None
            body, last = with_wall_clock(p.read_bytes(), clock, slowdown, blank)
            out = target / p.relative_to(source)
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_bytes(body)
            written[(worker, it)] = (slowdown, clock, last)
            clock = last + float(rng.uniform(8, 40))  # the trainer updates the policy
    return written


@pytest.mark.parametrize("sample", ["sample-drfc-1-logs", "sample-drfc-3-logs"])
def test_wall_clock_files_match_deepracer_utils(samples: Path, tmp_path: Path,
                                                sample: str) -> None:
    model = tmp_path / sample
    written = write_wall_clock_model(samples / sample, model, seed=len(sample))
    ref, ref_timing, trace = reference(model)
    files = read_training(tmp_path, sample)
    assert set(files) == set(written)
    assert_worker_rows(ref, files)
    assert_merged(ref, trace, merged(files))
    assert_timing(ref_timing, files)
    assert len(ref_timing) == len({it for _, it in written})
    # and the figures are the ones the clocks were written with (a Unix time in a float64 is
    # exact to 2.4e-7 s, so a factor over a minute of wall clock to about 1e-8)
    for (worker, it), (slowdown, first, last) in written.items():
        w = files[(worker, it)]
        assert w.real_time_factor == pytest.approx(1 / slowdown, rel=1e-7)
        assert (w.wall_start, w.wall_end) == (first, last)
    for t in timing({it: w for (worker, it), w in files.items() if worker == 0}):
        _, first, last = written[(0, t.iteration)]
        assert t.training_seconds == pytest.approx(last - first, rel=1e-12)
        if (0, t.iteration + 1) in written:
            assert t.policy_seconds == pytest.approx(written[(0, t.iteration + 1)][1] - last,
                                                     rel=1e-12)
            assert 8 <= (t.policy_seconds or 0) <= 40
        else:
            assert t.policy_seconds is None and t.ratio is None


def test_policy_time_only_to_the_next_iteration(samples: Path, tmp_path: Path) -> None:
    """deepracer-utils measures the gap to the next iteration present; with a file missing that
    gap holds a whole iteration, so policy time is left unknown instead."""
    write_wall_clock_model(samples / "sample-drfc-1-logs", tmp_path / "m", seed=3)
    (tmp_path / "m/training-simtrace/5-iteration.csv").unlink()
    files = read_training(tmp_path, "m")
    got = {t.iteration: t for t in timing({it: w for (_, it), w in files.items()})}
    assert 5 not in got and got[4].policy_seconds is None and got[4].ratio is None
    assert got[3].policy_seconds is not None and got[6].policy_seconds is not None
    _, ref_timing, _ = reference(tmp_path / "m")
    theirs = ref_timing.set_index("iteration")
    assert close(got[3].policy_seconds, theirs.loc[3, "policy_time_s"])
    assert theirs.loc[4, "policy_time_s"] > 0  # what deepracer-utils reports instead


def test_equal_sim_times_are_ordered_by_wall_clock() -> None:
    """Two rows with one simulated time: the wall clock they were written at orders them, so
    the wall-clock sum is the span (pandas' unstable sort may take the later first)."""
    body = (b"episode,steps,tstamp,episode_status,wall_clock\n"
            b"0,1.0,10.0,prepare,100.0\n0,2.0,10.5,in_progress,101.0\n"
            b"0,3.0,10.5,in_progress,101.5\n0,4.0,11.0,in_progress,102.0\n")
    w = worker_steps(parse_simtrace(body))
    assert w.real_time_factor == pytest.approx(1.0 / 2.0)
    assert w.steps is not None and (w.steps.count, w.steps.mean) == (3, pytest.approx(1 / 3))
    assert (w.wall_start, w.wall_end) == (100.0, 102.0)


# --- malformed files ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def good(samples: Path) -> bytes:
    return (samples / "sample-droa-solution-logs/sim-trace/training"
            / "2026-03-06T18:33:59.511Z-deepracerindy-training-ACGVRmRuFNU9NkQ"
            / "training-simtrace/0-iteration.csv").read_bytes()


def broken(good: bytes, case: str) -> bytes:
    lines = good.split(b"\n")
    header = lines[0].split(b",")
    row = lines[2].split(b",")
    row[header.index(b"tstamp")] = b"soon"
    cases = {
        "cut mid-row": good[: len(good) // 2],
        "cut after a separator": good[: good.rindex(b",")],
        "empty": b"",
        "header only": lines[0] + b"\n",
        "no tstamp column": b"\n".join([b",".join(h for h in header if h != b"tstamp"),
                                        *lines[1:]]),
        "short row": b"\n".join([*lines[:3], lines[3].rsplit(b",", 2)[0], *lines[4:]]),
        "text in tstamp": b"\n".join([*lines[:2], b",".join(row), *lines[3:]]),
        "not UTF-8": good.replace(b"in_progress", b"in_pr\xffgress", 1),
        "binary": bytes(range(256)) * 4 + b"\n",
        "JSON": b'{"metrics": []}\n',
    }
    return cases[case]


@pytest.mark.parametrize("case", [
    "cut mid-row", "cut after a separator", "empty", "header only", "no tstamp column",
    "short row", "text in tstamp", "not UTF-8", "binary", "JSON"])
def test_malformed_csv_is_an_error_with_reason_malformed(good: bytes, case: str) -> None:
    assert worker_steps(parse_simtrace(good)).steps is not None
    with pytest.raises(MetricsFileError) as err:
        parse_simtrace(broken(good, case))
    assert err.value.reason == "malformed"


def test_blank_lines_and_crlf_are_not_errors(good: bytes) -> None:
    want = worker_steps(parse_simtrace(good))
    assert worker_steps(parse_simtrace(good.replace(b"\n", b"\r\n"))) == want
    assert worker_steps(parse_simtrace(good + b"\n")) == want


# --- keys ---------------------------------------------------------------------------------------


def test_every_sample_simtrace_file_has_its_key(samples: Path) -> None:
    seen: dict[str, list[SimtraceKey]] = {}
    for path in sorted(samples.rglob("*")):
        rel = path.relative_to(samples)
        if not path.is_file() or len(rel.parts) < 2:
            continue
        key = simtrace_key(rel.as_posix(), rel.parts[0])
        assert (key is not None) == path.name.endswith("-iteration.csv"), rel
        if key is not None:
            seen.setdefault(rel.parts[0], []).append(key)
    kinds = {s: sorted({(k.kind, k.worker) for k in keys}) for s, keys in seen.items()}
    assert kinds == {
        "sample-drfc-1-logs": [(EVALUATION, 0), (TRAINING, 0)],
        "sample-drfc-3-logs": [(EVALUATION, 0), (TRAINING, 0), (TRAINING, 1), (TRAINING, 2)],
        "sample-console-logs": [(EVALUATION, 0), (TRAINING, 0)],
        "sample-droa-solution-logs": [(EVALUATION, 0), (TRAINING, 0)],
        "sample-droa-eval-only": [(EVALUATION, 0)],
    }
    trainings = [k for k in seen["sample-drfc-1-logs"] if k.kind == TRAINING]
    assert sorted(k.iteration for k in trainings) == list(range(27))
    (job,) = {k.run for k in seen["sample-droa-solution-logs"] if k.kind == TRAINING}
    assert job == "2026-03-06T18:33:59.511Z-deepracerindy-training-ACGVRmRuFNU9NkQ"


@pytest.mark.parametrize("key", [
    "m/training-simtrace/x-iteration.csv",
    "m/training-simtrace/1-iteration.csv.tmp",
    "m/training-simtrace/sub/1-iteration.csv",
    "other/training-simtrace/1-iteration.csv",
    "m/metrics/training-simtrace/1-iteration.csv",
    "m/evaluation-2022/evaluation-simtrace/0-iteration.csv",
    "m/sim-trace/evaluation/not-a-run/evaluation-simtrace/0-iteration.csv",
    "m/sim-trace/training/a/b/training-simtrace/0-iteration.csv",
    "m/1234/training-simtrace/0-iteration.csv",
    "m/metrics/TrainingMetrics.json",
])
def test_other_keys_are_not_simtrace(key: str) -> None:
    assert simtrace_key(key, "m") is None


def test_keys_and_folders_of_each_layout() -> None:
    assert simtrace_key("a/b/training-simtrace/12-iteration.csv", "a/b") == \
        SimtraceKey(TRAINING, 0, 12, None)
    assert simtrace_key("a/b/2/training-simtrace/0-iteration.csv", "a/b/") == \
        SimtraceKey(TRAINING, 2, 0, None)
    assert simtrace_key("m/sim-trace/training/training-simtrace/3-iteration.csv", "m") == \
        SimtraceKey(TRAINING, 0, 3, None)
    assert simtrace_key("m/evaluation-20240102030405/evaluation-simtrace/0-iteration.csv",
                        "m") == SimtraceKey(EVALUATION, 0, 0, "20240102030405")
    assert simtrace_key("m/sim-trace/evaluation/20240102030405-abc/evaluation-simtrace/"
                        "0-iteration.csv", "m") == SimtraceKey(EVALUATION, 0, 0,
                                                                "20240102030405-abc")
    children = ["m/0/", "m/1/", "m/training-simtrace/", "m/sim-trace/", "m/model/", "m/ip/",
                "m/metrics/", "m/evaluation-20240102030405/", "m/evaluation-x/", "m/1234/"]
    assert simtrace_folders(children, "m") == (
        "m/0/", "m/1/", "m/evaluation-20240102030405/", "m/sim-trace/", "m/training-simtrace/")


def test_sample_folder_listing_finds_every_simtrace_folder(samples: Path) -> None:
    """Listing only the folders simtrace_folders picks still finds every simtrace file."""
    for sample in EVALUATION_SAMPLES:
        children = [f"{sample}/{p.name}/" for p in (samples / sample).iterdir() if p.is_dir()]
        picked = simtrace_folders(children, sample)
        found = {p for f in picked for p in (samples / f).rglob("*-iteration.csv")}
        assert found == set((samples / sample).rglob("*-iteration.csv")), sample
