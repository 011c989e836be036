"""Whole process, same S3 endpoint: `deepracer-exporter --once` against deepracer-utils (issue 16).

Both read one TrainingMetrics.json from moto's S3 server (in a child process) and compute what a
notebook user asks for: deepracer-utils `TrainingMetrics(bucket, model_name=...,
s3_endpoint_url=...)` plus `getSummary(method=mean|median|min|max)`; the exporter
`--config X --once` (read, derive, render, print). Each is timed as a whole new Python
process, REPS times, alternating; the median is kept. Start-up is the 100-episode time; the
marginal cost of a big training is the 100,000-episode time minus the 100-episode time, so
interpreter and import costs cancel. `fastest_runs` repeats the figures from each series' fastest
run, the one least disturbed by the rest of the machine (timeit's advice for noisy machines).

    .venv/bin/python bench/once_vs_utils.py [--reps 11] [--episodes 100000]

Prints one JSON object; bench/RESULTS.md and README record the figures.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
BENCH = REPO / "bench"
sys.path.insert(0, str(REPO / "exporter"))

from deepracer_exporter.app import make_s3_client  # noqa: E402
from deepracer_exporter.config import S3Settings  # noqa: E402
from deepracer_exporter.simulate import TrainingSpec, generate_documents  # noqa: E402

PYTHON = str(REPO / ".venv" / "bin" / "python")
EXPORTER = str(REPO / ".venv" / "bin" / "deepracer-exporter")
UTILS = """
import sys
from deepracer.logs.metrics import TrainingMetrics
endpoint, bucket, prefix = sys.argv[1:4]
tm = TrainingMetrics(bucket, model_name=prefix, s3_endpoint_url=endpoint, region="us-east-1")
for method in ("mean", "median", "min", "max"):
    tm.getSummary(method=method)
"""


class Moto:
    def __init__(self) -> None:
        self.proc = subprocess.Popen([sys.executable, str(BENCH / "children.py"), "moto"],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.DEVNULL, text=True)
        assert self.proc.stdout is not None
        self.endpoint = f"http://127.0.0.1:{self.proc.stdout.readline().strip()}"

    def close(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        self.proc.wait(timeout=10)


def timed(cmd: list[str]) -> float:
    started = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                   env={"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench",
                        "AWS_DEFAULT_REGION": "us-east-1", "PATH": "/usr/bin:/bin"})
    return time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reps", type=int, default=11)
    parser.add_argument("--episodes", type=int, default=100_000)
    args = parser.parse_args()
    moto = Moto()
    try:
        s3 = make_s3_client(S3Settings(endpoint_url=moto.endpoint, region="us-east-1",
                                       access_key_id="bench", secret_access_key="bench"))
        s3.create_bucket(Bucket="bench")
        sizes = {"small": 100, "big": args.episodes}
        body_bytes = {}
        for name, n in sizes.items():
            body = generate_documents(TrainingSpec(max_episodes=n), n)[0]
            body_bytes[name] = len(body)
            s3.put_object(Bucket="bench", Key=f"{name}/metrics/TrainingMetrics.json", Body=body)
        with tempfile.TemporaryDirectory() as tmp:
            configs = {}
            for name in sizes:
                path = Path(tmp) / f"{name}.yml"
                path.write_text(f"s3:\n  endpoint_url: {moto.endpoint}\n  region: us-east-1\n"
                                f"models:\n  - name: {name}\n    bucket: bench\n"
                                f"    prefix: {name}\n")
                configs[name] = str(path)
            times: dict[tuple[str, str], list[float]] = {}
            for _ in range(args.reps):
                for name in sizes:
                    times.setdefault(("exporter", name), []).append(
                        timed([EXPORTER, "--config", configs[name], "--once"]))
                    times.setdefault(("utils", name), []).append(
                        timed([PYTHON, "-c", UTILS, moto.endpoint, "bench", name]))
    finally:
        moto.close()
    med = {k: statistics.median(v) for k, v in times.items()}
    marginal = {who: med[who, "big"] - med[who, "small"] for who in ("exporter", "utils")}
    # With least interference from the rest of the machine (timeit's advice): the fastest runs.
    best = {k: min(v) for k, v in times.items()}
    best_marginal = {who: best[who, "big"] - best[who, "small"] for who in ("exporter", "utils")}
    print(json.dumps({
        "episodes": args.episodes, "bytes": body_bytes["big"], "reps": args.reps,
        "exporter_s": {k[1]: round(v, 3) for k, v in med.items() if k[0] == "exporter"},
        "utils_s": {k[1]: round(v, 3) for k, v in med.items() if k[0] == "utils"},
        "marginal_s": {k: round(v, 3) for k, v in marginal.items()},
        "marginal_ratio": round(marginal["utils"] / marginal["exporter"], 2),
        "fastest_runs": {
            "exporter_s": {k[1]: round(v, 3) for k, v in best.items() if k[0] == "exporter"},
            "utils_s": {k[1]: round(v, 3) for k, v in best.items() if k[0] == "utils"},
            "marginal_ratio": round(best_marginal["utils"] / best_marginal["exporter"], 2)},
        "startup_ratio": round(med["utils", "small"] / med["exporter", "small"], 2),
    }, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
