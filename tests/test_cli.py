"""The command line as docs, compose and scripts use it: real processes, real HTTP."""

from __future__ import annotations

import gzip
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from helpers import parse, pick, require_tool, scrape, value

GOLDEN = Path(__file__).parent / "golden" / "drfc1.prom"
# Families whose values depend on when the test runs, not on the data.
VOLATILE = ("deepracer_model_last_update_timestamp_seconds",
            "deepracer_exporter_last_refresh_success_timestamp_seconds",
            "deepracer_exporter_refresh_duration_seconds",
            "deepracer_exporter_snapshot_timestamp_seconds")


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "deepracer_exporter.cli", *args],
                          capture_output=True, text=True, timeout=120,
                          env={**os.environ, **(env or {})})


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def model_dir(samples: Path, tmp_path: Path) -> Path:
    shutil.copytree(samples / "sample-drfc-1-logs", tmp_path / "logs" / "drfc1")
    return tmp_path / "logs"


def write_config(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.yml"
    path.write_text(text)
    return path


def test_check_config_valid_does_not_print_secrets(tmp_path: Path) -> None:
    path = write_config(tmp_path, "s3:\n  endpoint_url: http://minio:9000\n"
                        "  access_key_id: ${TEST_KEY}\n"
                        "  secret_access_key: ${TEST_SECRET}\n"
                        "models: [{bucket: b, prefix: p}]\n")
    done = run("--config", str(path), "--check-config",
               env={"TEST_KEY": "key-id", "TEST_SECRET": "very-secret-value-123"})
    assert done.returncode == 0, done.stderr
    assert "configuration is valid" in done.stdout
    assert "model p: s3://b rounds p" in done.stdout
    assert "very-secret-value-123" not in done.stdout + done.stderr


def test_invalid_config_exits_2_with_one_message(tmp_path: Path) -> None:
    path = write_config(tmp_path, "listen: nowhere\nmodels: [{bucket: b}]\n")
    for mode in ("--check-config", "--once", None):
        done = run("--config", str(path), *([mode] if mode else []))
        assert done.returncode == 2
        assert f"{path}: invalid configuration" in done.stderr
        assert "listen: expected HOST:PORT" in done.stderr
        assert "models[0]: 'prefix' (or 'rounds') is required" in done.stderr
        assert "Traceback" not in done.stderr


def stable(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return {k: v for k, v in parse(text).items() if not k[0].startswith(VOLATILE)}


def test_once_matches_golden_and_passes_promtool(model_dir: Path, tmp_path: Path) -> None:
    # The copied sample keeps its old mtimes: without `always` it is idle (no history).
    path = write_config(tmp_path, f"models:\n  - name: drfc1\n    directory: {model_dir}\n"
                        "    prefix: drfc1\n    history_max_age: always\n")
    done = run("--config", str(path), "--once")
    assert done.returncode == 0, done.stderr
    text = done.stdout.replace(str(model_dir), "/logs")  # the directory is the bucket label
    got = stable(text)
    if os.environ.get("UPDATE_GOLDEN"):  # regenerate after an intended change; review the diff
        GOLDEN.parent.mkdir(exist_ok=True)
        GOLDEN.write_text(text)
    want = stable(GOLDEN.read_text())
    assert got.keys() == want.keys()
    for key, expected in want.items():
        assert got[key] == pytest.approx(expected, abs=1e-9), key
    promtool = require_tool("promtool", "prometheus")
    lint = subprocess.run([promtool, "check", "metrics"], input=done.stdout, text=True,
                          capture_output=True, timeout=60)
    assert lint.returncode == 0 and not lint.stdout.strip(), lint.stdout + lint.stderr
    golden_lint = subprocess.run([promtool, "check", "metrics"], input=GOLDEN.read_text(),
                                 text=True, capture_output=True, timeout=60)
    assert golden_lint.returncode == 0, golden_lint.stdout


Served = tuple[subprocess.Popen[str], int, Path, list[str]]


@pytest.fixture
def served(model_dir: Path, tmp_path: Path) -> Iterator[Served]:
    """A serving process, and its log lines as they come (read by a thread)."""
    port = free_port()
    path = write_config(tmp_path, f"listen: 127.0.0.1:{port}\nrefresh_interval: 200ms\n"
                        f"models:\n  - name: drfc1\n    directory: {model_dir}\n"
                        "    prefix: drfc1\n")
    proc = subprocess.Popen([sys.executable, "-m", "deepracer_exporter.cli", "--config",
                             str(path)], stderr=subprocess.PIPE, text=True)
    lines: list[str] = []
    assert proc.stderr is not None
    reader = threading.Thread(target=lambda: lines.extend(iter(proc.stderr.readline, "")),
                              daemon=True)
    reader.start()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            scrape(port, "/")
            break
        except OSError:
            assert proc.poll() is None, "".join(lines)
            time.sleep(0.1)
    yield proc, port, path, lines
    if proc.poll() is None:
        proc.kill()
    proc.wait(timeout=10)
    reader.join(timeout=10)


def wait_until(check, timeout: float = 10.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.1)


def test_serve_landing_page_gzip_reload_and_clean_exit(served: Served, model_dir: Path) -> None:
    proc, port, path, lines = served
    assert 'href="/metrics"' in scrape(port, "/")
    got = parse(scrape(port))
    assert value(got, "deepracer_model_iteration", model="drfc1") == 27
    assert pick(got, "process_resident_memory_bytes")
    req = urllib.request.Request(f"http://127.0.0.1:{port}/metrics",
                                 headers={"Accept-Encoding": "gzip"})
    with urllib.request.urlopen(req, timeout=10) as resp:
        assert resp.headers["Content-Encoding"] == "gzip"
        assert parse(gzip.decompress(resp.read()).decode()).keys() == got.keys()
    # An invalid new config is rejected; the running one stays.
    good = path.read_text()
    path.write_text("listen: [not, valid\n")
    proc.send_signal(signal.SIGHUP)
    wait_until(lambda: any("reload rejected, keeping the running configuration" in line
                           for line in lines))
    assert proc.poll() is None
    assert pick(parse(scrape(port)), "deepracer_model_info", model="drfc1")
    # A valid one adds a model without a restart.
    path.write_text(good + f"  - name: again\n    directory: {model_dir}\n    prefix: drfc1\n")
    proc.send_signal(signal.SIGHUP)
    wait_until(lambda: bool(pick(parse(scrape(port)), "deepracer_model_info", model="again")))
    wait_until(lambda: any("reloaded" in line for line in lines))
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=10) == 0


def test_serving_runs_with_the_gc_on(served: Served) -> None:
    """Start-up runs with the cyclic GC off (cli._main_serve); serving must turn it back on, or
    a long-running exporter would never free a reference cycle."""
    _, port, _, _ = served

    def collections() -> float:
        return value(parse(scrape(port)), "python_gc_collections_total", generation="0")

    first = collections()
    wait_until(lambda: collections() > first)


def test_demo_runs_with_no_cloud_account() -> None:
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "deepracer_exporter.cli", "demo",
                             "--listen", f"127.0.0.1:{port}", "--interval", "0.02s",
                             "--refresh-interval", "300ms"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        banner = proc.stdout.readline()
        assert "DeepRacer exporter demo" in banner, proc.stderr.read() if proc.stderr else ""

        def advanced() -> bool:
            got = parse(scrape(port))
            its = pick(got, "deepracer_model_iteration")
            return len(its) == 2 and min(its.values()) >= 2

        wait_until(advanced, timeout=60)
        got = parse(scrape(port))
        assert value(got, "deepracer_model_workers", model="demo-two-workers") == 2
        assert value(got, "deepracer_model_workers", model="demo-single-worker") == 1
        assert all(v == 1 for v in pick(got, "deepracer_exporter_refresh_success").values())
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=15) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate(timeout=10)


