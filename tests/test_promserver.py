"""The PromServer helper against a real Prometheus scraping a tiny static HTTP server."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from promserver import PromServer, PromServerError, free_port

REPO = Path(__file__).resolve().parent.parent
RULES = REPO / "prometheus" / "rules" / "deepracer.yml"

EXPOSITION = """\
# HELP deepracer_test_value A value served for the test.
# TYPE deepracer_test_value gauge
deepracer_test_value{model="m1"} 42.5
"""

EXTRA_RULES = """\
groups:
  - name: promserver-test
    rules:
      - alert: TestValueHigh
        expr: deepracer_test_value > 40
        for: 4s
        labels:
          severity: warning
        annotations:
          summary: "value {{ $value }} of {{ $labels.model }}"
      - alert: TestValueHuge
        expr: deepracer_test_value > 100
"""


class StaticExporter:
    """An HTTP server on 127.0.0.1 answering every GET with `body()` as an exposition."""

    def __init__(self) -> None:
        self.body: Callable[[], str] = lambda: EXPOSITION
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                data = owner.body().encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.target = f"127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)


@pytest.fixture
def exporter() -> Iterator[StaticExporter]:
    server = StaticExporter()
    yield server
    server.close()


def alert_states(prom: PromServer, name: str) -> list[str]:
    return [a["state"] for a in prom.alerts() if a["labels"]["alertname"] == name]


def test_target_is_up_and_query_returns_the_served_value(exporter: StaticExporter) -> None:
    with PromServer([exporter.target]) as prom:
        up = prom.wait_for(
            lambda: [t for t in prom.targets() if t["health"] == "up"], message="target up"
        )
        assert [t["labels"]["instance"] for t in up] == [exporter.target]
        assert up[0]["labels"]["job"] == "deepracer-exporter"
        assert prom.query_value('up{job="deepracer-exporter"}') == 1.0

        result = prom.wait_for(lambda: prom.query("deepracer_test_value"))
        assert [(r["metric"]["model"], float(r["value"][1])) for r in result] == [("m1", 42.5)]

        end = time.time()
        prom.wait_for(lambda: len(prom.query_range("deepracer_test_value", end - 3, end)) == 1)
        series = prom.query_range("deepracer_test_value", end - 3, end, "1s")
        assert series[0]["values"]
        assert {float(value) for _, value in series[0]["values"]} == {42.5}

        with pytest.raises(PromServerError, match="parse error"):
            prom.query("deepracer_test_value{")
        process, tmpdir = prom.process, prom.tmpdir
        assert process is not None and tmpdir is not None and tmpdir.is_dir()

    assert process.poll() is not None
    assert not tmpdir.exists()
    prom.stop()  # idempotent


def test_unreachable_target_is_down() -> None:
    with PromServer(f"127.0.0.1:{free_port()}") as prom:
        down = prom.wait_for(
            lambda: [t for t in prom.targets() if t["health"] == "down"], message="target down"
        )
        assert down[0]["lastError"]
        assert prom.query_value('up{job="deepracer-exporter"}') == 0.0


def test_extra_rule_goes_pending_then_firing(exporter: StaticExporter) -> None:
    with PromServer([exporter.target], extra_rules=EXTRA_RULES) as prom:
        prom.wait_for(lambda: alert_states(prom, "TestValueHigh") == ["pending"],
                      message="TestValueHigh pending")
        prom.wait_for(lambda: alert_states(prom, "TestValueHigh") == ["firing"],
                      message="TestValueHigh firing")
        (alert,) = [a for a in prom.alerts() if a["labels"]["alertname"] == "TestValueHigh"]
        assert alert["labels"]["severity"] == "warning"
        assert alert["annotations"]["summary"] == "value 42.5 of m1"
        assert alert_states(prom, "TestValueHuge") == []


def test_invalid_rules_fail_start_and_clean_up(exporter: StaticExporter) -> None:
    prom = PromServer([exporter.target], extra_rules="groups:\n  - name: x\n    rules:\n"
                      "      - alert: Broken\n        expr: rate(\n")
    with pytest.raises(PromServerError, match="did not start"):
        prom.start()
    assert prom.process is None
    assert prom.tmpdir is None


def test_project_rules_load_and_evaluate(exporter: StaticExporter) -> None:
    """The real rule file in a real Prometheus: every rule healthy, recording rules evaluate."""

    def body() -> str:
        now = time.time()
        return (
            "# TYPE deepracer_model_last_update_timestamp_seconds gauge\n"
            f'deepracer_model_last_update_timestamp_seconds{{model="running"}} {now - 30:.3f}\n'
            f'deepracer_model_last_update_timestamp_seconds{{model="done"}} {now - 60:.3f}\n'
            f'deepracer_model_last_update_timestamp_seconds{{model="idle"}} {now - 7200:.3f}\n'
            "# TYPE deepracer_model_finished gauge\n"
            'deepracer_model_finished{model="running"} 0\n'
            'deepracer_model_finished{model="done"} 1\n'
            'deepracer_model_finished{model="idle"} 0\n'
        )

    exporter.body = body
    with PromServer([exporter.target], rule_files=[RULES]) as prom:
        active = prom.wait_for(lambda: prom.query("model:deepracer_training_active"),
                               message="recording rule evaluated")
        assert [r["metric"]["model"] for r in active] == ["running"]
        assert {g["name"] for g in prom.rules()} == {
            "deepracer.recording", "deepracer.training", "deepracer.exporter"
        }

        def health() -> dict[str, str]:
            return {r["name"]: r["health"] for g in prom.rules() for r in g["rules"]}

        prom.wait_for(lambda: "unknown" not in health().values(), message="all rules evaluated")
        errors = [(r["name"], r.get("lastError")) for g in prom.rules() for r in g["rules"]
                  if r["health"] != "ok"]
        assert errors == []
