"""What the exporter requests when (issue 29): a finished or idle model backs off and wakes up
when written again, side files are read again when they change, discovery re-checks prefixes
that are not models rarely, and every S3 request is counted as the server counts it."""

from __future__ import annotations

import json
import urllib.parse
from collections import Counter
from pathlib import Path
from typing import Any

from deepracer_exporter.config import DiscoverConfig, ModelConfig
from deepracer_exporter.modelcache import DeriveSettings, ModelCache
from deepracer_exporter.polling import DISCOVER_CYCLES, IDLE_AFTER, RECHECKS, SAFETY_NET
from deepracer_exporter.refresher import Refresher
from deepracer_exporter.simulate import TrainingSimulator, TrainingSpec, key_for
from deepracer_exporter.sources import DirectoryStore, Fetched, ObjectInfo
from faultproxy import FaultProxy
from helpers import config_from, exporter_for, parse, refresh, s3_yaml, value


class CountingStore:
    """A directory store noting every listing and read, as (operation, key or prefix)."""

    def __init__(self, root: Path, calls: list[tuple[str, str]]) -> None:
        self.inner = DirectoryStore(root)
        self.calls = calls

    def describe(self, key: str) -> str:
        return self.inner.describe(key)

    def budget(self, size: int) -> float:
        return self.inner.budget(size)

    def list_objects(self, prefix: str) -> list[ObjectInfo]:
        self.calls.append(("list", prefix))
        return self.inner.list_objects(prefix)

    def list_children(self, prefix: str) -> list[str]:
        self.calls.append(("children", prefix))
        return self.inner.list_children(prefix)

    def get(self, key: str, etag: str | None, max_bytes: int) -> Fetched:
        self.calls.append(("get", key))
        return self.inner.get(key, etag, max_bytes)

    def get_range(self, key: str, start: int, etag: str) -> Fetched | None:
        self.calls.append(("range", key))
        return self.inner.get_range(key, start, etag)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def write_training(root: Path, prefix: str, episodes: int, max_episodes: int, seed: int = 1
                   ) -> TrainingSimulator:
    sim = TrainingSimulator(TrainingSpec(episodes_between_training=10, workers=1, seed=seed,
                                         max_episodes=max_episodes))
    sim.advance(episodes)
    for key, body in {**sim.take_files(prefix), key_for(prefix, 0): sim.document(0)}.items():
        path = root / key
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(body)
    return sim


def training_episodes(derived: Any) -> int:
    return sum(n for (phase, _), n in derived.episodes_by_status.items() if phase == "training")


def refresher(root: Path, calls: list[tuple[str, str]], text: str, clock: Clock | None = None
              ) -> Refresher:
    def stores(_where: ModelConfig | DiscoverConfig) -> CountingStore:
        return CountingStore(root, calls)

    extra = {"monotonic": clock} if clock is not None else {}
    return Refresher(config_from(text), stores, **extra)


def model_calls(calls: list[tuple[str, str]], prefix: str) -> list[tuple[str, str]]:
    return [c for c in calls if c[1].startswith(f"{prefix}/")]


def test_a_finished_model_backs_off_at_once_and_wakes_up_when_written_again(
        tmp_path: Path) -> None:
    """Reached its episode limit: listed every max_refresh_interval from its first refresh on,
    nothing else read; a training restarted on it is seen at that listing and from then on it
    is refreshed every cycle again."""
    write_training(tmp_path, "done", 40, max_episodes=40)
    write_training(tmp_path, "live", 25, max_episodes=10**6, seed=2)
    calls: list[tuple[str, str]] = []
    text = (f"refresh_interval: 15s\nmax_refresh_interval: 1m\nmodels:\n"
            f"  - {{name: done, directory: {tmp_path}, prefix: done}}\n"
            f"  - {{name: live, directory: {tmp_path}, prefix: live}}\n")
    r = refresher(tmp_path, calls, text)
    first = r.refresh_once()
    done = next(m for m in first.models if m.name == "done")
    assert done.derived is not None and done.derived.finished
    assert done.health.poll_interval == 60
    for cycle in range(1, 4):  # 1m / 15s = 4 cycles: three with no request at all
        calls.clear()
        snap = r.refresh_once()
        assert model_calls(calls, "done") == [], cycle
        assert model_calls(calls, "live") == [("list", "live/metrics/")], cycle
        assert next(m for m in snap.models if m.name == "done") is done  # kept as published
    calls.clear()
    r.refresh_once()  # the fourth: one listing, its ETags as held, nothing read
    assert model_calls(calls, "done") == [("list", "done/metrics/")]
    # The same prefix trained again from episode 1 with a higher limit.
    write_training(tmp_path, "done", 15, max_episodes=10**6, seed=3)
    seen_at = None
    for cycle in range(1, 5):
        snap = r.refresh_once()
        model = next(m for m in snap.models if m.name == "done")
        assert model.derived is not None
        if training_episodes(model.derived) == 15:
            seen_at = cycle
            break
    assert seen_at == 4  # within max_refresh_interval
    assert model.health.poll_interval == 15 and not model.derived.finished
    calls.clear()
    r.refresh_once()
    assert model_calls(calls, "done") == [("list", "done/metrics/")]  # every cycle again


