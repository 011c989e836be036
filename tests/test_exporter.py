"""Exporter behaviour against a real S3 endpoint: ETags, discovery, bad input, lost nothing."""

from __future__ import annotations

import json
import shutil
import socket
import time
from pathlib import Path
from typing import Any

import pytest

from deepracer_exporter.simulate import TrainingSpec, generate_documents
from helpers import (
    Samples,
    config_from,
    exporter_for,
    parse,
    pick,
    refresh,
    s3_yaml,
    scrape,
    value,
)

DRFC1 = "sample-drfc-1-logs"


def put(s3: Any, bucket: str, key: str, body: bytes) -> None:
    s3.put_object(Bucket=bucket, Key=key, Body=body)


def sample_bytes(samples: Path, name: str = "TrainingMetrics.json") -> bytes:
    return (samples / DRFC1 / "metrics" / name).read_bytes()


def per_iteration(got: Samples, model: str) -> dict[Any, float]:
    return {k: v for k, v in got.items() if k[0].startswith("deepracer_iteration_")
            and ("model", model) in k[1]}


def one_model(s3_endpoint: str, bucket: str, prefix: str = "m", extra: str = "") -> str:
    return (s3_yaml(s3_endpoint) + extra
            + f"models:\n  - name: m\n    bucket: {bucket}\n    prefix: {prefix}\n")


def test_unchanged_objects_are_not_downloaded_again(s3: Any, bucket: str, s3_endpoint: str,
                                                    samples: Path) -> None:
    put(s3, bucket, "m/metrics/TrainingMetrics.json", sample_bytes(samples))
    put(s3, bucket, "m/ip/hyperparameters.json",
        (samples / DRFC1 / "ip/hyperparameters.json").read_bytes())
    exporter = exporter_for(config_from(one_model(s3_endpoint, bucket)))
    first = refresh(exporter)
    assert value(first, "deepracer_exporter_object_requests_total", result="downloaded") == 2
    body_bytes = value(first, "deepracer_exporter_downloaded_bytes_total", model="m")
    derived = exporter.snapshot.models[0].derived
    lists = value(first, "deepracer_exporter_s3_requests_total", operation="ListObjectsV2",
                  status="200")
    for n in range(1, 4):
        got = refresh(exporter)
        assert value(got, "deepracer_exporter_object_requests_total",
                     result="downloaded") == 2
        assert value(got, "deepracer_exporter_object_requests_total",
                     result="not_modified") == 0  # side files: read again only on a change
        # One LIST of metrics/ per refresh and nothing else: its ETags are the ones held.
        assert value(got, "deepracer_exporter_s3_requests_total", operation="ListObjectsV2",
                     status="200") == lists + n
        assert value(got, "deepracer_exporter_s3_requests_total", operation="GetObject",
                     status="200") == 2
        assert value(got, "deepracer_exporter_downloaded_bytes_total", model="m") == body_bytes
        assert exporter.snapshot.models[0].derived is derived  # nothing re-derived
    # A rewrite (the next episode) is downloaded once and changes the numbers.
    doc = json.loads(sample_bytes(samples))
    doc["metrics"] = doc["metrics"][:100]
    put(s3, bucket, "m/metrics/TrainingMetrics.json", json.dumps(doc).encode())
    got = refresh(exporter)
    assert value(got, "deepracer_exporter_object_requests_total", result="downloaded") == 3
    assert value(got, "deepracer_model_iteration", model="m") < value(
        first, "deepracer_model_iteration", model="m")


