"""Concurrent /metrics scrapers, run as their own process by test_load.py.

    python tests/loadclient.py --port PORT --threads 50 --seconds 5

Each thread scrapes over a kept-alive HTTP/1.1 connection (every other request asks for gzip)
and checks every response: status 200, the body parses (prometheus_client.parser), and it is one
consistent snapshot (see `check`). Identical bodies are parsed once (the exporter renders once
per refresh, so most responses are byte-identical to an earlier one). Prints one JSON summary.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import http.client
import json
import threading
import time
from collections import defaultdict
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

SUCCESS_TS = "deepracer_exporter_last_refresh_success_timestamp_seconds"
SNAPSHOT_TS = "deepracer_exporter_snapshot_timestamp_seconds"
SNAPSHOT = "(snapshot)"  # key of the snapshot's build time among the per-model stamps


def check(body: str) -> tuple[list[str], dict[str, float]]:
    """Problems in one exposition, and each model's last-success timestamp.

    Invariant of one consistent snapshot, per model and phase: the episodes of the
    per-iteration series add up to the model's episode total (both come from one derivation).
    Every model's refresh must have succeeded (the load run has no faults).
    """
    problems: list[str] = []
    per_iteration: dict[tuple[str, str], float] = defaultdict(float)
    totals: dict[tuple[str, str], float] = defaultdict(float)
    stamps: dict[str, float] = {}
    models: set[str] = set()
    for family in text_string_to_metric_families(body):
        for s in family.samples:
            lab = s.labels
            if s.name == "deepracer_iteration_episodes":
                per_iteration[(lab["model"], lab["phase"])] += s.value
            elif s.name == "deepracer_model_episodes_total":
                totals[(lab["model"], lab["phase"])] += s.value
            elif s.name == SUCCESS_TS:
                stamps[lab["model"]] = s.value
            elif s.name == SNAPSHOT_TS:
                stamps[SNAPSHOT] = s.value
            elif s.name == "deepracer_model_info":
                models.add(lab["model"])
            elif s.name == "deepracer_exporter_refresh_success" and s.value != 1:
                problems.append(f"model {lab['model']}: refresh_success {s.value}")
    if not models:
        problems.append("no models")
    for key in sorted(set(per_iteration) | set(totals)):
        if per_iteration.get(key, 0.0) != totals.get(key, 0.0):
            problems.append(f"{key}: per-iteration episodes {per_iteration.get(key)} != "
                            f"episodes_total {totals.get(key)}")
    if SNAPSHOT not in stamps:
        problems.append("no snapshot timestamp")
    if set(stamps) - {SNAPSHOT} != models:
        problems.append(f"models without a success timestamp: {sorted(models - set(stamps))}")
    return problems, stamps


def torn(snapshots: list[dict[str, float]]) -> list[str]:
    """Bodies that mix snapshots: two bodies served from the snapshot built at one time must
    agree on every model's refresh. (A model still refreshing when a cycle ends keeps its
    previous data in the next snapshot, so models' times need not move together.)"""
    out = []
    seen: dict[float, dict[str, float]] = {}
    for snap in snapshots:
        if SNAPSHOT not in snap:
            out.append(f"no snapshot timestamp: {snap}")
        elif seen.setdefault(snap[SNAPSHOT], snap) != snap:
            out.append(f"snapshot {snap[SNAPSHOT]}: {seen[snap[SNAPSHOT]]} vs {snap}")
    return out


class Results:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.checked: dict[str, tuple[list[str], dict[str, float]]] = {}
        self.parsing: dict[str, threading.Lock] = {}
        self.requests = 0
        self.gzip_requests = 0
        self.errors: list[str] = []
        self.bad: list[str] = []
        self.went_back: list[str] = []
        self.latencies: list[float] = []
        self.bytes = 0

    def verdict(self, body: bytes) -> tuple[list[str], dict[str, float]]:
        digest = hashlib.sha256(body).hexdigest()
        with self.lock:
            known = self.checked.get(digest)
            parsing = self.parsing.setdefault(digest, threading.Lock())
        if known is not None:
            return known
        with parsing:  # one thread parses a new body; the others wait for its verdict
            with self.lock:
                known = self.checked.get(digest)
            if known is None:
                try:
                    known = check(body.decode())
                except Exception as exc:  # a body that does not parse
                    known = ([f"does not parse: {type(exc).__name__}: {exc}"], {})
                with self.lock:
                    self.checked[digest] = known
        return known


def scraper(port: int, deadline: float, results: Results, index: int) -> None:
    conn: http.client.HTTPConnection | None = None
    previous: dict[str, float] = {}
    n = 0
    while time.monotonic() < deadline:
        n += 1
        gz = (n + index) % 2 == 0
        started = time.monotonic()
        try:
            if conn is None:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            conn.request("GET", "/metrics", headers={"Accept-Encoding": "gzip"} if gz else {})
            resp = conn.getresponse()
            raw = resp.read()
            if resp.status != 200:
                raise RuntimeError(f"HTTP {resp.status}")
            if gz:
                if resp.getheader("Content-Encoding") != "gzip":
                    raise RuntimeError("asked for gzip, got plain")
                raw = gzip.decompress(raw)
        except Exception as exc:
            with results.lock:
                results.errors.append(f"{type(exc).__name__}: {exc}")
            if conn is not None:
                conn.close()
            conn = None
            continue
        took = time.monotonic() - started
        problems, stamps = results.verdict(raw)
        went_back = [m for m, ts in stamps.items() if ts < previous.get(m, 0.0)]
        previous = stamps
        with results.lock:
            results.requests += 1
            results.gzip_requests += gz
            results.latencies.append(took)
            results.bytes += len(raw)
            if problems:
                results.bad.extend(problems[:3])
            if went_back:
                results.went_back.append(f"thread {index}: {went_back} went back in time")
    if conn is not None:
        conn.close()


def run(port: int, threads: int, seconds: float) -> dict[str, Any]:
    results = Results()
    deadline = time.monotonic() + seconds
    workers = [threading.Thread(target=scraper, args=(port, deadline, results, i))
               for i in range(threads)]
    started = time.monotonic()
    for t in workers:
        t.start()
    for t in workers:
        t.join()
    elapsed = time.monotonic() - started
    lat = sorted(results.latencies) or [0.0]

    def pct(p: float) -> float:
        return lat[min(len(lat) - 1, int(p * len(lat)))]

    snapshots = sorted({tuple(sorted(stamps.items()))
                        for _, stamps in results.checked.values() if stamps})
    return {
        "threads": threads, "seconds": round(elapsed, 2), "requests": results.requests,
        "gzip_requests": results.gzip_requests,
        "requests_per_second": round(results.requests / elapsed, 1),
        "latency_p50_ms": round(pct(0.5) * 1000, 1), "latency_p99_ms": round(pct(0.99) * 1000, 1),
        "latency_max_ms": round(lat[-1] * 1000, 1),
        "mean_body_bytes": results.bytes // max(1, results.requests),
        "distinct_bodies": len(results.checked), "errors": results.errors[:10],
        "error_count": len(results.errors), "bad": results.bad[:10],
        "bad_count": len(results.bad), "went_back": results.went_back[:10],
        "snapshots": [dict(s) for s in snapshots],
    }


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--threads", type=int, default=50)
    p.add_argument("--seconds", type=float, default=5.0)
    args = p.parse_args()
    print(json.dumps(run(args.port, args.threads, args.seconds)))


if __name__ == "__main__":
    main()
