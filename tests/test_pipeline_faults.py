"""Reliability, round two (issue 12) and honest reload (issue 14): the refresh pipeline.

`--once` waits for every model, discovered trainings get unique names, changed content is
noticed (tail reads verified, directory tags with inode and ctime), nothing hangs (FIFOs, an
endpoint dripping bytes, a response head that never ends), large reads run one at a time, an
unreadable folder is `access_denied`, and a reload applies every key it can. Faults go over the
wire: moto's S3 server behind the real loopback proxy of `faultproxy.py`, real processes for
the command line.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import math
import os
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from deepracer_exporter.app import Exporter, StoreFactory, make_s3_client
from deepracer_exporter.config import Config
from deepracer_exporter.modelcache import VERIFY_SECONDS, VERIFY_TAILS
from deepracer_exporter.simulate import TrainingSimulator, TrainingSpec, key_for
from faultproxy import FaultProxy
from helpers import (
    Samples,
    Training,
    config_from,
    exporter_for,
    parse,
    pick,
    refresh,
    s3_yaml,
    scrape,
    value,
)

LIMITS = "  connect_timeout: 500ms\n  read_timeout: 1s\n  max_attempts: 2\n"
STUCK = 0.2  # seconds per byte of a dripping answer: far below the 1 s read timeout


def s3_config(endpoint: str, limits: str = LIMITS) -> str:
    return f"s3:\n  endpoint_url: {endpoint}\n  region: us-east-1\n" + limits


def models_yaml(models: dict[str, str]) -> str:
    """`models:` with one entry per name -> bucket (prefix = name)."""
    return "models:\n" + "".join(f"  - name: {name}\n    bucket: {bucket}\n    prefix: {name}\n"
                                 for name, bucket in models.items())


def new_bucket(s3: Any, name: str) -> str:
    s3.create_bucket(Bucket=name)
    return name


def per_iteration(got: Samples, model: str) -> dict[Any, float]:
    return {k: v for k, v in got.items()
            if k[0].startswith("deepracer_iteration_") and ("model", model) in k[1]}


def model_series(got: Samples, model: str) -> dict[Any, float]:
    """The model's data series (not the exporter's own health and request counters)."""
    return {k: v for k, v in got.items() if ("model", model) in k[1]
            and not k[0].startswith("deepracer_exporter_")
            and k[0] != "deepracer_model_last_update_timestamp_seconds"}


def success(got: Samples, model: str) -> float:
    return value(got, "deepracer_exporter_refresh_success", model=model)


def errors(got: Samples, model: str, reason: str) -> float:
    return value(got, "deepracer_exporter_refresh_errors_total", model=model, reason=reason)


def requests(got: Samples, model: str, result: str) -> float:
    return value(got, "deepracer_exporter_object_requests_total", model=model, result=result)


def iteration(got: Samples, model: str) -> float | None:
    found = pick(got, "deepracer_model_iteration", model=model)
    return next(iter(found.values())) if found else None


def wait_for(check: Callable[[], bool], what: str, timeout: float = 60.0) -> None:
    """Polls `check`; the timeout only stops a test whose event never comes (a hang)."""
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"never happened: {what}"
        time.sleep(0.05)


@pytest.fixture
def proxy(s3_endpoint: str) -> Iterator[FaultProxy]:
    with FaultProxy(s3_endpoint) as p:
        yield p


@pytest.fixture
def exporters() -> Iterator[list[Exporter]]:
    """Exporters a test starts; each is stopped at the end."""
    started: list[Exporter] = []
    yield started
    for exporter in started:
        exporter.stop()


def cli(*args: str, timeout: float = 120.0, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    """The command line in a real process (`timeout` only turns a hang into a failure)."""
    return subprocess.run([sys.executable, "-m", "deepracer_exporter.cli", *args],
                          capture_output=True, text=True, timeout=timeout, **kwargs)


def write(tmp_path: Path, text: str, name: str = "config.yml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


# -- 1. --once waits for every model ----------------------------------------------------------

def two_trainings(s3: Any, bucket: str) -> tuple[str, Training, Training]:
    slow_bucket = new_bucket(s3, f"{bucket}-slow")
    return slow_bucket, Training(s3, bucket, "fast", seed=2), Training(s3, slow_bucket, "slow")


def test_once_waits_for_every_models_first_refresh(s3: Any, bucket: str, proxy: FaultProxy,
                                                   tmp_path: Path) -> None:
    """A model slower than refresh_interval used to be printed as a placeholder (no data),
    with exit 0."""
    slow_bucket, fast, slow = two_trainings(s3, bucket)
    proxy.delay(1.0, match=f"/{slow_bucket}")  # each request 1 s, below read_timeout 5 s
    path = write(tmp_path, s3_config(proxy.url, "  read_timeout: 5s\n  max_attempts: 1\n")
                 + "refresh_interval: 200ms\n"
                 + models_yaml({"fast": bucket, "slow": slow_bucket}))
    done = cli("--config", str(path), "--once")
    assert done.returncode == 0, done.stderr
    got = parse(done.stdout)
    assert iteration(got, "slow") == slow.last_iteration
    assert iteration(got, "fast") == fast.last_iteration
    assert success(got, "slow") == 1
    assert proxy.count("delayed") >= 2  # the slow model's requests were held, and waited for


def test_once_exits_1_naming_the_models_still_missing(s3: Any, bucket: str, proxy: FaultProxy,
                                                      tmp_path: Path) -> None:
    slow_bucket, _, _ = two_trainings(s3, bucket)
    proxy.delay(60, match=f"/{slow_bucket}")
    path = write(tmp_path, s3_config(proxy.url, "  read_timeout: 120s\n  max_attempts: 1\n")
                 + models_yaml({"fast": bucket, "slow": slow_bucket}))
    done = cli("--config", str(path), "--once", "--once-timeout", "1s")
    assert done.returncode == 1
    assert done.stdout == ""  # nothing a textfile collector could take for data
    assert "1 model(s) without a result after --once-timeout 1s: slow" in done.stderr
    assert proxy.holding() == 1  # the slow request was still held when --once gave up
    bad = cli("--config", str(path), "--once", "--once-timeout", "soon")
    assert bad.returncode == 2 and "--once-timeout" in bad.stderr


# -- 2. discovery: unique names, control characters ---------------------------------------

def test_discovered_prefixes_that_clash_get_unique_names(s3: Any, bucket: str, s3_endpoint: str,
                                                         caplog: pytest.LogCaptureFixture
                                                         ) -> None:
    """Two buckets holding DRfC's default prefix, and a configured model named like a
    discovered prefix: before, the later ones were skipped without a word."""
    caplog.set_level(logging.INFO, logger="deepracer_exporter")
    second = new_bucket(s3, f"{bucket}-two")
    default = "rl-deepracer-sagemaker"
    first_run = Training(s3, bucket, default, seed=3, episodes=40)
    second_run = Training(s3, second, default, seed=4, episodes=90)
    configured = Training(s3, bucket, "configured-source", seed=5, episodes=50)
    named_like = Training(s3, bucket, "taken", seed=6, episodes=70)
    exporter = exporter_for(config_from(
        s3_yaml(s3_endpoint)
        + f"models:\n  - name: taken\n    bucket: {bucket}\n    prefix: configured-source\n"
        + f"discover:\n  - bucket: {bucket}\n  - bucket: {second}\n"))
    got = refresh(exporter)
    info = {dict(k)["model"]: (dict(k)["bucket"], dict(k)["prefix"])
            for k in pick(got, "deepracer_model_info")}
    assert info == {
        "taken": (bucket, "configured-source"),
        f"{bucket}/taken": (bucket, "taken"),
        default: (bucket, default),
        f"{second}/{default}": (second, default),
    }
    assert iteration(got, "taken") == configured.last_iteration
    assert iteration(got, f"{bucket}/taken") == named_like.last_iteration
    assert iteration(got, default) == first_run.last_iteration
    assert iteration(got, f"{second}/{default}") == second_run.last_iteration
    renamed = [r.getMessage() for r in caplog.records if "so it is exported as" in r.getMessage()]
    assert len(renamed) == 2, renamed
    assert any(f"exported as {second}/{default}" in line for line in renamed)
    caplog.clear()
    again = refresh(exporter)  # names stay; nothing is logged again
    assert {dict(k)["model"] for k in pick(again, "deepracer_model_info")} == set(info)
    assert not [r for r in caplog.records if "discovered model" in r.getMessage()]


def test_discovered_prefix_with_control_characters_is_skipped(tmp_path: Path,
                                                              caplog: pytest.LogCaptureFixture
                                                              ) -> None:
    sim = TrainingSimulator(TrainingSpec(episodes_between_training=10, seed=7))
    sim.advance(30)
    for prefix in ("good", "bad\rname", "new\nline"):
        path = tmp_path / key_for(prefix, 0)
        path.parent.mkdir(parents=True)
        path.write_bytes(sim.document(0))
    exporter = exporter_for(config_from(f"discover:\n  - directory: {tmp_path}\n"))
    exporter.refresher.refresh_once()
    text = exporter.exposition.rendered.plain.decode()
    got = parse(text)  # a raw CR or LF in a label breaks the exposition's parsers
    assert {dict(k)["model"] for k in pick(got, "deepracer_model_info")} == {"good"}
    assert "\r" not in text
    skipped = [r.getMessage() for r in caplog.records if "control characters" in r.getMessage()]
    assert len(skipped) == 2, skipped
    assert "'bad\\rname'" in " ".join(skipped)


# -- 3. changed content is noticed -------------------------------------------------------------

def rewrite_first_reward(document: bytes) -> bytes:
    """The same document with the first record's reward changed, byte length unchanged."""
    marker = b'"reward_score": '
    at = document.index(marker) + len(marker)
    digit = document[at] - ord("0")
    assert 0 <= digit <= 9
    return document[:at] + str(digit % 9 + 1).encode() + document[at + 1:]