def test_discovery_finds_a_training_started_while_running(s3: Any, bucket: str,
                                                          s3_endpoint: str,
                                                          samples: Path) -> None:
    put(s3, bucket, "first/metrics/TrainingMetrics.json", sample_bytes(samples))
    put(s3, bucket, "not-a-model/readme.txt", b"no metrics here")
    config = config_from(s3_yaml(s3_endpoint) + "listen: 127.0.0.1:0\nrefresh_interval: 200ms\n"
                         f"discover:\n  - bucket: {bucket}\n")
    exporter = exporter_for(config)
    exporter.start()
    try:
        got = parse(scrape(exporter.port))
        assert set(dict(k)["model"] for k in pick(got, "deepracer_model_info")) == {"first"}
        assert value(got, "deepracer_exporter_discovery_success", source=f"s3://{bucket}/") == 1
        for worker in ("", "_1", "_2"):
            put(s3, bucket, f"second/metrics/TrainingMetrics{worker}.json",
                (samples / "sample-drfc-3-logs/metrics" / f"TrainingMetrics{worker}.json")
                .read_bytes())
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            got = parse(scrape(exporter.port))
            if pick(got, "deepracer_model_workers", model="second"):  # not just pending
                break
            time.sleep(0.1)
        assert value(got, "deepracer_model_workers", model="second") == 3
        assert value(got, "deepracer_model_iteration", model="second") == 23
        assert value(got, "deepracer_exporter_models") == 2
    finally:
        exporter.stop()


