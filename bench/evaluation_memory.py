"""Peak memory of large evaluation files against the same bytes as metrics files (issue 24).

A directory laid out like a bucket: MODELS models (default 8), each with one document of about
SIZE MB (default 32; the project's simulator, one worker), either as its
`metrics/TrainingMetrics.json` ("metrics") or as an evaluation run's
`metrics/evaluation/evaluation-<time>.json` beside a small TrainingMetrics.json ("evaluation").
The real exporter (`deepracer-exporter --config X --once`, `refresh_workers: 8`, so every model
is read at once) runs in a child process; its peak RSS (ru_maxrss) is what is compared. Large
reads (16 MiB and more) take one slot of the large-read bound at a time: without it, eight
evaluation files are parsed together.

    .venv/bin/python bench/evaluation_memory.py                          # this tree
    .venv/bin/python bench/evaluation_memory.py --source /tmp/before/exporter

Prints one JSON object; bench/RESULTS.md records the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "exporter"))

from deepracer_exporter.simulate import TrainingSpec, generate_documents  # noqa: E402

EPISODES_PER_MB = 100_000 / 25.4  # the generator's documents: 25.4 MB per 100k episodes


def build(root: Path, models: int, size_mb: float) -> None:
    big = generate_documents(TrainingSpec(seed=1, max_episodes=10**9),
                             int(size_mb * EPISODES_PER_MB))[0]
    small = generate_documents(TrainingSpec(seed=2, max_episodes=10**9), 40)[0]
    for kind in ("metrics", "evaluation"):
        for i in range(models):
            metrics = root / kind / f"model-{i}" / "metrics"
            (metrics / "evaluation").mkdir(parents=True)
            if kind == "metrics":
                (metrics / "TrainingMetrics.json").write_bytes(big)
            else:
                (metrics / "TrainingMetrics.json").write_bytes(small)
                (metrics / "evaluation" / "evaluation-20240101120000.json").write_bytes(big)
    print(f"document: {len(big) / 1e6:.1f} MB", file=sys.stderr)


def peak_mib(source: Path, root: Path, tmp: Path) -> float:
    config = tmp / "exporter.yml"
    config.write_text(f"refresh_workers: 8\ndiscover:\n  - directory: {root}\n")
    proc = subprocess.Popen([sys.executable, "-c", "import sys; from deepracer_exporter.cli "
                             "import main; sys.exit(main())", "--config", str(config), "--once"],
                            env={**os.environ, "PYTHONPATH": str(source)},
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    assert proc.stderr is not None
    err = proc.stderr.read().decode(errors="replace")
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise RuntimeError(f"exporter failed: {err[-2000:]}")
    return usage.ru_maxrss / 1024  # KiB on Linux


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--models", type=int, default=8)
    parser.add_argument("--size", type=float, default=32.0, help="MB per document")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--source", type=Path, default=REPO / "exporter")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="drx-evalmem-") as tmpdir:
        tmp = Path(tmpdir)
        build(tmp / "bucket", args.models, args.size)
        peaks: dict[str, list[float]] = {"metrics": [], "evaluation": []}
        for _ in range(args.reps):  # interleaved
            for kind in peaks:
                peaks[kind].append(peak_mib(args.source, tmp / "bucket" / kind, tmp))
    print(json.dumps({"source": str(args.source), "models": args.models, "size_mb": args.size,
                      "peak_mib": {k: round(statistics.median(v), 1) for k, v in peaks.items()},
                      "runs": peaks}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
