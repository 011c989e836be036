"""Notifications end to end: the exporter serves a training that finishes and a model it cannot
read; real Prometheus servers (Debian's) evaluate the shipped rules with the shipped external
labels, and Debian's Alertmanager with deploy/alertmanager.yml and deploy/alertmanager.tmpl
delivers to every receiver. Local stand-ins take the place of Discord's, Telegram's and Slack's
APIs, a webhook and an SMTP server; the test reads what a phone would show.

What the test changes in the shipped Alertmanager file, and why:
- the receivers' addresses point at the stand-ins (Telegram's `api_url`, email's `smarthost`
  without TLS), and the secrets' files live in a temporary folder;
- Debian's Alertmanager is 0.25, older than the `webhook_url_file` (Discord), `bot_token_file`
  (Telegram) and `url_file` (webhook) of 0.26: those three secrets are written inline;
- group_wait and group_interval are 1s (30s / 5m shipped), and the two alerts under test fire
  after 1s instead of their `for:` (5m, 10m; the promtool tests pin those).
"""

from __future__ import annotations

import email
import json
import os
import shlex
import shutil
import socket
import socketserver
import subprocess
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml

from helpers import config_from, exporter_for, require_tool

REPO = Path(__file__).resolve().parent.parent
ALERTMANAGER = REPO / "deploy" / "alertmanager.yml"
TEMPLATE = REPO / "deploy" / "alertmanager.tmpl"
PROMETHEUS = REPO / "prometheus" / "prometheus.yml"
RULES = REPO / "prometheus" / "rules" / "deepracer.yml"
RECEIVERS = ("discord", "telegram", "slack", "email", "webhook")
GRAFANA = "https://grafana.example.net"
DOCS = "https://wiki.example.net/deepracer"
UNDER_TEST = ("DeepRacerTrainingFinished", "DeepRacerExporterRefreshFailing")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(check: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = check()
        if got:
            return got
        time.sleep(0.25)
    raise AssertionError(f"timed out waiting for {what}")


# --- stand-ins for the chat APIs and the mail server ------------------------------------------


class Captured:
    def __init__(self) -> None:
        self.requests: list[tuple[str, bytes]] = []
        self.mails: list[Message] = []
        self.lock = threading.Lock()

    def posted(self, prefix: str) -> list[tuple[str, Any]]:
        with self.lock:
            return [(path, json.loads(body)) for path, body in self.requests
                    if path.startswith(prefix)]


def chat_apis(captured: Captured) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            with captured.lock:
                captured.requests.append((self.path, body))
            if self.path.startswith("/telegram/"):  # what telebot reads back
                answer = {"ok": True, "result": {"message_id": 1, "date": 0,
                                                 "chat": {"id": 123456789, "type": "private"}}}
                data = json.dumps(answer).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
            else:
                data = b"ok"
                self.send_response(200)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args: Any) -> None:
            pass

    return ThreadingHTTPServer(("127.0.0.1", 0), Handler)


def smtp_sink(captured: Captured) -> socketserver.ThreadingTCPServer:
    """Just enough SMTP (RFC 5321) for Alertmanager: no STARTTLS, no AUTH offered."""

    class Handler(socketserver.StreamRequestHandler):
        def handle(self) -> None:
            self.wfile.write(b"220 sink ESMTP\r\n")
            while line := self.rfile.readline():
                verb = line.strip().split(b" ", 1)[0].upper()
                if verb == b"EHLO":
                    self.wfile.write(b"250-sink\r\n250 8BITMIME\r\n")
                elif verb == b"DATA":
                    self.wfile.write(b"354 go on\r\n")
                    data = b""
                    while (chunk := self.rfile.readline()) not in (b".\r\n", b""):
                        data += chunk[1:] if chunk.startswith(b"..") else chunk
                    with captured.lock:
                        captured.mails.append(email.message_from_bytes(data))
                    self.wfile.write(b"250 queued\r\n")
                elif verb == b"QUIT":
                    self.wfile.write(b"221 bye\r\n")
                    return
                else:
                    self.wfile.write(b"250 ok\r\n")

    socketserver.ThreadingTCPServer.allow_reuse_address = True
    return socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)


