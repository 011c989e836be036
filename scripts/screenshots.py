#!/usr/bin/env python3
"""Retake the page screenshots in docs/images from the demo (README shows page-model.png).

    .venv/bin/python scripts/screenshots.py [--out docs/images] [--interval 0.02s]

Runs the demo in this process (moto's S3 on loopback, the simulated training, the exporter on a
free port), with episodes fast enough that a model reaches its clone round (after the demo's
2000-episode first round) in a few minutes. Beside the demo's exporter, which discovers the clone
as a model of its own, a second exporter watches each demo model with `rounds:` (the first
round, then the clone), as a user who clones does, so its iterations continue into round 2.
Once one is some iterations into round 2 with an unfinished iteration, headless Chromium takes
screenshots of its page and of `/` at 1400 and 390 CSS px. Chromium's windows are at least
500 px wide, so the 390 px view is a saved copy of the page (the served one forbids framing;
it needs nothing else) in a 390 px iframe, cropped to it.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from urllib.parse import quote

from PIL import Image
from prometheus_client import CollectorRegistry

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "exporter"))

from deepracer_exporter.app import Exporter, StoreFactory, make_s3_client  # noqa: E402
from deepracer_exporter.config import parse_config, parse_duration  # noqa: E402
from deepracer_exporter.demo import DEMO_BUCKET, DEMO_MODELS, LOOPBACK, Demo  # noqa: E402
from deepracer_exporter.snapshot import ModelSnapshot  # noqa: E402

FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--hide-scrollbars",
         "--disable-background-networking", "--disable-component-update", "--mute-audio")
ROUND2_ITERATIONS = 12  # iterations into round 2 before the pictures are taken
FRAME = """<!DOCTYPE html><html><body style="margin:0">
<iframe src="{url}" style="border:0;width:{width}px;height:{height}px"></iframe></body></html>
"""


def ready(m: ModelSnapshot) -> bool:
    d = m.derived
    if d is None or d.latest_round < 2:
        return False
    start = dict(d.round_starts).get(2, d.latest_iteration)
    return d.latest_iteration - start >= ROUND2_ITERATIONS and d.unfinished_iteration >= 0


def shoot(chromium: str, url: str, out: Path, width: int, height: int) -> None:
    with tempfile.TemporaryDirectory(prefix="chromium-") as profile:
        target, window = url, width
        if width < 500:  # Chromium's minimum window width: the page in an iframe instead
            with urllib.request.urlopen(url, timeout=30) as response:
                (Path(profile) / "page.html").write_bytes(response.read())
            frame = Path(profile) / "frame.html"
            frame.write_text(FRAME.format(url="page.html", width=width, height=height))
            target, window = frame.as_uri(), 500
        subprocess.run([chromium, *FLAGS, f"--user-data-dir={profile}/p",
                        "--allow-file-access-from-files", f"--screenshot={out}",
                        f"--window-size={window},{height}", target],
                       check=True, capture_output=True, timeout=120)
    if width < 500:
        with Image.open(out) as image:
            image.crop((0, 0, width, height)).save(out)
    print(f"wrote {out} ({width}x{height})")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=ROOT / "docs" / "images")
    p.add_argument("--interval", default="0.02s", help="time between simulated episodes")
    p.add_argument("--timeout", type=float, default=900, help="seconds to wait for round 2")
    args = p.parse_args()
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        print("chromium not found (Debian: apt-get install chromium)", file=sys.stderr)
        return 1
    stop = threading.Event()
    demo = Demo((LOOPBACK, 0), 1.0, parse_duration(args.interval), CollectorRegistry())
    demo.start()
    exporter = None
    try:
        watched = "".join(f"  - name: {name}\n    bucket: {DEMO_BUCKET}\n"
                         f"    rounds: [{name}, {name}-2]\n" for name, _ in DEMO_MODELS)
        config = parse_config(f"listen: {LOOPBACK}:0\nrefresh_interval: 1s\n"
                              f"s3:\n  endpoint_url: {demo.endpoint}\n  region: us-east-1\n"
                              "  access_key_id: ${DEMO_KEY}\n  secret_access_key: ${DEMO_KEY}\n"
                              f"models:\n{watched}", "screenshots", {"DEMO_KEY": "demo"})
        exporter = Exporter(config, StoreFactory(lambda: make_s3_client(config.s3)),
                            registry=CollectorRegistry())
        exporter.start()
        deadline = time.monotonic() + args.timeout
        model = None
        while model is None:
            if time.monotonic() > deadline:
                print("no model reached round 2 in time", file=sys.stderr)
                return 1
            snapshot = exporter.snapshot
            models = snapshot.models if snapshot is not None else ()
            model = next((m for m in models if ready(m)), None)
            if model is None:
                progress = ", ".join(f"{m.name} round {m.derived.latest_round} iteration "
                                     f"{m.derived.latest_iteration}" for m in models
                                     if m.derived is not None)
                print(f"waiting for round 2: {progress or 'no data yet'}", flush=True)
                stop.wait(10)
        base = f"http://{LOOPBACK}:{exporter.port}"
        page = f"{base}/models/{quote(model.name, safe='')}"
        args.out.mkdir(parents=True, exist_ok=True)
        shoot(chromium, page, args.out / "page-model.png", 1400, 2300)
        shoot(chromium, page, args.out / "page-model-390.png", 390, 2000)
        shoot(chromium, base + "/", args.out / "page-index.png", 1400, 420)
        shoot(chromium, base + "/", args.out / "page-index-390.png", 390, 520)
    finally:
        if exporter is not None:
            exporter.stop()
        demo.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