class FakeMonotonic:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def s3_exporter(config: Config, monotonic: Callable[[], float] = time.monotonic) -> Exporter:
    return Exporter(config, StoreFactory(lambda: make_s3_client(config.s3)),
                    registry=CollectorRegistry(), monotonic=monotonic)


@pytest.mark.parametrize("trigger", ["tail_reads", "time"])
def test_tail_read_over_an_in_place_rewrite_is_verified(trigger: str, s3: Any, bucket: str,
                                                        s3_endpoint: str) -> None:
    """Early records rewritten with the same byte length, then records appended: the tail read
    checks only the bytes around the end, so the old numbers stayed for ever. A full read after
    VERIFY_TAILS tail reads, or VERIFY_SECONDS after the last one, replaces them."""
    sim = TrainingSimulator(TrainingSpec(episodes_between_training=10, workers=1, seed=31))
    key = key_for("m", 0)
    sim.advance(120)
    s3.put_object(Bucket=bucket, Key=key, Body=sim.document(0))
    text = s3_yaml(s3_endpoint) + f"models:\n  - name: m\n    bucket: {bucket}\n    prefix: m\n"
    clock = FakeMonotonic()
    exporter = s3_exporter(config_from(text), clock)
    refresh(exporter)

    def grow() -> Samples:
        sim.advance(3)
        s3.put_object(Bucket=bucket, Key=key, Body=rewrite_first_reward(sim.document(0)))
        return refresh(exporter)

    def truth() -> Samples:
        return refresh(s3_exporter(config_from(text)))

    got = grow()
    assert requests(got, "m", "tail") == 1
    assert per_iteration(got, "m") != per_iteration(truth(), "m")  # stale, as a tail read is
    if trigger == "tail_reads":
        for n in range(2, VERIFY_TAILS + 1):
            got = grow()
            assert requests(got, "m", "tail") == n and requests(got, "m", "downloaded") == 1
        got = grow()  # after VERIFY_TAILS tail reads in a row: read in full
        assert requests(got, "m", "tail") == VERIFY_TAILS
    else:
        clock.now += VERIFY_SECONDS - 1
        got = refresh(exporter)
        assert requests(got, "m", "downloaded") == 1
        clock.now += 1  # unchanged since, but tail-read since the last full read
        got = refresh(exporter)
    assert requests(got, "m", "downloaded") == 2
    assert per_iteration(got, "m") == per_iteration(truth(), "m")
    got = refresh(exporter)  # verified: not read again while unchanged
    assert requests(got, "m", "downloaded") == 2