# --- the configs as shipped, pointed at the stand-ins ---------------------------------------


def alertmanager_config(secrets: Path, api: str, smtp: str) -> dict[str, Any]:
    config = yaml.safe_load(ALERTMANAGER.read_text())  # merge keys (<<) resolved
    assert config["templates"] == ["/etc/alertmanager/templates/*.tmpl"]
    config["templates"] = [str(TEMPLATE)]
    config["route"].update(group_wait="1s", group_interval="1s")
    inline = {"webhook_url_file": "webhook_url", "bot_token_file": "bot_token",
              "url_file": "url"}
    for receiver in config["receivers"]:
        for key, entries in receiver.items():
            for entry in entries if key.endswith("_configs") else ():
                for field, value in list(entry.items()):
                    if not field.endswith("_file"):
                        continue
                    assert value.startswith("/etc/alertmanager/secrets/"), (field, value)
                    local = secrets / Path(value).name
                    if field in inline:
                        entry[inline[field]] = local.read_text().strip()
                        del entry[field]
                    else:
                        entry[field] = str(local)
                if key == "telegram_configs":
                    entry["api_url"] = f"{api}/telegram"
                if key == "email_configs":
                    entry.update(smarthost=smtp, require_tls=False)
    return config


def prometheus_config(am_port: int, exporter_port: int) -> dict[str, Any]:
    shipped = yaml.safe_load(PROMETHEUS.read_text())
    rules = RULES.read_text()
    for alert, duration in (("DeepRacerTrainingFinished", "5m"),
                            ("DeepRacerExporterRefreshFailing", "10m")):
        head = f"- alert: {alert}\n"
        start = rules.index(head)
        cut = rules.index(f"for: {duration}\n", start)
        rules = rules[:cut] + "for: 1s\n" + rules[cut + len(f"for: {duration}\n"):]
    return {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s",
                   "external_labels": shipped["global"]["external_labels"]},
        "rules": rules,
        "alerting": {"alertmanagers": [{"static_configs": [
            {"targets": [f"127.0.0.1:{am_port}"]}]}]},
        "scrape_configs": [{"job_name": "deepracer-exporter", "static_configs": [
            {"targets": [f"127.0.0.1:{exporter_port}"]}]}],
    }


class Processes:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.running: list[subprocess.Popen[bytes]] = []

    def start(self, name: str, args: list[str], env: dict[str, str] | None = None) -> None:
        log = (self.root / f"{name}.log").open("wb")
        self.running.append(subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT,
                                             env={**os.environ, **(env or {})}))

    def log(self, name: str) -> str:
        return (self.root / f"{name}.log").read_text(errors="replace")

    def stop(self) -> None:
        for proc in self.running:
            proc.terminate()
        for proc in self.running:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=5) as resp:
        return json.load(resp)


