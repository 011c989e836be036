"""Peak memory of deriving a 20,000-iteration model against `rolling_window` (issue 24).

    .venv/bin/python bench/rolling_memory.py [--iterations N] [--windows 5,1000]

One episode per iteration, so the document has N iterations. Each window is measured in a fresh
child process (peak RSS, `ru_maxrss`, of reading, parsing and deriving the document) and with
tracemalloc (peak bytes allocated by `derive` alone). Figures: docs/bench.md.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import tracemalloc
from pathlib import Path

MIB = 2**20


def child(path: str, window: int) -> None:
    from deepracer_exporter.derive import RoundInput, derive
    from deepracer_exporter.parse import parse_document

    cols = {0: parse_document(Path(path).read_bytes())}
    tracemalloc.start()
    derive([RoundInput(cols, episodes_between_training=1)], rolling_window=window)
    traced = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(json.dumps({"window": window, "rss": rss, "derive": traced}))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--iterations", type=int, default=20000)
    p.add_argument("--windows", default="5,1000")
    p.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        child(args.child[0], int(args.child[1]))
        return 0
    from deepracer_exporter.simulate import TrainingSpec, generate_documents

    body = generate_documents(TrainingSpec(episodes_between_training=1, seed=5),
                              args.iterations)[0]
    with tempfile.NamedTemporaryFile(suffix=".json") as doc:
        doc.write(body)
        doc.flush()
        print(f"{args.iterations} iterations, document {len(body) / MIB:.1f} MiB")
        for window in (int(w) for w in args.windows.split(",")):
            done = subprocess.run([sys.executable, __file__, "--child", doc.name, str(window)],
                                  capture_output=True, text=True, check=True)
            r = json.loads(done.stdout)
            print(f"rolling_window {window:>5}: peak RSS {r['rss'] / MIB:6.1f} MiB, "
                  f"derive allocates at most {r['derive'] / MIB:5.1f} MiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
