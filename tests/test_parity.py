"""Numbers served on /metrics equal deepracer-utils' getSummary on the same data, to 1e-9.

deepracer-utils' own sample logs (tests/samples.py) are uploaded to a real S3 endpoint (moto's
server), the exporter reads them through boto3, and deepracer-utils itself computes the reference
from the same files.
"""

from __future__ import annotations

import contextlib
import io
import math
from pathlib import Path
from typing import Any

import pytest
from deepracer.logs.metrics import TrainingMetrics

from helpers import config_from, exporter_for, pick, refresh, s3_yaml, value

TOL = 1e-9
STATS = ("mean", "median", "min", "max")


def console_file(samples: Path) -> Path:
    return next((samples / "sample-console-logs/metrics/training").glob("training-*.json"))


def load_reference(rounds: list[list[Path]]) -> TrainingMetrics:
    """deepracer-utils, loaded as its own tests do (one addRound per extra worker or round)."""
    tm = None
    with contextlib.redirect_stdout(io.StringIO()):  # it prints a line per file
        for rnd, files in enumerate(rounds, start=1):
            for worker, path in enumerate(files):
                if tm is None:
                    tm = TrainingMetrics(None, fname=str(path), training_round=rnd)
                else:
                    tm.addRound(None, fname=str(path), training_round=rnd, worker=worker)
    assert tm is not None
    return tm


def upload_round(s3: Any, bucket: str, prefix: str, files: list[Path],
                 hyperparameters: Path | None = None) -> None:
    for worker, path in enumerate(files):
        name = "TrainingMetrics.json" if worker == 0 else f"TrainingMetrics_{worker}.json"
        s3.put_object(Bucket=bucket, Key=f"{prefix}/metrics/{name}", Body=path.read_bytes())
    if hyperparameters is not None:
        s3.put_object(Bucket=bucket, Key=f"{prefix}/ip/hyperparameters.json",
                      Body=hyperparameters.read_bytes())


def compare(samples_: dict[Any, float], model: str, tm: TrainingMetrics) -> int:
    """Assert every getSummary number for every method; returns how many were compared."""
    master = tm.metrics.groupby("r-i")["master_iteration"].first()
    rounds = tm.metrics.groupby("r-i")["round"].first()
    compared = 0
    # The latest iteration while it lacks episodes: deepracer-utils rolls it in, the exporter
    # leaves it out of every rolling mean (issue 27), so it has no rolling sample.
    unfinished = (value(samples_, "deepracer_model_iteration_episodes", model=model)
                  < value(samples_, "deepracer_model_episodes_per_iteration", model=model))
    latest = value(samples_, "deepracer_model_iteration", model=model)
    for method in STATS:
        summary = tm.getSummary(method=method).reset_index()
        for phase, pre in (("training", "train"), ("evaluation", "eval")):
            rolling_c = summary[f"{pre}_completion"].rolling(5, min_periods=1).mean()
            rolling_r = summary[f"{pre}_reward"].rolling(5, min_periods=1).mean()
            for i, row in summary.iterrows():
                labels = {"model": model, "phase": phase, "round": int(rounds[row["r-i"]]),
                          "iteration": int(master[row["r-i"]])}
                if math.isnan(row[f"{pre}_episodes"]):
                    assert not pick(samples_, "deepracer_iteration_episodes", **labels)
                    continue
                pairs = [
                    (value(samples_, "deepracer_iteration_reward", stat=method, **labels),
                     row[f"{pre}_reward"]),
                    (100 * value(samples_, "deepracer_iteration_completion_ratio", stat=method,
                                 **labels), row[f"{pre}_completion"]),
                    (value(samples_, "deepracer_iteration_episode_seconds", stat=method,
                           **labels), row[f"{pre}_time"]),
                    (value(samples_, "deepracer_iteration_episodes", **labels),
                     row[f"{pre}_episodes"]),
                ]
                rolled = ("deepracer_iteration_rolling_completion_ratio",
                          "deepracer_iteration_rolling_reward")
                if unfinished and labels["iteration"] == latest:
                    assert not any(pick(samples_, f, **labels) for f in rolled)
                else:
                    pairs += [(100 * value(samples_, rolled[0], stat=method, **labels),
                               rolling_c[i]),
                              (value(samples_, rolled[1], stat=method, **labels), rolling_r[i])]
                if method == "mean":
                    pairs.append((value(samples_, "deepracer_iteration_completed_ratio",
                                        **labels), row[f"{pre}_completed"]))
                for ours, theirs in pairs:
                    assert ours == pytest.approx(theirs, abs=TOL), (method, labels)
                    compared += 1
    # The completed-laps-only lap time is the "right" number beside deepracer-utils' `time`.
    for method in STATS:
        laps = tm.getSummary(method=method, completedLapsOnly=True).reset_index()
        for _, row in laps.iterrows():
            if math.isnan(row["train_time"]):
                continue
            labels = {"model": model, "phase": "training",
                      "iteration": int(master[row["r-i"]])}
            assert value(samples_, "deepracer_iteration_lap_seconds", stat=method,
                         **labels) == pytest.approx(row["train_time"], abs=TOL)
            compared += 1
    return compared


