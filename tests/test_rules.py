"""Prometheus config and alert rules: promtool checks, promtool unit tests and conventions."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from helpers import require_tool

REPO = Path(__file__).resolve().parent.parent
PROM_DIR = REPO / "prometheus"
CONFIG = PROM_DIR / "prometheus.yml"
RULE_FILES = sorted((PROM_DIR / "rules").glob("*.yml"))
TEST_FILES = sorted((PROM_DIR / "tests").glob("*.yml"))
ALERTS_DOC = REPO / "docs" / "alerts.md"
CONTAINER_RULES = "/etc/prometheus/rules/*.yml"
SEVERITIES = {"critical", "warning", "info"}
DASHBOARD_URL = re.compile(
    r"^http://localhost:3000/d/(deepracer-training\?var-model=\{\{ \$labels\.model \| urlquery \}\}"
    r"|deepracer-overview)$"
)


@pytest.fixture(scope="module")
def promtool() -> str:
    return require_tool("promtool", "prometheus")


def run_promtool(promtool: str, *args: str | Path) -> str:
    proc = subprocess.run([promtool, *map(str, args)], capture_output=True, text=True,
                          timeout=120, check=False)
    output = f"$ promtool {' '.join(map(str, args))}\n{proc.stdout}\n{proc.stderr}"
    assert proc.returncode == 0, output
    return output


def alert_rules() -> list[dict[str, Any]]:
    rules = []
    for path in RULE_FILES:
        for group in yaml.safe_load(path.read_text())["groups"]:
            rules += [rule for rule in group["rules"] if "alert" in rule]
    return rules


def test_files_exist() -> None:
    assert CONFIG.is_file()
    assert RULE_FILES, "no rule files in prometheus/rules"
    assert TEST_FILES, "no promtool tests in prometheus/tests"


def test_config_is_valid(promtool: str, tmp_path: Path) -> None:
    """promtool check config, with the container rules path rewritten to the repository's."""
    text = CONFIG.read_text()
    config = yaml.safe_load(text)
    assert config["rule_files"] == [CONTAINER_RULES]
    local = text.replace(CONTAINER_RULES, str(PROM_DIR / "rules" / "*.yml"))
    assert local != text
    copy = tmp_path / "prometheus.yml"
    copy.write_text(local)
    output = run_promtool(promtool, "check", "config", copy)
    assert f"{len(RULE_FILES)} rule files found" in output, output


def test_config_scrapes_exporter_and_alerts_alertmanager() -> None:
    config = yaml.safe_load(CONFIG.read_text())
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    exporter = jobs["deepracer-exporter"]
    assert exporter["static_configs"] == [{"targets": ["exporter:9877"]}]
    assert exporter.get("scrape_interval", config["global"]["scrape_interval"]) == "15s"
    assert "prometheus" in jobs
    managers = config["alerting"]["alertmanagers"]
    assert [t for m in managers for c in m["static_configs"] for t in c["targets"]] == [
        "alertmanager:9093"
    ]


def test_rules_are_valid(promtool: str) -> None:
    run_promtool(promtool, "check", "rules", *RULE_FILES)


def test_rule_unit_tests_pass(promtool: str) -> None:
    output = run_promtool(promtool, "test", "rules", *TEST_FILES)
    assert output.count("SUCCESS") == len(TEST_FILES), output


def test_every_alert_has_severity_summary_description_and_dashboard() -> None:
    rules = alert_rules()
    assert len(rules) >= 8
    problems = []
    for rule in rules:
        name = rule["alert"]
        if not re.fullmatch(r"DeepRacer(?:[A-Z][a-z]+)+", name):
            problems.append(f"{name}: not a CamelCase name with the DeepRacer prefix")
        if rule.get("labels", {}).get("severity") not in SEVERITIES:
            problems.append(f"{name}: severity label not one of {sorted(SEVERITIES)}")
        annotations = rule.get("annotations", {})
        for key in ("summary", "description"):
            if not str(annotations.get(key, "")).strip():
                problems.append(f"{name}: missing {key} annotation")
        if not DASHBOARD_URL.match(annotations.get("dashboard_url", "")):
            problems.append(f"{name}: dashboard_url not a deepracer-training/overview link")
        if "model" in annotations.get("dashboard_url", "") and "$labels.model" not in (
            annotations.get("description", "")
        ):
            problems.append(f"{name}: per-model alert without the model in its description")
        if "for" not in rule:
            problems.append(f"{name}: no `for:` duration")
    assert problems == []


def test_every_alert_states_its_thresholds_in_a_comment() -> None:
    for path in RULE_FILES:
        lines = path.read_text().splitlines()
        for i, line in enumerate(lines):
            match = re.match(r"\s*- alert: (\S+)", line)
            if not match:
                continue
            comments = []
            j = i - 1
            while j >= 0 and lines[j].strip().startswith("#"):
                comments.append(lines[j])
                j -= 1
            assert any("Tune:" in c for c in comments), f"{match[1]}: no '# Tune:' comment"


def test_every_alert_is_unit_tested_firing_and_not_firing() -> None:
    fired: set[str] = set()
    silent: set[str] = set()
    for path in TEST_FILES:
        for group in yaml.safe_load(path.read_text())["tests"]:
            assert group.get("name"), f"{path.name}: test group without a name"
            for case in group.get("alert_rule_test", []):
                (fired if case.get("exp_alerts") else silent).add(case["alertname"])
    names = {rule["alert"] for rule in alert_rules()}
    assert names - fired == set(), "alerts never tested firing"
    assert names - silent == set(), "alerts never tested not firing"


def test_every_alert_is_documented() -> None:
    doc = ALERTS_DOC.read_text()
    missing = [r["alert"] for r in alert_rules() if f"## {r['alert']}" not in doc]
    assert missing == []
