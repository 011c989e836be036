"""Beyond one Prometheus: Prometheus remote-writes to a real VictoriaMetrics (Debian's
`victoria-metrics`), and the training dashboard's console-chart queries answer from it with the
same values as from Prometheus itself."""

from __future__ import annotations

import json
import math
import re
import shutil
import subprocess
import tempfile
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from conftest import upload_dir
from helpers import config_from, exporter_for, require_tool, s3_yaml
from promserver import PromServer, free_port

REPO = Path(__file__).resolve().parent.parent
TRAINING_DASHBOARD = REPO / "grafana" / "dashboards" / "deepracer-training.json"


class RemoteWritingProm(PromServer):
    """The project's Prometheus test server, remote-writing everything it scrapes."""

    def __init__(self, target: str, remote_write_url: str) -> None:
        super().__init__(target, scrape_interval="1s")
        self.remote_write_url = remote_write_url

    def config(self) -> dict[str, Any]:
        config = super().config()
        config["remote_write"] = [{"url": self.remote_write_url,
                                   "queue_config": {"batch_send_deadline": "1s"}}]
        return config


@pytest.fixture(scope="module")
def victoria() -> Iterator[str]:
    binary = require_tool("victoria-metrics", "victoria-metrics")
    data = Path(tempfile.mkdtemp(prefix="vm-"))
    port = free_port()
    proc = subprocess.Popen(
        [binary, f"-httpListenAddr=127.0.0.1:{port}", f"-storageDataPath={data}",
         "-retentionPeriod=1d", "-search.latencyOffset=0s", "-search.disableCache",
         "-loggerLevel=ERROR"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=2) as resp:
                    if resp.status == 200:
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"victoria-metrics did not start: "
                                   f"{proc.stderr.read().decode() if proc.stderr else ''}")
            time.sleep(0.2)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
        shutil.rmtree(data, ignore_errors=True)


def console_queries(model: str) -> list[str]:
    """The console chart's queries from the committed training dashboard, variables filled in."""
    doc = json.loads(TRAINING_DASHBOARD.read_text())

    def panels(items: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        for p in items:
            yield p
            yield from panels(p.get("panels", []))

    found = [p for p in panels(doc["panels"]) if "console" in p.get("title", "").lower()]
    assert len(found) == 1, [p.get("title") for p in found]
    exprs = [t["expr"] for t in found[0]["targets"]]
    filled = []
    for expr in exprs:
        expr = expr.replace("$model", model).replace("${model}", model)
        expr = re.sub(r'=~?"\$\{?\w+\}?"', '=~".*"', expr)  # other selectors: any value
        assert "$" not in expr, expr
        filled.append(expr)
    return filled


def instant(base: str, expr: str) -> dict[tuple[tuple[str, str], ...], float]:
    params = urllib.parse.urlencode({"query": expr, "time": f"{time.time():.3f}"})
    with urllib.request.urlopen(f"{base}/api/v1/query?{params}", timeout=10) as resp:
        body = json.loads(resp.read())
    assert body["status"] == "success", body
    return {tuple(sorted(r["metric"].items())): float(r["value"][1])
            for r in body["data"]["result"]}


def test_console_chart_answers_from_victoriametrics_as_from_prometheus(
        victoria: str, s3: Any, bucket: str, s3_endpoint: str, samples: Path) -> None:
    upload_dir(s3, bucket, samples / "sample-drfc-1-logs", "single")
    config = config_from(s3_yaml(s3_endpoint) + 'listen: "127.0.0.1:0"\nrefresh_interval: 1s\n'
                         f"models:\n  - name: single\n    bucket: {bucket}\n    prefix: single\n")
    exporter = exporter_for(config)
    exporter.start()
    try:
        with RemoteWritingProm(f"127.0.0.1:{exporter.port}",
                               f"{victoria}/api/v1/write") as prom:
            queries = console_queries("single")
            prom.wait_for(lambda: all(prom.query(q) for q in queries), timeout=60)
            from_prom = {q: instant(prom.url, q) for q in queries}
            # the console's series have every iteration; the unfinished one (issue 27) only it
            assert all(len(v) == 1 if "episodes_per_iteration" in q else len(v) >= 20
                       for q, v in from_prom.items()), from_prom

            def same_in_vm() -> bool:
                # VictoriaMetrics stores values as decimals of 12+ significant digits.
                for q in queries:
                    got = instant(victoria, q)
                    if got.keys() != from_prom[q].keys() or any(
                            not math.isclose(v, from_prom[q][k], rel_tol=1e-9, abs_tol=1e-12)
                            for k, v in got.items()):
                        return False
                return True

            deadline = time.monotonic() + 60
            while not same_in_vm():
                assert time.monotonic() < deadline, {
                    q: (len(instant(victoria, q)), len(from_prom[q])) for q in queries}
                time.sleep(0.5)
    finally:
        exporter.stop()