def test_directory_same_size_rewrite_with_preserved_mtime_is_noticed(tmp_path: Path) -> None:
    """`cp -p` or `touch -r`: same size, same mtime; the ctime (and for a replacement the
    inode) still changes."""
    sim = TrainingSimulator(TrainingSpec(episodes_between_training=10, workers=1, seed=41))
    sim.advance(50)
    path = tmp_path / key_for("m", 0)
    path.parent.mkdir(parents=True)
    path.write_bytes(sim.document(0))
    before = path.stat()
    text = f"models:\n  - name: m\n    directory: {tmp_path}\n    prefix: m\n"
    exporter = exporter_for(config_from(text))
    first = refresh(exporter)
    time.sleep(0.01)  # a later ctime than the write above (the clock's granularity)
    path.write_bytes(rewrite_first_reward(sim.document(0)))
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert (path.stat().st_mtime_ns, path.stat().st_size) == (before.st_mtime_ns,
                                                              before.st_size)
    got = refresh(exporter)
    assert requests(got, "m", "downloaded") == 2
    assert per_iteration(got, "m") != per_iteration(first, "m")
    assert per_iteration(got, "m") == per_iteration(refresh(exporter_for(config_from(text))), "m")


# -- 4. nothing hangs ------------------------------------------------------------------------

