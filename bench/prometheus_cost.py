"""What a bucket of mostly idle models costs a real Prometheus (issue 11).

Builds a local directory laid out like a DRfC bucket: MODELS models of ITERATIONS iterations (20
episodes each, 2-6 evaluation episodes after each iteration, written by the project's simulator),
ACTIVE of them written just now and the rest a month ago (file modification times set with
os.utime: the directory source reports them as LastModified). Runs the real exporter process on it
(`deepracer-exporter --config`, a `discover` entry) and Debian's Prometheus scraping it every 5 s,
then reads, after a few scrapes: samples per scrape, Prometheus head series and RSS, scrape
duration and the /metrics body size plain and gzip.

    .venv/bin/python bench/prometheus_cost.py                    # the default config
    .venv/bin/python bench/prometheus_cost.py --extra 'history_max_age: always
    iteration_stats: full'                                       # every model's full history

Prints one JSON object; bench/RESULTS.md records the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO / "exporter"))

from deepracer_exporter.simulate import TrainingSimulator, TrainingSpec  # noqa: E402
from promserver import PromServer, free_port  # noqa: E402

MONTH = 30 * 24 * 3600


def build_bucket(root: Path, models: int, iterations: int, active: int) -> None:
    now = time.time()
    for i in range(models):
        prefix = f"model-{i:02d}"
        spec = TrainingSpec(episodes_between_training=20, workers=1, seed=i,
                            max_episodes=10**9)
        sim = TrainingSimulator(spec)
        sim.advance(20 * iterations)
        files = {sim.key_for(prefix, w): body for w, body in sim.documents().items()}
        files[f"{prefix}/ip/hyperparameters.json"] = sim.hyperparameters()
        mtime = now if i < active else now - MONTH
        for key, body in files.items():
            path = root / key
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(body)
            os.utime(path, (mtime, mtime))


def fetch(url: str, gzip_ok: bool) -> bytes:
    req = urllib.request.Request(url, headers={"Accept-Encoding": "gzip"} if gzip_ok else {})
    with urllib.request.urlopen(req, timeout=60) as resp:
        body: bytes = resp.read()
    return body


def own_metric(prom: PromServer, name: str) -> float:
    """A sample of Prometheus' own /metrics (it does not scrape itself here)."""
    text = fetch(f"{prom.url}/metrics", False).decode()
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise KeyError(name)


def measure(models: int, iterations: int, active: int, extra: str,
            scrapes: int) -> dict[str, object]:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "bucket"
        build_bucket(root, models, iterations, active)
        port = free_port()
        config = Path(tmp) / "exporter.yml"
        config.write_text(f'listen: "127.0.0.1:{port}"\nrefresh_interval: 5s\n'
                          f"max_iterations: 1000\n"
                          f"discover:\n  - directory: {root}\n{extra}\n")
        exporter = subprocess.Popen([str(REPO / ".venv/bin/deepracer-exporter"), "--config",
                                     str(config), "--log-level", "warning"])
        try:
            url = f"http://127.0.0.1:{port}/metrics"
            deadline = time.monotonic() + 300
            while True:
                try:
                    body = fetch(url, False)
                    if b"deepracer_model_iteration{" in body and body.count(
                            b"deepracer_model_iteration{") >= models:
                        break
                except OSError:
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError("exporter did not serve every model in 300 s")
                time.sleep(0.5)
            plain = fetch(url, False)
            gz = fetch(url, True)
            with PromServer(f"127.0.0.1:{port}", scrape_interval="5s") as prom:
                prom.wait_for(lambda: (prom.query_value(
                    "count_over_time(scrape_samples_scraped[10m])") or 0) >= scrapes,
                    timeout=10 + 6 * scrapes)
                time.sleep(1)
                result = {
                    "models": models, "iterations": iterations, "active": active,
                    "config_extra": extra.strip(),
                    "samples_per_scrape": prom.query_value("scrape_samples_scraped"),
                    "head_series": own_metric(prom, "prometheus_tsdb_head_series"),
                    "prometheus_rss_mb": round(own_metric(
                        prom, "process_resident_memory_bytes") / 2**20, 1),
                    "scrape_duration_s": round(prom.query_value(
                        "max_over_time(scrape_duration_seconds[10m])") or 0.0, 3),
                    "body_plain_mb": round(len(plain) / 2**20, 2),
                    "body_gzip_mb": round(len(gz) / 2**20, 3),
                    "active_series_per_iteration": None,
                }
                per_model = prom.query('count by (model) ({__name__=~"deepracer_iteration_.+"})')
                counts = sorted(float(r["value"][1]) for r in per_model)
                if counts:
                    result["active_series_per_iteration"] = round(counts[-1] / iterations, 1)
                    result["models_with_history"] = len(counts)
                result["models_listed"] = prom.query_value("count(deepracer_model_info)")
                return result
        finally:
            exporter.terminate()
            try:
                exporter.wait(timeout=20)
            except subprocess.TimeoutExpired:
                exporter.kill()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", type=int, default=30)
    parser.add_argument("--iterations", type=int, default=300)
    parser.add_argument("--active", type=int, default=3)
    parser.add_argument("--scrapes", type=int, default=4)
    parser.add_argument("--extra", default="", help="YAML lines appended to the config")
    args = parser.parse_args()
    print(json.dumps(measure(args.models, args.iterations, args.active, args.extra,
                             args.scrapes), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
