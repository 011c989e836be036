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
GRAFANA = "http://localhost:3000"  # without the grafana_url external label
# Link bases: Prometheus' external labels grafana_url and docs_url (prometheus.yml), else these.
GRAFANA_BASE = ("{{ with $externalLabels.grafana_url }}{{ . }}{{ else }}"
                f"{GRAFANA}{{{{ end }}}}")
DASHBOARD_URL = re.compile(
    rf"^{re.escape(GRAFANA_BASE)}/d/(?P<uid>[\w-]+)"
    r"(?:\?var-(?P<var>\w+)=\{\{ \$labels\.(?P<label>\w+) \| urlquery \}\})?$"
)
RUNBOOK_URL = re.compile(
    r"^\{\{ with \$externalLabels\.docs_url \}\}\{\{ \. \}\}/alerts\.md#(?P<anchor>\w+)"
    rf"\{{\{{ else \}}\}}{re.escape(GRAFANA_BASE)}/d/deepracer-runbook\?viewPanel=(?P<panel>\d+)"
    r"\{\{ end \}\}$"
)
DASHBOARDS = REPO / "grafana" / "dashboards"
# Files whose Prometheus scrape examples users copy, besides the compose stack's prometheus.yml.
DOCS_WITH_SCRAPE_EXAMPLES = [REPO / "docs" / "security.md", REPO / "docs" / "bench.md"]
EXPORTER_PORT = ":9877"


@pytest.fixture(scope="module")
def promtool() -> str:
    return require_tool("promtool", "prometheus")


def run_promtool(promtool: str, *args: str | Path) -> str:
    proc = subprocess.run([promtool, *map(str, args)], capture_output=True, text=True,
                          timeout=120, check=False)
    output = f"$ promtool {' '.join(map(str, args))}\n{proc.stdout}\n{proc.stderr}"
    assert proc.returncode == 0, output
    return output


def all_rules() -> list[dict[str, Any]]:
    return [rule for path in RULE_FILES for group in yaml.safe_load(path.read_text())["groups"]
            for rule in group["rules"]]


def alert_rules() -> list[dict[str, Any]]:
    return [rule for rule in all_rules() if "alert" in rule]


def github_anchor(heading: str) -> str:
    """The id GitHub gives a Markdown heading: lower case, punctuation dropped, spaces to -."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


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
        for key in ("summary", "description", "action"):
            if not str(annotations.get(key, "")).strip():
                problems.append(f"{name}: missing {key} annotation")
        if "model" in annotations.get("dashboard_url", "") and "$labels.model" not in (
            annotations.get("description", "")
        ):
            problems.append(f"{name}: per-model alert without the model in its description")
        if "for" not in rule:
            problems.append(f"{name}: no `for:` duration")
    assert problems == []


def test_every_rule_states_its_thresholds_in_a_comment() -> None:
    """Recording rules included (issue 19): a reader looks for "Tune:" above every rule."""
    seen = 0
    for path in RULE_FILES:
        lines = path.read_text().splitlines()
        for i, line in enumerate(lines):
            match = re.match(r"\s*- (?:alert|record): (\S+)", line)
            if not match:
                continue
            comments = []
            j = i - 1
            while j >= 0 and lines[j].strip().startswith("#"):
                comments.append(lines[j])
                j -= 1
            assert any("Tune:" in c for c in comments), f"{match[1]}: no '# Tune:' comment"
            seen += 1
    assert seen == len(all_rules())


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


# --- where alerts send the user ------------------------------------------------------------------


def _dashboard_variables() -> dict[str, set[str]]:
    import json

    boards = [json.loads(p.read_text()) for p in DASHBOARDS.glob("*.json")]
    return {b["uid"]: {v["name"] for v in b["templating"]["list"]} for b in boards}


def test_every_alert_links_its_runbook_and_dashboard() -> None:
    """runbook_url: the alert's own section of docs/alerts.md; dashboard_url: a provisioned
    dashboard, with the alert's model selected when the alert is about one model."""
    import json

    text = ALERTS_DOC.read_text()
    anchors = {github_anchor(h) for h in re.findall(r"^#+ (.+)$", text, re.M)}
    runbook = json.loads((DASHBOARDS / "deepracer-runbook.json").read_text())
    panels = {p["id"]: p for p in runbook["panels"]}
    variables = _dashboard_variables()
    for rule in alert_rules():
        name, annotations = rule["alert"], rule["annotations"]
        runbook_link = RUNBOOK_URL.match(annotations["runbook_url"])
        assert runbook_link, (name, annotations["runbook_url"])
        anchor = runbook_link["anchor"]
        assert anchor == github_anchor(name) and anchor in anchors, (name, anchor)
        # Without docs_url: the runbook dashboard's panel of this alert, holding its doc section.
        panel = panels[int(runbook_link["panel"])]
        section = text.split(f"\n## {name}\n", 1)[1].split("\n## ", 1)[0].strip()
        assert panel["title"] == name
        assert panel["options"]["content"].split("\n")[0] == section.split("\n")[0], name
        link = DASHBOARD_URL.match(annotations["dashboard_url"])
        assert link, (name, annotations["dashboard_url"])
        assert link["uid"] in variables, (name, link["uid"])
        per_model = "model" in re.sub(r"\{[^}]*\}", "", rule["expr"]) or "$labels.model" in (
            annotations["summary"] + annotations["description"])
        if per_model:
            assert link["uid"] == "deepracer-training", name
            assert (link["var"], link["label"]) == ("model", "model"), name
            assert "model" in variables[link["uid"]]
        else:
            assert link["var"] is None, name


