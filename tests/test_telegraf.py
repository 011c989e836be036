"""DRfC's metrics push: real UDP datagrams, sent with the client the DRfC containers use
(pytelegraf's TelegrafClient, as in deepracer-sagemaker-container's rl_coach patch and
deepracer-simapp's s3_metrics.py), received by the exporter's listener."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from telegraf.client import TelegrafClient

from deepracer_exporter.app import Exporter
from deepracer_exporter.simulate import TrainingSpec, generate_files
from deepracer_exporter.telegraf_listener import (
    MAX_LINE_BYTES,
    LineError,
    PushReceiver,
    UdpListener,
    parse_line,
)
from helpers import config_from, exporter_for, refresh, s3_yaml, scrape, value
from promserver import PromServer


class Iterations:
    """The model's latest training iteration as the exporter would know it from S3."""

    def __init__(self) -> None:
        self.latest: dict[str, int] = {}

    def __call__(self, model: str) -> int | None:
        return self.latest.get(model)


@pytest.fixture
def listener() -> Iterator[tuple[UdpListener, Iterations]]:
    iterations = Iterations()
    udp = UdpListener("127.0.0.1", 0, PushReceiver(iterations))
    udp.start()
    yield udp, iterations
    udp.stop()


def wait_for(receiver: PushReceiver, total: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while sum(receiver.state().lines.values()) < total:
        assert time.monotonic() < deadline, receiver.state().lines
        time.sleep(0.01)


def trainer_epoch(client: TelegrafClient, model: str, epoch: int, entropy: float, kl: float,
                  loss: float) -> None:
    """What rl_coach's patched logger sends once per policy-training epoch (float32 means)."""
    client.metric("dr_sagemaker_epochs",
                  {"surrogate_loss": np.float32(loss), "kl_divergence": np.float32(kl),
                   "entropy": np.float32(entropy), "epoch": epoch},
                  tags={"model": model})


def simulator_episode(client: TelegrafClient, model: str, status: str) -> None:
    client.metric("dr_training_episodes", {"reward": 12, "progress": 100, "elapsed_time": 12345},
                  tags={"phase": "training", "status": status, "model": model, "worker": "0"})


def test_policy_epochs_become_latest_values_and_per_iteration_mean_entropy(listener) -> None:
    udp, iterations = listener
    client = TelegrafClient(host="127.0.0.1", port=udp.port)
    iterations.latest["rl-deepracer-sagemaker"] = 3
    entropies = [1.05, 1.04, 1.03]
    for epoch, entropy in enumerate(entropies):
        trainer_epoch(client, "rl-deepracer-sagemaker", epoch, entropy, 0.002, -0.01)
    wait_for(udp.receiver, 3)
    iterations.latest["rl-deepracer-sagemaker"] = 4
    for epoch, entropy in enumerate([0.98, 0.97, 0.90]):
        trainer_epoch(client, "rl-deepracer-sagemaker", epoch, entropy, 0.004, -0.02)
    wait_for(udp.receiver, 6)

    state = udp.receiver.state()
    model = state.models["rl-deepracer-sagemaker"]
    assert state.lines["policy"] == 6
    assert model.epochs == 6
    assert model.epoch == 2
    assert model.entropy == pytest.approx(0.90, abs=1e-6)
    assert model.kl_divergence == pytest.approx(0.004, abs=1e-7)
    assert model.surrogate_loss == pytest.approx(-0.02, abs=1e-7)
    by_iteration = dict(model.iteration_entropy)
    assert sorted(by_iteration) == [3, 4]
    assert by_iteration[3] == pytest.approx(np.mean(np.float32(entropies)), abs=1e-6)
    assert by_iteration[4] == pytest.approx(np.mean(np.float32([0.98, 0.97, 0.90])), abs=1e-6)


def test_simulator_episodes_are_counted_and_escaped_tags_decoded(listener) -> None:
    udp, _ = listener
    client = TelegrafClient(host="127.0.0.1", port=udp.port)
    simulator_episode(client, "my model,v2", "Lap complete")
    simulator_episode(client, "my model,v2", "Off track")
    wait_for(udp.receiver, 2)
    state = udp.receiver.state()
    assert state.lines["episode"] == 2
    assert state.models["my model,v2"].episodes == 2
    assert state.models["my model,v2"].last_episode_time is not None


def test_garbage_other_measurements_and_huge_lines_are_dropped_and_counted(listener) -> None:
    udp, _ = listener
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    bad = [b"\xff\xfe\x00garbage", b"no_fields_here", b"m,tag=1 f=\"open", b"m f=nan",
           b"dr_sagemaker_epochs,model=x entropy=\"text\",epoch=0i,kl_divergence=1,"
           b"surrogate_loss=1", b"dr_sagemaker_epochs,model=x entropy=1,epoch=-1i,"
           b"kl_divergence=1,surrogate_loss=1"]
    for datagram in bad:
        sock.sendto(datagram, ("127.0.0.1", udp.port))
    sock.sendto(b"cpu,host=a usage_idle=99.5", ("127.0.0.1", udp.port))
    sock.sendto(b"dr_sagemaker_epochs,model=x entropy=1," + b"y" * MAX_LINE_BYTES,
                ("127.0.0.1", udp.port))
    wait_for(udp.receiver, len(bad) + 2)
    state = udp.receiver.state()
    assert state.lines["malformed"] == len(bad)
    assert state.lines["other_measurement"] == 1
    assert state.lines["too_long"] == 1
    assert state.lines["policy"] == 0
    assert state.models == {}
    sock.close()


def test_unknown_models_are_bounded() -> None:
    receiver = PushReceiver(lambda model: None, max_models=3)
    for i in range(10):
        receiver.receive(f"dr_sagemaker_epochs,model=m{i} entropy=1,epoch=0i,"
                         f"kl_divergence=0.1,surrogate_loss=0.2".encode())
    state = receiver.state()
    assert sorted(state.models) == ["m7", "m8", "m9"]  # the least recently touched made room
    assert state.lines["policy"] == 10


def test_flood_is_bounded_per_second() -> None:
    now = [0.0]
    receiver = PushReceiver(lambda model: None)
    udp = UdpListener("127.0.0.1", 0, receiver, max_lines_per_second=50,
                      monotonic=lambda: now[0])
    udp.start()
    try:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        for _ in range(200):
            sock.sendto(b"cpu usage=1", ("127.0.0.1", udp.port))
        deadline = time.monotonic() + 10
        while receiver.state().lines["rate_limited"] == 0:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        # The clock does not move: past the budget nothing more is parsed.
        time.sleep(0.3)
        assert receiver.state().lines["other_measurement"] == 50
        sock.close()
    finally:
        now[0] = 10.0
        udp.stop()


@pytest.mark.parametrize("line", ["", "m", "m ", " f=1", "m,=x f=1", "m f", "m f=1 2 3",
                                  "m f=1x"])
def test_parse_line_rejects(line: str) -> None:
    with pytest.raises(LineError):
        parse_line(line)


def test_parse_line_reads_pytelegraf_output() -> None:
    line = parse_line(r'dr_eval_episodes,model=a\ b,status=Lap\ complete,worker=0 '
                      r'elapsed_time=9000i,progress=100i,reset_count=0i,note="x \"y\""')
    assert line.measurement == "dr_eval_episodes"
    assert line.tags == {"model": "a b", "status": "Lap complete", "worker": "0"}
    assert line.fields == {"elapsed_time": 9000.0, "progress": 100.0, "reset_count": 0.0,
                           "note": 'x "y"'}


# --- through the exporter: /metrics and a real Prometheus ----------------------------------------

PREFIX = "rl-deepracer-sagemaker"


@pytest.fixture
def pushed_exporter(s3: Any, bucket: str, s3_endpoint: str) -> Iterator[Exporter]:
    spec = TrainingSpec(episodes_between_training=10, seed=3)
    for key, body in generate_files(spec, 60, prefix=PREFIX).items():
        s3.put_object(Bucket=bucket, Key=key, Body=body)
    config = config_from(s3_yaml(s3_endpoint) + 'listen: "127.0.0.1:0"\nrefresh_interval: 1h\n'
                         'telegraf:\n  listen: "127.0.0.1:0"\n'
                         f"models:\n  - name: drfc\n    bucket: {bucket}\n    prefix: {PREFIX}\n")
    exporter = exporter_for(config)
    exporter.start()
    yield exporter
    exporter.stop()


def test_pushed_policy_metrics_reach_metrics_and_prometheus(pushed_exporter: Exporter) -> None:
    exporter = pushed_exporter
    assert exporter.push is not None
    latest = int(value(refresh(exporter), "deepracer_model_iteration", model="drfc"))
    client = TelegrafClient(host="127.0.0.1", port=exporter.push.port)
    for epoch, entropy in enumerate([1.2, 1.1, 1.0]):
        trainer_epoch(client, PREFIX, epoch, entropy, 0.01 * (epoch + 1), -0.05)
    trainer_epoch(client, "someone-else", 0, 0.5, 0.1, 0.1)
    simulator_episode(client, PREFIX, "Off track")
    wait_for(exporter.push.receiver, 5)
    got = refresh(exporter)
    assert value(got, "deepracer_policy_entropy", model="drfc") == pytest.approx(1.0, abs=1e-6)
    assert value(got, "deepracer_policy_kl_divergence", model="drfc") == pytest.approx(0.03,
                                                                                      abs=1e-7)
    assert value(got, "deepracer_policy_surrogate_loss", model="drfc") == pytest.approx(-0.05,
                                                                                       abs=1e-7)
    assert value(got, "deepracer_policy_epochs_total", model="drfc") == 3
    assert value(got, "deepracer_push_episodes_total", model="drfc") == 1
    mean = np.mean(np.float32([1.2, 1.1, 1.0]))
    assert value(got, "deepracer_iteration_policy_entropy", model="drfc",
                 iteration=latest) == pytest.approx(mean, abs=1e-6)
    assert value(got, "deepracer_exporter_push_unmatched_models") == 1
    assert value(got, "deepracer_exporter_push_lines_total", result="policy") == 4
    with PromServer(f"127.0.0.1:{exporter.port}") as prom:
        prom.wait_for(lambda: prom.query('deepracer_policy_entropy{model="drfc"}'))
        assert prom.query_value('deepracer_policy_entropy{model="drfc"}') == pytest.approx(
            1.0, abs=1e-6)
        assert prom.query_value(
            f'deepracer_iteration_policy_entropy{{model="drfc",iteration="{latest}"}}'
        ) == pytest.approx(mean, abs=1e-6)


FLOOD = """
import socket, sys, time
port, seconds = int(sys.argv[1]), float(sys.argv[2])
sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
line = b"dr_sagemaker_epochs,model=flood entropy=1,epoch=0i,kl_divergence=1,surrogate_loss=1"
junk = b"\\xff" * 1400
end = time.monotonic() + seconds
sent = 0
while time.monotonic() < end:
    for datagram in (line, junk, b"x" * 5000):
        try:
            sock.sendto(datagram, ("127.0.0.1", port))
            sent += 1
        except OSError:
            pass
print(sent)
"""


def test_a_flood_of_datagrams_does_not_break_metrics(pushed_exporter: Exporter) -> None:
    exporter = pushed_exporter
    assert exporter.push is not None
    flood = subprocess.Popen([sys.executable, "-c", FLOOD, str(exporter.push.port), "4"],
                             stdout=subprocess.PIPE, text=True)
    scrapes = errors = 0
    while flood.poll() is None:
        try:
            body = scrape(exporter.port)
            assert "deepracer_model_info{" in body
            scrapes += 1
        except OSError:
            errors += 1
    sent = int(flood.communicate()[0])
    lines = exporter.push.receiver.state().lines
    assert errors == 0 and scrapes > 0
    assert sent > 0 and sum(lines.values()) > 0
    assert lines["malformed"] > 0 and lines["too_long"] > 0  # the junk, dropped and counted
    assert lines["policy"] > 0
    assert set(exporter.push.receiver.state().models) == {"flood"}  # nothing else was made


# --- issue 24: bounded tags with eviction, lines counted against the rate, finite aggregation ---

def policy_line(model: str, entropy: float = 1.0, epoch: int = 0) -> bytes:
    return (f"dr_sagemaker_epochs,model={model} entropy={entropy!r},epoch={epoch}i,"
            f"kl_divergence=0.1,surrogate_loss=0.2").encode()


def test_unknown_tags_never_lock_out_the_watched_model() -> None:
    """256 stale tags fill the table; the watched model's lines still arrive (the least recently
    touched unknown tag makes room), and a watched tag is never the one evicted."""
    receiver = PushReceiver(lambda model: 7, max_models=256,
                            watched=lambda tag: tag in ("watched", "also-watched"))
    receiver.receive(policy_line("also-watched"))
    for i in range(256):
        receiver.receive(policy_line(f"old-training-{i}"))
    receiver.receive(policy_line("watched", 2.5))
    state = receiver.state()
    assert state.models["watched"].entropy == 2.5
    assert dict(state.models["watched"].iteration_entropy) == {7: 2.5}
    assert "also-watched" in state.models
    assert len(state.models) == 256
    # also-watched + 256 stale tags: the two least recently touched stale tags made room
    assert {"old-training-0", "old-training-1"}.isdisjoint(state.models)
    assert "old-training-2" in state.models
    assert state.lines["model_limit"] == 0


def test_a_touched_unknown_tag_outlives_an_untouched_one() -> None:
    receiver = PushReceiver(lambda model: None, max_models=2)
    receiver.receive(policy_line("a"))
    receiver.receive(policy_line("b"))
    receiver.receive(policy_line("a", epoch=1))
    receiver.receive(policy_line("c"))
    assert sorted(receiver.state().models) == ["a", "c"]


def test_only_watched_tags_held_refuses_unknown_ones() -> None:
    receiver = PushReceiver(lambda model: None, max_models=2, watched=lambda tag: tag < "c")
    for tag in ("a", "b", "c", "d"):
        receiver.receive(policy_line(tag))
    receiver.receive(policy_line("bb"))  # watched: admitted past the limit
    state = receiver.state()
    assert sorted(state.models) == ["a", "b", "bb"]
    assert state.lines["model_limit"] == 2


def test_drfc_evaluation_lines_tagged_sagemaker_are_episodes_of_no_model() -> None:
    receiver = PushReceiver(lambda model: None)
    receiver.receive(b"dr_eval_episodes,model=sagemaker,status=Lap\\ complete,worker=0 "
                     b"elapsed_time=9000i,progress=100i,reset_count=0i")
    state = receiver.state()
    assert state.lines["episode"] == 1
    assert state.models == {}


def test_a_multi_line_flood_costs_its_lines_share_of_the_rate() -> None:
    """Datagrams of 730 lines each against a 1,000-line budget: the second datagram is parsed up
    to the budget, its remaining lines and every later datagram's are counted as rate_limited."""
    now = [0.0]
    receiver = PushReceiver(lambda model: None)
    udp = UdpListener("127.0.0.1", 0, receiver, max_lines_per_second=1000,
                      monotonic=lambda: now[0])
    udp.start()
    try:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        datagram = b"\n".join([b"cpu usage=1"] * 730)
        for _ in range(2):
            sock.sendto(datagram, ("127.0.0.1", udp.port))
        wait_for(receiver, 2 * 730)
        lines = receiver.state().lines
        assert lines["other_measurement"] == 1000
        assert lines["rate_limited"] == 2 * 730 - 1000
        now[0] = 5.0  # the next second: the budget is back
        sock.sendto(datagram, ("127.0.0.1", udp.port))
        wait_for(receiver, 3 * 730, timeout=15)
        assert receiver.state().lines["other_measurement"] == 1730
        sock.close()
    finally:
        now[0] = 10.0
        udp.stop()


def test_finite_pushed_values_never_aggregate_to_infinity() -> None:
    receiver = PushReceiver(lambda model: 3)
    for epoch in range(3):
        receiver.receive(policy_line("m", 1e308, epoch))
    state = receiver.state().models["m"]
    assert dict(state.iteration_entropy) == {3: pytest.approx(1e308, rel=1e-15)}
    for epoch, entropy in enumerate((1.7e308, -1.7e308, 1.7e308, 1.7e308)):
        receiver.receive(policy_line("n", entropy, epoch))
    (_, mean), = receiver.state().models["n"].iteration_entropy
    assert mean == pytest.approx(1.7e308 / 2, rel=1e-12)


@pytest.mark.parametrize("timestamp", ["not-a-timestamp", "1.5", "1e9", "12a"])
def test_a_non_integer_timestamp_makes_the_line_invalid(timestamp: str) -> None:
    receiver = PushReceiver(lambda model: None)
    receiver.receive(f"dr_sagemaker_epochs,model=m entropy=1,epoch=0i,kl_divergence=0.1,"
                     f"surrogate_loss=0.5 {timestamp}".encode())
    state = receiver.state()
    assert state.lines["malformed"] == 1 and state.models == {}


def test_an_integer_timestamp_is_accepted() -> None:
    line = parse_line("m f=1 1700000000000000000")
    assert line.fields == {"f": 1.0}


def test_the_watched_model_arrives_after_256_unknown_tags(pushed_exporter: Exporter) -> None:
    exporter = pushed_exporter
    assert exporter.push is not None
    refresh(exporter)
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    for i in range(256):
        sock.sendto(policy_line(f"old-training-{i}"), ("127.0.0.1", exporter.push.port))
    wait_for(exporter.push.receiver, 256)
    sock.sendto(policy_line(PREFIX, 0.75), ("127.0.0.1", exporter.push.port))
    wait_for(exporter.push.receiver, 257)
    sock.close()
    got = refresh(exporter)
    assert value(got, "deepracer_policy_entropy", model="drfc") == 0.75
    assert value(got, "deepracer_exporter_push_lines_total", result="model_limit") == 0