@pytest.fixture(scope="module")
def delivered(samples: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """Every receiver's deliveries, once DeepRacerTrainingFinished and
    DeepRacerExporterRefreshFailing have reached all of them; and the exporter's snapshot."""
    prometheus = require_tool("prometheus", "prometheus")
    alertmanager = require_tool("prometheus-alertmanager", "prometheus-alertmanager")
    root = tmp_path_factory.mktemp("notify")
    logs = root / "logs"
    shutil.copytree(samples / "sample-drfc-1-logs", logs / "done")
    hyper = logs / "done" / "ip" / "hyperparameters.json"
    metrics = logs / "done" / "metrics" / "TrainingMetrics.json"
    full = metrics.read_text()
    records = json.loads(full)["metrics"]
    doc = json.loads(hyper.read_text())
    # The training ends with the sample's last episode; its last five are not written yet.
    doc["term_cond_max_episodes"] = sum(r["phase"] == "training" for r in records)
    hyper.write_text(json.dumps(doc))
    metrics.write_text(json.dumps({"metrics": records[:-5]}))
    (logs / "done" / "model" / "deepracer_checkpoints.json").write_text(json.dumps({
        "best_checkpoint": {"name": "25_Step-12345.ckpt", "avg_eval_metric": 93.5},
        "last_checkpoint": {"name": "27_Step-13000.ckpt", "avg_eval_metric": 88.0}}))
    exporter = exporter_for(config_from(
        "listen: 127.0.0.1:0\nrefresh_interval: 0.5s\nhistory_max_age: always\n"
        f"models:\n  - {{name: done, directory: {logs}, prefix: done}}\n"
        f"  - {{name: broken, directory: {logs}, prefix: not-there}}\n"))
    captured = Captured()
    api, smtp = chat_apis(captured), smtp_sink(captured)
    for server in (api, smtp):
        threading.Thread(target=server.serve_forever, daemon=True).start()
    api_url = f"http://127.0.0.1:{api.server_address[1]}"
    secrets = root / "secrets"
    secrets.mkdir()
    (secrets / "discord_webhook_url").write_text(f"{api_url}/discord/webhook\n")
    (secrets / "telegram_bot_token").write_text("12345:token-from-file\n")
    (secrets / "slack_webhook_url").write_text(f"{api_url}/slack/webhook\n")
    (secrets / "smtp_password").write_text("smtp-password-from-file\n")
    (secrets / "webhook_url").write_text(f"{api_url}/webhook/deepracer\n")
    procs = Processes(root)
    exporter.start()
    try:
        am_port = free_port()
        am_file = root / "alertmanager.yml"
        am_file.write_text(yaml.safe_dump(alertmanager_config(
            secrets, api_url, f"127.0.0.1:{smtp.server_address[1]}")))
        procs.start("alertmanager", [alertmanager, f"--config.file={am_file}",
                                     f"--storage.path={root / 'am-data'}",
                                     f"--web.listen-address=127.0.0.1:{am_port}",
                                     "--cluster.listen-address="])
        prom_ports = {}
        for receiver in RECEIVERS:  # one Prometheus per ALERT_RECEIVER value
            config = prometheus_config(am_port, exporter.port)
            (root / f"rules-{receiver}.yml").write_text(config.pop("rules"))
            config["rule_files"] = [str(root / f"rules-{receiver}.yml")]
            (root / f"prometheus-{receiver}.yml").write_text(yaml.safe_dump(config))
            prom_ports[receiver] = free_port()
            procs.start(f"prometheus-{receiver}", [
                prometheus, f"--config.file={root / f'prometheus-{receiver}.yml'}",
                f"--storage.tsdb.path={root / f'tsdb-{receiver}'}",
                f"--web.listen-address=127.0.0.1:{prom_ports[receiver]}",
                "--enable-feature=expand-external-labels"],
                env={"ALERT_RECEIVER": receiver, "GRAFANA_URL": GRAFANA, "DOCS_URL": DOCS})

        def scraped_training(port: int) -> bool:
            try:
                got = get_json(f"http://127.0.0.1:{port}/api/v1/query?query="
                               "deepracer_model_finished%7Bmodel%3D%22done%22%7D%3D%3D0")
            except OSError:
                return False
            return bool(got["data"]["result"])

        for receiver, port in prom_ports.items():
            wait_for(lambda p=port: scraped_training(p), 60, f"{receiver}'s first scrape")
        metrics.write_text(full)  # the last episodes: the training reaches its end

        def all_delivered() -> bool:
            with captured.lock:
                bodies = [b for _, b in captured.requests] + [m.as_bytes() for m in captured.mails]
            return all(sum(alert in b for b in bodies) >= len(RECEIVERS)
                       for alert in (b"finished training", b"cannot read the metrics"))

        try:
            wait_for(all_delivered, 90, "every receiver's two notifications")
        except AssertionError:
            raise AssertionError(procs.log("alertmanager")[-3000:]) from None
        time.sleep(3)  # anything sent twice would arrive now
        yield captured, exporter.snapshot
    finally:
        procs.stop()
        exporter.stop()
        api.shutdown()
        smtp.shutdown()


def expected_finished_text(snapshot: Any) -> list[str]:
    """The figures the finished notification must carry, from the exporter's own snapshot."""
    model = next(m for m in snapshot.models if m.name == "done")
    d, x = model.derived, model.extras
    best_completion = max(r.completion_ratio for r in x.evaluation_runs
                          if r.completion_ratio is not None)
    return [
        f"reached term_cond_max_episodes at iteration {d.latest_iteration}.",
        f"Best lap: training {d.best_lap['training']:.3f} s, evaluation "
        f"{x.best_evaluation_lap:.3f} s.",
        f"Best evaluation completion: {best_completion * 100:.4g}%.",
        f"Best checkpoint: {x.checkpoints.best.number}.",
        "What to do: Evaluate or submit the best checkpoint, or clone the model for another "
        "round.",
        f"Dashboard: {GRAFANA}/d/deepracer-training?var-model=done",
        f"Runbook: {DOCS}/alerts.md#deepracertrainingfinished",
    ]


FAILING_TEXT = [
    "Every refresh of model broken has failed for",
    "What to do: Run deepracer-exporter check --config FILE with the exporter's config",
    f"Dashboard: {GRAFANA}/d/deepracer-training?var-model=broken",
    f"Runbook: {DOCS}/alerts.md#deepracerexporterrefreshfailing",
]
FINISHED_TITLE = "DeepRacer model done finished training."
FAILING_TITLE = "deepracer-exporter cannot read the metrics of model broken."


def plain_text(mail: Message) -> str:
    (part,) = [p for p in mail.walk() if p.get_content_type() == "text/plain"]
    return str(part.get_payload(decode=True).decode())


def messages(delivered: Any, receiver: str) -> list[tuple[str, str]]:
    """(title, text) of each notification the receiver got, as the phone app shows them."""
    captured, _ = delivered
    if receiver == "discord":
        return [(e["title"], e["description"]) for _, body in captured.posted("/discord/webhook")
                for e in body["embeds"]]
    if receiver == "telegram":
        out = []
        for path, body in captured.posted("/telegram/"):
            assert path == "/telegram/bot12345:token-from-file/sendMessage"
            assert str(body["chat_id"]) == "123456789"
            title, _, text = body["text"].partition("\n\n")
            out.append((title, text))
        return out
    if receiver == "slack":
        return [(a["title"], a["text"]) for _, body in captured.posted("/slack/webhook")
                for a in body["attachments"]]
    if receiver == "email":
        return [(m["Subject"], plain_text(m)) for m in captured.mails]
    out = []
    for _, body in captured.posted("/webhook/deepracer"):
        for a in body["alerts"]:
            n = a["annotations"]
            out.append((n["summary"], f"{n['description']}\nWhat to do: {n['action']}\n"
                                      f"Dashboard: {n['dashboard_url']}\n"
                                      f"Runbook: {n['runbook_url']}"))
    return out


@pytest.mark.parametrize("receiver", RECEIVERS)
def test_the_finished_notification_says_how_the_training_ended(delivered: Any,
                                                               receiver: str) -> None:
    got = [text for title, text in messages(delivered, receiver) if title == FINISHED_TITLE]
    assert len(got) == 1, messages(delivered, receiver)  # once, and never "resolved"
    for line in expected_finished_text(delivered[1]):
        assert line in got[0], (line, got[0])


@pytest.mark.parametrize("receiver", RECEIVERS)
def test_a_model_that_cannot_be_read_notifies_with_what_to_do(delivered: Any,
                                                              receiver: str) -> None:
    got = [text for title, text in messages(delivered, receiver) if title == FAILING_TITLE]
    assert len(got) == 1, messages(delivered, receiver)
    for line in FAILING_TEXT:
        assert line in got[0], (line, got[0])


def test_each_receiver_gets_only_its_own_prometheus_alerts(delivered: Any) -> None:
    """ALERT_RECEIVER picks one receiver: each of the five Prometheus servers (one per value)
    reached exactly one receiver with its two alerts."""
    for receiver in RECEIVERS:
        assert len(messages(delivered, receiver)) == 2, receiver


def test_the_shipped_file_keeps_secrets_out_and_notifies_once() -> None:
    config = yaml.safe_load(ALERTMANAGER.read_text())
    text = ALERTMANAGER.read_text()
    for field in ("webhook_url:", "bot_token:", "api_url:", "auth_password:", " url:"):
        assert field not in text, field  # only the *_file variants
    route = config["route"]
    assert route["receiver"] == "ui-only"  # nothing is sent until ALERT_RECEIVER is set
    hours = int(route["repeat_interval"].removesuffix("h"))
    stalled_window = 6  # DeepRacerTrainingStalled stays active 6h after the last write
    assert hours > stalled_window
    assert "changes(model:deepracer_last_update_timestamp_seconds:nonzero[6h])" in RULES.read_text()
    names = {r["name"]: r for r in config["receivers"]}
    for sub in route["routes"]:
        receiver = sub["receiver"]
        assert sub["matchers"] == [f'notify="{receiver}"']
        (finished,) = sub["routes"]
        assert finished["matchers"] == ['alertname="DeepRacerTrainingFinished"']
        twin = names[finished["receiver"]]
        assert all(c["send_resolved"] is False for k, v in twin.items() if k != "name"
                   for c in v)
    assert {s["receiver"] for s in route["routes"]} == set(RECEIVERS)


def test_the_documented_amtool_silence_works(tmp_path: Path) -> None:
    """docs/alerts.md's "Silencing" commands, run as written against a real Alertmanager."""
    alertmanager = require_tool("prometheus-alertmanager", "prometheus-alertmanager")
    amtool = require_tool("amtool", "prometheus-alertmanager")
    doc = (REPO / "docs" / "alerts.md").read_text()
    block = doc[doc.index("## Silencing"):]
    block = block[block.index("```sh\n") + 6:block.index("```", block.index("```sh\n") + 6)]
    commands = [c.split("#")[0].strip() for c in block.replace("\\\n", " ").splitlines()]
    add, query = commands[0], commands[1]
    port = free_port()
    procs = Processes(tmp_path)
    config = yaml.safe_load(ALERTMANAGER.read_text())
    config["templates"] = [str(TEMPLATE)]
    (tmp_path / "am.yml").write_text(yaml.safe_dump(
        {k: v for k, v in config.items() if k != "receivers"}
        | {"receivers": [{"name": n["name"]} for n in config["receivers"]]}))
    procs.start("alertmanager", [alertmanager, f"--config.file={tmp_path / 'am.yml'}",
                                 f"--storage.path={tmp_path / 'data'}",
                                 f"--web.listen-address=127.0.0.1:{port}",
                                 "--cluster.listen-address="])
    try:
        url = f"http://127.0.0.1:{port}"

        def run(command: str) -> subprocess.CompletedProcess[str]:
            args = shlex.split(command.replace("http://localhost:9093", url))
            assert args[0] == "amtool"
            return subprocess.run([amtool, *args[1:]], capture_output=True, text=True,
                                  timeout=30)

        wait_for(lambda: run(query).returncode == 0, 30, "alertmanager")
        added = run(add)
        assert added.returncode == 0, added.stderr
        listed = run(query)
        assert added.stdout.strip() in listed.stdout
        assert "alertname=\"DeepRacerTrainingStalled\"" in listed.stdout
        assert "model=\"my-model\"" in listed.stdout
    finally:
        procs.stop()