def test_an_unchanged_model_backs_off_after_idle_after_and_wakes_on_a_change(
        tmp_path: Path) -> None:
    """Not finished but unchanged (stopped early): refreshed every cycle for IDLE_AFTER, then
    its interval doubles up to max_refresh_interval; a change brings it back at once."""
    write_training(tmp_path, "m", 25, max_episodes=10**6)
    clock = Clock()
    clock.now = 0.0
    written = (tmp_path / key_for("m", 0)).stat().st_mtime
    cache = ModelCache(ModelConfig(name="m", rounds=("m",), directory=str(tmp_path)),
                       DirectoryStore(tmp_path), DeriveSettings(max_refresh_interval=600),
                       clock=lambda: written + clock.now, monotonic=clock)
    assert cache.refresh().health.poll_interval == 15
    intervals = []
    while clock.now < IDLE_AFTER + 2000:
        clock.now += 15
        if cache.due():
            intervals.append(cache.refresh().health.poll_interval)
    assert intervals[0] == 15 and intervals[-1] == 600
    assert intervals == sorted(intervals)  # only grows while nothing changes
    assert 30 in intervals and 60 in intervals  # doubling, not a jump
    sim = TrainingSimulator(TrainingSpec(episodes_between_training=10, workers=1, seed=1))
    sim.advance(26)
    (tmp_path / key_for("m", 0)).write_bytes(sim.document(0))
    cycles = 0
    while not cache.due():
        cycles += 1
    assert cycles < 600 / 15
    snap = cache.refresh()
    assert snap.health.poll_interval == 15
    assert snap.derived is not None and training_episodes(snap.derived) == 26


def test_side_files_are_read_again_when_they_change(tmp_path: Path) -> None:
    """The checkpoint index with a new iteration; the hyperparameters when the training is
    replaced (its metrics document shrank); the model metadata, changed alone, at the safety
    net. Between those, a refresh of a growing training reads no side file."""
    sim = write_training(tmp_path, "m", 25, max_episodes=10**6)
    clock = Clock()
    calls: list[tuple[str, str]] = []
    cache = ModelCache(ModelConfig(name="m", rounds=("m",), directory=str(tmp_path)),
                       CountingStore(tmp_path, calls), DeriveSettings(), monotonic=clock)
    first = cache.refresh()
    assert first.extras.checkpoints is not None
    side = {"m/ip/hyperparameters.json", "m/model/model_metadata.json",
            "m/model/deepracer_checkpoints.json"}
    assert side <= {k for op, k in calls if op == "get"}

    def grow(episodes: int) -> Any:
        sim.advance(episodes)
        for key, body in {**sim.take_files("m"), key_for("m", 0): sim.document(0)}.items():
            (tmp_path / key).parent.mkdir(parents=True, exist_ok=True)
            (tmp_path / key).write_bytes(body)
        calls.clear()
        clock.now += 15
        return cache.refresh()

    got = grow(2)  # 27 episodes: still iteration 2
    assert not side & {k for _, k in calls}
    got = grow(4)  # 31: iteration 3 began, so a new checkpoint was written
    assert {k for op, k in calls if op == "get"} & side == {"m/model/deepracer_checkpoints.json"}
    assert got.extras.checkpoints != first.extras.checkpoints
    # metadata changed alone: seen at the safety net, not before
    metadata = json.loads((tmp_path / "m/model/model_metadata.json").read_bytes())
    metadata["sensor"] = ["STEREO_CAMERAS"]
    (tmp_path / "m/model/model_metadata.json").write_text(json.dumps(metadata))
    got = grow(1)
    assert "m/model/model_metadata.json" not in {k for _, k in calls}
    clock.now += SAFETY_NET
    got = grow(1)
    assert dict(got.extras.metadata)["sensors"] == "STEREO_CAMERAS"
    # a new training on the prefix: a shorter document and new hyperparameters
    restarted = write_training(tmp_path, "m", 5, max_episodes=123, seed=9)
    calls.clear()
    got = cache.refresh()
    assert "m/ip/hyperparameters.json" in {k for op, k in calls if op == "get"}
    assert dict(got.extras.hyperparameters)["term_cond_max_episodes"] == 123
    assert restarted.spec.max_episodes == 123


