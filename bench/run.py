"""Benchmarks of the exporter: ingest, steady state, render and scrape, memory, live refresh.

    .venv/bin/python bench/run.py            # full run (a few minutes), writes bench/RESULTS.md
    .venv/bin/python bench/run.py --quick    # tiny sizes, seconds; used by tests/test_bench.py

Everything compared is measured in the same run with interleaved repetitions and reported as
the median, so ratios hold on a noisy machine. S3 is moto's server in a child process and the
scrapers are another child process, so CPU figures are the exporter's own.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import hashlib
import io
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
sys.path.insert(0, str(BENCH))
os.environ.setdefault("AWS_ACCESS_KEY_ID", "bench")
os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "bench")
os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
os.environ.pop("AWS_PROFILE", None)

import prototypes  # noqa: E402
from prometheus_client import CollectorRegistry  # noqa: E402

from deepracer_exporter import parse  # noqa: E402
from deepracer_exporter import render as render_module  # noqa: E402
from deepracer_exporter.app import Exporter, StoreFactory, make_s3_client  # noqa: E402
from deepracer_exporter.config import S3Settings, parse_config  # noqa: E402
from deepracer_exporter.derive import RoundInput, derive  # noqa: E402
from deepracer_exporter.modelcache import DeriveSettings, ModelCache  # noqa: E402
from deepracer_exporter.refresher import Refresher  # noqa: E402
from deepracer_exporter.s3store import S3Store  # noqa: E402
from deepracer_exporter.server import Exposition  # noqa: E402
from deepracer_exporter.simulate import (  # noqa: E402
    TrainingSimulator,
    TrainingSpec,
    generate_documents,
    hyperparameters_key,
    key_for,
)
from deepracer_exporter.snapshot import Snapshot  # noqa: E402


@dataclass(frozen=True)
class Plan:
    ingest_sizes: tuple[int, ...]
    ingest_reps: int
    steady_models: int
    steady_episodes: int
    steady_refreshes: int
    scrape_models: tuple[int, ...]
    scrape_iterations: int
    scrape_seconds: float
    scrape_threads: int
    memory: tuple[tuple[int, int], ...]  # (episodes, models held)
    grow_sizes: tuple[int, ...]
    grow_reps: int
    render_reps: int


FULL = Plan((1_000, 10_000, 100_000), 5, 100, 1_000, 5, (1, 10, 100), 500, 3.0, 4,
            ((10_000, 30), (100_000, 6)), (1_000, 10_000, 50_000, 100_000), 3, 3)
QUICK = Plan((200, 1_000), 2, 8, 200, 2, (1, 4), 40, 0.5, 2, ((1_000, 4),), (200, 1_000), 2, 2)


def median_ms(values: list[float]) -> float:
    return 1e3 * statistics.median(values)


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    with contextlib.redirect_stdout(io.StringIO()):
        yield


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    started = time.perf_counter()
    out = fn()
    return time.perf_counter() - started, out


def table(headers: list[str], rows: list[list[Any]]) -> str:
    def cell(v: Any) -> str:
        if isinstance(v, float):
            return f"{v:,.1f}" if abs(v) >= 10 else f"{v:.2f}"
        return f"{v:,}" if isinstance(v, int) else str(v)

    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(cell(v) for v in r) + " |" for r in rows]
    return "\n".join(lines)


# -- 1. ingest ---------------------------------------------------------------------------------

def bench_ingest(plan: Plan, tmp: Path) -> tuple[str, dict[str, Any]]:
    from deepracer.logs.metrics import TrainingMetrics

    bodies: dict[int, bytes] = {}
    paths: dict[int, Path] = {}
    specs: dict[int, TrainingSpec] = {}
    for n in plan.ingest_sizes:
        specs[n] = TrainingSpec(max_episodes=n)
        bodies[n] = generate_documents(specs[n], n)[0]
        paths[n] = tmp / f"ingest-{n}.json"
        paths[n].write_bytes(bodies[n])
    candidates = prototypes.decoders()
    for fn in candidates.values():  # a candidate must give exactly the exporter's columns
        for n in plan.ingest_sizes:
            a, b = fn(bodies[n]), parse.parse_document(bodies[n])
            assert all(np.array_equal(getattr(a, f), getattr(b, f)) for f in (
                "episode", "trial", "phase", "status", "reward", "completion", "elapsed_ms"))

    def ours(n: int, decode: Callable[[bytes], parse.Columns] = parse.parse_document,
             max_iterations: int = 1000) -> Any:
        cols = decode(bodies[n])
        return derive([RoundInput({0: cols}, specs[n].episodes_between_training,
                                  specs[n].max_episodes)], max_iterations=max_iterations)

    def utils(n: int) -> Any:
        with quiet():  # it prints a line per loaded file
            tm = TrainingMetrics(None, fname=str(paths[n]))
            return [tm.getSummary(method=m) for m in ("mean", "median", "min", "max")]

    t: dict[tuple[int, str], list[float]] = defaultdict(list)
    sanity: dict[int, tuple[int, int]] = {}
    for _ in range(plan.ingest_reps):  # interleaved: every variant of every size per round
        for n in plan.ingest_sizes:
            dt, derived = timed(lambda n=n: ours(n))
            t[n, "ours"].append(dt)
            dt, summaries = timed(lambda n=n: utils(n))
            t[n, "utils"].append(dt)
            training = sum(1 for s in derived.iterations if s.phase == "training")
            sanity[n] = (training, len(summaries[0]))
            dt, (cols, _) = timed(lambda n=n: parse.read_metrics(bodies[n]))
            t[n, "decode"].append(dt)
            rnd = [RoundInput({0: cols}, specs[n].episodes_between_training,
                              specs[n].max_episodes)]
            t[n, "derive"].append(timed(lambda rnd=rnd: derive(rnd))[0])
            t[n, "derive_all"].append(timed(lambda rnd=rnd: derive(rnd, max_iterations=10**5))[0])
            for name, fn in candidates.items():
                t[n, name].append(timed(lambda n=n, fn=fn: ours(n, fn))[0])
    rows = []
    out: dict[str, Any] = {"sizes": {}}
    prev: tuple[float, float] | None = None
    for n in plan.ingest_sizes:
        o, u = median_ms(t[n, "ours"]), median_ms(t[n, "utils"])
        growth = "" if prev is None else f"x{o / prev[0]:.1f} / x{u / prev[1]:.1f}"
        prev = (o, u)
        row: list[Any] = [n, len(bodies[n]) / 1e6, o, u, u / o, 1e3 * o / n, growth,
                          median_ms(t[n, "decode"]),
                          median_ms(t[n, "derive"]), median_ms(t[n, "derive_all"])]
        row.append(median_ms(t[n, "orjson"]) if "orjson" in candidates else "n/a")
        rows.append(row)
        out["sizes"][str(n)] = {
            "bytes": len(bodies[n]), "ours_ms": o, "utils_ms": u, "ratio": u / o,
            "decode_ms": row[7], "derive_ms": row[8], "derive_all_ms": row[9],
            "candidates_ms": {k: median_ms(t[n, k]) for k in candidates},
            "training_rows_exported": sanity[n][0], "utils_summary_rows": sanity[n][1],
        }
    text = table(["episodes", "file MB", "exporter ms", "deepracer-utils ms", "ratio",
                  "exporter µs/episode", "growth (exporter / utils)",
                  "decode + columns ms", "derive ms", "derive ms (no cap)",
                  "with orjson instead of msgspec ms"], rows)
    return text, out


# -- S3 (moto in a child process) --------------------------------------------------------------

class MotoProcess:
    def __init__(self) -> None:
        self.proc = subprocess.Popen([sys.executable, str(BENCH / "children.py"), "moto"],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.DEVNULL, text=True)
        assert self.proc.stdout is not None
        port = self.proc.stdout.readline().strip()
        if not port.isdigit():
            self.close()
            raise RuntimeError("moto server did not start")
        self.endpoint = f"http://127.0.0.1:{port}"

    def close(self) -> None:
        if self.proc.stdin:
            self.proc.stdin.close()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


class CountingClient:
    """boto3 client factory that counts the HTTP requests actually sent, by operation."""

    def __init__(self, endpoint: str) -> None:
        self.settings = S3Settings(endpoint_url=endpoint, region="us-east-1", max_attempts=1)
        self.sent: dict[str, int] = defaultdict(int)
        self.answers: dict[str, int] = defaultdict(int)  # "GetObject 304" -> count

    def __call__(self) -> Any:
        client = make_s3_client(self.settings)
        client.meta.events.register("before-send.s3", self._count)
        client.meta.events.register("after-call.s3", self._answer)
        return client

    def _count(self, event_name: str = "", **_: Any) -> None:
        self.sent[event_name.rsplit(".", 1)[-1]] += 1

    def _answer(self, event_name: str = "", http_response: Any = None, **_: Any) -> None:
        status = getattr(http_response, "status_code", "?")
        self.answers[f"{event_name.rsplit('.', 1)[-1]} {status}"] += 1

    def total(self) -> int:
        return sum(self.sent.values())


def _exposition_requests(text: str) -> dict[str, float]:
    out: dict[str, float] = defaultdict(float)
    for line in text.splitlines():
        if line.startswith("deepracer_exporter_object_requests_total{"):
            result = line.split('result="', 1)[1].split('"', 1)[0]
            out[result] += float(line.rsplit(" ", 1)[1])
    return out


# -- 2. steady state ---------------------------------------------------------------------------

def bench_steady(plan: Plan, endpoint: str) -> tuple[str, dict[str, Any]]:
    counting = CountingClient(endpoint)
    s3 = make_s3_client(counting.settings)
    s3.create_bucket(Bucket="steady")
    names = []
    workers = 2
    for i in range(plan.steady_models):
        prefix = f"model-{i:03d}"
        spec = TrainingSpec(workers=workers, seed=i, max_episodes=plan.steady_episodes)
        for w, body in generate_documents(spec, plan.steady_episodes).items():
            s3.put_object(Bucket="steady", Key=key_for(prefix, w), Body=body)
        s3.put_object(Bucket="steady", Key=hyperparameters_key(prefix),
                      Body=TrainingSimulator(spec).hyperparameters())
        names.append(prefix)
    models = "".join(f"  - {{name: {p}, bucket: steady, prefix: {p}}}\n" for p in names)
    config = parse_config(f"listen: 127.0.0.1:0\nrefresh_interval: 1h\ns3:\n"
                          f"  endpoint_url: {endpoint}\n  region: us-east-1\n"
                          f"models:\n{models}", "bench.yml", {})
    exporter = Exporter(config, StoreFactory(counting), registry=CollectorRegistry())
    rows = []
    refreshes = []

    def totals() -> dict[str, int]:
        snap = exporter.snapshot
        return {k: sum(getattr(m.health, k) for m in snap.models)
                for k in ("downloaded", "not_modified", "downloaded_bytes")}

    for i in range(plan.steady_refreshes + 1):
        before, sent_before = totals(), counting.total()
        answers_before = dict(counting.answers)
        exposed_before = _exposition_requests(exporter.exposition.rendered.plain.decode())
        cpu, wall = time.process_time(), time.perf_counter()
        snap = exporter.refresher.refresh_once()
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        after = totals()
        exposed = _exposition_requests(exporter.exposition.rendered.plain.decode())
        delta = {k: after[k] - before[k] for k in after}
        r = {
            "kind": "cold" if i == 0 else "unchanged",
            "wall_ms": 1e3 * wall, "cpu_ms": 1e3 * cpu,
            "http_requests": counting.total() - sent_before,
            "answers": {k: v - answers_before.get(k, 0) for k, v in counting.answers.items()
                        if v - answers_before.get(k, 0)},
            "ok_models": sum(m.health.success for m in snap.models),
            **delta,
            "exposed_delta": {k: exposed.get(k, 0) - exposed_before.get(k, 0)
                              for k in ("downloaded", "not_modified")},
        }
        refreshes.append(r)
        rows.append([r["kind"], r["ok_models"], r["http_requests"],
                     r["http_requests"] / plan.steady_models, r["downloaded"],
                     r["not_modified"], r["downloaded_bytes"], r["wall_ms"],
                     r["cpu_ms"], r["cpu_ms"] / plan.steady_models])
    render = render_times(exporter.exposition, exporter.snapshot, plan.render_reps)
    exporter.refresher.close()
    steady = refreshes[1:]
    cpu_ms = statistics.median(r["cpu_ms"] for r in steady)
    out = {
        "models": plan.steady_models, "workers": workers, "refreshes": refreshes,
        "requests_per_model": statistics.median(r["http_requests"] for r in steady)
        / plan.steady_models,
        "downloaded_bytes": sum(r["downloaded_bytes"] for r in steady),
        "downloaded": sum(r["downloaded"] for r in steady),
        "cpu_ms": cpu_ms,
        "cpu_ms_per_model": cpu_ms / plan.steady_models,
        "wall_ms": statistics.median(r["wall_ms"] for r in steady),
        "render": render,
        "operations": dict(counting.sent),
    }
    text = table(["refresh", "models ok", "HTTP requests", "per model", "downloaded",
                  "not_modified (304)", "bytes downloaded", "wall ms",
                  "CPU ms", "CPU ms per model"], rows)
    text += (f"\n\n{plan.steady_models} models x {workers} workers, {plan.steady_episodes} "
             f"episodes each. An unchanged refresh takes a median {cpu_ms:,.0f} ms of CPU "
             f"({out['cpu_ms_per_model']:.1f} ms per model). Its exposition update re-renders "
             f"no per-iteration series: it takes {render['warm_ms']:,.0f} ms (warm), against "
             f"{render['cold_ms']:,.0f} ms when every model changed (cold). Answers per "
             f"unchanged refresh (operation, HTTP status): "
             f"{dict(sorted(steady[-1]['answers'].items()))}.")
    return text, out


# -- 3. scrape and render ----------------------------------------------------------------------

def changed(snapshot: Snapshot, count: int | None = None) -> Snapshot:
    """The same data with new `Derived` objects for the first `count` models (all by default).

    The renderer keys its cache on the `Derived` object, so to it these models changed, exactly
    as after a refresh that found new episodes.
    """
    models = snapshot.models
    count = len(models) if count is None else count
    return replace(snapshot, models=tuple(
        replace(m, derived=copy.copy(m.derived)) if i < count else m
        for i, m in enumerate(models)))


def render_times(exposition: Exposition, base: Snapshot, reps: int) -> dict[str, Any]:
    """`Exposition.update` per refresh: cold (every model changed), one model changed, warm
    (nothing changed: the steady state). Interleaved; medians in ms."""
    t: dict[str, list[float]] = defaultdict(list)
    same = True
    for _ in range(reps):
        # Only a digest of the cold body is kept, so every update frees the previous body, as
        # in the running exporter (holding it would make some variants cheaper than others).
        cold = changed(base)
        t["cold"].append(timed(lambda s=cold: exposition.update(s))[0])
        cold_digest = hashlib.sha256(exposition.rendered.plain).digest()
        one = changed(cold, 1)
        t["one"].append(timed(lambda s=one: exposition.update(s))[0])
        t["warm"].append(timed(lambda s=one: exposition.update(s))[0])
        same = same and hashlib.sha256(exposition.rendered.plain).digest() == cold_digest
    return {"cold_ms": median_ms(t["cold"]), "one_changed_ms": median_ms(t["one"]),
            "warm_ms": median_ms(t["warm"]), "warm_equals_cold": same,
            "models": len(base.models)}


def bench_scrape(plan: Plan, tmp: Path) -> tuple[str, dict[str, Any]]:
    root = tmp / "scrape"
    per_iteration = 10
    episodes = plan.scrape_iterations * per_iteration
    for i in range(max(plan.scrape_models)):
        prefix = f"model-{i:03d}"
        spec = TrainingSpec(workers=2, episodes_between_training=per_iteration, seed=i,
                            max_episodes=episodes)
        for w, body in generate_documents(spec, episodes).items():
            path = root / key_for(prefix, w)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(body)
        (root / hyperparameters_key(prefix)).parent.mkdir(parents=True, exist_ok=True)
        (root / hyperparameters_key(prefix)).write_bytes(TrainingSimulator(spec).hyperparameters())
    render_rows: list[list[Any]] = []
    scrape_rows: list[list[Any]] = []
    out: dict[str, Any] = {"render": {}, "runs": {}}
    for count in plan.scrape_models:
        models = "".join(f"  - {{name: model-{i:03d}, directory: {root}, prefix: model-{i:03d}}}\n"
                         for i in range(count))
        config = parse_config(f"listen: 127.0.0.1:0\nrefresh_interval: 1h\nmodels:\n{models}",
                              "bench.yml", {})
        exporter = Exporter(config, StoreFactory(lambda: None), registry=CollectorRegistry())
        exporter.start()
        try:
            render = render_times(exporter.exposition, exporter.snapshot, plan.render_reps)
            rendered = exporter.exposition.rendered
            series = sum(1 for line in rendered.plain.splitlines()
                         if line and not line.startswith(b"#"))
            iteration_series = sum(1 for line in rendered.plain.splitlines()
                                   if line.startswith(b"deepracer_iteration_"))
            out["render"][str(count)] = {**render, "series": series,
                                         "iteration_series": iteration_series,
                                         "plain_bytes": len(rendered.plain),
                                         "gzip_bytes": len(rendered.gzipped)}
            render_rows.append([count, series, len(rendered.plain), len(rendered.gzipped),
                                render["cold_ms"], render["cold_ms"] / count,
                                render["one_changed_ms"], render["warm_ms"],
                                render["cold_ms"] / render["warm_ms"]])
            modes = [("gzip", True)] + ([("plain", False)]
                                        if count == max(plan.scrape_models) else [])
            for name, gz in modes:
                cmd = [sys.executable, str(BENCH / "children.py"), "scrape", str(exporter.port),
                       "--threads", str(plan.scrape_threads), "--seconds",
                       str(plan.scrape_seconds)] + (["--gzip"] if gz else [])
                res = json.loads(subprocess.run(cmd, check=True, capture_output=True,
                                                text=True, timeout=120).stdout)
                out["runs"][f"{count}-{name}"] = {
                    **res, "models": count, "encoding": name,
                    "expected_bytes": len(rendered.gzipped if gz else rendered.plain)}
                scrape_rows.append([count, name, int(res["bytes"]), res["requests"],
                                    res["per_second"], res["p50_ms"], res["p99_ms"],
                                    res["errors"]])
        finally:
            exporter.stop()
    text = ("Render: one `Exposition.update` per refresh (the exporter's own code), cold = every "
            "model's data changed, one changed = a single model changed, warm = nothing "
            "changed (the steady state; only the small model-state and health families are "
            "rendered again).\n\n")
    text += table(["models", "series", "bytes plain", "bytes gzip", "cold ms",
                   "cold ms per model", "one changed ms", "warm ms", "cold / warm"],
                  render_rows)
    text += "\n\nScrape: `/metrics` from a second process.\n\n"
    text += table(["models", "encoding", "body bytes", "scrapes", "scrapes/s", "p50 ms",
                   "p99 ms", "errors"], scrape_rows)
    text += (f"\n\nEach model: 2 workers, {per_iteration} episodes per iteration, "
             f"{plan.scrape_iterations} iterations (all exported). Render times are medians "
             f"of {plan.render_reps} interleaved repetitions. Scraped with "
             f"{plan.scrape_threads} keep-alive threads for {plan.scrape_seconds:g} s. "
             f"The server sets TCP_NODELAY on every connection (measured as a prototype in the "
             f"first run: p50 44 -> 0.4 ms for a small body).")
    return text, out


# -- 4. memory ---------------------------------------------------------------------------------

def bench_memory(plan: Plan) -> tuple[str, dict[str, Any]]:
    rows = []
    out = {}
    for episodes, models in plan.memory:
        cmd = [sys.executable, str(BENCH / "children.py"), "memory", str(episodes), str(models)]
        res = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True,
                                        timeout=300).stdout)
        res["total_rss_per_model"] = res["rss_per_model"] + res["rendered_rss_per_model"]
        out[str(episodes)] = res
        rows.append([episodes, res["records"], models, res["iterations_kept"],
                     res["rss_per_model"] / 1e6, res["rendered_rss_per_model"] / 1e6,
                     res["total_rss_per_model"] / 1e6, res["rendered_plain_per_model"] / 1e6,
                     res["rendered_gzip_per_model"] / 1e6, res["columns_bytes"] / 1e6,
                     res["columns_bytes_per_record"]])
    text = table(["episodes", "records (incl. evaluation)", "models held",
                  "iteration rows kept", "RSS MB per model: data", "+ rendered",
                  "= total", "plain MB per model", "gzip MB per model",
                  "Columns MB per model", "Columns B/record"], rows)
    text += ("\n\nData = refreshed `ModelCache`s (columns, derived result, bookkeeping). "
             "Rendered = what `Exposition.update` keeps since per-iteration series are cached: "
             "each model's plain lines and gzip members, which scrapes are served from as they "
             "are (no joined copy since commit 'Serve the exposition as its cached parts'). RSS "
             "after gc and `malloc_trim`, in a child process.")
    return text, out


# -- 5. incremental growth ---------------------------------------------------------------------

def _utils_summaries(path: Path) -> Any:
    """What a notebook re-runs to see the new episode: reload the file, summarise it."""
    from deepracer.logs.metrics import TrainingMetrics

    with quiet():  # it prints a line per loaded file
        tm = TrainingMetrics(None, fname=str(path))
        return [tm.getSummary(method=m) for m in ("mean", "median", "min", "max")]


def bench_grow(plan: Plan, endpoint: str, tmp: Path) -> tuple[str, dict[str, Any]]:
    settings = S3Settings(endpoint_url=endpoint, region="us-east-1", max_attempts=1)
    s3 = make_s3_client(settings)
    s3.create_bucket(Bucket="grow")
    store = S3Store(s3, "grow")
    rows = []
    out: dict[str, Any] = {}
    for n in plan.grow_sizes:
        prefix = f"grow-{n}"
        spec = TrainingSpec(max_episodes=n + plan.grow_reps + 100)
        sim = TrainingSimulator(spec)
        sim.advance(n)
        key = key_for(prefix, 0)
        path = tmp / f"{prefix}.json"
        s3.put_object(Bucket="grow", Key=hyperparameters_key(prefix), Body=sim.hyperparameters())
        s3.put_object(Bucket="grow", Key=key, Body=sim.document(0))
        config = parse_config(f"listen: 127.0.0.1:0\nrefresh_interval: 1h\ns3:\n"
                              f"  endpoint_url: {endpoint}\n  region: us-east-1\nmodels:\n"
                              f"  - {{name: {prefix}, bucket: grow, prefix: {prefix}}}\n",
                              "bench.yml", {})
        # The exporter's wiring (Exporter does the same), with the exposition update timed.
        exposition = Exposition(CollectorRegistry())
        updates: list[float] = []

        def on_snapshot(snap: Snapshot, exposition: Exposition = exposition,
                        updates: list[float] = updates) -> None:
            updates.append(timed(lambda: exposition.update(snap))[0])

        refresher = Refresher(config, StoreFactory(lambda: make_s3_client(settings)),
                              on_snapshot=on_snapshot)
        first = refresher.refresh_once().models[0]
        assert first.health.success, first.health.last_error
        derive_settings = DeriveSettings(config.rolling_window, config.max_iterations,
                                         config.top_laps, config.max_object_bytes,
                                         config.max_evaluation_runs)
        t: dict[str, list[float]] = defaultdict(list)
        tail_bytes: list[int] = []
        checks: dict[str, Any] = {"tail_per_refresh": [], "exposed_tail_per_refresh": [],
                                  "downloaded_per_refresh": [], "full_read_tail": [],
                                  "full_read_downloaded": []}
        same = True
        for rep in range(plan.grow_reps):
            sim.advance(1)
            body = sim.document(0)
            s3.put_object(Bucket="grow", Key=key, Body=body)
            path.write_bytes(body)
            before = refresher.snapshot.models[0].health
            exposed_before = _exposition_requests(exposition.rendered.plain.decode())
            dt, snap = timed(refresher.refresh_once)
            model = snap.models[0]
            h = model.health
            assert h.success, h.last_error
            t["exporter"].append(dt)
            t["refresh"].append(h.duration_seconds)  # the model's own refresh, without render
            t["render"].append(updates[-1])
            tail_bytes.append(h.downloaded_bytes - before.downloaded_bytes)
            exposed = _exposition_requests(exposition.rendered.plain.decode())
            checks["tail_per_refresh"].append(h.tail - before.tail)
            checks["exposed_tail_per_refresh"].append(exposed["tail"] - exposed_before["tail"])
            checks["downloaded_per_refresh"].append(h.downloaded - before.downloaded)
            # (a) the exporter's full read: a watcher with no cache reads and derives it all.
            watcher = ModelCache(config.models[0], store, derive_settings)
            dt, full = timed(watcher.refresh)
            assert full.health.success, full.health.last_error
            t["full"].append(dt)
            checks["full_read_tail"].append(full.health.tail)
            checks["full_read_downloaded"].append(full.health.downloaded)
            # (b) deepracer-utils, as a notebook would refresh its view.
            t["utils"].append(timed(lambda path=path: _utils_summaries(path))[0])
            # What remains of the tail refresh: derive over all episodes.
            cols = parse.parse_document(body)
            rnd = [RoundInput({0: cols}, spec.episodes_between_training, spec.max_episodes)]
            t["derive"].append(timed(lambda rnd=rnd: derive(rnd))[0])
            if rep == plan.grow_reps - 1:  # the tail-read result is the full-read result
                assert model.derived is not None and full.derived is not None
                same = (render_module.model_lines(prefix, model.derived)
                        == render_module.model_lines(prefix, full.derived))
        refresher.close()
        m = {k: median_ms(v) for k, v in t.items()}
        out[str(n)] = {**m, **checks, "bytes": len(body),
                       "tail_bytes": int(statistics.median(tail_bytes)),
                       "tail_equals_full_read": same,
                       "utils_vs_exporter": m["utils"] / m["exporter"],
                       "utils_vs_refresh": m["utils"] / m["refresh"],
                       "full_vs_refresh": m["full"] / m["refresh"]}
        rows.append([n, len(body) / 1e6, int(statistics.median(tail_bytes)), m["refresh"],
                     m["derive"], m["render"], m["exporter"], m["full"], m["full"] / m["refresh"],
                     m["utils"], m["utils"] / m["exporter"], m["utils"] / m["refresh"],
                     "yes" if same else "NO"])
    text = table(["episodes", "file MB", "bytes read (tail)", "exporter refresh ms (tail)",
                  "derive ms (all episodes)", "render ms (changed model)",
                  "exporter total ms", "(a) full read ms", "full / tail",
                  "(b) deepracer-utils ms", "utils / exporter total", "utils / refresh",
                  "tail == full"], rows)
    text += ("\n\nOne model (1 worker) whose TrainingMetrics.json is rewritten with one more "
             "episode before each refresh. Exporter refresh = the model's own refresh "
             "(listing, ranged GET of the tail pinned to the listed ETag, decode of the new "
             "records, derive over all episodes; `health.duration_seconds`); total adds the "
             "exposition update, which re-renders this model's per-iteration series. Every "
             "timed refresh read the file by its tail (`object_requests_total{result=\"tail\"}` "
             "+1, `downloaded` +0). (a) a watcher with no cache: full GET, decode, derive. "
             "(b) deepracer-utils `TrainingMetrics(None, fname=...)` reloading the file from "
             "local disk (no network, which favours it) and `getSummary` for mean, median, min "
             "and max. `tail == full`: the per-iteration series of the tail-read result are "
             "byte-identical to those of the full read.")
    return text, out


# -- report ------------------------------------------------------------------------------------

def machine() -> dict[str, str]:
    cpu = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem = f"{int(line.split()[1]) / 1024**2:.1f} GiB"
    versions = {}
    for pkg in ("numpy", "pandas", "deepracer-utils", "boto3", "moto", "prometheus-client",
                "orjson", "msgspec"):
        try:
            versions[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            versions[pkg] = "not installed"
    return {
        "CPU": cpu,
        "cores": f"{os.cpu_count()} (usable: {len(os.sched_getaffinity(0))})",
        "memory": mem,
        "OS": platform.platform(),
        "Python": platform.python_version(),
        "load average at start (1/5/15 min)": " / ".join(f"{x:.2f}" for x in os.getloadavg()),
        **versions,
    }


def command() -> str:
    env = f"PYTHONPATH={os.environ['PYTHONPATH']} " if os.environ.get("PYTHONPATH") else ""
    argv = [os.path.relpath(a) if os.path.isabs(a) and a.startswith(str(REPO)) else a
            for a in sys.orig_argv]
    return env + shlex.join(argv)


OTHERS = "<!-- whole-process benchmarks: kept when run.py rewrites this file -->"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes (seconds), for tests")
    parser.add_argument("--out", type=Path, default=BENCH / "RESULTS.md")
    parser.add_argument("--json", type=Path, help="also write raw figures as JSON here")
    args = parser.parse_args()
    plan = QUICK if args.quick else FULL
    started = time.perf_counter()
    sections: list[tuple[str, str]] = []
    results: dict[str, Any] = {"quick": args.quick, "machine": machine(), "command": command()}
    moto = MotoProcess()
    try:
        with tempfile.TemporaryDirectory(prefix="drx-bench-") as tmpdir:
            tmp = Path(tmpdir)
            for key, title, run in (
                ("ingest", "1. Ingest: bytes -> per-iteration result, one model (1 worker)",
                 lambda: bench_ingest(plan, tmp)),
                ("steady", "2. Steady state: unchanged objects in S3 (moto server)",
                 lambda: bench_steady(plan, moto.endpoint)),
                ("scrape", "3. Render and scrape: /metrics from a second process",
                 lambda: bench_scrape(plan, tmp)),
                ("memory", "4. Memory held per model (child process, RSS)",
                 lambda: bench_memory(plan)),
                ("grow", "5. Live refresh: file rewritten after one more episode",
                 lambda: bench_grow(plan, moto.endpoint, tmp)),
            ):
                print(f"running {title} ...", file=sys.stderr, flush=True)
                text, results[key] = run()
                sections.append((title, text))
                print(f"\n## {title}\n\n{text}\n", flush=True)
    finally:
        moto.close()
    results["seconds"] = time.perf_counter() - started
    results["load_at_end"] = " / ".join(f"{x:.2f}" for x in os.getloadavg())
    head = [
        "# Benchmark results" + (" (--quick: tiny sizes, not representative)" if args.quick
                                 else ""),
        "",
        "Generated by `bench/run.py`; see docs/bench.md for what each part measures and the "
        "conclusions.",
        "",
        f"Command (from the repository root): `{results['command']}`  ",
        f"Total run time: {results['seconds']:.0f} s; load average at the end (1/5/15 min): "
        f"{results['load_at_end']}",
        "",
        "| machine | |",
        "|---|---|",
        *[f"| {k} | {v} |" for k, v in results["machine"].items()],
        "",
        "Times are medians of interleaved repetitions (wall clock unless marked CPU).",
    ]
    body = "\n".join(head) + "".join(f"\n\n## {t}\n\n{x}" for t, x in sections) + "\n"
    # Sections of the separate whole-process benchmarks (prometheus_cost.py, once_vs_utils.py)
    # follow this marker and are kept when this report is written again.
    if args.out.exists() and OTHERS in (old := args.out.read_text(encoding="utf-8")):
        body = body.rstrip("\n") + "\n\n" + old[old.index(OTHERS):]
    args.out.write_text(body, encoding="utf-8")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2, default=str), encoding="utf-8")
    print(f"wrote {args.out} in {results['seconds']:.0f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
