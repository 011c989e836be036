"""Evaluation runs, model metadata, hyperparameters, checkpoints and the console/DRoA layout,
read from the real samples through the real S3 endpoint. Expected values come from the raw
JSON in the test, not from the exporter's own parsing code."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from conftest import upload_dir
from helpers import config_from, exporter_for, pick, refresh, s3_yaml, value


def eval_expectations(path: Path) -> dict[str, float]:
    records = json.loads(path.read_bytes())["metrics"]
    laps = [r["elapsed_time_in_milliseconds"] / 1000 for r in records
            if r["completion_percentage"] == 100 or r["episode_status"] == "Lap complete"]
    out = {"trials": len(records), "laps": len(laps),
           "completion": sum(r["completion_percentage"] for r in records) / len(records) / 100,
           "off_track": sum(r.get("off_track_count", 0) for r in records)}
    if laps:
        out["best"] = min(laps)
        out["mean"] = sum(laps) / len(laps)
    return out


def model_config(endpoint: str, bucket: str, entries: dict[str, str], extra: str = "") -> Any:
    models = "".join(f"  - name: {name}\n    bucket: {bucket}\n    prefix: {prefix}\n"
                     for name, prefix in entries.items())
    return config_from(s3_yaml(endpoint) + extra + "models:\n" + models)


def test_drfc_evaluation_runs_metadata_and_hyperparameters(s3: Any, bucket: str,
                                                           s3_endpoint: str,
                                                           samples: Path) -> None:
    local = samples / "sample-drfc-1-logs"
    upload_dir(s3, bucket, local, "drfc1")
    got = refresh(exporter_for(model_config(s3_endpoint, bucket, {"drfc1": "drfc1"})))
    files = sorted((local / "metrics").glob("EvaluationMetrics-*.json"))
    assert value(got, "deepracer_evaluation_runs", model="drfc1") == len(files) == 3
    best = []
    for path in files:
        run = path.stem.split("-", 1)[1]
        want = eval_expectations(path)
        assert value(got, "deepracer_evaluation_trials", run=run) == want["trials"]
        assert value(got, "deepracer_evaluation_completed_laps", run=run) == want["laps"]
        assert value(got, "deepracer_evaluation_completion_ratio", run=run) == pytest.approx(
            want["completion"])
        assert value(got, "deepracer_evaluation_lap_seconds", run=run, stat="min") == \
            pytest.approx(want["best"])
        assert value(got, "deepracer_evaluation_lap_seconds", run=run, stat="mean") == \
            pytest.approx(want["mean"])
        assert value(got, "deepracer_evaluation_resets", run=run, reason="off_track") == \
            want["off_track"]
        best.append(want["best"])
    assert value(got, "deepracer_model_best_evaluation_lap_seconds", model="drfc1") == \
        pytest.approx(min(best))
    meta = json.loads((local / "model/model_metadata.json").read_bytes())
    (labels,) = pick(got, "deepracer_model_metadata_info", model="drfc1")
    labels_d = dict(labels)
    assert labels_d["action_count"] == str(len(meta["action_space"]))
    assert labels_d["sensors"] == ",".join(sorted(meta["sensor"]))
    assert labels_d["training_algorithm"] == meta.get("training_algorithm", "clipped_ppo")
    speeds = [a["speed"] for a in meta["action_space"]]
    assert value(got, "deepracer_model_action_space", bound="speed_max") == max(speeds)
    hyper = json.loads((local / "ip/hyperparameters.json").read_bytes())
    for name in ("batch_size", "lr", "discount_factor", "num_episodes_between_training"):
        assert value(got, "deepracer_model_hyperparameter", name=name) == hyper[name]
    assert value(got, "deepracer_model_hyperparameters_info", model="drfc1",
                 loss_type=hyper["loss_type"]) == 1
    assert value(got, "deepracer_exporter_refresh_success", model="drfc1") == 1


@pytest.mark.parametrize("sample", ["sample-console-logs", "sample-droa-solution-logs"])
def test_console_and_droa_export_layouts(sample: str, s3: Any, bucket: str, s3_endpoint: str,
                                         samples: Path) -> None:
    local = samples / sample
    upload_dir(s3, bucket, local, "exported")
    training = json.loads(next((local / "metrics/training").glob("*.json")).read_bytes())
    records = training["metrics"]
    got = refresh(exporter_for(model_config(s3_endpoint, bucket, {"exported": "exported"})))
    assert value(got, "deepracer_exporter_refresh_success", model="exported") == 1
    train_episodes = sum(1 for r in records if r["phase"] == "training")
    assert sum(pick(got, "deepracer_model_episodes_total", model="exported",
                    phase="training").values()) == train_episodes
    epi = max(r["trial"] for r in records)
    assert value(got, "deepracer_model_iteration", model="exported") == \
        (max(r["episode"] for r in records if r["phase"] == "training") - 1) // epi
    eval_files = sorted((local / "metrics/evaluation").glob("*.json"))
    assert value(got, "deepracer_evaluation_runs", model="exported") == len(eval_files)
    best = [eval_expectations(p).get("best") for p in eval_files]
    finite = [b for b in best if b is not None]
    if finite:
        assert value(got, "deepracer_model_best_evaluation_lap_seconds",
                     model="exported") == pytest.approx(min(finite))


def test_checkpoints_and_bounded_runs(s3: Any, bucket: str, s3_endpoint: str,
                                      samples: Path) -> None:
    upload_dir(s3, bucket, samples / "sample-drfc-1-logs", "m")
    checkpoints = {"last_checkpoint": {"name": "27_Step-20313.ckpt", "time_stamp": 2791.2,
                                       "avg_eval_metric": 100.0},
                   "best_checkpoint": {"name": "25_Step-18764.ckpt", "time_stamp": 2612.9,
                                       "avg_eval_metric": 96.5}}
    s3.put_object(Bucket=bucket, Key="m/model/deepracer_checkpoints.json",
                  Body=json.dumps(checkpoints).encode())
    exporter = exporter_for(model_config(s3_endpoint, bucket, {"m": "m"},
                                         extra="max_evaluation_runs: 2\n"))
    got = refresh(exporter)
    assert value(got, "deepracer_model_checkpoint", kind="last") == 27
    assert value(got, "deepracer_model_checkpoint", kind="best") == 25
    assert value(got, "deepracer_model_checkpoint_eval_metric", kind="last") == 100.0
    assert value(got, "deepracer_model_checkpoint_eval_metric", kind="best") == 96.5
    assert value(got, "deepracer_model_checkpoint_timestamp_seconds", model="m") > 1.6e9
    runs = {dict(k)["run"] for k in pick(got, "deepracer_evaluation_trials", model="m")}
    assert runs == {"20220709200509", "20220709200711"}  # the newest two of three
    assert value(got, "deepracer_evaluation_runs", model="m") == 3
    # A broken side file is counted but does not fail the model or erase its last value.
    s3.put_object(Bucket=bucket, Key="m/model/deepracer_checkpoints.json", Body=b"{trunc")
    exporter.reload(exporter.refresher.config)  # side files: read again on a reload
    got = refresh(exporter)
    assert value(got, "deepracer_exporter_refresh_success", model="m") == 1
    assert value(got, "deepracer_exporter_refresh_errors_total", reason="malformed") == 1
    assert value(got, "deepracer_model_checkpoint", kind="last") == 27
