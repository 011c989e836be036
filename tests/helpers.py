"""Test helpers: run the exporter against a config and read its exposition back."""

from __future__ import annotations

import os
import shutil
import urllib.request
from typing import Any

import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from deepracer_exporter.app import Exporter, StoreFactory, make_s3_client
from deepracer_exporter.config import Config, parse_config
from deepracer_exporter.simulate import TrainingSimulator, TrainingSpec, key_for

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def config_from(text: str, env: dict[str, str] | None = None) -> Config:
    return parse_config(text, "test.yml", env or {})


def s3_yaml(endpoint: str) -> str:
    return (f"s3:\n  endpoint_url: {endpoint}\n  region: us-east-1\n"
            f"  connect_timeout: 2s\n  read_timeout: 5s\n  max_attempts: 1\n")


def exporter_for(config: Config) -> Exporter:
    return Exporter(config, StoreFactory(lambda: make_s3_client(config.s3)),
                    registry=CollectorRegistry())


def parse(text: str) -> Samples:
    out: Samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def scrape(port: int, path: str = "/metrics") -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as resp:
        body: bytes = resp.read()
    return body.decode()


def refresh(exporter: Exporter) -> Samples:
    exporter.refresher.refresh_once()
    return parse(exporter.exposition.rendered.plain.decode())


def pick(samples: Samples, name: str, /, **labels: Any) -> dict[frozenset[tuple[str, str]], float]:
    """All samples of `name` whose labels include `labels`."""
    want = {(k, str(v)) for k, v in labels.items()}
    return {lab: v for (n, lab), v in samples.items() if n == name and want <= lab}


def value(samples: Samples, name: str, /, **labels: Any) -> float:
    found = pick(samples, name, **labels)
    assert len(found) == 1, f"{name}{labels}: expected one sample, found {len(found)}"
    return next(iter(found.values()))


def require_tool(name: str, package: str) -> str:
    """Path of a Debian tool the tests need; a missing one fails (setup installs it)."""
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} not found on PATH: run ./scripts/setup.sh test "
                    f"(apt-get install {package})")
    return path


class Training:
    """A simulated training in S3, its document rewritten per step as DRfC does."""

    def __init__(self, s3: Any, bucket: str, prefix: str, seed: int = 1,
                 episodes: int = 60) -> None:
        self.s3, self.bucket, self.prefix = s3, bucket, prefix
        self.sim = TrainingSimulator(TrainingSpec(episodes_between_training=10, seed=seed))
        s3.put_object(Bucket=bucket, Key=f"{prefix}/ip/hyperparameters.json",
                      Body=self.sim.hyperparameters())
        self.advance(episodes)

    def advance(self, episodes: int) -> None:
        self.sim.advance(episodes)
        self.s3.put_object(Bucket=self.bucket, Key=key_for(self.prefix, 0),
                           Body=self.sim.document(0))

    @property
    def last_iteration(self) -> int:
        return self.sim.iterations - 1


def permissions_applied() -> list[str]:
    """An argv prefix that runs a command with file permissions applied to it. Root reads any
    folder, so as root the command keeps uid 0 (it can still import the package from wherever the
    checkout lives, a private 0700 folder included) but loses the two capabilities that bypass
    permission checks, as an ordinary owner would."""
    if os.geteuid() != 0:
        return []
    caps = "-dac_override,-dac_read_search"
    return ["setpriv", f"--bounding-set={caps}", f"--inh-caps={caps}"]
