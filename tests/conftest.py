"""Shared fixtures: a real S3 endpoint over HTTP (moto's server) used through boto3."""

from __future__ import annotations

import itertools
import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parent.parent

# boto3 must never find real credentials or a real region on a developer machine.
os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
os.environ.pop("AWS_PROFILE", None)

_bucket_ids = itertools.count()
logging.getLogger("werkzeug").setLevel(logging.WARNING)  # moto logs every request


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture(scope="session")
def s3_settings(s3_endpoint: str) -> Any:
    from deepracer_exporter.config import S3Settings

    return S3Settings(endpoint_url=s3_endpoint, region="us-east-1", connect_timeout=2,
                      read_timeout=5, max_attempts=1)


@pytest.fixture(scope="session")
def s3(s3_settings: Any) -> Any:
    from deepracer_exporter.app import make_s3_client

    return make_s3_client(s3_settings)


@pytest.fixture
def bucket(s3: Any) -> str:
    """A fresh, empty bucket for one test."""
    name = f"test-{os.getpid()}-{next(_bucket_ids)}"
    s3.create_bucket(Bucket=name)
    return name


def upload_dir(s3: Any, bucket: str, local: Path, prefix: str) -> list[str]:
    """Upload a directory tree (e.g. a sample model folder) under `prefix`; returns the keys."""
    keys = []
    for path in sorted(local.rglob("*")):
        if path.is_file():
            key = f"{prefix}/{path.relative_to(local).as_posix()}"
            s3.put_object(Bucket=bucket, Key=key, Body=path.read_bytes())
            keys.append(key)
    return keys


@pytest.fixture(scope="session")
def samples() -> Path:
    """deepracer-utils' real sample logs (its sdist's tests/deepracer/logs/), cached per user."""
    from samples import SampleDataError, sample_logs

    try:
        return sample_logs()
    except SampleDataError as exc:
        pytest.fail(f"sample data unavailable: {exc}", pytrace=False)


# The edit-test loop's tier (`make test-fast`, about half a minute): unit, parsing and derivation
# tests that need no server but the in-process S3 endpoint. `make test` runs everything.
FAST_MODULES = frozenset({
    "test_catalogue", "test_config", "test_decode", "test_derive", "test_history",
    "test_layouts_and_sidefiles", "test_samples", "test_shard", "test_simtrace",
    "test_simulate", "test_tail", "test_webconfig",
})


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if item.module is not None and item.module.__name__ in FAST_MODULES:
            item.add_marker(pytest.mark.fast)
