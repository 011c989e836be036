"""Benchmarks of the exporter: ingest, steady state, scrape, memory, incremental growth.

    .venv/bin/python bench/run.py            # full run (a few minutes), writes bench/RESULTS.md
    .venv/bin/python bench/run.py --quick    # tiny sizes, seconds; used by tests/test_bench.py

Everything compared is measured in the same run with interleaved repetitions and reported as
the median, so ratios hold on a noisy machine. S3 is moto's server in a child process and the
scrapers are another child process, so CPU figures are the exporter's own.
"""

from __future__ import annotations

import argparse
import contextlib
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
from dataclasses import dataclass
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
from deepracer_exporter import server as server_module  # noqa: E402
from deepracer_exporter.app import Exporter, StoreFactory, make_s3_client  # noqa: E402
from deepracer_exporter.config import ModelConfig, S3Settings, parse_config  # noqa: E402
from deepracer_exporter.derive import RoundInput, derive  # noqa: E402
from deepracer_exporter.simulate import (  # noqa: E402
    TrainingSimulator,
    TrainingSpec,
    generate_documents,
    hyperparameters_key,
    key_for,
)
from deepracer_exporter.sources import S3Store  # noqa: E402
from deepracer_exporter.watch import DeriveSettings, ModelWatcher  # noqa: E402


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


FULL = Plan((1_000, 10_000, 100_000), 5, 100, 1_000, 5, (1, 10, 100), 500, 3.0, 4,
            ((10_000, 30), (100_000, 6)), (1_000, 10_000, 50_000, 100_000), 3)
QUICK = Plan((200, 1_000), 2, 8, 200, 2, (1, 4), 40, 0.5, 2, ((1_000, 4),), (200, 1_000), 2)


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
            dt, records = timed(lambda n=n: parse.decode_document(bodies[n]))
            t[n, "decode"].append(dt)
            dt, cols = timed(lambda records=records: parse.parse_records(records))
            t[n, "columns"].append(dt)
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
                          median_ms(t[n, "decode"]), median_ms(t[n, "columns"]),
                          median_ms(t[n, "derive"]), median_ms(t[n, "derive_all"])]
        for name in ("orjson", "msgspec"):
            row.append(median_ms(t[n, name]) if name in candidates else "n/a")
        rows.append(row)
        out["sizes"][str(n)] = {
            "bytes": len(bodies[n]), "ours_ms": o, "utils_ms": u, "ratio": u / o,
            "decode_ms": row[7], "columns_ms": row[8], "derive_ms": row[9],
            "derive_all_ms": row[10],
            "candidates_ms": {k: median_ms(t[n, k]) for k in candidates},
            "training_rows_exported": sanity[n][0], "utils_summary_rows": sanity[n][1],
        }
    text = table(["episodes", "file MB", "exporter ms", "deepracer-utils ms", "ratio",
                  "exporter µs/episode", "growth (exporter / utils)", "decode ms",
                  "columns ms", "derive ms", "derive ms (no cap)", "with orjson ms",
                  "with msgspec ms"], rows)
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
                for k in ("downloaded", "not_modified", "unchanged", "downloaded_bytes")}

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
                              for k in ("downloaded", "not_modified", "unchanged")},
        }
        refreshes.append(r)
        rows.append([r["kind"], r["ok_models"], r["http_requests"],
                     r["http_requests"] / plan.steady_models, r["downloaded"],
                     r["not_modified"], r["unchanged"], r["downloaded_bytes"], r["wall_ms"],
                     r["cpu_ms"]])
    render = [timed(lambda: exporter.exposition.update(exporter.snapshot))[0] for _ in range(3)]
    exporter.refresher.close()
    steady = refreshes[1:]
    out = {
        "models": plan.steady_models, "workers": workers, "refreshes": refreshes,
        "requests_per_model": statistics.median(r["http_requests"] for r in steady)
        / plan.steady_models,
        "downloaded_bytes": sum(r["downloaded_bytes"] for r in steady),
        "downloaded": sum(r["downloaded"] for r in steady),
        "cpu_ms": statistics.median(r["cpu_ms"] for r in steady),
        "wall_ms": statistics.median(r["wall_ms"] for r in steady),
        "render_ms": median_ms(render),
        "operations": dict(counting.sent),
    }
    text = table(["refresh", "models ok", "HTTP requests", "per model", "downloaded",
                  "not_modified (304)", "unchanged (no GET)", "bytes downloaded", "wall ms",
                  "CPU ms"], rows)
    text += (f"\n\n{plan.steady_models} models x {workers} workers, {plan.steady_episodes} "
             f"episodes each. CPU includes rendering the exposition once per refresh "
             f"({out['render_ms']:.0f} ms of it). Answers per unchanged refresh (operation, "
             f"HTTP status): {dict(sorted(steady[-1]['answers'].items()))}.")
    return text, out