def test_invalid_web_config_exits_2(tmp_path: Path) -> None:
    config = write_config(tmp_path, "models: [{bucket: b, prefix: p}]\n")
    web = tmp_path / "web.yml"
    web.write_text("basic_auth_users:\n  alice: plain-text-password-42\n")
    done = run("--config", str(config), "--web.config.file", str(web), "--check-config")
    assert done.returncode == 2
    assert "basic_auth_users.alice" in done.stderr
    assert "plain-text-password-42" not in done.stderr


LOADED = """
import sys
from deepracer_exporter.cli import main
code = main(sys.argv[1:])
print(",".join(sorted(m for m in sys.modules if m.split(".")[0] in
                      ("botocore", "boto3", "numpy", "http") or m.startswith("deepracer_"))))
sys.exit(code)
"""


def loaded_modules(*args: str) -> set[str]:
    done = subprocess.run([sys.executable, "-c", LOADED, *args], capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return set(done.stdout.strip().splitlines()[-1].split(","))


def test_each_command_imports_only_what_it_needs(model_dir: Path, tmp_path: Path) -> None:
    """Start-up (issue 16): --check-config loads neither the pipeline nor the server, and a
    directory-only --once never loads botocore (or boto3), the HTTP server or the web config."""
    path = write_config(tmp_path, f"models:\n  - name: drfc1\n    directory: {model_dir}\n"
                        "    prefix: drfc1\n")
    checked = loaded_modules("--config", str(path), "--check-config")
    assert not {"numpy", "botocore", "deepracer_exporter.server",
                "deepracer_exporter.refresher"} & checked
    once = loaded_modules("--config", str(path), "--once")
    assert "deepracer_exporter.refresher" in once  # it did refresh
    assert not {m for m in once if m.startswith(("botocore", "boto3"))}
    assert not {"deepracer_exporter.server", "deepracer_exporter.webconfig"} & once


def test_unknown_log_level_is_refused_before_anything_starts(model_dir: Path,
                                                             tmp_path: Path) -> None:
    path = write_config(tmp_path, f"models: [{{directory: {model_dir}, prefix: drfc1}}]\n")
    for command in (("--config", str(path), "--check-config"), ("demo",)):
        done = run(*command, "--log-level", "chatty")
        assert done.returncode == 2
        assert "--log-level: invalid choice: 'chatty'" in done.stderr
    assert run("--config", str(path), "--check-config", "--log-level", "DEBUG").returncode == 0
