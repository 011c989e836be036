"""DeepRacer on AWS live: the trainer's output in CloudWatch Logs (moto's server over HTTP), one
stream per training job, read in polls without losing or doubling a line.

moto does not evaluate CloudWatch's `?term` filter patterns (it returns every event), so every
line of the real log is stored and the exporter's own parser picks the trainer's lines: what the
filter would have sent is a subset of that."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from deepracer_exporter.cloudwatchlogs import CloudWatchLogs, make_client, model_prefix
from deepracer_exporter.s3store import translate_s3
from helpers import config_from, exporter_for, pick, refresh, value
from test_policylog import droa_log, printed

GROUP = "/aws/deepracer/training/TrainingJobs"
STREAM = "deepracerindy-training-30wm3cccH9SOOML"
PREFIX = "admin19c0b9859c/models/30wm3cccH9SOOML"  # the model folder of the DRoA sample
# CloudWatch refuses events older than 14 days: the job ran an hour ago.
START_MS = int(time.time() * 1000) - 3_600_000


@pytest.fixture
def logs(s3_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    client = make_client("us-east-1", None, s3_endpoint)
    client.create_log_group(logGroupName=GROUP)
    client.create_log_stream(logGroupName=GROUP, logStreamName=STREAM)
    yield client
    client.delete_log_group(logGroupName=GROUP)


def put(client: Any, lines: list[str], first: int) -> None:
    """The lines as the job's events, two per millisecond (equal timestamps happen)."""
    client.put_log_events(logGroupName=GROUP, logStreamName=STREAM, logEvents=[
        {"timestamp": START_MS + (first + i) // 2, "message": line}
        for i, line in enumerate(lines)])


def means(text: str) -> dict[int, float]:
    by: dict[int, list[float]] = {}
    for iteration, _, _, entropy, _ in printed(text):
        by.setdefault(iteration, []).append(entropy)
    return {i: float(np.mean(e)) for i, e in by.items()}


def test_the_model_prefix_is_the_folder_above_the_trainers_artifacts() -> None:
    assert model_prefix(PREFIX + "/sagemaker-artifacts/") == PREFIX
    assert model_prefix("data-x/models/y/sagemaker-robomaker-artifacts") == "data-x/models/y"
    assert model_prefix("rl-deepracer-sagemaker") == "rl-deepracer-sagemaker"


def test_polls_read_every_line_once(logs: Any, samples: Path) -> None:
    text = droa_log(samples)
    lines = text.splitlines()
    half = 300  # mid-training: the first poll sees part of an update's epochs at most
    put(logs, lines[:half], 0)
    source = CloudWatchLogs(logs, translate_s3, GROUP, poll_interval=3600)
    source.poll()
    first = source.state().models[PREFIX].epochs
    assert 0 < first < 45
    source.poll()  # nothing new: nothing read again
    assert source.state().models[PREFIX].epochs == first
    put(logs, lines[half:], half)
    source.poll()
    state = source.state()
    model = state.models[PREFIX]
    rows = printed(text)
    assert model.epochs == len(rows) == 45
    got = dict(model.iteration_entropy)
    assert sorted(got) == sorted(means(text))
    for iteration, mean in means(text).items():
        assert got[iteration] == pytest.approx(mean, abs=1e-12)
    assert (model.surrogate_loss, model.kl_divergence, model.entropy) == pytest.approx(
        rows[-1][1:4], abs=1e-12)
    assert state.lines == {"policy": 45, "checkpoint": 16, "unreadable": 0}
    assert sum(state.errors.values()) == 0


def test_through_the_exporter_and_a_failing_endpoint(logs: Any, samples: Path, s3_endpoint: str,
                                                     tmp_path: Path) -> None:
    text = droa_log(samples)
    put(logs, text.splitlines(), 0)
    model = tmp_path / PREFIX
    model.parent.mkdir(parents=True)
    model.symlink_to(samples / "sample-drfc-1-logs")  # a model folder without export logs
    config = config_from(
        f'listen: "127.0.0.1:0"\nrefresh_interval: 1h\nhistory_max_age: always\n'
        f"cloudwatch: {{endpoint_url: {s3_endpoint}, poll_interval: 1h}}\n"
        f"models:\n  - {{name: droa, directory: {tmp_path}, prefix: {PREFIX}}}\n")
    exporter = exporter_for(config)
    exporter.start(serve=False)
    assert exporter.cloudwatch is not None
    try:
        exporter.cloudwatch.poll()
        got = refresh(exporter)
    finally:
        exporter.stop()
    assert value(got, "deepracer_policy_epochs_total", model="droa") == 45
    per_iteration = {int(dict(k)["iteration"]): v for k, v in
                     pick(got, "deepracer_iteration_policy_entropy", model="droa").items()}
    assert per_iteration == pytest.approx(means(text), abs=1e-12)
    assert value(got, "deepracer_exporter_cloudwatch_lines_total", result="policy") == 45
    assert value(got, "deepracer_exporter_cloudwatch_errors_total", reason="unreachable") == 0

    down = CloudWatchLogs(make_client("us-east-1", None, "http://127.0.0.1:9"), translate_s3,
                          GROUP, poll_interval=3600)
    down.poll()
    assert down.state().errors["unreachable"] == 1 and down.state().models == {}
