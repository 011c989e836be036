"""Sharding: rendezvous hashing gives each model to exactly one replica, and adding a replica
moves only that replica's share; end to end, sharded exporters export every model once."""

from __future__ import annotations

import math
from typing import Any

from deepracer_exporter.config import ModelConfig, ShardConfig
from deepracer_exporter.refresher import owned, shard_owner
from deepracer_exporter.simulate import (
    TrainingSimulator,
    TrainingSpec,
    generate_documents,
    hyperparameters_key,
    key_for,
)
from helpers import config_from, exporter_for, pick, refresh, s3_yaml

KEYS = [f"bucket-{i % 3}/DeepRacer-Model-{i:04d}" for i in range(1000)]


def within(count: int, n: int, p: float, sds: float = 5.0) -> bool:
    return abs(count - n * p) <= sds * math.sqrt(n * p * (1 - p))


def test_every_model_owned_by_exactly_one_replica() -> None:
    for total in range(1, 8):
        owners = [shard_owner(k, total) for k in KEYS]
        assert all(0 <= o < total for o in owners)
        for k in KEYS[:200]:
            model = ModelConfig(name="m", rounds=(k.split("/", 1)[1],), bucket=k.split("/")[0])
            claims = [i for i in range(total) if owned(model, ShardConfig(i, total))]
            assert len(claims) == 1
        for replica in range(total):  # and the split is fair
            assert within(owners.count(replica), len(KEYS), 1 / total)


def test_adding_a_replica_moves_only_its_share_to_it() -> None:
    for total in range(1, 8):
        before = [shard_owner(k, total) for k in KEYS]
        after = [shard_owner(k, total + 1) for k in KEYS]
        moved = [(a, b) for a, b in zip(before, after, strict=True) if a != b]
        assert all(b == total for _, b in moved), "a model moved between old replicas"
        assert within(len(moved), len(KEYS), 1 / (total + 1))


def test_owner_is_stable_and_depends_on_the_key() -> None:
    assert [shard_owner(k, 5) for k in KEYS] == [shard_owner(k, 5) for k in KEYS]
    assert len({shard_owner(k, 5) for k in KEYS[:50]}) == 5
    assert all(shard_owner(k, 1) == 0 for k in KEYS[:50])


def test_sharded_exporters_export_each_discovered_model_once(s3: Any, s3_endpoint: str,
                                                             bucket: str) -> None:
    names = [f"model-{i:02d}" for i in range(12)]
    for i, prefix in enumerate(names):
        spec = TrainingSpec(seed=i, max_episodes=40)
        for w, body in generate_documents(spec, 40).items():
            s3.put_object(Bucket=bucket, Key=key_for(prefix, w), Body=body)
        s3.put_object(Bucket=bucket, Key=hyperparameters_key(prefix),
                      Body=TrainingSimulator(spec).hyperparameters())
    exported: list[set[str]] = []
    for index in range(3):
        config = config_from(s3_yaml(s3_endpoint) + f"discover:\n  - bucket: {bucket}\n"
                             f"shard:\n  index: {index}\n  total: 3\n")
        exporter = exporter_for(config)
        try:
            samples = refresh(exporter)
        finally:
            exporter.refresher.close()
        ok = {dict(labels)["model"] for labels, v in
              pick(samples, "deepracer_exporter_refresh_success").items() if v == 1}
        trained = {dict(labels)["model"] for labels in
                   pick(samples, "deepracer_iteration_episodes", phase="training")}
        assert ok == trained  # every model it owns was read and exported with its iterations
        assert samples[("deepracer_exporter_models", frozenset())] == len(ok)
        expected = {n for n in names
                    if shard_owner(f"{bucket}/{n}", 3) == index}
        assert ok == expected
        exported.append(ok)
    assert set().union(*exported) == set(names)
    assert sum(len(e) for e in exported) == len(names)  # no model exported twice