# -- 3. scrape ---------------------------------------------------------------------------------

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
    rows = []
    out: dict[str, Any] = {}
    original_nodelay = server_module._Handler.disable_nagle_algorithm
    for count in plan.scrape_models:
        models = "".join(f"  - {{name: model-{i:03d}, directory: {root}, prefix: model-{i:03d}}}\n"
                         for i in range(count))
        config = parse_config(f"listen: 127.0.0.1:0\nrefresh_interval: 1h\nmodels:\n{models}",
                              "bench.yml", {})
        exporter = Exporter(config, StoreFactory(lambda: None), registry=CollectorRegistry())
        exporter.start()
        try:
            render = [timed(lambda e=exporter: e.exposition.update(e.snapshot))[0]]
            rendered = exporter.exposition.rendered
            series = sum(1 for line in rendered.plain.splitlines()
                         if line and not line.startswith(b"#"))
            iteration_series = sum(1 for line in rendered.plain.splitlines()
                                   if line.startswith(b"deepracer_iteration_"))
            modes = [("gzip", True, False), ("gzip", True, True)]
            if count == max(plan.scrape_models):
                modes += [("plain", False, False), ("plain", False, True)]
            for name, gz, nodelay in modes:
                # Prototype: the handler's socketserver switch for TCP_NODELAY, read per
                # connection; the exporter as committed leaves it off.
                server_module._Handler.disable_nagle_algorithm = nodelay
                cmd = [sys.executable, str(BENCH / "children.py"), "scrape", str(exporter.port),
                       "--threads", str(plan.scrape_threads), "--seconds",
                       str(plan.scrape_seconds)] + (["--gzip"] if gz else [])
                res = json.loads(subprocess.run(cmd, check=True, capture_output=True,
                                                text=True, timeout=120).stdout)
                key = f"{count}-{name}" + ("-nodelay" if nodelay else "")
                out[key] = {**res, "series": series, "plain_bytes": len(rendered.plain),
                            "gzip_bytes": len(rendered.gzipped), "render_ms": median_ms(render),
                            "models": count, "iteration_series": iteration_series}
                rows.append([count, name, "prototype: on" if nodelay else "off (as is)",
                             series, len(rendered.plain), len(rendered.gzipped),
                             median_ms(render), res["requests"], res["per_second"],
                             res["p50_ms"], res["p99_ms"], res["errors"]])
        finally:
            server_module._Handler.disable_nagle_algorithm = original_nodelay
            exporter.stop()
    text = table(["models", "encoding", "TCP_NODELAY", "series", "bytes plain", "bytes gzip",
                  "render ms (per refresh)", "scrapes", "scrapes/s", "p50 ms", "p99 ms",
                  "errors"], rows)
    text += (f"\n\nEach model: 2 workers, {per_iteration} episodes per iteration, "
             f"{plan.scrape_iterations} iterations (all exported). Scraped from a second "
             f"process with {plan.scrape_threads} keep-alive threads for "
             f"{plan.scrape_seconds:g} s.")
    return text, out


# -- 4. memory ---------------------------------------------------------------------------------

def bench_memory(plan: Plan) -> tuple[str, dict[str, Any]]:
    rows = []
    out = {}
    for episodes, models in plan.memory:
        cmd = [sys.executable, str(BENCH / "children.py"), "memory", str(episodes), str(models)]
        res = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True,
                                        timeout=300).stdout)
        out[str(episodes)] = res
        rows.append([episodes, res["records"], models, res["rss_per_model"] / 1e6,
                     res["columns_bytes"] / 1e6, res["columns_bytes_per_record"],
                     res["rss_per_model"] / res["records"], res["iterations_kept"]])
    text = table(["episodes", "records (incl. evaluation)", "models held", "RSS MB per model",
                  "Columns MB per model", "Columns B/record", "RSS B/record",
                  "iteration rows kept"], rows)
    return text, out


# -- 5. incremental growth ---------------------------------------------------------------------

