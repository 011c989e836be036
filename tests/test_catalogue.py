"""The metric catalogue (issue 14) and the per-iteration series it selects (issue 11): the
tables of docs/metrics.md generated from it, the exposition made of it, the reduced default set
against the opt-in full set (today's golden), and the per-model series self-report."""

from __future__ import annotations

import shutil
from collections import Counter
from dataclasses import replace
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from deepracer_exporter import catalogue
from deepracer_exporter.catalogue import FAMILIES, ITERATION_FAMILIES
from deepracer_exporter.config import FULL_ITERATION_STATS
from deepracer_exporter.exposition import Exposition
from deepracer_exporter.snapshot import Snapshot
from helpers import Samples, config_from, exporter_for, parse

METRICS_DOC = Path(__file__).resolve().parent.parent / "docs" / "metrics.md"
FULL_GOLDEN = Path(__file__).parent / "golden" / "drfc1-full.prom"
VOLATILE = ("deepracer_model_last_update_timestamp_seconds",
            "deepracer_exporter_last_refresh_success_timestamp_seconds",
            "deepracer_exporter_refresh_duration_seconds",
            "deepracer_exporter_snapshot_timestamp_seconds")
# The agreed default set (DECISIONS.md), written out here rather than read from the code.
AGREED = {
    "training": {"reward": {"mean", "median", "max"}, "completion_ratio": {"mean", "median", "max"},
                 "episode_seconds": {"mean"}, "lap_seconds": {"mean", "min"},
                 "rolling_reward": {"mean"}, "rolling_completion_ratio": {"mean"}},
    "evaluation": {"reward": {"mean", "max"}, "completion_ratio": {"mean", "max"},
                   "episode_seconds": set(), "lap_seconds": {"mean", "min"},
                   "rolling_reward": {"mean"}, "rolling_completion_ratio": {"mean"}},
}


def test_metric_tables_are_generated_from_the_catalogue() -> None:
    text = METRICS_DOC.read_text(encoding="utf-8")
    assert catalogue.update_generated(text) == text, (
        "docs/metrics.md is stale: run python -m deepracer_exporter.catalogue docs/metrics.md")
    for f in FAMILIES:
        assert f"| `{f.name}` |" in text, f.name


def test_meanings_keep_acronyms_and_names_capitalised() -> None:
    """A meaning starts lower case, except an acronym or a name: "KL divergence", not "kL"."""
    meanings = [line.rsplit(" | ", 1)[1] for line in METRICS_DOC.read_text().splitlines()
                if line.startswith("| `deepracer_")]
    assert len(meanings) == len(FAMILIES)
    for meaning in meanings:
        first = meaning.split(" ", 1)[0]
        assert not (first[:1].islower() and first[1:2].isupper()), meaning
        assert first != "unix", meaning
    assert any(m.startswith("KL divergence") for m in meanings)


def test_names_types_and_units_follow_the_conventions() -> None:
    names = [f.name for f in FAMILIES]
    assert len(names) == len(set(names))
    for f in FAMILIES:
        assert f.type in ("gauge", "counter"), f.name
        assert f.name.endswith("_total") == (f.type == "counter"), f.name
        base = f.name.removesuffix("_total")
        assert not f.unit or base.endswith(f"_{f.unit}"), f.name
        assert f.unit or not base.endswith(("_seconds", "_ratio", "_bytes")), f.name
        assert f.section in catalogue.SECTIONS, f.name


@pytest.fixture(scope="module")
def snapshot(samples: Path, tmp_path_factory: pytest.TempPathFactory) -> Snapshot:
    root = tmp_path_factory.mktemp("logs")
    shutil.copytree(samples / "sample-drfc-1-logs", root / "drfc1")
    # The sample files keep their 2022 modification times: export their history anyway.
    config = config_from("history_max_age: always\n"
                         f"models:\n  - name: drfc1\n    directory: {root}\n    prefix: drfc1\n")
    return exporter_for(config).refresher.refresh_once()


def exposition_text(snap: Snapshot) -> str:
    exposition = Exposition(CollectorRegistry())
    exposition.update(snap)
    return exposition.rendered.plain.decode()


def test_exposition_is_exactly_the_catalogue(snapshot: Snapshot) -> None:
    text = exposition_text(replace(snapshot, iteration_stats=FULL_ITERATION_STATS))
    exposed = {f.name: f for f in text_string_to_metric_families(text)}
    declared = {f.name.removesuffix("_total"): f for f in FAMILIES}
    assert exposed.keys() == declared.keys()
    for name, fam in exposed.items():
        f = declared[name]
        assert fam.type == f.type, name
        assert "Cached: refreshed in the background every 15s." in fam.documentation, name
        # per-iteration families declare only the labels beside model, phase, round, iteration
        common = {"model", "phase", "round", "iteration"} if f in ITERATION_FAMILIES else set()
        for s in fam.samples:
            assert set(s.labels) == set(f.labels) | common, name


def per_iteration(samples: Samples) -> dict[tuple[str, str], Counter[str]]:
    """(phase, iteration) -> per-iteration family -> samples."""
    out: dict[tuple[str, str], Counter[str]] = {}
    for name, labels in samples:
        d = dict(labels)
        if "phase" in d and "iteration" in d and name.startswith("deepracer_iteration_"):
            out.setdefault((d["phase"], d["iteration"]), Counter())[name] += 1
    return out