def test_fifo_in_place_of_the_metrics_file_is_refused_unopened(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    fifo = tmp_path / key_for("m", 0)
    fifo.parent.mkdir(parents=True)
    os.mkfifo(fifo)
    exporter = exporter_for(config_from(f"models:\n  - name: m\n    directory: {tmp_path}\n"
                                        "    prefix: m\n"))
    result: list[Samples] = []
    worker = threading.Thread(target=lambda: result.append(refresh(exporter)), daemon=True)
    worker.start()
    try:
        worker.join(60)  # a hang detector: the refresh takes milliseconds
        assert result, "the refresh blocked on the FIFO"
        got = result[0]
        assert success(got, "m") == 0 and errors(got, "m", "other") == 1
        assert any("not a regular file" in r.getMessage() for r in caplog.records)
        with pytest.raises(OSError) as no_reader:  # nobody ever opened it for reading
            os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        assert no_reader.value.errno == errno.ENXIO
    finally:
        with contextlib.suppress(OSError):  # release a reader blocked on it (the defect)
            os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))


def test_body_dripping_under_the_read_timeout_is_a_timeout(s3: Any, bucket: str,
                                                           proxy: FaultProxy,
                                                           exporters: list[Exporter]) -> None:
    """One byte every 0.2 s never trips the 1 s read timeout; the body's overall deadline
    (request time + size at 64 KiB/s) ends the read."""
    training = Training(s3, bucket, "m")
    exporter = exporter_for(config_from(s3_config(proxy.url) + "refresh_interval: 1h\n"
                                        + models_yaml({"m": bucket})))
    exporters.append(exporter)
    before = refresh(exporter)
    assert success(before, "m") == 1
    proxy.drip(STUCK, match="/m/metrics/TrainingMetrics")
    training.advance(10)
    exporter.refresher.refresh_once(timeout=120)  # waits for the model's refresh to end
    got = parse(exporter.exposition.rendered.plain.decode())
    assert success(got, "m") == 0
    assert errors(got, "m", "timeout") == 1
    assert per_iteration(got, "m") == per_iteration(before, "m")
    assert proxy.count("dripped") == 1  # one read, given up; not retried for ever
    proxy.passthrough()
    after = refresh(exporter)
    assert success(after, "m") == 1 and iteration(after, "m") == training.last_iteration


def test_stuck_refresh_shows_as_failing_and_does_not_block_the_others(
        s3: Any, bucket: str, proxy: FaultProxy, exporters: list[Exporter]) -> None:
    """A response head that never ends: no socket read ever times out, botocore waits for ever.
    The watchdog shows the model failing (timeout) while its thread is stuck, and the pool's
    one worker is replaced so the other model keeps refreshing."""
    other_bucket = new_bucket(s3, f"{bucket}-other")
    stuck, other = Training(s3, bucket, "m"), Training(s3, other_bucket, "other", seed=9)
    exporter = exporter_for(config_from(
        s3_config(proxy.url) + "listen: 127.0.0.1:0\nrefresh_interval: 300ms\n"
        "refresh_workers: 1\n" + models_yaml({"m": bucket, "other": other_bucket})))
    exporter.start()
    exporters.append(exporter)
    before = parse(scrape(exporter.port))
    assert success(before, "m") == 1
    proxy.drip(STUCK, match=f"/{bucket}/m/metrics/TrainingMetrics", part="head")
    stuck.advance(10)

    def failing() -> bool:
        got = parse(scrape(exporter.port))
        return success(got, "m") == 0 and errors(got, "m", "timeout") == 1

    wait_for(failing, "the stuck model shown as failing")
    assert proxy.holding() == 1  # its request is still stuck
    other.advance(20)
    wait_for(lambda: iteration(parse(scrape(exporter.port)), "other") == other.last_iteration,
             "the other model's new data")
    got = parse(scrape(exporter.port))
    assert success(got, "m") == 0 and errors(got, "m", "timeout") == 1  # counted once
    assert per_iteration(got, "m") == per_iteration(before, "m")
    assert proxy.count("dripped") == 1


