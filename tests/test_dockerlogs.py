"""The trainer's log followed live through a real Docker Engine (Debian's dockerd, started here).

Containers of a busybox image print the real trainer logs of deepracer-utils' sdist, split
across starts: a restart and a second training must neither lose nor double a line, and the
exporter must survive dockerd stopping and starting again.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest

from deepracer_exporter.dockerlogs import DockerLogs, DockerState, Engine, nanoseconds
from dockerd import IMAGE, Dockerd
from helpers import config_from, exporter_for, pick, refresh, value
from test_policylog import EPOCH, console_log, droa_log, printed

START = ('n=$(cat /in/n 2>/dev/null || echo 0); n=$((n+1)); echo $n > /in/n; '
         'cat /in/part$n.txt 2>/dev/null; exec sleep 100000')


@pytest.fixture(scope="module")
def dockerd() -> Iterator[Dockerd]:
    engine = Dockerd()
    try:
        engine.start()
        engine.import_busybox()
        yield engine
    finally:
        engine.close()


@pytest.fixture
def engine(dockerd: Dockerd) -> Iterator[Dockerd]:
    """The engine, with every container of the test removed afterwards."""
    yield dockerd
    if dockerd.process is not None:
        ids = dockerd.docker("ps", "-aq").stdout.decode().split()
        if ids:
            dockerd.docker("rm", "-f", *ids)


def wait_until(check: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def trainer(dockerd: Dockerd, folder: Path, name: str, parts: list[str],
            env: dict[str, str] | None = None) -> str:
    """A container named `name` that prints parts[k] at its (k+1)-th start, then sleeps."""
    folder.mkdir()
    for k, text in enumerate(parts, start=1):
        (folder / f"part{k}.txt").write_text(text)
    args = ["run", "-d", "--network", "none", "--name", name, "-v", f"{folder}:/in"]
    for key, val in (env or {}).items():
        args += ["-e", f"{key}={val}"]
    return dockerd.docker(*args, IMAGE, "sh", "-c", START).stdout.decode().strip()


def halves(text: str) -> list[str]:
    lines = text.splitlines(keepends=True)
    return ["".join(lines[:len(lines) // 2]), "".join(lines[len(lines) // 2:])]


def means(text: str) -> dict[int, float]:
    by: dict[int, list[float]] = {}
    for iteration, _, _, entropy, _ in printed(text):
        by.setdefault(iteration, []).append(entropy)
    return {i: float(np.mean(e)) for i, e in by.items()}


def epoch_lines(text: str) -> int:
    return sum(1 for line in text.splitlines() if EPOCH.match(line))


def epochs_of(state: DockerState, prefix: str) -> int:
    model = state.models.get(prefix)
    return model.epochs if model is not None else 0


def test_docker_timestamps_are_read_to_the_nanosecond() -> None:
    assert nanoseconds("2026-12-04T23:45:01.711572258Z") == 1796427901_711572258
    assert nanoseconds("2026-12-04T23:45:01.7Z") == 1796427901_700000000
    assert nanoseconds("2026-12-04T23:45:01Z") == 1796427901_000000000
    assert nanoseconds("yesterday") is None


def test_restart_and_second_training_neither_lose_nor_double_a_line(
        engine: Dockerd, samples: Path, tmp_path: Path) -> None:
    dockerd = engine
    console, droa = console_log(samples), droa_log(samples)
    first, rest = halves(console)
    trainer(dockerd, tmp_path / "a", "tmpa1b2-algo-1-abcde", [first, rest],
            env={"MODEL_S3_PREFIX": "console-model"})
    trainer(dockerd, tmp_path / "other", "robomaker-1", [console])  # not a trainer's name
    logs = DockerLogs(Engine(dockerd.socket), poll_interval=0.2)
    logs.start()
    try:
        wait_until(lambda: epochs_of(logs.state(), "console-model") == epoch_lines(first),
                   "the first start's epochs")
        dockerd.docker("restart", "-t", "1", "tmpa1b2-algo-1-abcde")
        wait_until(lambda: epochs_of(logs.state(), "console-model") == 84, "all 84 epochs")
        # The second training: a new container, mapped by the s3_prefix its trainer prints.
        trainer(dockerd, tmp_path / "b", "tmpc3d4-algo-1-fghij", [droa])
        droa_prefix = "admin19c0b9859c/models/30wm3cccH9SOOML/sagemaker-artifacts"
        wait_until(lambda: epochs_of(logs.state(), droa_prefix) == 45, "the DRoA epochs")
        time.sleep(1.0)  # five more listings: nothing is read again
        state = logs.state()
    finally:
        logs.stop()
    assert set(state.models) == {"console-model", droa_prefix}
    for prefix, text in (("console-model", console), (droa_prefix, droa)):
        model = state.models[prefix]
        rows = printed(text)
        assert model.epochs == len(rows)
        got = dict(model.iteration_entropy)
        assert sorted(got) == sorted(means(text))
        for iteration, mean in means(text).items():
            assert got[iteration] == pytest.approx(mean, abs=1e-12)
        assert (model.surrogate_loss, model.kl_divergence, model.entropy) == pytest.approx(
            rows[-1][1:4], abs=1e-12)
    assert state.lines["policy"] == 84 + 45
    assert state.lines["checkpoint"] == 29 + 16
    assert state.lines["unreadable"] == 0


@pytest.fixture
def drfc_model(samples: Path, tmp_path: Path) -> Path:
    """A DRfC model folder under the prefix the trainer container names."""
    root = tmp_path / "bucket"
    root.mkdir()
    (root / "rl-deepracer-sagemaker").symlink_to(samples / "sample-drfc-1-logs")
    return root


def test_the_exporter_survives_dockerd_stopping_and_starting(
        engine: Dockerd, samples: Path, tmp_path: Path, drfc_model: Path) -> None:
    """Through the exporter: the families follow the container within one refresh; dockerd
    stops (errors counted, last figures kept), starts again and the container with it: the
    lines after it arrive, none twice."""
    dockerd = engine
    console = console_log(samples)
    lines = console.splitlines(keepends=True)
    parts = ["".join(lines[:400]), "".join(lines[400:])]
    config = config_from(
        f'listen: "127.0.0.1:0"\nrefresh_interval: 1h\nhistory_max_age: always\n'
        f"docker: {{socket: {dockerd.socket}, poll_interval: 0.2s}}\n"
        f"models:\n  - {{name: drfc, directory: {drfc_model}, prefix: rl-deepracer-sagemaker}}\n")
    trainer(dockerd, tmp_path / "c", "tmpe5f6-algo-1-klmno", parts,
            env={"MODEL_S3_PREFIX": "rl-deepracer-sagemaker"})
    exporter = exporter_for(config)
    exporter.start()
    docker = exporter.docker
    assert docker is not None
    try:
        before = epoch_lines(parts[0])
        wait_until(lambda: epochs_of(docker.state(), "rl-deepracer-sagemaker") == before,
                   "the first part")
        got = refresh(exporter)
        assert value(got, "deepracer_policy_epochs_total", model="drfc") == before
        assert value(got, "deepracer_exporter_docker_containers_followed") == 1
        assert value(got, "deepracer_exporter_docker_errors_total", reason="unreachable") == 0

        dockerd.stop()
        wait_until(lambda: docker.state().errors["unreachable"] > 0, "a counted error")
        down = refresh(exporter)
        assert value(down, "deepracer_exporter_docker_containers_followed") == 0
        assert value(down, "deepracer_policy_epochs_total", model="drfc") == before  # kept

        dockerd.start()
        dockerd.docker("start", "tmpe5f6-algo-1-klmno")
        wait_until(lambda: epochs_of(docker.state(), "rl-deepracer-sagemaker") == 84,
                   "every epoch")
        time.sleep(1.0)
        up = refresh(exporter)
    finally:
        exporter.stop()
    assert value(up, "deepracer_policy_epochs_total", model="drfc") == 84
    assert value(up, "deepracer_exporter_docker_lines_total", result="policy") == 84
    assert value(up, "deepracer_exporter_docker_containers_followed") == 1
    assert value(up, "deepracer_exporter_docker_errors_total", reason="unreachable") > 0
    per_iteration = {int(dict(k)["iteration"]): v for k, v in
                     pick(up, "deepracer_iteration_policy_entropy", model="drfc").items()}
    expected = means(console)
    assert sorted(per_iteration) == sorted(expected)
    for iteration, mean in expected.items():
        assert per_iteration[iteration] == pytest.approx(mean, abs=1e-12)
    rows = printed(console)
    assert value(up, "deepracer_policy_entropy", model="drfc") == pytest.approx(rows[-1][3],
                                                                               abs=1e-12)



def test_a_container_printing_a_second_training_moves_to_its_prefix(
        engine: Dockerd, tmp_path: Path) -> None:
    """`simulate --print-trainer-log` prints the clone round in the same container: its new
    `s3_prefix` line starts that model's figures afresh."""
    from deepracer_exporter.simulate import TrainingSimulator, TrainingSpec

    texts = []
    for prefix in ("round-1", "round-2"):
        sim = TrainingSimulator(TrainingSpec(episodes_between_training=5, seed=9))
        sim.advance(15)
        texts.append("\n".join(sim.take_trainer_lines(prefix)) + "\n")
    trainer(engine, tmp_path / "sim", "demo-trainer-algo-1-x", ["".join(texts)])
    logs = DockerLogs(Engine(engine.socket), poll_interval=0.2)
    logs.start()
    try:
        wait_until(lambda: epochs_of(logs.state(), "round-2") == 3 * 3, "the second round")
        state = logs.state()
    finally:
        logs.stop()
    assert set(state.models) == {"round-2"}
    assert sorted(dict(state.models["round-2"].iteration_entropy)) == [0, 1, 2]


def test_at_most_max_containers_are_followed(engine: Dockerd, samples: Path,
                                             tmp_path: Path) -> None:
    console = console_log(samples)
    for k in range(3):
        trainer(engine, tmp_path / f"t{k}", f"tmp{k}-algo-1-abc", [console],
                env={"MODEL_S3_PREFIX": f"model-{k}"})
    logs = DockerLogs(Engine(engine.socket), poll_interval=0.2, max_containers=2)
    logs.start()
    try:
        wait_until(lambda: sum(epochs_of(logs.state(), f"model-{k}") == 84 for k in range(3))
                   == 2, "two containers read")
        time.sleep(1.0)
        state = logs.state()
    finally:
        logs.stop()
    assert state.followed == 2 and len(state.models) == 2
