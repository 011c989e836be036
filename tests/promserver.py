"""Run a real Prometheus server for tests (not a test module).

    with PromServer(["127.0.0.1:9877"], rule_files=[RULES]) as prom:
        prom.wait_for(lambda: prom.query('up{job="deepracer-exporter"} == 1'))

The server listens on 127.0.0.1 at a free port, keeps its config, rules and TSDB in a temporary
directory and is always killed (and the directory removed) by stop() / leaving the context.
Only the standard library is used to talk to its HTTP API.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

import yaml

T = TypeVar("T")

DEFAULT_BINARY = "/usr/bin/prometheus"
DEFAULT_JOB = "deepracer-exporter"


class PromServerError(RuntimeError):
    """Prometheus did not start, or its API answered with an error."""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def find_prometheus(binary: str | None = None) -> str:
    """The prometheus binary: `binary`, $PROMETHEUS_BIN, /usr/bin/prometheus or the PATH."""
    for candidate in (binary, os.environ.get("PROMETHEUS_BIN"), DEFAULT_BINARY):
        if candidate and Path(candidate).is_file():
            return candidate
    found = shutil.which("prometheus")
    if found:
        return found
    raise PromServerError("prometheus binary not found (install it: apt-get install prometheus)")


class PromServer:
    """A Prometheus scraping `targets` ("host:port") as job `job`, with the given rules."""

    def __init__(
        self,
        targets: str | Sequence[str],
        *,
        rule_files: Iterable[str | os.PathLike[str]] = (),
        extra_rules: str | None = None,
        scrape_interval: str = "1s",
        evaluation_interval: str = "1s",
        job: str = DEFAULT_JOB,
        metrics_path: str = "/metrics",
        binary: str | None = None,
        startup_timeout: float = 30.0,
    ) -> None:
        self.targets_list = [targets] if isinstance(targets, str) else list(targets)
        self.rule_files = [str(Path(p).resolve()) for p in rule_files]
        self.extra_rules = extra_rules
        self.scrape_interval = scrape_interval
        self.evaluation_interval = evaluation_interval
        self.job = job
        self.metrics_path = metrics_path
        self.binary = find_prometheus(binary)
        self.startup_timeout = startup_timeout
        self.port = 0
        self.tmpdir: Path | None = None
        self.process: subprocess.Popen[bytes] | None = None

    # -- lifecycle -------------------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        if self.tmpdir is None:
            raise PromServerError("not started")
        return self.tmpdir / "prometheus.log"

    def config(self) -> dict[str, Any]:
        """The generated prometheus.yml (rule paths are absolute)."""
        rule_files = list(self.rule_files)
        if self.extra_rules is not None and self.tmpdir is not None:
            rule_files.append(str(self.tmpdir / "extra_rules.yml"))
        return {
            "global": {
                "scrape_interval": self.scrape_interval,
                "scrape_timeout": self.scrape_interval,
                "evaluation_interval": self.evaluation_interval,
            },
            "rule_files": rule_files,
            "scrape_configs": [
                {
                    "job_name": self.job,
                    "metrics_path": self.metrics_path,
                    "static_configs": [{"targets": self.targets_list}],
                }
            ],
        }

    def start(self) -> PromServer:
        if self.process is not None:
            raise PromServerError("already started")
        self.tmpdir = Path(tempfile.mkdtemp(prefix="promserver-"))
        try:
            if self.extra_rules is not None:
                (self.tmpdir / "extra_rules.yml").write_text(self.extra_rules)
            config_path = self.tmpdir / "prometheus.yml"
            config_path.write_text(yaml.safe_dump(self.config(), sort_keys=False))
            # Another process may grab the free port between probing and binding: retry.
            for _attempt in range(3):
                self.port = free_port()
                if self._launch(config_path):
                    return self
                if "address already in use" not in self.log_tail():
                    break
            raise PromServerError(f"prometheus did not start:\n{self.log_tail()}")
        except BaseException:
            self.stop()
            raise

    def _launch(self, config_path: Path) -> bool:
        """Start the process and wait for /-/ready; False if it exited (e.g. port taken)."""
        assert self.tmpdir is not None
        log = self.log_path.open("ab")
        try:
            self.process = subprocess.Popen(
                [
                    self.binary,
                    f"--config.file={config_path}",
                    f"--storage.tsdb.path={self.tmpdir / 'data'}",
                    f"--web.listen-address=127.0.0.1:{self.port}",
                    "--storage.tsdb.retention.time=1d",
                    "--log.level=info",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        finally:
            log.close()
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                self.process = None
                return False
            try:
                with urllib.request.urlopen(f"{self.url}/-/ready", timeout=2) as resp:
                    if resp.status == 200:
                        return True
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.1)
        raise PromServerError(
            f"prometheus not ready after {self.startup_timeout}s:\n{self.log_tail()}"
        )

    def stop(self) -> None:
        """Kill the server and remove its directory; safe to call more than once."""
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)
        if self.tmpdir is not None:
            shutil.rmtree(self.tmpdir, ignore_errors=True)
            self.tmpdir = None

    def __enter__(self) -> PromServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def log_tail(self, lines: int = 40) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except (OSError, PromServerError):
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    # -- HTTP API --------------------------------------------------------------------------

    def api(self, path: str, params: dict[str, str] | None = None) -> Any:
        """GET /api/v1/<path> and return its `data`; raises PromServerError on an API error."""
        if self.process is None:
            raise PromServerError("not started")
        url = f"{self.url}/api/v1/{path}"
        if params:
            url += "?" + urllib.parse.urlencode(params)
        try:
            with urllib.request.urlopen(url, timeout=10) as resp:
                body = json.load(resp)
        except urllib.error.HTTPError as err:
            # Bad queries answer 400/422 with a JSON error body.
            detail = err.read().decode(errors="replace")
            raise PromServerError(f"GET {url}: HTTP {err.code}: {detail}") from err
        if body.get("status") != "success":
            raise PromServerError(f"GET {url}: {body}")
        return body["data"]

    @staticmethod
    def _result(data: dict[str, Any]) -> list[dict[str, Any]]:
        if data["resultType"] in ("scalar", "string"):
            return [{"metric": {}, "value": data["result"]}]
        return list(data["result"])

    def query(self, expr: str, at: float | None = None) -> list[dict[str, Any]]:
        """Instant query: [{"metric": {...}, "value": [ts, "1"]}, ...]."""
        params = {"query": expr}
        if at is not None:
            params["time"] = f"{at:.3f}"
        return self._result(self.api("query", params))

    def query_value(self, expr: str) -> float | None:
        """The value of a query that returns at most one series, None when empty."""
        result = self.query(expr)
        if not result:
            return None
        if len(result) > 1:
            raise PromServerError(f"{expr} returned {len(result)} series")
        return float(result[0]["value"][1])

    def query_range(
        self, expr: str, start: float, end: float, step: float | str = "1s"
    ) -> list[dict[str, Any]]:
        """Range query: [{"metric": {...}, "values": [[ts, "1"], ...]}, ...]."""
        params = {"query": expr, "start": f"{start:.3f}", "end": f"{end:.3f}", "step": str(step)}
        return self._result(self.api("query_range", params))

    def targets(self) -> list[dict[str, Any]]:
        """Active scrape targets (each with labels, health, lastError, scrapeUrl...)."""
        return list(self.api("targets", {"state": "active"})["activeTargets"])

    def alerts(self) -> list[dict[str, Any]]:
        """Pending and firing alerts: [{"labels", "annotations", "state", "value", ...}]."""
        return list(self.api("alerts")["alerts"])

    def rules(self) -> list[dict[str, Any]]:
        """Loaded rule groups with each rule's health and lastError."""
        return list(self.api("rules")["groups"])

    def wait_for(
        self,
        predicate: Callable[[], T],
        timeout: float = 30.0,
        interval: float = 0.2,
        message: str = "condition",
    ) -> T:
        """Call `predicate` until it returns something truthy and return that.

        Exceptions from the predicate count as "not yet" (the last one is reported on timeout).
        """
        deadline = time.monotonic() + timeout
        last: object = None
        while True:
            try:
                last = predicate()
                if last:
                    return last
            except Exception as exc:  # the server may not have data yet
                last = exc
            if time.monotonic() >= deadline:
                raise TimeoutError(f"{message} not met within {timeout}s (last: {last!r})")
            time.sleep(interval)