def bench_grow(plan: Plan, endpoint: str) -> tuple[str, dict[str, Any]]:
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
        s3.put_object(Bucket="grow", Key=hyperparameters_key(prefix), Body=sim.hyperparameters())
        body = sim.document(0)
        s3.put_object(Bucket="grow", Key=key, Body=body)
        watcher = ModelWatcher(ModelConfig(prefix, (prefix,), bucket="grow"), store,
                               DeriveSettings())
        watcher.refresh()
        state = prototypes.full_state(body)
        t: dict[str, list[float]] = defaultdict(list)
        tail_ok = True
        for _ in range(plan.grow_reps):
            sim.advance(1)
            body = sim.document(0)
            s3.put_object(Bucket="grow", Key=key, Body=body)
            dt, snap = timed(watcher.refresh)
            assert snap.health.success, snap.health.last_error
            t["refresh"].append(dt)
            t["get"].append(timed(
                lambda key=key: s3.get_object(Bucket="grow", Key=key)["Body"].read())[0])
            dt, records = timed(lambda body=body: parse.decode_document(body))
            t["decode"].append(dt)
            dt, cols = timed(lambda records=records: parse.parse_records(records))
            t["columns"].append(dt)
            rnd = [RoundInput({0: cols}, spec.episodes_between_training, spec.max_episodes)]
            t["derive"].append(timed(lambda rnd=rnd: derive(rnd))[0])

            def tail(state: prototypes.TailState = state,
                     key: str = key) -> prototypes.TailState | None:
                start = max(0, state.end - prototypes.OVERLAP)
                chunk = s3.get_object(Bucket="grow", Key=key,
                                      Range=f"bytes={start}-")["Body"].read()
                return prototypes.grow(state, chunk, start)

            dt, new_state = timed(tail)
            t["tail_fetch_parse"].append(dt)
            assert new_state is not None
            rnd = [RoundInput({0: new_state.columns}, spec.episodes_between_training,
                              spec.max_episodes)]
            t["tail_total"].append(dt + timed(lambda rnd=rnd: derive(rnd))[0])
            tail_ok = tail_ok and all(np.array_equal(getattr(new_state.columns, f),
                                                     getattr(cols, f))
                                      for f in ("episode", "trial", "reward", "status"))
            state = new_state
        m = {k: median_ms(v) for k, v in t.items()}
        out[str(n)] = {**m, "bytes": len(body), "tail_matches_full_parse": tail_ok}
        parse_share = (m["decode"] + m["columns"]) / m["refresh"]
        rows.append([n, len(body) / 1e6, m["refresh"], m["get"], m["decode"], m["columns"],
                     m["derive"], f"{100 * parse_share:.0f}%", m["tail_fetch_parse"],
                     m["tail_total"], m["refresh"] / m["tail_total"],
                     "yes" if tail_ok else "NO"])
    text = table(["episodes", "file MB", "refresh ms (exporter)", "full GET ms", "decode ms",
                  "columns ms", "derive ms", "parse share", "prototype: tail GET+parse ms",
                  "prototype: tail + derive ms", "speed-up", "tail == full parse"], rows)
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
        **versions,
    }


def command() -> str:
    env = f"PYTHONPATH={os.environ['PYTHONPATH']} " if os.environ.get("PYTHONPATH") else ""
    argv = [os.path.relpath(a) if os.path.isabs(a) and a.startswith(str(REPO)) else a
            for a in sys.orig_argv]
    return env + shlex.join(argv)


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
                ("scrape", "3. Scrape: /metrics from a second process",
                 lambda: bench_scrape(plan, tmp)),
                ("memory", "4. Memory held per model (child process, RSS)",
                 lambda: bench_memory(plan)),
                ("grow", "5. Incremental growth: file rewritten after one more episode",
                 lambda: bench_grow(plan, moto.endpoint)),
            ):
                print(f"running {title} ...", file=sys.stderr, flush=True)
                text, results[key] = run()
                sections.append((title, text))
                print(f"\n## {title}\n\n{text}\n", flush=True)
    finally:
        moto.close()
    results["seconds"] = time.perf_counter() - started
    head = [
        "# Benchmark results" + (" (--quick: tiny sizes, not representative)" if args.quick
                                 else ""),
        "",
        "Generated by `bench/run.py`; see docs/bench.md for what each part measures and the "
        "conclusions.",
        "",
        f"Command (from the repository root): `{results['command']}`  ",
        f"Total run time: {results['seconds']:.0f} s",
        "",
        "| machine | |",
        "|---|---|",
        *[f"| {k} | {v} |" for k, v in results["machine"].items()],
        "",
        "Times are medians of interleaved repetitions (wall clock unless marked CPU).",
    ]
    body = "\n".join(head) + "".join(f"\n\n## {t}\n\n{x}" for t, x in sections) + "\n"
    args.out.write_text(body, encoding="utf-8")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2, default=str), encoding="utf-8")
    print(f"wrote {args.out} in {results['seconds']:.0f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
