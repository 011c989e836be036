"""Signals to a serving process (issue 24, item 2): SIGTERM right after SIGHUP, as systemd and
Docker send on reload-then-stop, must still stop it. Real processes, real signals."""

from __future__ import annotations

import os
import random
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

STOP_SECONDS = 5.0  # the bound the issue sets for HUP+TERM


def start_serving(config: Path) -> tuple[subprocess.Popen[str], list[str]]:
    """A serving exporter, once it logs that it serves, and its log lines as they come."""
    proc = subprocess.Popen([sys.executable, "-m", "deepracer_exporter.cli", "--config",
                             str(config)], stderr=subprocess.PIPE, text=True)
    assert proc.stderr is not None
    lines: list[str] = []
    serving = threading.Event()

    def read() -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            lines.append(line)
            if re.search(r"serving http://", line):
                serving.set()

    threading.Thread(target=read, daemon=True).start()
    if not serving.wait(60):
        proc.kill()
        pytest.fail("the exporter did not start serving:\n" + "".join(lines))
    return proc, lines


def hup_then_term(config: Path, gap: float) -> str | None:
    """Send SIGHUP, then SIGTERM `gap` seconds later (0: back to back); None when the process
    exited with 0 within STOP_SECONDS of the SIGTERM, else what happened."""
    proc, lines = start_serving(config)
    try:
        os.kill(proc.pid, signal.SIGHUP)
        if gap:
            time.sleep(gap)
        os.kill(proc.pid, signal.SIGTERM)
        try:
            code = proc.wait(STOP_SECONDS)
        except subprocess.TimeoutExpired:
            return f"gap {gap:.3f}s: still serving {STOP_SECONDS:g}s after SIGTERM"
        return None if code == 0 else f"gap {gap:.3f}s: exit {code}\n{''.join(lines)}"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


@pytest.fixture
def config(samples: Path, tmp_path: Path) -> Path:
    shutil.copytree(samples / "sample-drfc-1-logs", tmp_path / "logs" / "drfc1")
    path = tmp_path / "config.yml"
    path.write_text(f"listen: 127.0.0.1:0\nmodels:\n  - name: drfc1\n"
                    f"    directory: {tmp_path / 'logs'}\n    prefix: drfc1\n")
    return path


def gaps(trials: int) -> list[float]:
    """Back to back every other trial; in between, SIGTERM at a random moment of the reload
    (up to 50 ms after SIGHUP)."""
    rng = random.Random(24)
    return [rng.uniform(0.0, 0.05) if i % 2 else 0.0 for i in range(trials)]


def test_sigterm_right_after_sighup_stops_the_exporter(config: Path) -> None:
    failures = [f for f in map(lambda g: hup_then_term(config, g), gaps(4)) if f]
    assert failures == []


@pytest.mark.soak
def test_soak_sigterm_after_sighup_stops_the_exporter_in_100_of_100_trials(config: Path
                                                                           ) -> None:
    failures = [f for f in map(lambda g: hup_then_term(config, g), gaps(100)) if f]
    assert failures == [], f"{len(failures)} of 100: {failures[:5]}"