BAD_BODIES = {
    "truncated": lambda good: good[: len(good) // 2],
    "empty": lambda good: b"",
    "not_json": lambda good: b"<html>502 Bad Gateway</html>",
    "wrong_shape": lambda good: b'{"metrics": {"episode": 1}}',
    "top_level_list": lambda good: b"[1, 2, 3]",
    "binary": lambda good: b"\x00\xff\xfe" * 100,
}


@pytest.mark.parametrize("case", sorted(BAD_BODIES))
def test_bad_document_keeps_last_good_data(case: str, s3: Any, bucket: str, s3_endpoint: str,
                                           samples: Path,
                                           caplog: pytest.LogCaptureFixture) -> None:
    good = sample_bytes(samples)
    put(s3, bucket, "m/metrics/TrainingMetrics.json", good)
    exporter = exporter_for(config_from(one_model(s3_endpoint, bucket)))
    before = refresh(exporter)
    assert value(before, "deepracer_exporter_refresh_success", model="m") == 1
    assert value(before, "deepracer_exporter_refresh_errors_total", reason="malformed") == 0
    put(s3, bucket, "m/metrics/TrainingMetrics.json", BAD_BODIES[case](good))
    caplog.clear()
    after = refresh(exporter)
    assert value(after, "deepracer_exporter_refresh_success", model="m") == 0
    assert value(after, "deepracer_exporter_refresh_errors_total", reason="malformed") == 1
    assert per_iteration(after, "m") == per_iteration(before, "m")
    assert value(after, "deepracer_exporter_last_refresh_success_timestamp_seconds",
                 model="m") == value(before,
                                     "deepracer_exporter_last_refresh_success_timestamp_seconds",
                                     model="m")
    warnings = [r for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1, [r.getMessage() for r in caplog.records]
    assert "model m" in warnings[0].getMessage()
    assert "TrainingMetrics.json" in warnings[0].getMessage()
    refresh(exporter)  # the same failure again is counted but not logged again
    assert len([r for r in caplog.records if r.levelname == "WARNING"]) == 1
    put(s3, bucket, "m/metrics/TrainingMetrics.json", good)
    healed = refresh(exporter)
    assert value(healed, "deepracer_exporter_refresh_success", model="m") == 1
    assert value(healed, "deepracer_exporter_refresh_errors_total", reason="malformed") == 2


def test_missing_object_and_deleted_prefix(s3: Any, bucket: str, s3_endpoint: str,
                                           samples: Path) -> None:
    put(s3, bucket, "m/metrics/TrainingMetrics.json", sample_bytes(samples))
    exporter = exporter_for(config_from(one_model(s3_endpoint, bucket)))
    before = refresh(exporter)
    s3.delete_object(Bucket=bucket, Key="m/metrics/TrainingMetrics.json")
    after = refresh(exporter)
    assert value(after, "deepracer_exporter_refresh_success", model="m") == 0
    assert value(after, "deepracer_exporter_refresh_errors_total", reason="not_found") == 1
    assert per_iteration(after, "m") == per_iteration(before, "m")


def test_missing_bucket(s3_endpoint: str) -> None:
    exporter = exporter_for(config_from(one_model(s3_endpoint, "no-such-bucket")))
    got = refresh(exporter)
    assert value(got, "deepracer_model_info", model="m") == 1
    assert value(got, "deepracer_exporter_refresh_success", model="m") == 0
    assert value(got, "deepracer_exporter_refresh_errors_total", reason="not_found") == 1
    assert not per_iteration(got, "m")


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_unreachable_endpoint(bucket: str) -> None:
    endpoint = f"http://127.0.0.1:{closed_port()}"
    exporter = exporter_for(config_from(one_model(endpoint, bucket)))
    got = refresh(exporter)
    assert value(got, "deepracer_exporter_refresh_success", model="m") == 0
    assert value(got, "deepracer_exporter_refresh_errors_total", reason="unreachable") == 1
    for reason in ("not_found", "access_denied", "timeout", "server_error", "malformed",
                   "too_large", "other"):
        assert value(got, "deepracer_exporter_refresh_errors_total", reason=reason) == 0


def test_object_over_size_limit(s3: Any, bucket: str, s3_endpoint: str, samples: Path) -> None:
    put(s3, bucket, "m/metrics/TrainingMetrics.json", sample_bytes(samples))
    exporter = exporter_for(config_from(one_model(s3_endpoint, bucket,
                                                  extra="max_object_bytes: 1000\n")))
    got = refresh(exporter)
    assert value(got, "deepracer_exporter_refresh_errors_total", reason="too_large") == 1
    assert value(got, "deepracer_exporter_downloaded_bytes_total", model="m") == 0


def test_invalid_records_are_skipped_and_counted(s3: Any, bucket: str, s3_endpoint: str,
                                                 samples: Path) -> None:
    doc = json.loads(sample_bytes(samples))
    records = doc["metrics"]
    broken = [dict(records[0], reward_score="NaN"), {"episode": 3},
              dict(records[1], completion_percentage=250),
              dict(records[2], episode=-4), dict(records[3], phase="warmup"), "not a record"]
    doc["metrics"] = records + broken
    put(s3, bucket, "m/metrics/TrainingMetrics.json", json.dumps(doc).encode())
    got = refresh(exporter_for(config_from(one_model(s3_endpoint, bucket))))
    assert value(got, "deepracer_exporter_refresh_success", model="m") == 1
    assert value(got, "deepracer_model_skipped_records", model="m") == len(broken)
    episodes = sum(pick(got, "deepracer_model_episodes_total", model="m").values())
    assert episodes == len(records)


def test_restarted_training_replaces_old_run(s3: Any, bucket: str, s3_endpoint: str,
                                             samples: Path) -> None:
    put(s3, bucket, "m/metrics/TrainingMetrics.json", sample_bytes(samples))
    exporter = exporter_for(config_from(one_model(s3_endpoint, bucket)))
    refresh(exporter)
    restarted = generate_documents(TrainingSpec(episodes_between_training=20, seed=5), 60)[0]
    put(s3, bucket, "m/metrics/TrainingMetrics.json", restarted)
    got = refresh(exporter)
    assert value(got, "deepracer_model_iteration", model="m") == 2
    training = sum(pick(got, "deepracer_model_episodes_total", model="m",
                        phase="training").values())
    assert training == 60
    assert {dict(k)["iteration"] for k in pick(got, "deepracer_iteration_episodes",
                                               model="m")} == {"0", "1", "2"}


def two_models(s3: Any, bucket: str, s3_endpoint: str, samples: Path) -> Any:
    """An exporter watching models "a" and "b", both the one-worker sample."""
    for prefix in ("a", "b"):
        put(s3, bucket, f"{prefix}/metrics/TrainingMetrics.json", sample_bytes(samples))
    return exporter_for(config_from(s3_yaml(s3_endpoint)
                                    + f"models:\n  - bucket: {bucket}\n    prefix: a\n"
                                    f"  - bucket: {bucket}\n    prefix: b\n"))


def test_vanished_model_vanishes_from_metrics(s3: Any, bucket: str, s3_endpoint: str,
                                              samples: Path) -> None:
    exporter = two_models(s3, bucket, s3_endpoint, samples)
    got = refresh(exporter)
    assert pick(got, "deepracer_iteration_reward", model="b")
    exporter.refresher.reconfigure(config_from(one_model(s3_endpoint, bucket, prefix="a")
                                               .replace("name: m", "name: a")))
    got = refresh(exporter)
    assert pick(got, "deepracer_iteration_reward", model="a")
    assert not [k for k in got if ("model", "b") in k[1]]


def test_iteration_cap_keeps_latest(s3: Any, bucket: str, s3_endpoint: str,
                                    samples: Path) -> None:
    put(s3, bucket, "m/metrics/TrainingMetrics.json", sample_bytes(samples))
    got = refresh(exporter_for(config_from(one_model(s3_endpoint, bucket,
                                                     extra="max_iterations: 5\n"))))
    iterations = {int(dict(k)["iteration"])
                  for k in pick(got, "deepracer_iteration_episodes", model="m")}
    assert iterations == {23, 24, 25, 26, 27}
    assert value(got, "deepracer_model_iteration", model="m") == 27


def test_directory_source_equals_s3(s3: Any, bucket: str, s3_endpoint: str, samples: Path,
                                    tmp_path: Path) -> None:
    shutil.copytree(samples / DRFC1, tmp_path / "m")
    put(s3, bucket, "m/metrics/TrainingMetrics.json", sample_bytes(samples))
    put(s3, bucket, "m/ip/hyperparameters.json",
        (samples / DRFC1 / "ip/hyperparameters.json").read_bytes())
    simtrace = sorted((samples / DRFC1 / "training-simtrace").glob("*-iteration.csv"))
    for path in simtrace:
        put(s3, bucket, f"m/training-simtrace/{path.name}", path.read_bytes())
    from_s3 = refresh(exporter_for(config_from(one_model(s3_endpoint, bucket))))
    # copytree keeps the sample's 2022 modification times; S3 dates the upload now.
    local = config_from(f"models:\n  - name: m\n    directory: {tmp_path}\n    prefix: m\n"
                        f"    history_max_age: always\n")
    exporter = exporter_for(local)
    from_dir = refresh(exporter)
    assert per_iteration(from_dir, "m") == per_iteration(from_s3, "m")
    assert value(from_dir, "deepracer_model_info", source="directory") == 1
    again = refresh(exporter)
    metrics_files = len(list((tmp_path / "m" / "metrics").glob("*.json")))  # training + 3 runs
    assert metrics_files == 4
    # Nothing read again; its files are years old, so it is polled every max_refresh_interval.
    assert (value(again, "deepracer_exporter_object_requests_total", result="downloaded")
            == value(from_dir, "deepracer_exporter_object_requests_total", result="downloaded")
            > metrics_files + len(simtrace))
    assert value(again, "deepracer_exporter_refresh_interval_seconds", model="m") == 600


def test_empty_metrics_document_of_a_training_just_started(s3: Any, bucket: str,
                                                            s3_endpoint: str) -> None:
    put(s3, bucket, "m/metrics/TrainingMetrics.json", b'{"metrics": []}')
    got = refresh(exporter_for(config_from(one_model(s3_endpoint, bucket))))
    assert value(got, "deepracer_exporter_refresh_success", model="m") == 1
    assert not pick(got, "deepracer_model_iteration", model="m")
    assert sum(pick(got, "deepracer_model_episodes_total", model="m").values()) == 0


def test_unchanged_models_are_not_rendered_again(s3: Any, bucket: str, s3_endpoint: str,
                                                 samples: Path) -> None:
    """The per-iteration text of a model is reused while its data is unchanged, and the
    gzip body (concatenated members) decodes to exactly the plain body."""
    import gzip

    exporter = two_models(s3, bucket, s3_endpoint, samples)
    first = refresh(exporter)
    renderer = exporter.exposition.iterations
    chunks_a, chunks_b = renderer._cache["a"], renderer._cache["b"]
    doc = json.loads(sample_bytes(samples))
    doc["metrics"] = doc["metrics"][:200]
    put(s3, bucket, "b/metrics/TrainingMetrics.json", json.dumps(doc).encode())
    second = refresh(exporter)
    assert renderer._cache["a"] is chunks_a  # unchanged: not rendered again
    assert renderer._cache["b"] is not chunks_b
    assert per_iteration(second, "a") == per_iteration(first, "a")
    assert per_iteration(second, "b") != per_iteration(first, "b")
    rendered = exporter.exposition.rendered
    assert gzip.decompress(rendered.gzipped) == rendered.plain
    for name in {k[0] for k in per_iteration(second, "a")}:  # one HELP per family
        assert rendered.plain.count(f"# HELP {name} ".encode()) == 1


def test_unchanged_simtrace_families_are_not_rendered_again(samples: Path,
                                                           tmp_path: Path) -> None:
    """A model's simtrace families (a sample per iteration: simulator health, training
    analysis) are kept as text while its simtrace figures are unchanged: a finished model costs
    no formatting per refresh. The text is the catalogue's samples, each family once."""
    import gzip

    from deepracer_exporter.catalogue import SIMTRACE_FAMILIES

    shutil.copytree(samples / "sample-drfc-1-logs", tmp_path / "a")
    exporter = exporter_for(config_from(
        f"history_max_age: always\nmodels:\n  - {{name: a, directory: {tmp_path}, prefix: a}}\n"))
    first = refresh(exporter)
    renderer = exporter.exposition.simtrace
    chunk = renderer._cache["a"]
    counts = {f.name: len(pick(first, f.name, model="a")) for f in SIMTRACE_FAMILIES}
    assert sum(counts.values()) > 100, counts  # the sample has simtrace (no wall clock)
    assert chunk.samples == sum(counts.values())
    second = refresh(exporter)
    assert renderer._cache["a"] is chunk  # unchanged: not rendered again
    for f in SIMTRACE_FAMILIES:
        assert pick(second, f.name, model="a") == pick(first, f.name, model="a")
    rendered = exporter.exposition.rendered
    assert gzip.decompress(rendered.gzipped) == rendered.plain
    for f in SIMTRACE_FAMILIES:
        assert rendered.plain.count(f"# HELP {f.name} ".encode()) == 1


@pytest.mark.parametrize("source", ["s3", "directory"])
def test_grown_file_is_read_by_its_tail(source: str, s3: Any, bucket: str, s3_endpoint: str,
                                        tmp_path: Path) -> None:
    """A document rewritten with more episodes is read with one ranged GET of the new records;
    the result equals a full read, and anything that is not an append is read in full."""
    from deepracer_exporter.simulate import TrainingSimulator

    sim = TrainingSimulator(TrainingSpec(episodes_between_training=10, workers=1, seed=31))
    key = "m/metrics/TrainingMetrics.json"

    def write(body: bytes) -> None:
        if source == "s3":
            put(s3, bucket, key, body)
        else:
            (tmp_path / key).parent.mkdir(parents=True, exist_ok=True)
            (tmp_path / key).write_bytes(body)
            time.sleep(0.01)  # a new mtime, as a real rewrite has

    def config_text() -> str:
        if source == "s3":
            return one_model(s3_endpoint, bucket)
        return f"models:\n  - name: m\n    directory: {tmp_path}\n    prefix: m\n"

    sim.advance(120)
    write(sim.document(0))
    exporter = exporter_for(config_from(config_text()))
    refresh(exporter)
    for n, grow in enumerate((1, 7, 33), start=1):
        sim.advance(grow)
        write(sim.document(0))
        got = refresh(exporter)
        assert value(got, "deepracer_exporter_object_requests_total", result="tail") == n
        assert value(got, "deepracer_exporter_object_requests_total", result="downloaded") == 1
        full = refresh(exporter_for(config_from(config_text())))
        assert per_iteration(got, "m") == per_iteration(full, "m")
    # Not an append (a restarted training, longer than before): read in full.
    restarted = TrainingSimulator(TrainingSpec(episodes_between_training=10, seed=32))
    restarted.advance(200)
    write(restarted.document(0))
    got = refresh(exporter)
    assert value(got, "deepracer_exporter_object_requests_total", result="tail") == 3
    assert value(got, "deepracer_exporter_object_requests_total", result="downloaded") == 2
    assert per_iteration(got, "m") == per_iteration(
        refresh(exporter_for(config_from(config_text()))), "m")
