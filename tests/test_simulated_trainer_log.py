"""The simulated trainer prints the SageMaker container's log (`simulate --print-trainer-log`):
the parser reads back exactly the epochs the simulator pushes, with their iterations."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from deepracer_exporter.config import parse_config
from deepracer_exporter.policylog import read_log
from deepracer_exporter.simulate import TrainingSimulator, TrainingSpec

REPO = Path(__file__).resolve().parent.parent


def test_printed_lines_carry_the_pushed_epochs_with_their_iterations() -> None:
    spec = TrainingSpec(episodes_between_training=10, seed=4)
    sim = TrainingSimulator(spec)
    lines: list[str] = []
    for _ in range(7):  # chunking does not matter
        sim.advance(13)
        lines += sim.take_trainer_lines("my-prefix")
    assert lines[0].startswith("Training Worker Args: Namespace(")
    assert "s3_prefix='my-prefix'" in lines[0]
    state, bad = read_log("\n".join(lines), now=1.0)
    iterations = sim.iterations
    assert bad == 0 and iterations == 9
    assert state.epochs == iterations * spec.num_epochs
    got = dict(state.iteration_entropy)
    assert sorted(got) == list(range(iterations))
    for iteration in range(iterations):
        epochs = sim.policy_update(iteration)
        assert got[iteration] == pytest.approx(
            float(np.mean([float(e) for _, e, _, _ in epochs])), abs=1e-12)
    last = sim.policy_update(iterations - 1)[-1]
    assert (state.entropy, state.kl_divergence, state.surrogate_loss) == (
        float(last[1]), float(last[2]), float(last[3]))


def test_simulate_prints_the_first_models_trainer_log(s3_endpoint: str, tmp_path: Path) -> None:
    env = {**os.environ, "AWS_ACCESS_KEY_ID": "x", "AWS_SECRET_ACCESS_KEY": "x"}
    out = (tmp_path / "stdout").open("w+")
    proc = subprocess.Popen([str(Path(sys.executable).with_name("deepracer-exporter")), "simulate",
                             "--endpoint-url", s3_endpoint, "--bucket", "printed",
                             "--interval", "0.005s", "--print-trainer-log"],
                            stdout=out, stderr=subprocess.DEVNULL, env=env)
    try:
        deadline = time.monotonic() + 60
        while (tmp_path / "stdout").read_text().count("Checkpoint>") < 3:
            assert time.monotonic() < deadline and proc.poll() is None
            time.sleep(0.1)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
        out.close()
    text = (tmp_path / "stdout").read_text()
    assert "s3_prefix='demo-single-worker'" in text.splitlines()[0]
    state, bad = read_log(text, now=1.0)
    assert bad == 0 and state.epochs >= 2 * TrainingSpec().num_epochs
    assert "demo-two-workers" not in text


def test_demo_trainer_log_override_follows_the_trainer_container() -> None:
    """docker-compose.trainer-logs.yml: the exporter follows the demo trainer's container, whose
    compose name (v2 `<project>-trainer-1`, v1 `<project>_trainer_1`) the pattern matches."""
    override = yaml.safe_load((REPO / "docker-compose.trainer-logs.yml").read_text())
    exporter = override["services"]["exporter"]
    assert "/var/run/docker.sock:/var/run/docker.sock:ro" in exporter["volumes"]
    assert "--print-trainer-log" in override["services"]["trainer"]["command"]
    mounted = next(v.split(":")[0] for v in exporter["volumes"]
                   if v.endswith(":/etc/deepracer-exporter/config.yml:ro"))
    config = parse_config((REPO / mounted).read_text(), mounted, env={})
    assert config.docker is not None
    pattern = re.compile(config.docker.containers)  # as dockerlogs searches container names
    for name in ("deepracer-exporter-trainer-1", "deepracer-exporter_trainer_1"):
        assert pattern.search(name), name
    for name in ("deepracer-exporter-exporter-1", "deepracer-exporter-minio-1"):
        assert not pattern.search(name), name