def test_default_set_is_the_agreed_one_and_about_27_series_per_iteration(
        snapshot: Snapshot) -> None:
    samples = parse(exposition_text(snapshot))
    stats: dict[tuple[str, str], set[str]] = {}
    for name, labels in samples:
        d = dict(labels)
        if name.startswith("deepracer_iteration_") and "stat" in d and "phase" in d:
            stats.setdefault((d["phase"], name.removeprefix("deepracer_iteration_")),
                             set()).add(d["stat"])
    for phase, agreed in AGREED.items():
        for family, want in agreed.items():
            assert stats.get((phase, family), set()) == want, (phase, family)
    rows = per_iteration(samples)
    iterations = {it for _, it in rows}
    both = [it for it in iterations if ("training", it) in rows and ("evaluation", it) in rows]
    assert both, "the sample has evaluation iterations"
    typical = 0
    for it in both:
        total = sum(rows[("training", it)].values()) + sum(rows[("evaluation", it)].values())
        assert total <= 30, (it, total)
        # laps completed and two outcomes in both phases: 11 + 8 stat series, completed ratio,
        # episodes and two status series per phase
        if all(rows[(p, it)]["deepracer_iteration_lap_seconds"] and
               rows[(p, it)]["deepracer_iteration_status_episodes"] == 2 for p in AGREED):
            assert total == 27, it
            typical += 1
    assert typical


def test_full_set_is_todays_exposition(snapshot: Snapshot) -> None:
    """`iteration_stats: full` gives back every sample of the exposition before the reduced
    default (golden drfc1-full.prom); only the two new self-report families are added."""
    got = parse(exposition_text(replace(snapshot, iteration_stats=FULL_ITERATION_STATS)))
    text = FULL_GOLDEN.read_text().replace("/logs", str(snapshot.models[0].bucket))
    # since issue 13 the sample's simtrace CSVs are read too: more objects and bytes
    reads = ("deepracer_exporter_object_requests_total",
             "deepracer_exporter_downloaded_bytes_total")
    want = {k: v for k, v in parse(text).items()
            if not k[0].startswith(VOLATILE) and k[0] not in reads}
    for key, expected in want.items():
        assert got[key] == pytest.approx(expected, abs=1e-9), key
    assert {k[0] for k in got.keys() - want.keys()} - set(VOLATILE) == {
        "deepracer_model_iteration_history", "deepracer_exporter_series", *reads,
        "deepracer_exporter_refresh_interval_seconds",  # issue 29
        # simulator health from the sample's simtrace (issue 13; no wall clock in it)
        "deepracer_iteration_step_seconds", "deepracer_model_step_p95_seconds",
        "deepracer_model_step_mean_seconds", "deepracer_model_simtrace_iteration",
        "deepracer_evaluation_step_seconds",
        # training analysis from the same simtrace (issue 28)
        "deepracer_iteration_speed_meters_per_second", "deepracer_iteration_distance_meters",
        "deepracer_iteration_projected_lap_seconds", "deepracer_model_action_ratio"}


def test_override_selects_exactly_the_stats_asked_for(snapshot: Snapshot) -> None:
    chosen = tuple((p, k, ("min",) if (p, k) == ("training", "reward") else ())
                   for p, k, _ in FULL_ITERATION_STATS)
    samples = parse(exposition_text(replace(snapshot, iteration_stats=chosen)))
    with_stat = {(dict(labels)["phase"], name, dict(labels)["stat"]) for name, labels in samples
                 if name.startswith("deepracer_iteration_") and "stat" in dict(labels)
                 and "phase" in dict(labels)}
    assert with_stat == {("training", "deepracer_iteration_reward", "min")}
    assert any(n == "deepracer_iteration_episodes" for n, _ in samples)


@pytest.mark.parametrize("selection", ["default", "full", "idle"])
def test_series_self_report_counts_the_models_samples(samples: Path, tmp_path: Path,
                                                      selection: str) -> None:
    root = tmp_path / "logs"
    for name in ("m1", "m2"):
        shutil.copytree(samples / "sample-drfc-1-logs", root / name)
    yaml = "".join(f"  - name: {n}\n    directory: {root}\n    prefix: {n}\n" for n in ("m1", "m2"))
    snap = exporter_for(config_from("history_max_age: always\nmodels:\n" + yaml)
                        ).refresher.refresh_once()
    if selection == "full":
        snap = replace(snap, iteration_stats=FULL_ITERATION_STATS)
    if selection == "idle":
        snap = replace(snap, models=(replace(snap.models[0], history_max_age=0.0),
                                     snap.models[1]), created=snap.created + 1)
    got = parse(exposition_text(snap))
    for model in ("m1", "m2"):
        carried = sum(1 for _, labels in got if ("model", model) in labels)
        assert got[("deepracer_exporter_series", frozenset({("model", model)}))] == carried
    idle = got[("deepracer_exporter_series", frozenset({("model", "m1")}))]
    active = got[("deepracer_exporter_series", frozenset({("model", "m2")}))]
    assert (idle < active) == (selection == "idle")