# --- how the exporter's targets are selected ----------------------------------------------------


def exporter_jobs() -> set[tuple[str, str]]:
    """(job name, file) of every exporter scrape job in prometheus.yml and the docs' examples."""
    jobs = set()
    configs = [(CONFIG.name, yaml.safe_load(CONFIG.read_text()))]
    for doc in DOCS_WITH_SCRAPE_EXAMPLES:
        for block in re.findall(r"```yaml\n(.*?)```", doc.read_text(), re.S):
            if "scrape_configs:" in block:
                configs.append((doc.name, yaml.safe_load(block)))
    for where, config in configs:
        for job in config["scrape_configs"]:
            targets = [t for c in job.get("static_configs", []) for t in c["targets"]]
            if any(t.endswith(EXPORTER_PORT) for t in targets):
                jobs.add((job["job_name"], where))
    return jobs


def down_annotations(job: str) -> dict[str, str]:
    return {
        "summary": "deepracer-exporter is not being scraped.",
        "description": f"Prometheus cannot scrape the exporter at exporter:9877 (job {job}) since "
        "5m. No DeepRacer alert can fire while it is down.",
        "dashboard_url": f"{GRAFANA}/d/deepracer-overview",
        "runbook_url": f"{GRAFANA}/d/deepracer-runbook?viewPanel=10",
        "action": "Start the exporter (docker compose up -d exporter) and look at its log "
                  "(docker compose logs exporter).",
    }


def test_no_rule_names_a_scrape_job() -> None:
    for rule in all_rules():
        assert not re.search(r"\bjob\s*=", rule["expr"]), rule


def test_exporter_down_fires_for_every_documented_job_name(promtool: str,
                                                           tmp_path: Path) -> None:
    """Whatever job name the docs or the compose stack give the exporter, a target of it that
    goes down pages, and one that stays up does not."""
    found = exporter_jobs()
    assert {"security.md", "bench.md", CONFIG.name} <= {where for _, where in found}, found
    tests = []
    for job in sorted({job for job, _ in found}):
        target = f'job="{job}",instance="exporter:9877"'
        tests.append({
            "name": f"exporter down under job {job}",
            "interval": "1m",
            "input_series": [
                {"series": f"up{{{target}}}", "values": "1x4 0x20"},
                {"series": f'deepracer_exporter_build_info{{{target},version="1"}}',
                 "values": "1x4 _x20"},
                {"series": f'up{{job="{job}",instance="other:9877"}}', "values": "1x24"},
                {"series": f'deepracer_exporter_build_info{{job="{job}",instance="other:9877",'
                           'version="1"}', "values": "1x24"},
            ],
            "alert_rule_test": [{"eval_time": "10m", "alertname": "DeepRacerExporterDown",
                                 "exp_alerts": [{"exp_labels": {
                                     "severity": "critical", "job": job,
                                     "instance": "exporter:9877"},
                                     "exp_annotations": down_annotations(job)}]}],
        })
    path = tmp_path / "jobs.yml"
    path.write_text(yaml.safe_dump({"rule_files": [str(p) for p in RULE_FILES],
                                    "evaluation_interval": "1m", "tests": tests}))
    proc = subprocess.run([promtool, "test", "rules", str(path)], capture_output=True,
                          text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_rules_use_only_the_default_per_iteration_series() -> None:
    """Per-iteration stats outside the exporter's default set do not exist unless configured."""
    from deepracer_exporter.config import DEFAULT_ITERATION_STATS

    default = {(p, f, s) for p, f, stats in DEFAULT_ITERATION_STATS for s in stats}
    families = {"deepracer_iteration_rolling_completion_ratio": "rolling_completion",
                "deepracer_iteration_completion_ratio": "completion",
                "deepracer_iteration_reward": "reward",
                "deepracer_iteration_rolling_reward": "rolling_reward"}
    used = set()
    for rule in all_rules():
        for metric, matchers in re.findall(r"\b(deepracer_iteration_\w+)\{([^}]*)\}", rule["expr"]):
            labels = dict(re.findall(r'(\w+)="([^"]*)"', matchers))
            used.add((labels["phase"], families[metric], labels["stat"]))
    assert used == {("training", "rolling_completion", "mean")}
    assert used <= default