@pytest.fixture
def cases(samples: Path) -> dict[str, list[list[Path]]]:
    drfc1 = samples / "sample-drfc-1-logs/metrics/TrainingMetrics.json"
    drfc3 = [samples / "sample-drfc-3-logs/metrics" / f"TrainingMetrics{s}.json"
             for s in ("", "_1", "_2")]
    console = console_file(samples)
    return {
        "single": [[drfc1]],
        "workers": [drfc3],
        "console": [[console]],
        "rounds": [[drfc1], [console]],
        "rounds-workers": [[console], drfc3[:2]],
    }


def test_every_number_matches_deepracer_utils(s3: Any, bucket: str, s3_endpoint: str,
                                              cases: dict[str, list[list[Path]]],
                                              samples: Path) -> None:
    models = []
    for name, rounds in cases.items():
        prefixes = [f"{name}-round{r}" for r in range(1, len(rounds) + 1)]
        for prefix, files in zip(prefixes, rounds, strict=True):
            hyper = files[0].parent.parent / "ip/hyperparameters.json"
            upload_round(s3, bucket, prefix, files, hyper if hyper.exists() else None)
        models.append(f"  - name: {name}\n    bucket: {bucket}\n    rounds: {prefixes}\n")
    # Every statistic of getSummary is compared, so every one is exported.
    config = config_from(s3_yaml(s3_endpoint) + "iteration_stats: full\nmodels:\n"
                         + "".join(models))
    got = refresh(exporter_for(config))
    for name, rounds in cases.items():
        tm = load_reference(rounds)
        assert compare(got, name, tm) > 1000, name
        assert value(got, "deepracer_model_iteration", model=name) == tm.metrics[
            tm.metrics["phase"] == "training"]["master_iteration"].max()
        assert value(got, "deepracer_exporter_refresh_success", model=name) == 1


def test_console_sample_counts_as_deepracer_utils_tests_expect(s3: Any, bucket: str,
                                                               s3_endpoint: str,
                                                               samples: Path) -> None:
    """deepracer-utils' own tests: 568 training episodes and master iteration 28."""
    upload_round(s3, bucket, "console", [console_file(samples)])
    config = config_from(s3_yaml(s3_endpoint) + f"models:\n  - bucket: {bucket}\n"
                         f"    prefix: console\n")
    got = refresh(exporter_for(config))
    training = sum(pick(got, "deepracer_model_episodes_total", model="console",
                        phase="training").values())
    assert training == 568
    assert value(got, "deepracer_model_iteration", model="console") == 28
    assert value(got, "deepracer_model_episodes_per_iteration", model="console") == 20
