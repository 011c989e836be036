"""The benchmark harness runs end to end (`bench/run.py --quick`) and its figures are sane.

Timings are not asserted (they depend on the machine); what is asserted is what the exporter
must do whatever the machine: on an unchanged refresh one listing per model and no other
request (side files are read again only when the listing changes), nothing downloaded or
re-parsed, the same exposition
whether rendered from cache or not; a grown file read by its tail; every scrape answered.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def quick(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, dict[str, Any]]:
    out = tmp_path_factory.mktemp("bench") / "RESULTS.md"
    raw = out.with_suffix(".json")
    proc = subprocess.run([sys.executable, str(REPO / "bench" / "run.py"), "--quick",
                           "--out", str(out), "--json", str(raw)],
                          capture_output=True, text=True, timeout=120, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out.read_text(encoding="utf-8"), json.loads(raw.read_text(encoding="utf-8"))


def test_report_has_machine_command_and_every_table(quick: tuple[str, dict[str, Any]]) -> None:
    text, raw = quick
    assert "--quick" in raw["command"] and "bench/run.py" in raw["command"]
    assert raw["command"] in text
    for field in ("CPU", "cores", "memory", "Python", "numpy", "pandas"):
        assert f"| {field} |" in text
    assert raw["machine"]["CPU"] != "unknown"
    for n in range(1, 6):
        assert f"\n## {n}. " in text
    assert text.count("|---|") >= 5


def test_ingest_ratios_positive_and_same_rows_as_deepracer_utils(
        quick: tuple[str, dict[str, Any]]) -> None:
    sizes = quick[1]["ingest"]["sizes"]
    assert sizes
    for figures in sizes.values():
        assert figures["ours_ms"] > 0 and figures["utils_ms"] > 0 and figures["ratio"] > 0
        # Both sides summarised the same training iterations (quick sizes stay under the cap).
        assert figures["training_rows_exported"] == figures["utils_summary_rows"]


def test_unchanged_refresh_downloads_nothing(quick: tuple[str, dict[str, Any]]) -> None:
    steady = quick[1]["steady"]
    models, workers = steady["models"], steady["workers"]
    cold, *unchanged = steady["refreshes"]
    assert cold["ok_models"] == models and cold["downloaded"] == models * (workers + 1)
    assert cold["downloaded_bytes"] > 0
    assert unchanged
    for r in unchanged:
        assert r["ok_models"] == models
        assert r["downloaded"] == 0 and r["downloaded_bytes"] == 0
        assert r["not_modified"] == 0
        # The exporter's own counters say the same as its snapshot health.
        assert r["exposed_delta"] == {"downloaded": 0, "not_modified": 0}
        # On the wire: one listing per model and nothing else; worker files whose listed ETag
        # is unchanged, and side files of an unchanged listing, are never requested.
        assert r["answers"] == {"ListObjectsV2 200": models}
        assert r["http_requests"] == models
    assert steady["downloaded_bytes"] == 0 and steady["requests_per_model"] == 1


def test_unchanged_refresh_renders_the_same_exposition(
        quick: tuple[str, dict[str, Any]]) -> None:
    raw = quick[1]
    for render in [raw["steady"]["render"], *raw["scrape"]["render"].values()]:
        # Reusing the cached lines gives byte for byte what rendering everything again gives.
        assert render["warm_equals_cold"] is True
        assert render["cold_ms"] > 0 and render["warm_ms"] > 0 and render["one_changed_ms"] > 0
    assert raw["steady"]["cpu_ms"] > 0
    assert raw["steady"]["cpu_ms_per_model"] * raw["steady"]["models"] == raw["steady"]["cpu_ms"]


def test_scrapes_answered_with_series_and_gzip_smaller(quick: tuple[str, dict[str, Any]]) -> None:
    scrape = quick[1]["scrape"]
    assert scrape["runs"] and scrape["render"]
    for run in scrape["runs"].values():
        assert run["requests"] > 0 and run["errors"] == 0
        assert 0 < run["p50_ms"] <= run["p99_ms"]
        assert run["bytes"] == run["expected_bytes"]
    assert {r["encoding"] for r in scrape["runs"].values()} == {"gzip", "plain"}
    by_models: dict[int, int] = {}
    for render in scrape["render"].values():
        assert 0 < render["gzip_bytes"] < render["plain_bytes"]
        by_models[render["models"]] = render["iteration_series"]
    # Per-iteration series grow with the number of models exported.
    counts = sorted(by_models)
    assert by_models[counts[-1]] > by_models[counts[0]] > 0


def test_memory_figures_sane(quick: tuple[str, dict[str, Any]]) -> None:
    for mem in quick[1]["memory"].values():
        assert mem["records"] >= mem["episodes"]
        assert 30 <= mem["columns_bytes_per_record"] <= 64
        assert mem["rss_per_model"] > 0
        assert 0 < mem["rendered_gzip_per_model"] < mem["rendered_plain_per_model"]
        assert mem["total_rss_per_model"] > mem["rss_per_model"]


def test_grown_file_refreshed_by_its_tail(quick: tuple[str, dict[str, Any]]) -> None:
    grow = quick[1]["grow"]
    assert grow
    for figures in grow.values():
        reps = len(figures["tail_per_refresh"])
        assert reps > 0
        # Every refresh after one new episode was a tail read, counted on /metrics too, and
        # nothing was downloaded in full.
        assert figures["tail_per_refresh"] == [1] * reps
        assert figures["exposed_tail_per_refresh"] == [1] * reps
        assert figures["downloaded_per_refresh"] == [0] * reps
        assert 0 < figures["tail_bytes"] < figures["bytes"]
        # The comparison really is a full read: downloaded (metrics + hyperparameters), no tail.
        assert figures["full_read_tail"] == [0] * reps
        assert all(n >= 2 for n in figures["full_read_downloaded"])
        assert figures["tail_equals_full_read"] is True
        for k in ("refresh", "exporter", "render", "full", "utils", "derive"):
            assert figures[k] > 0
