"""What watching a bucket costs in S3 requests, dollars and CPU (issue 29).

A DRfC-like bucket on a real S3 endpoint: moto's server in a child process, behind a
request-counting proxy (tests/faultproxy.py), so every request that crosses the wire is counted
by the server side, not by the exporter. MODELS models of ITERATIONS iterations (20 episodes
each) with simtrace, evaluation runs, hyperparameters, metadata and checkpoints, all written just
before the exporter starts; ACTIVE of them keep training (one episode every 2 s each, simtrace and
checkpoints after each iteration), the others reached their episode limit. The real exporter
process (`deepracer-exporter --config`, one `discover` entry, `refresh_interval: 15s`) watches it
through the proxy; counted from WARMUP seconds after its cold start (every model's first refresh,
simtrace included, shown on /metrics), for MEASURE seconds: S3
requests by operation and by model, what they cost a month on S3 Standard, the exporter's CPU
(/proc), and how late each new episode of an active model shows on /metrics (scraped every 3 s
with gzip).

`--non-model N` runs the other scenario: one model beside N prefixes that are not models
(`custom-<i>/` with one object each, like DRfC's `custom_files/`): LISTs a minute.

    .venv/bin/python bench/s3_cost.py                       # the 30-model bucket (about 5 min)
    .venv/bin/python bench/s3_cost.py --non-model 1000      # 1,000 non-model prefixes
    .venv/bin/python bench/s3_cost.py --source /tmp/before/exporter   # another tree's exporter

Prints one JSON object; bench/RESULTS.md records the figures.
"""

from __future__ import annotations

import argparse
import gzip
import json
import math
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(BENCH))
os.environ.setdefault("AWS_ACCESS_KEY_ID", "bench")
os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "bench")
os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
os.environ.pop("AWS_PROFILE", None)

from run import MotoProcess  # noqa: E402

from deepracer_exporter.app import make_s3_client  # noqa: E402
from deepracer_exporter.config import S3Settings  # noqa: E402
from deepracer_exporter.simulate import TrainingSimulator, TrainingSpec  # noqa: E402
from faultproxy import FaultProxy  # noqa: E402
from promserver import free_port  # noqa: E402

BUCKET = "cost"
LIST_USD = 0.005 / 1000  # S3 Standard, us-east-1: LIST (and PUT, COPY, POST)
GET_USD = 0.0004 / 1000  # GET (and all other requests)
MONTH = 30 * 24 * 3600
SIMTRACE_ROWS = 30  # rows kept of each simtrace CSV: the key count is what costs, not the body
_SIMTRACE = re.compile(r'^deepracer_model_simtrace_iteration\{model="[^"]+"\} ', re.M)
_EPISODES = re.compile(r'^deepracer_model_episodes_total\{model="([^"]+)",phase="training"[^}]*\} '
                       r'(\S+)$', re.M)


def _short_simtrace(body: bytes) -> bytes:
    return b"\n".join(body.split(b"\n")[:SIMTRACE_ROWS + 1]) + b"\n"


def _files(sim: TrainingSimulator, prefix: str) -> dict[str, bytes]:
    out = {}
    for key, body in sim.take_files(prefix).items():
        out[key] = _short_simtrace(body) if key.endswith("-iteration.csv") else body
    out.update({sim.key_for(prefix, w): body for w, body in sim.documents().items()})
    return out


def build_models(s3: Any, models: int, iterations: int, active: int
                 ) -> dict[str, TrainingSimulator]:
    """Write every model; returns the simulators of the active ones, to go on training. The
    finished ones are copies of one simulated training (what costs requests is their keys, not
    their numbers), which keeps the set-up to a few minutes."""
    live: dict[str, TrainingSimulator] = {}
    episodes = 20 * iterations
    finished: dict[str, bytes] | None = None
    with ThreadPoolExecutor(8) as pool:
        for i in range(models):
            prefix = f"model-{i:02d}"
            if i < active or finished is None:
                spec = TrainingSpec(episodes_between_training=20, seed=i, policy_update_s=5.0,
                                    max_episodes=10**9 if i < active else episodes)
                sim = TrainingSimulator(spec)
                sim.advance(episodes)
                files = _files(sim, "")
                if i < active:
                    live[prefix] = sim
                else:
                    finished = files
            else:
                files = finished
            for key, body in files.items():
                pool.submit(s3.put_object, Bucket=BUCKET, Key=f"{prefix}/{key.lstrip('/')}",
                            Body=body)
    return live