def test_once_with_a_stuck_request_reports_it_and_exits(s3: Any, bucket: str,
                                                        proxy: FaultProxy,
                                                        tmp_path: Path) -> None:
    Training(s3, bucket, "m")
    proxy.drip(STUCK, match="/m/metrics/TrainingMetrics", part="head")
    path = write(tmp_path, s3_config(proxy.url) + models_yaml({"m": bucket}))
    done = cli("--config", str(path), "--once")  # hung until killed before
    assert done.returncode == 0, done.stderr
    got = parse(done.stdout)
    assert success(got, "m") == 0 and errors(got, "m", "timeout") == 1
    assert "refresh stuck for" in done.stderr


def test_sigterm_exits_while_a_refresh_is_stuck(s3: Any, bucket: str, proxy: FaultProxy,
                                                tmp_path: Path) -> None:
    Training(s3, bucket, "m")
    port_probe = subprocess.run([sys.executable, "-c", "import socket; s = socket.socket(); "
                                 "s.bind(('127.0.0.1', 0)); print(s.getsockname()[1])"],
                                capture_output=True, text=True, check=True)
    port = int(port_probe.stdout)
    path = write(tmp_path, s3_config(proxy.url) + f"listen: 127.0.0.1:{port}\n"
                 "refresh_interval: 200ms\n" + models_yaml({"m": bucket}))
    proc = subprocess.Popen([sys.executable, "-m", "deepracer_exporter.cli", "--config",
                             str(path)], stderr=subprocess.PIPE, text=True)
    try:
        def up() -> bool:
            try:
                return success(parse(scrape(port)), "m") == 1
            except OSError:
                assert proc.poll() is None
                return False

        wait_for(up, "the exporter serving")
        proxy.drip(STUCK, match=f"/{bucket}", part="head")  # its listing never answered
        wait_for(lambda: proxy.holding() >= 1, "a refresh stuck in its request")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0  # the stuck request would hold it for ever
        assert proxy.holding() >= 1  # it was still stuck when the process ended
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate(timeout=10)


# -- 5. large reads, one at a time -----------------------------------------------------------

def big_document(records: int, seed: int) -> bytes:
    sim = TrainingSimulator(TrainingSpec(episodes_between_training=20, seed=seed))
    sim.advance(200)
    base = json.loads(sim.document(0))["metrics"]
    out = []
    for i in range(records):
        rec = dict(base[i % len(base)])
        rec["episode"] = i + 1
        out.append(rec)
    return json.dumps({"metrics": out}).encode()


def test_large_reads_run_one_at_a_time(s3: Any, bucket: str, proxy: FaultProxy) -> None:
    """Two models whose documents are above the large-read threshold (16 MiB), two workers:
    the second large GET starts only after the first one was read and parsed."""
    for prefix, seed in (("a", 1), ("b", 2)):
        body = big_document(80_000, seed)
        assert len(body) > 16 * 1024**2
        s3.put_object(Bucket=bucket, Key=key_for(prefix, 0), Body=body)
    exporter = exporter_for(config_from(
        s3_config(proxy.url, "  read_timeout: 30s\n") + "refresh_workers: 2\n"
        f"models:\n  - {{name: a, bucket: {bucket}, prefix: a}}\n"
        f"  - {{name: b, bucket: {bucket}, prefix: b}}\n"))
    proxy.delay(0.5, match="TrainingMetrics")
    exporter.refresher.refresh_once(timeout=300)
    got = parse(exporter.exposition.rendered.plain.decode())
    assert success(got, "a") == 1 and success(got, "b") == 1
    gets = [s for s in proxy.seen if "TrainingMetrics" in s.target]
    assert len(gets) == 2
    assert [s.held for s in gets] == [0, 0]  # never both in flight


# -- 6. unreadable metrics folder --------------------------------------------------------------

