"""The demo exercises everything (issue 19): every family of the catalogue, every dashboard panel.

`deepracer_exporter.demo.Demo` is what `deepracer-exporter demo` runs: moto's S3 server on
loopback, the simulated training of the demo models writing into it (and pushing DRfC's metrics
to the exporter's listener), and the exporter discovering them. Here it runs in-process with
short intervals (an episode every 20 ms, a refresh every 0.25 s) under a real Prometheus with the
project's rules, until every family of the catalogue (which also generates README's tables) has
samples for every model it can describe; then every dashboard query returns data for each demo
model. The test is driven by the catalogue and the dashboards: a new family or panel is covered
as soon as it exists, and fails here if the demo cannot show it.
"""

from __future__ import annotations

import math
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

import dashboards as dash
from deepracer_exporter.catalogue import FAMILIES, ExporterFamily, Family, IterationFamily
from deepracer_exporter.config import DEFAULT_ITERATION_STATS
from deepracer_exporter.demo import DEMO_MODELS, Demo
from deepracer_exporter.parse import PHASES
from deepracer_exporter.telegraf_listener import parse_line
from helpers import Samples, parse, scrape
from promserver import DEFAULT_JOB, PromServer

REPO = Path(__file__).resolve().parent.parent
RULE_FILES = sorted((REPO / "prometheus" / "rules").glob("*.yml"))
INTERVAL = 0.02  # seconds between simulated episodes
REFRESH = 0.25  # exporter refresh interval; an iteration (20 episodes) takes longer
DEADLINE_S = 120.0  # generous: on an idle machine everything is there after about 20 s
MODELS = tuple(name for name, _ in DEMO_MODELS)

# Families a healthy demo cannot give a sample, with the reason: only the log sources'. The
# error and rejection counters are created at zero (refresh errors per reason, push lines per
# result), the unmatched-push gauge is 0 but present, and the simulator writes every file a DRfC
# training does.
NEVER_SAMPLED: dict[str, str] = dict.fromkeys(
    ("deepracer_exporter_docker_containers_followed", "deepracer_exporter_docker_errors_total",
     "deepracer_exporter_docker_lines_total"),
    "the in-process demo runs no Docker Engine: tests/test_dockerlogs.py shows them against a "
    "real dockerd, docker-compose.trainer-logs.yml in the compose demo") | dict.fromkeys(
    ("deepracer_exporter_cloudwatch_errors_total", "deepracer_exporter_cloudwatch_lines_total"),
    "the demo reads no CloudWatch Logs: tests/test_cloudwatchlogs.py shows them")


def coverage(got: Samples) -> dict[str, set[tuple[str, str]]]:
    """Family name -> the (model, phase) pairs with at least one sample of it ('' where the
    family has no such label)."""
    out: dict[str, set[tuple[str, str]]] = {}
    for name, labels in got:
        label = dict(labels)
        out.setdefault(name, set()).add((label.get("model", ""), label.get("phase", "")))
    return out


def phases_of(family: Family) -> tuple[str, ...]:
    """The phases a family has series for by default ('' for a family without phases): per
    iteration, those where the default `iteration_stats` select a stat of it (none selects
    evaluation episode_seconds, see DECISIONS.md)."""
    if isinstance(family, IterationFamily):
        if family.stat_key is None:
            return PHASES
        return tuple(p for p, key, stats in DEFAULT_ITERATION_STATS
                     if key == family.stat_key and stats)
    return PHASES if "phase" in family.labels else ("",)


def missing(got: Samples) -> list[str]:
    """What the demo does not show yet: families without samples, and families without a
    sample for one of the demo models (in each phase, for families with a phase)."""
    have = coverage(got)
    out = []
    for family in FAMILIES:
        if family.name in NEVER_SAMPLED:
            continue
        pairs = have.get(family.name, set())
        if not pairs:
            out.append(family.name)
            continue
        if isinstance(family, ExporterFamily):
            continue
        want = {(model, phase) for model in MODELS for phase in phases_of(family)}
        if not want <= pairs:
            out.append(f"{family.name} for {sorted(want - pairs)}")
    return out


@pytest.fixture(scope="module")
def demo() -> Iterator[Demo]:
    running = Demo(("127.0.0.1", 0), REFRESH, INTERVAL, CollectorRegistry())
    running.start()
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture(scope="module")
def prom(demo: Demo) -> Iterator[PromServer]:
    assert demo.exporter is not None
    with PromServer(f"127.0.0.1:{demo.exporter.port}", rule_files=RULE_FILES) as server:
        yield server


@pytest.fixture(scope="module")
def complete(demo: Demo, prom: PromServer) -> Samples:
    """The exposition once the demo shows everything, and Prometheus has scraped it 3 times."""
    assert demo.exporter is not None
    port = demo.exporter.port
    began = time.monotonic()
    got = parse(scrape(port))
    while missing(got):
        if time.monotonic() - began > DEADLINE_S:
            pytest.fail(f"after {DEADLINE_S:g}s the demo still does not show: {missing(got)}")
        time.sleep(0.5)
        got = parse(scrape(port))
    # Prometheus has scraped it three times since (1 s apart), history for the range queries
    done = time.time()
    prom.wait_for(lambda: (prom.query_value(f'timestamp(up{{job="{DEFAULT_JOB}"}})')
                           or 0) >= done + 3, timeout=30, message="three scrapes since")
    return got