def build_custom(s3: Any, count: int) -> None:
    with ThreadPoolExecutor(8) as pool:
        for i in range(count):
            pool.submit(s3.put_object, Bucket=BUCKET, Key=f"custom-{i:04d}/reward.py",
                        Body=b"def reward_function(params):\n    return 1.0\n")


def train(s3: Any, live: dict[str, TrainingSimulator], stop: threading.Event,
          written: dict[str, list[tuple[float, int]]]) -> None:
    """One episode per active model every 2 s; notes (time, episodes) per model as written."""
    while not stop.wait(2.0):
        for prefix, sim in live.items():
            sim.advance(1)
            for key, body in _files(sim, prefix).items():
                s3.put_object(Bucket=BUCKET, Key=key, Body=body)
            written[prefix].append((time.time(), sim.episodes))


def classify(target: str) -> tuple[str, str]:
    """(operation, model prefix or '' for the bucket's root) of one proxied request."""
    path, _, query = target.partition("?")
    params = urllib.parse.parse_qs(query)
    if "list-type" in params or path.rstrip("/").endswith(BUCKET):
        prefix = params.get("prefix", [""])[0]
        return "LIST", prefix.split("/", 1)[0] if "/" in prefix else ""
    key = urllib.parse.unquote(path).split(f"/{BUCKET}/", 1)[-1]
    return "GET", key.split("/", 1)[0]


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def scrape(port: int) -> str:
    """/metrics as Prometheus asks for it (gzip: the exporter serves its cached members)."""
    req = urllib.request.Request(f"http://127.0.0.1:{port}/metrics",
                                 headers={"Accept-Encoding": "gzip"})
    with urllib.request.urlopen(req, timeout=30) as resp:
        body = resp.read()
        if resp.headers.get("Content-Encoding") == "gzip":
            body = gzip.decompress(body)
    return str(body.decode())


def episodes_shown(text: str) -> dict[str, float]:
    out: dict[str, float] = {}
    for model, value in _EPISODES.findall(text):
        out[model] = out.get(model, 0.0) + float(value)
    return out


def models_ready(text: str) -> int:
    """Models whose first refresh, simtrace included, is done."""
    return len(_SIMTRACE.findall(text))