def test_discovery_rechecks_prefixes_that_are_not_models_rarely(tmp_path: Path) -> None:
    """Found at the first listing and not a model: re-checked RECHECKS per root listing, the
    root listed every DISCOVER_CYCLES cycles. A prefix new since the start is checked at every
    root listing while young, so a training that writes its metrics a little after its other
    files is found at once."""
    write_training(tmp_path, "model", 20, max_episodes=10**6)
    for i in range(40):
        (tmp_path / f"custom-{i:02d}").mkdir()
        (tmp_path / f"custom-{i:02d}/reward.py").write_text("def reward_function(p): return 1")
    calls: list[tuple[str, str]] = []
    clock = Clock()
    r = refresher(tmp_path, calls, f"discover:\n  - directory: {tmp_path}\n", clock)
    r.refresh_once()
    assert sum(1 for op, p in calls if op == "list" and p.startswith("custom-")) == 40
    per_listing = []
    for cycle in range(1, 4 * DISCOVER_CYCLES + 1):
        calls.clear()
        r.refresh_once()
        roots = [c for c in calls if c[0] == "children" and c[1] == ""]
        checks = [p for op, p in calls if op == "list" and p.startswith("custom-")]
        assert len(roots) == (1 if cycle % DISCOVER_CYCLES == 0 else 0), cycle
        if roots:
            per_listing.append(len(checks))
        else:
            assert not checks
    assert per_listing == [RECHECKS] * 4
    # Each non-model prefix is re-checked in turn, least recently checked first.
    # A new prefix: its other files first, its metrics a cycle later.
    (tmp_path / "new/ip").mkdir(parents=True)
    (tmp_path / "new/ip/hyperparameters.json").write_text("{}")
    for _ in range(DISCOVER_CYCLES):
        snap = r.refresh_once()
    assert "new" not in {m.name for m in snap.models}
    write_training(tmp_path, "new", 10, max_episodes=10**6)
    clock.now += IDLE_AFTER / 2
    for _ in range(DISCOVER_CYCLES):
        snap = r.refresh_once()
    assert {m.name for m in snap.models} == {"model", "new"}


def test_request_counter_equals_the_servers_count(s3: Any, bucket: str, s3_endpoint: str
                                                  ) -> None:
    """Every request that crosses the wire, discovery and failures included, as the endpoint
    (a counting proxy in front of moto) saw it."""
    sim = TrainingSimulator(TrainingSpec(episodes_between_training=10, workers=1, seed=5,
                                         evaluation_every=1))

    def write() -> None:
        for key, body in {**sim.take_files("m"), key_for("m", 0): sim.document(0)}.items():
            s3.put_object(Bucket=bucket, Key=key, Body=body)

    sim.advance(25)
    write()
    s3.put_object(Bucket=bucket, Key="custom_files/reward_function.py", Body=b"# reward")
    with FaultProxy(s3_endpoint) as proxy:
        exporter = exporter_for(config_from(
            s3_yaml(proxy.url) + f"refresh_interval: 15s\ndiscover:\n  - bucket: {bucket}\n"))
        got = refresh(exporter)
        zero = {k: v for k, v in got.items() if k[0] == "deepracer_exporter_s3_requests_total"}
        assert zero
        for step in range(6):
            sim.advance(3)
            write()
            if step == 2:
                proxy.fail(2, 503, "SlowDown")
            got = refresh(exporter)
        assert exporter.snapshot.models[0].health.tail > 0
    server: Counter[tuple[str, str]] = Counter()
    for seen in proxy.seen:
        query = urllib.parse.parse_qs(seen.target.partition("?")[2])
        operation = "ListObjectsV2" if "list-type" in query else "GetObject"
        server[(operation, "503" if seen.action == "failed" else "answered")] += 1
    counted: Counter[tuple[str, str]] = Counter()
    for (name, labels), n in parse(exporter.exposition.rendered.plain.decode()).items():
        if name == "deepracer_exporter_s3_requests_total":
            lab = dict(labels)
            status = "503" if lab["status"] == "503" else "answered"
            counted[(lab["operation"], status)] += int(n)
    assert counted == server
    assert sum(n for (_, status), n in server.items() if status == "503") == 2
    assert value(got, "deepracer_exporter_s3_requests_total", operation="GetObject",
                 status="206") > 0  # the tail reads