def test_unreadable_metrics_folder_is_access_denied(tmp_path: Path) -> None:
    """Through the command line, with permission checks applied to the exporter's process.

    Root reads any folder, so as root the child keeps uid 0 (it must import the package from
    wherever the checkout lives, a private 0700 folder included) but runs without the two
    capabilities that bypass file permissions, as an ordinary owner would.
    """
    root = Path(tempfile.mkdtemp(prefix="unreadable-"))
    try:
        root.chmod(0o755)
        sim = TrainingSimulator(TrainingSpec(episodes_between_training=10, seed=8))
        sim.advance(20)
        path = root / key_for("m", 0)
        path.parent.mkdir(parents=True)
        path.write_bytes(sim.document(0))
        for folder in (root / "m", path.parent):
            folder.chmod(0o755)
        path.parent.chmod(0)
        config = root / "config.yml"
        config.write_text(f"models:\n  - name: m\n    directory: {root}\n    prefix: m\n")
        config.chmod(0o644)
        prefix: list[str] = []
        if os.geteuid() == 0:
            caps = "-dac_override,-dac_read_search"
            prefix = ["setpriv", f"--bounding-set={caps}", f"--inh-caps={caps}"]
        done = subprocess.run([*prefix, sys.executable, "-m", "deepracer_exporter.cli",
                               "--config", str(config), "--once"], capture_output=True,
                              text=True, timeout=120, cwd="/")
        assert done.returncode == 0, done.stderr
        got = parse(done.stdout)
        assert success(got, "m") == 0
        assert errors(got, "m", "access_denied") == 1
        assert errors(got, "m", "not_found") == 0
        assert "permission denied" in done.stderr
    finally:
        (root / "m" / "metrics").chmod(0o755)
        shutil.rmtree(root)


# -- 7. honest reload ----------------------------------------------------------------------------

def sample_model(samples: Path, tmp_path: Path) -> str:
    """The one-worker sample as model m (its history exported although its files are old)."""
    shutil.copytree(samples / "sample-drfc-1-logs", tmp_path / "m")
    return (f"models:\n  - name: m\n    directory: {tmp_path}\n    prefix: m\n"
            "    history_max_age: always\n")


def test_reload_applies_derivation_settings_without_downloading(samples: Path,
                                                                tmp_path: Path) -> None:
    models = sample_model(samples, tmp_path)
    new = ("rolling_window: 2\nmax_iterations: 4\ntop_laps: 1\nmax_evaluation_runs: 1\n"
           "refresh_interval: 7s\n")
    exporter = exporter_for(config_from(models))
    before = refresh(exporter)
    downloaded = requests(before, "m", "downloaded")
    assert len(pick(before, "deepracer_evaluation_trials", model="m")) == 3
    assert exporter.reload(config_from(new + models)) == []
    got = refresh(exporter)
    want = refresh(exporter_for(config_from(new + models)))
    assert per_iteration(got, "m")
    assert model_series(got, "m") == model_series(want, "m")
    assert model_series(got, "m") != model_series(before, "m")
    assert len(pick(got, "deepracer_evaluation_trials", model="m")) == 1
    assert requests(got, "m", "downloaded") == downloaded  # re-derived from the cache
    assert exporter.snapshot.refresh_interval == 7.0
    assert "every 7s" in exporter.exposition.rendered.plain.decode()


def test_reload_applies_max_object_bytes(samples: Path, tmp_path: Path) -> None:
    models = sample_model(samples, tmp_path)
    exporter = exporter_for(config_from("max_object_bytes: 1000\n" + models))
    got = refresh(exporter)
    assert success(got, "m") == 0 and errors(got, "m", "too_large") == 1
    exporter.reload(config_from(models))
    got = refresh(exporter)
    assert success(got, "m") == 1 and iteration(got, "m") is not None


def test_reload_resizes_the_refresh_pool(samples: Path, tmp_path: Path) -> None:
    models = sample_model(samples, tmp_path)
    exporter = exporter_for(config_from("refresh_workers: 2\n" + models))
    refresh(exporter)
    pool = exporter.refresher.pool
    assert pool is not None and pool.threads == 2
    exporter.reload(config_from("refresh_workers: 5\n" + models))
    assert pool.threads == 5
    exporter.reload(config_from("refresh_workers: 1\n" + models))
    assert pool.threads == 1
    assert success(refresh(exporter), "m") == 1