def test_every_catalogue_family_has_samples(complete: Samples) -> None:
    assert missing(complete) == []
    assert not set(NEVER_SAMPLED) - {f.name for f in FAMILIES}, "stale NEVER_SAMPLED entry"
    assert {f.name for f in FAMILIES} - set(NEVER_SAMPLED) <= {name for name, _ in complete}
    # and no family shows only NaN, which a panel would not draw
    values: dict[str, list[float]] = {}
    for (name, _), v in complete.items():
        values.setdefault(name, []).append(v)
    assert [n for n, vs in values.items() if all(math.isnan(v) for v in vs)] == []


def test_the_push_is_understood_and_matched(complete: Samples, prom: PromServer) -> None:
    """Every line the simulated trainer sent was accepted, for the models it trains."""
    def lines(result: str) -> float:
        return complete[("deepracer_exporter_push_lines_total",
                         frozenset({("result", result)}))]

    assert lines("policy") > 0 and lines("episode") > 0
    for result in ("other_measurement", "malformed", "too_long", "model_limit",
                   "rate_limited"):
        assert lines(result) == 0, result
    assert complete[("deepracer_exporter_push_unmatched_models", frozenset())] == 0
    for model in MODELS:
        # entropy per iteration lines up with the iterations the S3 metrics give
        entropy = {r["metric"]["iteration"] for r in prom.query(
            f'deepracer_iteration_policy_entropy{{model="{model}"}}')}
        iterations = {r["metric"]["iteration"] for r in prom.query(
            f'deepracer_iteration_episodes{{model="{model}", phase="training"}}')}
        assert entropy and entropy <= iterations, model
        # ln(14) for an untrained policy, falling
        first = min(entropy, key=int)
        now = prom.query_value(f'deepracer_policy_entropy{{model="{model}"}}')
        start = prom.query_value(
            f'deepracer_iteration_policy_entropy{{model="{model}", iteration="{first}"}}')
        assert start is not None and now is not None
        assert 2.4 < start < 2.64 and now < start, model


@pytest.mark.parametrize("model", MODELS)
def test_every_dashboard_query_returns_data(complete: Samples, prom: PromServer,
                                            model: str) -> None:
    empty = []
    for q in dash.queries_for_model(model):
        result = prom.query(q.expr)
        if not result:
            empty.append(f"{q.dashboard_uid} panel {q.panel_id} {q.panel_title!r} "
                         f"{q.ref_id}: {q.expr}")
        elif f'model="{model}"' in q.expr:  # a per-model panel shows only that model
            assert {r["metric"].get("model", model) for r in result} == {model}, q
    assert not empty, f"{model}: dashboard queries without data:\n" + "\n".join(empty)


def test_dashboard_variables_list_the_demo_models(complete: Samples, prom: PromServer) -> None:
    """The model picker offers every demo model, under the job Prometheus scrapes it as."""
    checked = 0
    for board in dash.load_dashboards().values():
        for name, query in dash.variable_queries(board):
            match = re.fullmatch(r"label_values\((.+), (\w+)\)", query)
            assert match, query
            selector = dash.substitute(match.group(1), "")
            values = {r["metric"].get(match.group(2)) for r in prom.query(selector)}
            want = set(MODELS) if name == "model" else {DEFAULT_JOB}
            assert want <= values, (board["uid"], name, query)
            checked += 1
    assert checked >= 2


def test_simulate_pushes_to_the_target_it_is_given(s3_endpoint: str) -> None:
    """`deepracer-exporter simulate --push-to HOST:PORT` (the compose trainer): the demo models'
    S3 writes, and the trainer's epoch lines over UDP to HOST:PORT; a bad target is refused."""
    refused = subprocess.run([sys.executable, "-m", "deepracer_exporter.cli", "simulate",
                              "--bucket", "demo-push", "--push-to", "exporter"],
                             capture_output=True, text=True, timeout=60, check=False)
    assert refused.returncode == 2 and "HOST:PORT" in refused.stderr
    receiver = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    receiver.bind(("127.0.0.1", 0))
    receiver.settimeout(30)
    proc = subprocess.Popen(
        [sys.executable, "-m", "deepracer_exporter.cli", "simulate", "--endpoint-url",
         s3_endpoint, "--bucket", f"demo-push-{time.time_ns()}", "--interval", "0.01s",
         "--push-to", f"localhost:{receiver.getsockname()[1]}", "--log-level", "warning"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    models: set[str] = set()
    try:
        while models != set(MODELS):
            line = parse_line(receiver.recv(65535).decode())
            if line.measurement == "dr_sagemaker_epochs":
                models.add(line.tags["model"])
    finally:
        proc.terminate()
        proc.wait(timeout=15)
        receiver.close()
