"""Console and DeepRacer-on-AWS exports: the trainer's log file beside the metrics gives the
policy families, from a directory and from S3, read once."""

from __future__ import annotations

import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from conftest import upload_dir
from deepracer_exporter.app import Exporter
from helpers import config_from, exporter_for, pick, refresh, s3_yaml, value
from test_policylog import CONSOLE_LOG, printed

CONSOLE = "sample-console-logs"
DROA = "30wm3cccH9SOOML"  # the model folder inside sample-continous-action-logs.tar.gz


@pytest.fixture(scope="module")
def exports(samples: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The console export as the sdist has it and the DRoA export unpacked beside it."""
    root = tmp_path_factory.mktemp("exports")
    (root / CONSOLE).symlink_to(samples / CONSOLE)
    with tarfile.open(samples / "sample-continous-action-logs.tar.gz") as tar:
        tar.extractall(root, filter="data")
    return root


def expected(log: Path) -> tuple[dict[int, float], tuple[float, float, float], int]:
    """Per iteration the mean of its printed entropies; the last line's loss, KL, entropy."""
    rows = printed(log.read_text())
    by: dict[int, list[float]] = {}
    for iteration, _, _, entropy, _ in rows:
        by.setdefault(iteration, []).append(entropy)
    return ({i: float(np.mean(e)) for i, e in by.items()}, rows[-1][1:4], len(rows))


def droa_log(exports: Path) -> Path:
    return next((exports / DROA / "logs" / "training").glob("*-training.log"))


def check(got: Any, model: str, log: Path) -> None:
    means, (loss, kl, entropy), lines = expected(log)
    per_iteration = {int(dict(k)["iteration"]): v for k, v in
                     pick(got, "deepracer_iteration_policy_entropy", model=model).items()}
    assert sorted(per_iteration) == sorted(means)
    for iteration, mean in means.items():
        assert per_iteration[iteration] == pytest.approx(mean, abs=1e-12)
    assert value(got, "deepracer_policy_entropy", model=model) == pytest.approx(entropy, abs=1e-12)
    assert value(got, "deepracer_policy_kl_divergence", model=model) == pytest.approx(kl,
                                                                                     abs=1e-12)
    assert value(got, "deepracer_policy_surrogate_loss", model=model) == pytest.approx(loss,
                                                                                      abs=1e-12)
    assert value(got, "deepracer_policy_epochs_total", model=model) == lines


@pytest.fixture
def directory_exporter(exports: Path) -> Iterator[Exporter]:
    config = config_from(f'listen: "127.0.0.1:0"\nrefresh_interval: 1h\n'
                         f"history_max_age: always\nmodels:\n"
                         f"  - {{name: console, directory: {exports}, prefix: {CONSOLE}}}\n"
                         f"  - {{name: droa, directory: {exports}, prefix: {DROA}}}\n")
    exporter = exporter_for(config)
    exporter.start(serve=False)
    yield exporter
    exporter.stop()


def test_export_logs_in_a_directory_give_the_policy_families(directory_exporter: Exporter,
                                                              samples: Path,
                                                              exports: Path) -> None:
    got = refresh(directory_exporter)
    check(got, "console", samples / CONSOLE_LOG)
    check(got, "droa", droa_log(exports))
    # the iterations are the metrics' own: every one with an update has training episodes
    trained = {int(dict(k)["iteration"]) for k in
               pick(got, "deepracer_iteration_policy_entropy", model="console")}
    assert trained == set(range(28))
    assert value(got, "deepracer_model_iteration", model="console") == 28


def test_export_logs_in_s3_are_read_once(s3: Any, bucket: str, s3_endpoint: str,
                                         exports: Path, samples: Path) -> None:
    upload_dir(s3, bucket, samples / CONSOLE, "exports/console")
    upload_dir(s3, bucket, exports / DROA, "exports/droa")
    config = config_from(s3_yaml(s3_endpoint) + 'listen: "127.0.0.1:0"\nrefresh_interval: 1h\n'
                         "history_max_age: always\nmodels:\n"
                         f"  - {{name: console, bucket: {bucket}, prefix: exports/console}}\n"
                         f"  - {{name: droa, bucket: {bucket}, prefix: exports/droa}}\n")
    exporter = exporter_for(config)
    exporter.start(serve=False)
    try:
        first = refresh(exporter)
        check(first, "console", samples / CONSOLE_LOG)
        check(first, "droa", droa_log(exports))
        downloaded = value(first, "deepracer_exporter_object_requests_total", model="console",
                           result="downloaded")
        again = refresh(exporter)
        check(again, "console", samples / CONSOLE_LOG)
        assert value(again, "deepracer_exporter_object_requests_total", model="console",
                     result="downloaded") == downloaded
    finally:
        exporter.stop()


def test_a_model_without_export_logs_has_no_policy_series(directory_exporter: Exporter,
                                                          samples: Path) -> None:
    config = config_from(f'listen: "127.0.0.1:0"\nmodels:\n'
                         f"  - {{name: drfc, directory: {samples}, prefix: sample-drfc-1-logs}}\n")
    exporter = exporter_for(config)
    exporter.start(serve=False)
    try:
        got = refresh(exporter)
        assert not pick(got, "deepracer_policy_entropy", model="drfc")
        assert value(got, "deepracer_exporter_refresh_success", model="drfc") == 1
    finally:
        exporter.stop()