def measure(args: argparse.Namespace) -> dict[str, Any]:
    moto = MotoProcess()
    proxy = FaultProxy(moto.endpoint).start()
    stop = threading.Event()
    proc: subprocess.Popen[bytes] | None = None
    try:
        s3 = make_s3_client(S3Settings(endpoint_url=moto.endpoint, region="us-east-1",
                                       max_attempts=1))
        s3.create_bucket(Bucket=BUCKET)
        started = time.perf_counter()
        if args.non_model:
            live = build_models(s3, 1, args.iterations, 0)
            build_custom(s3, args.non_model)
        else:
            live = build_models(s3, args.models, args.iterations, args.active)
        built = time.perf_counter() - started
        written: dict[str, list[tuple[float, int]]] = {p: [] for p in live}
        expected = ["model-00"] if args.non_model else [f"model-{i:02d}"
                                                        for i in range(args.models)]
        cold = math.nan
        writer = threading.Thread(target=train, args=(s3, live, stop, written), daemon=True)
        writer.start()
        port = free_port()
        with tempfile.TemporaryDirectory() as tmp:
            config = Path(tmp) / "exporter.yml"
            config.write_text(f"listen: 127.0.0.1:{port}\nrefresh_interval: {args.interval}s\n"
                              f"s3:\n  endpoint_url: {proxy.url}\n  region: us-east-1\n"
                              f"discover:\n  - bucket: {BUCKET}\n{args.extra}\n")
            env = {**os.environ, "PYTHONPATH": str(args.source)}
            profile = ["-m", "cProfile", "-o", str(args.profile)] if args.profile else []
            proc = subprocess.Popen([sys.executable, *profile, "-m", "deepracer_exporter.cli",
                                     "--config", str(config)],
                                    env=env, stdout=subprocess.DEVNULL,
                                    stderr=open(Path(tmp) / "log", "wb"))  # noqa: SIM115
            seen: dict[str, tuple[float, float]] = {}  # model -> (episodes shown, since)
            lags: list[float] = []
            launched = time.monotonic()
            t0 = math.inf  # when every model's first refresh (its cold start) was done
            mark = cpu0 = 0.0
            begin = 0
            while time.monotonic() - t0 < args.warmup + args.measure:
                time.sleep(3.0)
                if proc.poll() is not None:
                    raise RuntimeError(f"exporter exited: {(Path(tmp) / 'log').read_text()}")
                if not begin and time.monotonic() - t0 >= args.warmup:
                    begin, mark, cpu0 = len(proxy.seen), time.monotonic(), cpu_seconds(proc.pid)
                try:
                    text = scrape(port)
                except OSError:
                    continue
                if t0 == math.inf and models_ready(text) == len(expected):
                    t0 = time.monotonic()
                    cold = t0 - launched
                shown = episodes_shown(text)
                now = time.time()
                for prefix in live:
                    count = shown.get(prefix)
                    if count is None or (prefix in seen and seen[prefix][0] == count):
                        continue
                    seen[prefix] = (count, now)
                    if begin:  # how long ago the episode now shown was written
                        at = next((t for t, n in written[prefix] if n >= count), None)
                        if at is not None:
                            lags.append(now - at)
            window = time.monotonic() - mark
            cpu = cpu_seconds(proc.pid) - cpu0
            log_text = (Path(tmp) / "log").read_text(errors="replace")
    finally:
        stop.set()
        if proc is not None:
            proc.terminate()
            proc.wait(timeout=20)
        proxy.stop()
        moto.close()
    requests = proxy.seen[begin:]
    by_op: Counter[str] = Counter()
    by_model: Counter[tuple[str, str]] = Counter()
    for r in requests:
        op, model = classify(r.target)
        by_op[op] += 1
        by_model[(model, op)] += 1
    cycles = window / args.interval
    finished = [f"model-{i:02d}" for i in range(args.active, args.models)]
    per_month = MONTH / window

    def usd(lists: float, gets: float) -> float:
        return (lists * LIST_USD + gets * GET_USD) * per_month

    fin_list = sum(by_model[(m, "LIST")] for m in finished) if not args.non_model else 0
    fin_get = sum(by_model[(m, "GET")] for m in finished) if not args.non_model else 0
    custom_lists = sum(n for (m, op), n in by_model.items()
                       if op == "LIST" and m.startswith("custom-"))
    return {
        "source": str(args.source), "models": 1 if args.non_model else args.models,
        "active": len(live), "non_model_prefixes": args.non_model,
        "iterations": args.iterations, "refresh_interval_s": args.interval,
        "build_s": round(built, 1), "cold_start_s": round(cold, 1),
        "window_s": round(window, 1), "cycles": round(cycles, 1),
        "requests": dict(by_op), "requests_per_cycle": round(sum(by_op.values()) / cycles, 2),
        "lists_per_minute": round(by_op["LIST"] / window * 60, 2),
        "root_lists_per_minute": round(by_model[("", "LIST")] / window * 60, 2),
        "non_model_lists_per_minute": round(custom_lists / window * 60, 2),
        "bucket_usd_per_month": round(usd(by_op["LIST"], by_op["GET"]), 2),
        "finished_model_requests_per_cycle": round((fin_list + fin_get) / len(finished)
                                                   / cycles, 4) if finished else None,
        "finished_model_usd_per_month": round(usd(fin_list, fin_get) / len(finished), 4)
        if finished else None,
        "active_model_requests_per_cycle": {
            m: round((by_model[(m, "LIST")] + by_model[(m, "GET")]) / cycles, 2)
            for m in sorted(live)},
        "exporter_cpu_percent": round(100 * cpu / window, 2),
        "episode_lag_s": {"max": round(max(lags), 1),
                          "median": round(sorted(lags)[len(lags) // 2], 1),
                          "count": len(lags)} if lags else None,
        "warnings": sum(1 for line in log_text.splitlines() if "WARNING" in line),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--models", type=int, default=30)
    parser.add_argument("--active", type=int, default=3)
    parser.add_argument("--iterations", type=int, default=300)
    parser.add_argument("--non-model", type=int, default=0,
                        help="the other scenario: one model and this many non-model prefixes")
    parser.add_argument("--interval", type=float, default=15.0, help="refresh_interval, s")
    parser.add_argument("--warmup", type=float, default=60.0)
    parser.add_argument("--measure", type=float, default=240.0)
    parser.add_argument("--source", type=Path, default=REPO / "exporter",
                        help="the exporter package's parent folder to run")
    parser.add_argument("--extra", default="", help="more exporter config (YAML lines)")
    parser.add_argument("--profile", type=Path, help="run the exporter under cProfile, to here")
    print(json.dumps(measure(parser.parse_args()), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
