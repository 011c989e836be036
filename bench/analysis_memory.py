"""What the training analysis costs per model: memory with 1,000 iterations of simtrace, reads,
and the /metrics series it adds (issue 28).

    .venv/bin/python bench/analysis_memory.py              # 1,000 iterations, 5 models
    .venv/bin/python bench/analysis_memory.py --iterations 50 --models 2   # quick

A model folder (local directory store) holds a simulated DRfC training of `--iterations`
iterations of 20 episodes: its TrainingMetrics.json and one simtrace CSV per iteration (10
simulated iterations' CSVs repeated: every file is a real simulated iteration of the demo track,
150-250 rows per episode late in training). `--models` ModelCaches refresh it (each keeps its
own copy, as separate models would), once with the simtrace files and once without; RSS after
gc and malloc_trim in this process, after a warm-up model. Also printed: the bytes each file's
kept reduction holds (FileEpisodes arrays), RSS with CSVs whose header hides the analysis
columns (step timing only, what the cache kept before the analysis), how many GETs the second
refresh makes (0: each file is read once), and the series the analysis families add to one
model's exposition.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import gc
import json
import sys
import tempfile
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH.parent / "exporter"))

from prometheus_client import CollectorRegistry  # noqa: E402

from deepracer_exporter.config import ModelConfig  # noqa: E402
from deepracer_exporter.modelcache import DeriveSettings, ModelCache  # noqa: E402
from deepracer_exporter.server import Exposition  # noqa: E402
from deepracer_exporter.simulate import (  # noqa: E402
    TrainingSpec,
    generate_documents,
    generate_files,
    key_for,
)
from deepracer_exporter.snapshot import Snapshot  # noqa: E402
from deepracer_exporter.sources import DirectoryStore  # noqa: E402

ANALYSIS_FAMILIES = ("deepracer_iteration_speed_meters_per_second",
                     "deepracer_iteration_distance_meters",
                     "deepracer_iteration_projected_lap_seconds",
                     "deepracer_model_action_ratio")
DISTINCT = 10  # simulated iterations whose CSVs are repeated


def _rss() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def _settle() -> int:
    gc.collect()
    with contextlib.suppress(OSError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    return _rss()


def write_model(root: Path, name: str, iterations: int, simtrace: bool,
                analysis: bool = True) -> None:
    spec = TrainingSpec(episodes_between_training=20, max_episodes=20 * (iterations + 1),
                        seed=3, midpoint_iterations=3)
    folder = root / name
    doc = generate_documents(spec, 20 * iterations)[0]
    (folder / key_for("", 0)).parent.mkdir(parents=True, exist_ok=True)
    (folder / key_for("", 0)).write_bytes(doc)
    if not simtrace:
        return
    files = generate_files(spec, 20 * DISTINCT)
    (folder / "training-simtrace").mkdir()
    for it in range(iterations):
        source = f"training-simtrace/{DISTINCT - 1 - it % 5}-iteration.csv"
        body = files[source]
        if not analysis:  # a header without X: the parser keeps step timing only, as before
            body = body.replace(b",X,", b",x_,", 1)
        (folder / f"training-simtrace/{it}-iteration.csv").write_bytes(body)
    for key in ("model/model_metadata.json", "training_params.yaml"):
        (folder / key).parent.mkdir(parents=True, exist_ok=True)
        (folder / key).write_bytes(files[key])


def measure(root: Path, prefix: str, models: int) -> tuple[float, list[ModelCache]]:
    store = DirectoryStore(str(root))
    settings = DeriveSettings()
    warm = ModelCache(ModelConfig("warm", (prefix,), directory=str(root)), store, settings)
    warm.refresh()
    before = _settle()
    caches = []
    for i in range(models):
        cache = ModelCache(ModelConfig(f"m{i}", (prefix,), directory=str(root)), store, settings)
        cache.refresh()
        caches.append(cache)
    return (_settle() - before) / models, caches


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--iterations", type=int, default=1000)
    parser.add_argument("--models", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        write_model(root, "with", args.iterations, simtrace=True)
        write_model(root, "without", args.iterations, simtrace=False)
        write_model(root, "timing", args.iterations, simtrace=True, analysis=False)
        csv_bytes = sum(p.stat().st_size for p in (root / "with/training-simtrace").iterdir())
        started = time.perf_counter()
        plain, _ = measure(root, "without", args.models)
        timing, _ = measure(root, "timing", args.models)
        traced, caches = measure(root, "with", args.models)
        elapsed = time.perf_counter() - started
        cache = caches[0]
        downloaded = cache._downloaded
        snap = cache.refresh()
        again = cache._downloaded - downloaded
        kept = [t.episodes for t in cache._traces.values() if t.episodes is not None]
        reduced = sum(e.table.nbytes + e.actions.nbytes for e in kept)
        paths = sum(e.path.x.nbytes * 4 + e.path.starts.nbytes for e in kept
                    if e.path is not None)
        exposition = Exposition(CollectorRegistry())
        exposition.update(Snapshot((snap,), (), 15.0, 5, time.time()))
        lines = [line for line in exposition.rendered.plain.decode().splitlines()
                 if line.startswith(ANALYSIS_FAMILIES)]
        analysis = snap.extras.analysis
        print(json.dumps({
            "iterations": args.iterations,
            "models": args.models,
            "simtrace_mb_per_model": round(csv_bytes / 1e6, 1),
            "rss_mb_per_model_without_simtrace": round(plain / 1e6, 2),
            "rss_mb_per_model_with_simtrace": round(traced / 1e6, 2),
            "simtrace_rss_mb_per_model": round((traced - plain) / 1e6, 2),
            "rss_mb_per_model_step_timing_only": round(timing / 1e6, 2),
            "analysis_rss_mb_per_model": round((traced - timing) / 1e6, 2),
            "kept_reduction_kb": round(reduced / 1e3, 1),
            "kept_positions_kb": round(paths / 1e3, 1),
            "files_with_positions": sum(1 for e in kept if e.path is not None),
            "gets_on_second_refresh": again,
            "analysis_series_per_model": len(lines),
            "latest_paths": len(analysis.latest_paths) if analysis else 0,
            "seconds": round(elapsed, 1),
        }, indent=2))


if __name__ == "__main__":
    main()