def test_reload_logs_each_changed_key_that_needs_a_restart(samples: Path, tmp_path: Path,
                                                           caplog: pytest.LogCaptureFixture
                                                           ) -> None:
    models = sample_model(samples, tmp_path)
    exporter = exporter_for(config_from("listen: 127.0.0.1:9000\n" + models))
    changed = exporter.reload(config_from(
        "listen: 127.0.0.1:9001\ns3:\n  region: eu-west-1\nrolling_window: 3\n" + models))
    assert changed == ["listen", "s3"]
    lines = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert lines == ["reload: 'listen' changed; it takes effect only after a restart",
                     "reload: 's3' changed; it takes effect only after a restart"]


def test_sighup_reload_applies_rolling_window_in_a_running_process(samples: Path,
                                                                   tmp_path: Path) -> None:
    models = sample_model(samples, tmp_path)
    probe = subprocess.run([sys.executable, "-c", "import socket; s = socket.socket(); "
                            "s.bind(('127.0.0.1', 0)); print(s.getsockname()[1])"],
                           capture_output=True, text=True, check=True)
    port = int(probe.stdout)
    path = write(tmp_path, f"listen: 127.0.0.1:{port}\nrefresh_interval: 1h\n" + models)
    expected = cli("--config", str(write(tmp_path, "rolling_window: 2\n" + models, "want.yml")),
                   "--once")
    want = pick(parse(expected.stdout), "deepracer_model_rolling_reward", model="m")
    proc = subprocess.Popen([sys.executable, "-m", "deepracer_exporter.cli", "--config",
                             str(path)], stderr=subprocess.PIPE, text=True)
    try:
        def serving() -> bool:
            try:
                return bool(scrape(port))
            except OSError:
                assert proc.poll() is None
                return False

        wait_for(serving, "the exporter serving")
        assert pick(parse(scrape(port)), "deepracer_model_rolling_reward", model="m") != want
        path.write_text(f"listen: 127.0.0.1:{port + 1}\nrefresh_interval: 1h\n"
                        "rolling_window: 2\n" + models)
        proc.send_signal(signal.SIGHUP)  # refresh_interval is 1h: only the reload refreshes
        wait_for(lambda: pick(parse(scrape(port)), "deepracer_model_rolling_reward",
                              model="m") == want, "the new rolling window applied")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
        err = proc.communicate(timeout=10)[1]
        assert "reload: 'listen' changed; it takes effect only after a restart" in err
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate(timeout=10)


def test_directory_source_reads_only_regular_files(tmp_path: Path) -> None:
    """A directory (or socket) named like a metrics file is not a document."""
    sim = TrainingSimulator(TrainingSpec(episodes_between_training=10, seed=12))
    sim.advance(20)
    good = tmp_path / key_for("m", 0)
    good.parent.mkdir(parents=True)
    good.write_bytes(sim.document(0))
    exporter = exporter_for(config_from(f"models:\n  - name: m\n    directory: {tmp_path}\n"
                                        "    prefix: m\n"))
    assert success(refresh(exporter), "m") == 1
    good.unlink()
    os.mkfifo(good)
    assert stat.S_ISFIFO(good.stat().st_mode)
    got = refresh(exporter)
    assert success(got, "m") == 0 and errors(got, "m", "other") == 1
    assert iteration(got, "m") == sim.iterations - 1  # last good data kept


def test_history_max_age_and_iteration_stats_reach_the_snapshot_and_reload(
        samples: Path, tmp_path: Path) -> None:
    shutil.copytree(samples / "sample-drfc-1-logs", tmp_path / "m")
    models = (f"models:\n  - {{name: own, directory: {tmp_path}, prefix: m, "
              "history_max_age: always}\n"
              f"  - {{name: inherits, directory: {tmp_path}, prefix: m}}\n")
    first = config_from("history_max_age: 2h\n" + models)
    exporter = exporter_for(first)
    exporter.refresher.refresh_once()
    ages = {m.name: m.history_max_age for m in exporter.snapshot.models}
    assert ages == {"own": math.inf, "inherits": 7200.0}
    assert exporter.snapshot.iteration_stats == first.iteration_stats
    second = config_from("history_max_age: 30m\niteration_stats: full\n" + models)
    assert second.iteration_stats != first.iteration_stats
    exporter.reload(second)
    exporter.refresher.refresh_once()
    ages = {m.name: m.history_max_age for m in exporter.snapshot.models}
    assert ages == {"own": math.inf, "inherits": 1800.0}
    assert exporter.snapshot.iteration_stats == second.iteration_stats
