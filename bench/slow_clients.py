"""Clients that do not read their responses, against a normal scrape (issue 24, item 1).

    .venv/bin/python bench/slow_clients.py               # this tree; prints JSON lines
    .venv/bin/python bench/slow_clients.py --source DIR  # another tree's exporter/ folder

The exporter runs as its own process (`python -m deepracer_exporter.cli`) on 4 simulated
models in a directory. Each stalling client sets a 4 KiB receive buffer, pipelines
`--requests` GET /metrics on one connection and never reads. Two scenarios:

- `stall`: `--stallers` clients (8: as many as the server has workers) that keep their
  connections, default limits;
- `full`: as many stalling clients as `max_connections` allows (the open-file limit is set to
  64, so `max_connections` is 32), each connecting again after about `--churn` seconds.

Before and while the clients stall, a normal scraper asks for /metrics and /-/healthy
`--scrapes` times each, on a new connection each time with Prometheus' default 10 s scrape
timeout; the exporter's VmRSS is sampled every 0.1 s. Figures go to docs/reliability.md.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import random
import re
import resource
import select
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
SCRAPE_TIMEOUT = 10.0  # Prometheus' default scrape_timeout
REQUEST = b"GET /metrics HTTP/1.1\r\nHost: exporter\r\n\r\n"


def write_models(root: Path) -> None:
    from deepracer_exporter.simulate import TrainingSimulator, TrainingSpec, key_for

    for n in range(4):
        sim = TrainingSimulator(TrainingSpec(episodes_between_training=20, seed=n))
        sim.advance(600)
        path = root / key_for(f"model-{n}", 0)
        path.parent.mkdir(parents=True)
        path.write_bytes(sim.document(0))


def start_exporter(root: Path, source: Path | None, nofile: int | None
                   ) -> tuple[subprocess.Popen[str], int]:
    config = root / "config.yml"
    config.write_text(f"listen: 127.0.0.1:0\nrefresh_interval: 15s\n"
                      f"discover:\n  - directory: {root / 'data'}\n")
    env = dict(os.environ)
    if source is not None:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(source),
                                                          env.get("PYTHONPATH")]))

    def limit() -> None:
        if nofile:
            resource.setrlimit(resource.RLIMIT_NOFILE,
                               (nofile, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))

    proc = subprocess.Popen([sys.executable, "-m", "deepracer_exporter.cli", "--config",
                             str(config), "--log-level", "warning"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            preexec_fn=limit)
    assert proc.stderr is not None
    deadline = time.monotonic() + 60
    port = None
    while port is None and time.monotonic() < deadline:
        port = listening_port(proc.pid)
        if port is None:
            if proc.poll() is not None:
                raise SystemExit(f"exporter exited: {proc.stderr.read()}")
            time.sleep(0.1)
    if port is None:
        raise SystemExit("exporter did not listen")
    while time.monotonic() < deadline:  # listening; wait until it answers
        try:
            scrape(port, "/-/healthy")
            return proc, port
        except OSError:
            time.sleep(0.1)
    raise SystemExit("exporter did not answer")


def listening_port(pid: int) -> int | None:
    """The TCP port the process listens on (from /proc, as `ss -ltnp` would)."""
    inodes = set()
    fd_dir = Path(f"/proc/{pid}/fd")
    try:
        for fd in fd_dir.iterdir():
            m = re.match(r"socket:\[(\d+)\]", os.readlink(fd))
            if m:
                inodes.add(m.group(1))
    except OSError:
        return None
    for line in Path(f"/proc/{pid}/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if fields[3] == "0A" and fields[9] in inodes:  # LISTEN
            return int(fields[1].split(":")[1], 16)
    return None


def scrape(port: int, path: str) -> tuple[float, int]:
    """Seconds to a complete 200 response on a new connection, and its size; raises on
    anything else."""
    started = time.monotonic()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=SCRAPE_TIMEOUT)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        body = resp.read()
        if resp.status != 200:
            raise OSError(f"HTTP {resp.status}")
    finally:
        conn.close()
    took = time.monotonic() - started
    if took > SCRAPE_TIMEOUT:
        raise TimeoutError(f"{took:.1f}s")
    return took, len(body)


def staller(port: int, requests: int, churn: float, stop: threading.Event,
            connects: list[int]) -> None:
    """Pipeline requests and never read. With `churn`, connect again after about that many
    seconds, so that the server always holds as many as the clients can make (a connection the
    server closed after reading every request does not look closed here: its FIN waits behind
    the unread responses); without, keep the connection until the server resets it."""
    rng = random.Random()
    while not stop.is_set():
        reopen = time.monotonic() + (rng.uniform(0.5, 1.5) * churn if churn else 1e9)
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        try:
            s.connect(("127.0.0.1", port))
            connects.append(1)
            s.setblocking(False)
            data = memoryview(REQUEST * requests)
            poll = select.poll()
            poll.register(s, select.POLLRDHUP | select.POLLHUP | select.POLLERR)
            while not stop.is_set() and time.monotonic() < reopen:
                if data:
                    with contextlib.suppress(BlockingIOError):
                        data = data[s.send(data):]
                if poll.poll(100):  # closed or reset by the server
                    break
        except OSError:
            time.sleep(0.05)
        finally:
            s.close()


def rss_mib(pid: int) -> float:
    m = re.search(r"VmRSS:\s+(\d+) kB", Path(f"/proc/{pid}/status").read_text())
    return int(m.group(1)) / 1024 if m else 0.0


def measure(port: int, scrapes: int) -> dict[str, Any]:
    """`scrapes` of /metrics and of /-/healthy, taking turns."""
    paths = ("/metrics", "/-/healthy")
    took: dict[str, list[float]] = {p: [] for p in paths}
    failed: dict[str, list[str]] = {p: [] for p in paths}
    size: dict[str, int] = dict.fromkeys(paths, 0)
    for _ in range(scrapes):
        for path in paths:
            try:
                seconds, size[path] = scrape(port, path)
                took[path].append(seconds)
            except Exception as exc:  # timeout, reset, refused: a failed scrape
                failed[path].append(f"{type(exc).__name__}: {exc}")
    out: dict[str, Any] = {}
    for path in paths:
        ms = sorted(t * 1000 for t in took[path])
        out[path] = {
            "bytes": size[path], "answered": len(ms), "failed": len(failed[path]),
            "failures": sorted(set(failed[path]))[:3],
            "p50_ms": round(statistics.median(ms), 1) if ms else None,
            "max_ms": round(ms[-1], 1) if ms else None,
        }
    return out


def scenario(name: str, root: Path, source: Path | None, stallers: int, requests: int,
             scrapes: int, nofile: int | None, settle: float, churn: float) -> dict[str, Any]:
    """Normal scrapes before and while `stallers` clients stall."""
    proc, port = start_exporter(root, source, nofile)
    try:
        before = measure(port, scrapes)
        rss_before = rss_mib(proc.pid)
        stop = threading.Event()
        connects: list[int] = []
        threads = [threading.Thread(target=staller,
                                    args=(port, requests, churn, stop, connects),
                                    daemon=True) for _ in range(stallers)]
        for t in threads:
            t.start()
        rss: list[float] = []
        sampling = threading.Event()

        def sample() -> None:
            while not sampling.is_set():
                rss.append(rss_mib(proc.pid))
                time.sleep(0.1)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        time.sleep(settle)  # the stalling clients fill their buffers
        during = measure(port, scrapes)
        sampling.set()
        stop.set()
        sampler.join()
        for t in threads:
            t.join()
        return {"scenario": name, "stallers": stallers, "churn_s": churn, "requests_each": requests,
                "nofile": nofile, "staller_connects": len(connects), "before": before,
                "during": during, "rss_mib_before": round(rss_before, 1),
                "rss_mib_max_during": round(max(rss), 1), "rss_mib_end": round(rss[-1], 1)}
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--source", type=Path, help="the exporter/ folder of another tree")
    p.add_argument("--stallers", type=int, default=8)
    p.add_argument("--requests", type=int, default=3000)
    p.add_argument("--scrapes", type=int, default=10)
    p.add_argument("--settle", type=float, default=2.0)
    p.add_argument("--only", choices=("stall", "full"))
    p.add_argument("--nofile", type=int, default=64,
                   help="open-file limit of the `full` scenario (max_connections: half)")
    p.add_argument("--churn", type=float, default=1.0,
                   help="`full`: seconds (on average) a stalling client keeps a connection")
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        write_models(root / "data")
        if args.only in (None, "stall"):
            print(json.dumps(scenario("stall", root, args.source, args.stallers, args.requests,
                                      args.scrapes, None, args.settle, 0.0)), flush=True)
        if args.only in (None, "full"):
            print(json.dumps(scenario("full", root, args.source, args.nofile // 2,
                                      args.requests, args.scrapes, args.nofile, args.settle,
                                      args.churn)),
                  flush=True)


if __name__ == "__main__":
    main()
