"""The history window (issue 11): an idle model exports its current state but not its
per-iteration families; written to again, its history comes back. Checked on the rendered
exposition of snapshots built from the real sample logs through the exporter's own refresh."""

from __future__ import annotations

import os
import shutil
import time
from dataclasses import replace
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from deepracer_exporter.exposition import Exposition
from deepracer_exporter.snapshot import Snapshot
from helpers import Samples, config_from, exporter_for, parse

DAY = 86400.0
WEEK = 7 * DAY


@pytest.fixture
def logs(samples: Path, tmp_path: Path) -> Path:
    for name in ("a", "b"):
        shutil.copytree(samples / "sample-drfc-1-logs", tmp_path / name)
    return tmp_path


def age(root: Path, seconds: float) -> float:
    """Sets every file's modification time `seconds` ago; returns that time."""
    when = time.time() - seconds
    for path in root.rglob("*"):
        os.utime(path, (when, when))
    return when


def refreshed(logs: Path) -> Snapshot:
    yaml = "".join(f"  - name: {n}\n    directory: {logs}\n    prefix: {n}\n" for n in "ab")
    return exporter_for(config_from("models:\n" + yaml)).refresher.refresh_once()


def window(snap: Snapshot, max_age: float) -> Snapshot:
    """The snapshot as the refresher builds it with `history_max_age` set for every model."""
    return replace(snap, models=tuple(replace(m, history_max_age=max_age) for m in snap.models))


def families(samples: Samples, model: str) -> set[str]:
    return {name for name, labels in samples if ("model", model) in labels}


def iteration_samples(samples: Samples, model: str) -> int:
    return sum(1 for name, labels in samples
               if name.startswith("deepracer_iteration_") and ("model", model) in labels)


def test_idle_summary_then_written_again_history_back(logs: Path) -> None:
    exposition = Exposition(CollectorRegistry())

    def render(snap: Snapshot) -> Samples:
        exposition.update(snap)
        return parse(exposition.rendered.plain.decode())

    age(logs / "a", 30 * DAY)  # a: last written a month ago; b: just now
    age(logs / "b", 0)
    first = refreshed(logs)
    assert all(m.derived is not None and m.derived.iterations for m in first.models)
    always = render(window(first, float("inf")))
    week = render(window(first, WEEK))

    # "always": both models export their history.
    assert iteration_samples(always, "a") > 0 and iteration_samples(always, "b") > 0
    # 7d: a is idle -> every current-state family, no per-iteration one; b unchanged.
    assert iteration_samples(week, "a") == 0
    assert families(week, "a") == {n for n in families(always, "a")
                                   if not n.startswith("deepracer_iteration_")}
    assert {k: v for k, v in week.items() if ("model", "b") in k[1]} == {
        k: v for k, v in always.items() if ("model", "b") in k[1]}
    assert week[("deepracer_model_iteration_history", frozenset({("model", "a")}))] == 0
    assert week[("deepracer_model_iteration_history", frozenset({("model", "b")}))] == 1
    for name in ("deepracer_model_iteration", "deepracer_model_best_lap_seconds",
                 "deepracer_model_episodes_total", "deepracer_model_rolling_reward",
                 "deepracer_model_plateau_iterations", "deepracer_model_finished",
                 "deepracer_best_lap_seconds", "deepracer_exporter_refresh_success"):
        assert name in families(week, "a"), name

    # a is written to again: the next refresh brings its history back.
    metrics = logs / "a" / "metrics" / "TrainingMetrics.json"
    metrics.write_bytes(metrics.read_bytes())
    again = render(window(refreshed(logs), WEEK))
    assert again[("deepracer_model_iteration_history", frozenset({("model", "a")}))] == 1
    assert iteration_samples(again, "a") == iteration_samples(always, "a")


def test_same_derived_result_follows_the_window(logs: Path) -> None:
    """The renderer's cache is keyed on the idle state too: the same `Derived` is rendered
    without history when the model turns idle and with it when the window moves back."""
    exposition = Exposition(CollectorRegistry())
    age(logs, 0)
    snap = window(refreshed(logs), WEEK)
    counts = []
    for created in (snap.created, snap.created + 2 * WEEK, snap.created):
        exposition.update(replace(snap, created=created))
        counts.append(iteration_samples(parse(exposition.rendered.plain.decode()), "a"))
    assert counts[0] > 0 and counts[1] == 0 and counts[2] == counts[0]
