"""`deepracer-exporter check`, the first command a user runs against their own bucket or folder:
run as a real process against moto's S3 server and directories of the real sample logs."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

from conftest import upload_dir
from helpers import s3_yaml


def check(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "deepracer_exporter.cli", "check", "--config",
                           str(config), *args], capture_output=True, text=True, timeout=120,
                          env=dict(os.environ))


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.yml"
    path.write_text(text)
    return path


def test_directory_of_downloaded_logs_reports_layouts_and_what_is_missing(
        samples: Path, tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    shutil.copytree(samples / "sample-drfc-1-logs", logs / "drfc1")
    shutil.copytree(samples / "sample-console-logs", logs / "console")
    config = write(tmp_path, f"discover: [{{directory: {logs}}}]\n")
    done = check(config)
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    assert f"model drfc1 ({logs}/drfc1): ok" in out
    assert "layout: deepracer-for-cloud, 1 worker (metrics/TrainingMetrics.json)" in out
    assert "iterations: 28 (latest 27, round 1)" in out
    assert "20 episodes per iteration (from hyperparameters)" in out
    assert "evaluation runs: 3" in out
    assert "simtrace: 27 iterations, 3 evaluation runs" in out  # files 0 to 26
    assert "missing: model/deepracer_checkpoints.json: no last / best checkpoint" in out
    assert f"model console ({logs}/console): ok" in out
    assert "layout: console export (metrics/training/training-20220611205309-" in out
    assert "iterations: 29 (latest 28, round 1)" in out
    assert "missing: ip/hyperparameters.json" in out
    assert f"discover {logs}: listed" in out
    assert out.rstrip().endswith("2 of 2 models read")


def test_old_logs_are_said_to_need_history_max_age_always(samples: Path,
                                                          tmp_path: Path) -> None:
    """Copied with their 2022 modification times, as an unpacked download keeps them."""
    logs = tmp_path / "logs"
    shutil.copytree(samples / "sample-drfc-1-logs", logs / "drfc1")
    for path in (logs / "drfc1").rglob("*"):
        os.utime(path, (1_657_000_000, 1_657_000_000))
    config = write(tmp_path, f"models: [{{directory: {logs}, prefix: drfc1}}]\n")
    assert "give the model 'history_max_age: always'" in check(config).stdout
    config = write(tmp_path, f"models: [{{directory: {logs}, prefix: drfc1, "
                   "history_max_age: always}]\n")
    done = check(config)
    assert done.returncode == 0
    assert "history_max_age" not in done.stdout


def test_a_wrong_prefix_names_the_trainings_that_are_there(samples: Path,
                                                           tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    shutil.copytree(samples / "sample-drfc-1-logs", logs / "drfc1")
    config = write(tmp_path, f"models: [{{directory: {logs}, prefix: rl-deepracer-sagemaker}}]\n")
    done = check(config)
    assert done.returncode == 1
    assert "model rl-deepracer-sagemaker" in done.stdout and "CANNOT READ" in done.stdout
    assert ("what to do: nothing there: check the bucket (or directory) and the prefix"
            in done.stdout)
    assert "trainings found nearby: drfc1 (use one as 'prefix')" in done.stdout
    assert done.stdout.rstrip().endswith("nothing could be read (1 model tried)")


def test_s3_bucket_with_the_configured_credentials(samples: Path, s3: Any, bucket: str,
                                                   s3_endpoint: str, tmp_path: Path) -> None:
    upload_dir(s3, bucket, samples / "sample-drfc-3-logs", "rl-deepracer-sagemaker")
    config = write(tmp_path, s3_yaml(s3_endpoint) +
                   f"models: [{{name: mine, bucket: {bucket}, prefix: rl-deepracer-sagemaker}}]\n")
    done = check(config)
    assert done.returncode == 0, done.stdout + done.stderr
    assert (f"s3 endpoint {s3_endpoint}, credentials: environment (AWS_ACCESS_KEY_ID)"
            in done.stdout)
    assert f"model mine (s3://{bucket}/rl-deepracer-sagemaker): ok" in done.stdout
    assert "layout: deepracer-for-cloud, 3 workers (metrics/TrainingMetrics.json, " \
           "metrics/TrainingMetrics_1.json, metrics/TrainingMetrics_2.json)" in done.stdout


def test_a_bucket_that_does_not_exist_exits_1_with_the_reason(s3_endpoint: str,
                                                              tmp_path: Path) -> None:
    config = write(tmp_path, s3_yaml(s3_endpoint) +
                   "models: [{bucket: no-such-bucket-here, prefix: p}]\n")
    done = check(config)
    assert done.returncode == 1
    assert "model p (s3://no-such-bucket-here/p): CANNOT READ" in done.stdout
    assert "not_found: " in done.stdout and "NoSuchBucket" in done.stdout
    assert "nothing could be read" in done.stdout


def test_an_endpoint_that_is_not_running_exits_1_and_says_so(tmp_path: Path) -> None:
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    config = write(tmp_path, s3_yaml(f"http://127.0.0.1:{port}") +
                   "models: [{bucket: bucket, prefix: p}]\n")
    done = check(config, "--timeout", "30s")
    assert done.returncode == 1
    assert "CANNOT READ" in done.stdout and "unreachable: " in done.stdout
    assert "what to do: cannot connect: is the endpoint (minio) running" in done.stdout


def test_a_directory_that_is_not_there_exits_1_before_reading(tmp_path: Path) -> None:
    config = write(tmp_path, f"models: [{{directory: {tmp_path / 'nope'}, prefix: p}}]\n")
    done = check(config)
    assert done.returncode == 1
    assert f"models[0].directory: directory {tmp_path / 'nope'} does not exist" in done.stderr


def test_an_invalid_file_exits_2(tmp_path: Path) -> None:
    done = check(write(tmp_path, "models: [{bucket: b}]\n"))
    assert done.returncode == 2
    assert "'prefix' (or 'rounds') is required" in done.stderr


def test_a_folder_that_is_itself_one_training_is_named(samples: Path, tmp_path: Path) -> None:
    """An archive unpacked without a folder of its own: discover finds nothing below it, and
    check says how to watch it."""
    logs = tmp_path / "deepracer-logs"
    shutil.copytree(samples / "sample-console-logs", logs)
    done = check(write(tmp_path, f"discover: [{{directory: {logs}}}]\n"))
    assert done.returncode == 1
    assert "no model found" in done.stdout
    assert (f"{logs} is itself a training (discover looks one folder below); watch it as a "
            f"model: models: [{{directory: {tmp_path}, prefix: deepracer-logs}}]") in done.stdout
