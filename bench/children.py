"""Processes the benchmark runs beside itself, so their CPU never counts as the exporter's.

`python bench/children.py moto` serves S3 (moto) on 127.0.0.1 and prints its port;
`python bench/children.py scrape PORT ...` hammers /metrics from N keep-alive threads;
`python bench/children.py memory EPISODES MODELS` reports RSS held per model (watchers, rendering).
Each prints one line of JSON (or the port) on stdout.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import gc
import http.client
import json
import logging
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any


def serve_moto() -> None:
    """Run moto's S3 server until stdin closes (the parent ends it by closing the pipe)."""
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    print(server.get_host_and_port()[1], flush=True)
    sys.stdin.read()
    server.stop()


def scrape(port: int, threads: int, seconds: float, max_requests: int, gzip: bool) -> None:
    """Scrape /metrics from `threads` keep-alive connections until the count or time is up."""
    latencies: list[float] = []
    sizes: list[int] = []
    lock = threading.Lock()
    budget = [max_requests]
    deadline = time.monotonic() + seconds
    headers = {"Accept-Encoding": "gzip"} if gzip else {}
    errors = [0]

    def worker() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        while time.monotonic() < deadline:
            with lock:
                if budget[0] <= 0:
                    break
                budget[0] -= 1
            started = time.perf_counter()
            try:
                conn.request("GET", "/metrics", headers=headers)
                resp = conn.getresponse()
                body = resp.read()
                ok = resp.status == 200
            except (OSError, http.client.HTTPException):
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
                ok, body = False, b""
            took = time.perf_counter() - started
            with lock:
                if ok:
                    latencies.append(took)
                    sizes.append(len(body))
                else:
                    errors[0] += 1
        conn.close()

    started = time.perf_counter()
    pool = [threading.Thread(target=worker) for _ in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    elapsed = time.perf_counter() - started
    latencies.sort()
    n = len(latencies)
    print(json.dumps({
        "requests": n,
        "errors": errors[0],
        "seconds": elapsed,
        "per_second": n / elapsed if elapsed else 0.0,
        "p50_ms": 1e3 * statistics.median(latencies) if n else None,
        "p99_ms": 1e3 * latencies[min(n - 1, int(0.99 * n))] if n else None,
        "bytes": statistics.median(sizes) if sizes else 0,
    }))


def _rss() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def _settle() -> int:
    gc.collect()
    with contextlib.suppress(OSError):  # hand freed heap back so RSS shows what is held
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    return _rss()


def memory(episodes: int, models: int) -> None:
    """RSS held per model: by refreshed ModelCaches (Columns + Derived + bookkeeping), then
    by the exposition (each model's rendered lines and gzip members, and the joined body)."""
    from prometheus_client import CollectorRegistry

    from deepracer_exporter import parse
    from deepracer_exporter.config import ModelConfig
    from deepracer_exporter.modelcache import DeriveSettings, ModelCache
    from deepracer_exporter.server import Exposition
    from deepracer_exporter.simulate import TrainingSpec, generate_documents, key_for
    from deepracer_exporter.snapshot import Snapshot
    from deepracer_exporter.sources import DirectoryStore

    with tempfile.TemporaryDirectory() as root:
        spec = TrainingSpec(max_episodes=episodes, workers=1)
        docs = generate_documents(spec, episodes)
        path = Path(root) / key_for("model", 0)
        path.parent.mkdir(parents=True)
        path.write_bytes(docs[0])
        del docs
        store = DirectoryStore(root)
        settings = DeriveSettings()

        def snapshot(snaps: list[Any]) -> Snapshot:
            return Snapshot(tuple(snaps), (), 15.0, settings.rolling_window, time.time())

        # One warm-up model, refreshed and rendered: imports, numpy caches, pymalloc arenas and
        # the exposition's fixed part are not per-model cost.
        warm = ModelCache(ModelConfig("warm", ("model",), directory=root), store, settings)
        snaps = [warm.refresh()]
        exposition = Exposition(CollectorRegistry())
        exposition.update(snapshot(snaps))
        before = _settle()
        watchers = []
        for i in range(models):
            w = ModelCache(ModelConfig(f"m{i}", ("model",), directory=root), store, settings)
            snaps.append(w.refresh())
            watchers.append(w)
        held = _settle()
        exposition.update(snapshot(snaps))
        rendered = _settle()
        cols = parse.parse_document(path.read_bytes())  # what each watcher keeps per worker
        derived = snaps[-1].derived
        assert derived is not None
        print(json.dumps({
            "episodes": episodes,
            "records": len(cols),
            "models": models,
            "rss_per_model": (held - before) / models,
            "rendered_rss_per_model": (rendered - held) / models,
            "rendered_plain_per_model": len(exposition.rendered.plain) / (models + 1),
            "rendered_gzip_per_model": len(exposition.rendered.gzipped) / (models + 1),
            "columns_bytes": cols.nbytes,
            "columns_bytes_per_record": cols.nbytes / max(len(cols), 1),
            "iterations_kept": len(derived.iterations),
        }))


def main() -> None:
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="cmd", required=True)
    sub.add_parser("moto")
    s = sub.add_parser("scrape")
    s.add_argument("port", type=int)
    s.add_argument("--threads", type=int, default=4)
    s.add_argument("--seconds", type=float, default=3.0)
    s.add_argument("--max-requests", type=int, default=100_000)
    s.add_argument("--gzip", action="store_true")
    m = sub.add_parser("memory")
    m.add_argument("episodes", type=int)
    m.add_argument("models", type=int)
    args = parser.parse_args()
    if args.cmd == "moto":
        serve_moto()
    elif args.cmd == "scrape":
        scrape(args.port, args.threads, args.seconds, args.max_requests, args.gzip)
    else:
        memory(args.episodes, args.models)


if __name__ == "__main__":
    main()
