"""Folder names under `discover:` that are not UTF-8, and names that would break a log line
(issue 24, items 3 and 11). Real folders (names as bytes), the real command line, promtool."""

from __future__ import annotations

import logging
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from deepracer_exporter.lograte import LineFormatter
from deepracer_exporter.polling import DISCOVER_CYCLES
from deepracer_exporter.simulate import TrainingSimulator, TrainingSpec, key_for
from helpers import config_from, exporter_for, parse, pick, refresh, require_tool, value

LOG_RECORD = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} [A-Z]+ ")


def write_training(root: Path, name: bytes, sim: TrainingSimulator) -> None:
    """The training's TrainingMetrics.json under the folder `name` (bytes, as on disk)."""
    path = os.fsencode(root) + b"/" + name + b"/" + os.fsencode(key_for("", 0))
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as fh:
        fh.write(sim.document(0))


def simulator(seed: int, episodes: int) -> TrainingSimulator:
    sim = TrainingSimulator(TrainingSpec(episodes_between_training=10, seed=seed))
    sim.advance(episodes)
    return sim


def once(root: Path, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    config = tmp_path / "config.yml"
    config.write_text(f"discover:\n  - directory: {root}\n")
    return subprocess.run([sys.executable, "-m", "deepracer_exporter.cli", "--config",
                           str(config), "--once"], capture_output=True, text=True,
                          encoding="utf-8", errors="surrogateescape", timeout=120)


def test_folder_not_utf8_at_start_is_skipped_with_one_line(tmp_path: Path) -> None:
    """Before: exit 1 with UnicodeEncodeError from generate_latest."""
    root = tmp_path / "logs"
    write_training(root, b"good", simulator(1, 40))
    write_training(root, b"bad\xff", simulator(2, 40))
    done = once(root, tmp_path)
    assert done.returncode == 0, done.stderr
    got = parse(done.stdout)
    assert {dict(k)["model"] for k in pick(got, "deepracer_model_info")} == {"good"}
    skipped = [line for line in done.stderr.splitlines() if "not UTF-8" in line]
    assert len(skipped) == 1 and "b'bad\\xff'" in skipped[0], done.stderr
    lint = subprocess.run([require_tool("promtool", "prometheus"), "check", "metrics"],
                          input=done.stdout, capture_output=True, text=True, timeout=60)
    assert lint.returncode == 0, lint.stdout + lint.stderr


def test_folder_not_utf8_appearing_while_running_stops_no_other_model(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Before: every cycle failed from then on and /metrics froze for every model."""
    caplog.set_level(logging.INFO, logger="deepracer_exporter")
    root = tmp_path / "logs"
    good = simulator(1, 40)
    write_training(root, b"good", good)
    exporter = exporter_for(config_from(f"discover:\n  - directory: {root}\n"))
    first = value(refresh(exporter), "deepracer_model_iteration", model="good")
    write_training(root, b"bad\xff", simulator(2, 40))
    for _ in range(2 * DISCOVER_CYCLES):  # the root is listed twice meanwhile
        good.advance(10)
        write_training(root, b"good", good)
        got = refresh(exporter)  # parses: the exposition is valid
        assert value(got, "deepracer_model_iteration", model="good") > first
        first = value(got, "deepracer_model_iteration", model="good")
        assert {dict(k)["model"] for k in pick(got, "deepracer_model_info")} == {"good"}
    skipped = [r.getMessage() for r in caplog.records if "not UTF-8" in r.getMessage()]
    assert len(skipped) == 1, skipped  # once, not every cycle


def test_names_that_would_break_a_log_line_are_escaped_in_it(tmp_path: Path) -> None:
    """NEL (U+0085) and U+2028 are valid in a label value, but log readers end a line there."""
    root = tmp_path / "logs"
    names = {"nel\x85name": "nel\\x85name", "sep\u2028name": "sep\\u2028name"}
    for n, name in enumerate(names):
        write_training(root, name.encode(), simulator(n, 40))
    done = once(root, tmp_path)
    assert done.returncode == 0, done.stderr
    assert {dict(k)["model"] for k in pick(parse(done.stdout), "deepracer_model_info")} == set(
        names)
    assert not re.search("[\x85\u2028\u2029]", done.stderr)
    lines = done.stderr.split("\n")[:-1]
    assert all(LOG_RECORD.match(line) for line in lines), lines  # one line per record
    for escaped in names.values():
        assert any(f"discovered model {escaped} " in line for line in lines), lines


def test_line_formatter_escapes_what_breaks_a_line_and_keeps_tracebacks() -> None:
    formatter = LineFormatter("%(levelname)s %(message)s")
    try:
        raise ValueError("key a\rb")
    except ValueError:
        exc_info = sys.exc_info()
    record = logging.LogRecord("deepracer_exporter", logging.WARNING, __file__, 1,
                               "model %s failed:\n%s", ("a\x85b\u2028c\u2029d\x1b[2Je\x7f",
                                                        "second line\tkept"), exc_info)
    text = formatter.format(record)
    assert text.startswith("WARNING model a\\x85b\\u2028c\\u2029d\\x1b[2Je\\x7f failed:\n"
                           "second line\tkept\nTraceback (most recent call last):\n")
    assert text.endswith("ValueError: key a\\rb")
