"""Static checks of the Grafana provisioning and dashboards (no Grafana needed).

Catches what Grafana would only show as an empty or broken panel: typos in metric names, PromQL
syntax errors, panels that do not use the datasource variable, per-iteration charts plotted over
wall time, dashboards that drifted from grafana/generate_dashboards.py or from the thresholds of
the alert rules; and lints what grafana/dashboard-linter would (its rules as tests).
"""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

import dashboards as dash
from helpers import require_tool

DS_UID = "deepracer-prometheus"
DS_VARIABLE_REF = {"type": "prometheus", "uid": "${datasource}"}
RULES = dash.REPO_ROOT / "prometheus" / "rules" / "deepracer.yml"

# Grafana 11 core panel plugins this project may use.
CORE_PANEL_TYPES = {
    "alertlist",
    "barchart",
    "bargauge",
    "gauge",
    "histogram",
    "piechart",
    "row",
    "stat",
    "state-timeline",
    "status-history",
    "table",
    "text",
    "timeseries",
    "trend",
    "xychart",
}
NO_QUERY_PANELS = {"row", "text", "alertlist"}
# Prometheus-provided series a dashboard may query besides the documented families.
PROMETHEUS_BUILTINS = {"ALERTS", "ALERTS_FOR_STATE", "up"}

BOARDS = dash.load_dashboards()
QUERIES = list(dash.iter_queries(BOARDS))


def _panels() -> list[tuple[str, dict[str, Any]]]:
    return [(uid, p) for uid, board in BOARDS.items() for p in dash.iter_panels(board)]


def _load_generator() -> Any:
    path = dash.GRAFANA_DIR / "generate_dashboards.py"
    spec = importlib.util.spec_from_file_location("generate_dashboards", path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def _provisioned_datasources() -> list[dict[str, Any]]:
    doc = yaml.safe_load((dash.PROVISIONING_DIR / "datasources" / "prometheus.yaml").read_text())
    return list(doc["datasources"])


# --- provisioning --------------------------------------------------------------------------------


def test_datasource_provisioning() -> None:
    sources = _provisioned_datasources()
    assert len(sources) == 1
    ds = sources[0]
    assert ds["uid"] == DS_UID
    assert ds["type"] == "prometheus"
    assert ds["url"] == "http://prometheus:9090"
    assert ds["isDefault"] is True
    assert ds["access"] == "proxy"


def test_dashboard_provider_loads_the_mounted_directory() -> None:
    doc = yaml.safe_load((dash.PROVISIONING_DIR / "dashboards" / "deepracer.yaml").read_text())
    assert doc["apiVersion"] == 1
    (provider,) = doc["providers"]
    assert provider["type"] == "file"
    assert provider["folder"] == "DeepRacer"
    assert provider["options"]["path"] == "/var/lib/grafana/dashboards"


def test_compose_mounts_what_provisioning_expects() -> None:
    compose_file = dash.REPO_ROOT / "docker-compose.yml"
    if not compose_file.exists():
        pytest.skip("no docker-compose.yml")
    grafana = yaml.safe_load(compose_file.read_text())["services"]["grafana"]
    volumes = [v.rsplit(":ro", 1)[0] for v in grafana["volumes"]]
    assert "./grafana/dashboards:/var/lib/grafana/dashboards" in volumes
    assert "./grafana/provisioning:/etc/grafana/provisioning" in volumes
    major = int(re.search(r":(\d+)\.", grafana["image"]).group(1))  # type: ignore[union-attr]
    assert major >= 11, "the dashboards use the Grafana 11 XY chart"


# --- dashboards as a whole -----------------------------------------------------------------------


def test_committed_json_is_generator_output() -> None:
    rendered = _load_generator().render()
    on_disk = {p.name: p.read_text() for p in dash.DASHBOARD_DIR.glob("*.json")}
    assert set(rendered) == set(on_disk), "run python grafana/generate_dashboards.py"
    for name, text in rendered.items():
        assert on_disk[name] == text, f"{name} is stale: run python grafana/generate_dashboards.py"


def test_uids_fixed_and_unique() -> None:
    files = sorted(dash.DASHBOARD_DIR.glob("*.json"))
    assert len(files) == len(BOARDS), "two dashboards share a uid"
    assert set(BOARDS) == {dash.TRAINING_UID, dash.OVERVIEW_UID, dash.RUNBOOK_UID}
    titles = [b["title"] for b in BOARDS.values()]
    assert len(set(titles)) == len(titles)
    for board in BOARDS.values():
        assert board["schemaVersion"] >= 39
        assert "id" not in board or board["id"] is None, "provisioned dashboards carry no id"


def test_panel_ids_unique_and_grid_valid() -> None:
    for uid, board in BOARDS.items():
        ids = [p["id"] for p in dash.iter_panels(board)]
        assert len(ids) == len(set(ids)), f"{uid}: duplicate panel ids"
        for p in dash.iter_panels(board):
            pos = p["gridPos"]
            assert pos["x"] >= 0 and pos["w"] > 0 and pos["x"] + pos["w"] <= 24, (uid, p["title"])
            assert pos["h"] > 0 and pos["y"] >= 0


def test_panel_types_are_core_grafana() -> None:
    for uid, panel in _panels():
        assert panel["type"] in CORE_PANEL_TYPES, (uid, panel["title"], panel["type"])


def _variables(board: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {v["name"]: v for v in board["templating"]["list"]}


def test_datasource_variable_defaults_to_the_provisioned_datasource() -> None:
    """Lint template-datasource: any Prometheus of the Grafana the JSON is imported into, the
    provisioned one by default, so the compose stack works without a choice."""
    for uid, board in BOARDS.items():
        ds = _variables(board)["datasource"]
        assert ds["type"] == "datasource" and ds["query"] == "prometheus", uid
        assert ds["current"]["value"] == DS_UID == _provisioned_datasources()[0]["uid"], uid
        assert board["templating"]["list"][0] is ds, "the first variable: the others use it"


def test_every_panel_target_and_variable_queries_the_datasource_variable() -> None:
    """Lint panel-datasource: no panel names a datasource uid another Grafana does not have."""
    for uid, panel in _panels():
        where = (uid, panel["title"])
        if panel["type"] in NO_QUERY_PANELS:
            assert "targets" not in panel or not panel["targets"], where
        else:
            assert panel.get("datasource") == DS_VARIABLE_REF, where
        for t in panel.get("targets", []):
            assert t.get("datasource") == DS_VARIABLE_REF, (*where, t["refId"])
        if panel["type"] == "alertlist":
            # It names its rules source by datasource *name*, which differs between Grafanas:
            # none, so it lists DeepRacer alerts of any source.
            assert panel["options"]["datasource"] == "", where
    for uid, board in BOARDS.items():
        for var in board["templating"]["list"]:
            if var["type"] == "query":
                assert var.get("datasource") == DS_VARIABLE_REF, (uid, var["name"])
        for ann in board["annotations"]["list"]:
            assert ann.get("builtIn") == 1 or ann.get("datasource") == DS_VARIABLE_REF, (uid, ann)


def test_template_variables_have_queries() -> None:
    for uid, board in BOARDS.items():
        for name, query in dash.variable_queries(board):
            assert query.strip(), (uid, name)
    assert list(_variables(BOARDS[dash.TRAINING_UID])) == ["datasource", "job", "model"]
    assert list(_variables(BOARDS[dash.OVERVIEW_UID])) == ["datasource", "job"]
    assert dict(dash.variable_queries(BOARDS[dash.TRAINING_UID]))["model"] == (
        'label_values(deepracer_model_info{job=~"$job"}, model)'
    )
    for board in BOARDS.values():
        job = _variables(board)["job"]
        # Every scrape job of an exporter (shards, several exporters), all of them by default.
        assert dash.variable_queries(board)[0] == (
            "job", "label_values(deepracer_exporter_build_info, job)")
        assert job["multi"] and job["includeAll"] and job["current"]["value"] == "$__all"
        assert job["allValue"] == dash.ALL_JOBS


def test_query_panels_have_targets() -> None:
    for uid, panel in _panels():
        if panel["type"] in NO_QUERY_PANELS:
            continue
        targets = panel.get("targets", [])
        assert targets, (uid, panel["title"])
        refs = [t["refId"] for t in targets]
        assert len(refs) == len(set(refs)), (uid, panel["title"])
        for t in targets:
            assert t.get("expr", "").strip(), (uid, panel["title"], t["refId"])


def test_overrides_refer_to_existing_queries() -> None:
    """A byFrameRefID / "Value #X" override for a missing refId silently styles nothing."""
    for uid, panel in _panels():
        refs = {t["refId"] for t in panel.get("targets", [])}
        for o in panel.get("fieldConfig", {}).get("overrides", []):
            matcher = o["matcher"]
            if matcher["id"] == "byFrameRefID":
                assert matcher["options"] in refs, (uid, panel["title"], matcher)
            value_ref = re.fullmatch(r"Value #(\w+)", str(matcher.get("options")))
            if value_ref:
                assert value_ref.group(1) in refs, (uid, panel["title"], matcher)


# --- PromQL ---------------------------------------------------------------------------------


def test_metric_parser_finds_metrics_not_labels_or_functions() -> None:
    expr = (
        'sum by (iteration, round) (rate(deepracr_typo{model="$model", x=~"a|b"}[5m])) '
        "/ on (model) group_left (phase) deepracer_model_iteration offset 5m > bool 0"
    )
    assert dash.metric_names(expr) == {"deepracr_typo", "deepracer_model_iteration"}
    assert dash.metric_names("time() - max(foo:bar > 0)") == {"foo:bar"}
    assert dash.metric_names("label_values(deepracer_model_info, model)") == {
        "deepracer_model_info"
    }
    assert "deepracr_typo" not in dash.documented_metrics()


def test_every_metric_is_documented() -> None:
    documented = dash.documented_metrics()
    assert len(documented) >= 30, "could not parse the metric tables in README.md"
    for q in QUERIES:
        names = dash.metric_names(q.expr)
        assert names, (q.dashboard_uid, q.panel_title, q.expr)
        unknown = names - documented - PROMETHEUS_BUILTINS
        assert not unknown, (q.dashboard_uid, q.panel_title, q.ref_id, unknown)
    for uid, board in BOARDS.items():
        for name, query in dash.variable_queries(board):
            assert dash.metric_names(query) <= documented, (uid, name, query)


def test_training_queries_select_the_chosen_model() -> None:
    """Every selector of the one-model dashboard filters on $model (else models get mixed)."""
    for q in QUERIES:
        if q.dashboard_uid != dash.TRAINING_UID:
            continue
        selectors = re.findall(r"\b(deepracer_\w+)(\{[^}]*\})?", q.expr)
        assert selectors, q.expr
        for metric, matchers in selectors:
            assert 'model="$model"' in matchers, (q.panel_title, metric, q.expr)


def test_substitution() -> None:
    expr = 'rate(x{model="$model", m="${model}"}[$__rate_interval]) + y[$__range] + z[$__interval]'
    assert dash.substitute(expr, 'a"b', rate_interval="2m", range_="3h", interval="30s") == (
        'rate(x{model="a\\"b", m="a\\"b"}[2m]) + y[3h] + z[30s]'
    )
    with pytest.raises(ValueError, match="unknown template variable"):
        dash.substitute('x{a="$nope"}', "m")
    queries = dash.queries_for_model("my-model")
    assert len(queries) == len(QUERIES)
    for q in queries:
        assert "$" not in q.expr, q.expr
    assert any('model="my-model"' in q.expr for q in queries)


def _promtool_check(exprs: list[str], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    rules = {
        "groups": [
            {
                "name": "dashboard-queries",
                "rules": [
                    {"record": f"dashboard:query_{i}", "expr": e} for i, e in enumerate(exprs)
                ],
            }
        ]
    }
    path = tmp_path / "rules.yml"
    path.write_text(yaml.safe_dump(rules, width=1000))
    promtool = require_tool("promtool", "prometheus")
    return subprocess.run(
        [promtool, "check", "rules", str(path)], capture_output=True, text=True, timeout=60
    )


def test_promtool_accepts_every_expression(tmp_path: Path) -> None:
    exprs = [q.expr for q in dash.queries_for_model("my-model")]
    result = _promtool_check(exprs, tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"{len(exprs)} rules found" in result.stdout
    # ...and the harness does notice a syntax error.
    broken = _promtool_check(["sum by (model (deepracer_model_iteration)"], tmp_path)
    assert broken.returncode != 0


# --- per-iteration charts ----------------------------------------------------------------------


def _per_iteration_panels() -> list[tuple[str, dict[str, Any]]]:
    """Charts over iterations: every XY, trend and bar chart but those of the latest iteration
    alone (a bar per action)."""
    return [(uid, p) for uid, p in _panels() if p["type"] in {"xychart", "trend", "barchart"}
            and not p["title"].endswith("(latest iteration)")]


def _transformation(panel: dict[str, Any], tid: str) -> dict[str, Any]:
    for t in panel.get("transformations", []):
        if t["id"] == tid:
            return dict(t["options"])
    raise AssertionError(f"{panel['title']}: no {tid} transformation")


def test_per_iteration_charts_use_the_iteration_as_x_axis() -> None:
    panels = _per_iteration_panels()
    assert len(panels) >= 8
    for _uid, panel in panels:
        title = panel["title"]
        for t in panel["targets"]:
            assert t["instant"] is True and t["format"] == "table", (title, t["refId"])
            # `iteration` must survive aggregation to become the x value.
            grouping = re.findall(r"\bby\s*\(([^)]*)\)", t["expr"])
            assert grouping and all("iteration" in g for g in grouping), (title, t["expr"])
        conversions = _transformation(panel, "convertFieldType")["conversions"]
        assert {"targetField": "iteration", "destinationType": "number"} in conversions, title
        assert _transformation(panel, "sortBy")["sort"][0]["field"] == "iteration", title
        if panel["type"] == "xychart":
            options = panel["options"]
            assert options["mapping"] in {"auto", "manual"}
            for series in options["series"]:
                assert series["x"]["matcher"] == {"id": "byName", "options": "iteration"}, title
        elif panel["type"] == "barchart":
            assert panel["options"]["xField"] == "iteration", title


def _family_labels() -> dict[str, frozenset[str]]:
    """Labels of every exported family, from the exporter's metric catalogue (per-iteration
    families of the metrics files add model, phase, round and iteration to their own)."""
    from deepracer_exporter import catalogue

    out = {}
    for f in catalogue.FAMILIES:
        extra = {"model", "phase", "round", "iteration"}
        labels = set(f.labels) | (extra if isinstance(f, catalogue.IterationFamily) else set())
        out[f.name] = frozenset(labels)
    return out


# `by (labels) (` then whatever wraps the first metric it aggregates (increase(, ...).
_AGGREGATION = re.compile(r"\bby\s*\(([^)]*)\)\s*\(([^{]*?)\b(deepracer_\w+)")


def test_per_iteration_series_keep_the_round_for_tooltips() -> None:
    """`round` kept where the family has it (metrics files); simtrace and push families have
    none, so they group by iteration alone."""
    labels = _family_labels()
    seen = set()
    for _uid, panel in _per_iteration_panels():
        if panel["type"] != "xychart":
            continue
        for t in panel["targets"]:
            found = _AGGREGATION.findall(t["expr"])
            assert found, t["expr"]
            for grouping, _wrap, metric in found:
                wanted = "round, iteration" if "round" in labels[metric] else "iteration"
                assert grouping.strip() == wanted, (panel["title"], t["expr"])
                seen.add(wanted)
    assert seen == {"round, iteration", "iteration"}


def test_grouping_labels_exist() -> None:
    """Every `by (...)` label of every query is a label of the family it aggregates (or a
    target label), so a family without it (simtrace has no `round`) cannot split a chart."""
    labels = _family_labels()
    checked = 0
    for q in QUERIES:
        for grouping, _wrap, metric in _AGGREGATION.findall(q.expr):
            names = {x.strip() for x in grouping.split(",")}
            assert names <= labels[metric] | {"job", "instance"}, (q.panel_title, q.expr)
            checked += 1
    # ...and the pattern saw every aggregation.
    assert checked == sum(len(re.findall(r"\bby\s*\(", q.expr)) for q in QUERIES) > 50


def test_console_chart() -> None:
    panel = dash.console_chart_panel(BOARDS)
    assert "console" in panel["title"].lower()
    assert panel["type"] == "xychart"
    refs = {t["refId"]: t["expr"] for t in panel["targets"]}
    # the console's three series, and the unfinished iteration's reward apart (issue 27)
    assert set(refs) == set(dash.CONSOLE_CHART_SERIES) | {"D"}
    assert refs["D"].startswith(refs["A"] + " and ")
    props = {
        o["matcher"]["options"]: {p["id"]: p["value"] for p in o["properties"]}
        for o in panel["fieldConfig"]["overrides"]
        if o["matcher"]["id"] == "byFrameRefID"
    }
    for ref, column in dash.CONSOLE_CHART_SERIES.items():
        phase = "training" if column.startswith("train_") else "evaluation"
        metric = "reward" if column.endswith("_reward") else "completion_ratio"
        assert (
            f'deepracer_iteration_{metric}{{model="$model", phase="{phase}", stat="mean", '
            'job=~"$job"}' in refs[ref]
        )
        name = props[ref]["displayName"].lower()
        assert phase in name and metric.split("_")[0] in name
        if metric == "reward":
            assert props[ref]["custom.axisPlacement"] == "left"
        else:
            # Percent on the right axis, like the console (and getSummary's completion).
            assert refs[ref].startswith("100 * ")
            assert props[ref]["custom.axisPlacement"] == "right"
            assert props[ref]["unit"] == "percent"
            assert (props[ref]["min"], props[ref]["max"]) == (0, 100)  # fixed, like the console
    queries = dash.console_chart_queries("m1")
    assert set(queries) == {"train_reward", "train_completion", "eval_completion"}
    assert all('model="m1"' in e for e in queries.values())


def test_training_dashboard_has_the_promised_panels() -> None:
    board = BOARDS[dash.TRAINING_UID]
    exprs = " ".join(q.expr for q in QUERIES if q.dashboard_uid == dash.TRAINING_UID)
    for metric in (
        "deepracer_iteration_rolling_reward",
        "deepracer_iteration_rolling_completion_ratio",
        "deepracer_iteration_lap_seconds",
        "deepracer_best_lap_seconds",
        "deepracer_iteration_status_episodes",
        "deepracer_iteration_completed_ratio",
        "deepracer_model_last_update_timestamp_seconds",
        "deepracer_exporter_refresh_success",
        "deepracer_exporter_refresh_errors_total",
    ):
        assert metric in exprs, metric
    for st in ("mean", "median", "max"):
        assert f'stat="{st}"' in exprs
    types = {p["type"] for p in dash.iter_panels(board)}
    assert {"xychart", "stat", "table", "alertlist", "barchart"} <= types
    alert = next(p for p in dash.iter_panels(board) if p["type"] == "alertlist")
    assert alert["options"]["alertInstanceLabelFilter"] == '{model="$model"}'
    assert alert["options"]["stateFilter"]["firing"] is True


def test_overview_table_links_to_the_training_dashboard() -> None:
    board = BOARDS[dash.OVERVIEW_UID]
    table = next(p for p in dash.iter_panels(board) if p["type"] == "table")
    for t in table["targets"]:
        assert t["instant"] and t["format"] == "table"
        assert "model" in _grouping(t["expr"]), t["expr"]
    assert _join_key(table) == "model"
    links = [
        link
        for o in table["fieldConfig"]["overrides"]
        if o["matcher"] == {"id": "byName", "options": "model"}
        for prop in o["properties"]
        if prop["id"] == "links"
        for link in prop["value"]
    ]
    assert links
    assert links[0]["url"].startswith(f"/d/{dash.TRAINING_UID}")
    # url-encoded: a model name may hold &, # or spaces
    assert "var-model=${__data.fields.model:percentencode}&" in links[0]["url"]
    # The chosen datasource and jobs go along (the training dashboard has the same variables).
    assert "${datasource:queryparam}" in links[0]["url"]
    assert "${job:queryparam}" in links[0]["url"]
    exprs = " ".join(t["expr"] for t in table["targets"])
    for metric in (
        "deepracer_model_info",
        "deepracer_model_iteration",
        "deepracer_model_best_lap_seconds",
        "deepracer_model_rolling_completion_ratio",
        "deepracer_model_rolling_reward",
        "deepracer_model_last_update_timestamp_seconds",
        "deepracer_exporter_refresh_success",
    ):
        assert metric in exprs, metric
    # Action space and best evaluated lap (issue 8) are columns of the same table.
    assert "deepracer_model_metadata_info" in exprs
    assert 'deepracer_model_action_space{bound="speed_min", job=~"$job"}' in exprs
    assert 'deepracer_model_action_space{bound="speed_max", job=~"$job"}' in exprs
    assert "deepracer_model_best_evaluation_lap_seconds" in exprs
    columns = _join_columns(table)
    assert {"action_space_type", "action_count"} <= set(columns)
    assert columns.index("action_space_type") < columns.index("Value #C"), "near the laps"
    names = _display_names(table)
    assert names["action_space_type"] == "Action space" and names["action_count"] == "Actions"
    best_ref = next(t["refId"] for t in table["targets"] if "best_evaluation" in t["expr"])
    assert names[f"Value #{best_ref}"] == "Best evaluated lap"


# --- joined tables -------------------------------------------------------------------------------


def _grouping(expr: str) -> set[str]:
    """Labels of the outermost `by (...)` of an aggregation, empty if none."""
    found = re.search(r"\bby\s*\(([^)]*)\)", expr)
    return {x.strip() for x in found.group(1).split(",")} if found else set()


def _first_aggregated(expr: str) -> str:
    """What the outermost `by (...)` aggregates (the whole expression if none)."""
    found = re.search(r"\bby\s*\([^)]*\)\s*\(", expr)
    if not found:
        return expr
    depth, start = 1, found.end()
    for i in range(start, len(expr)):
        depth += {"(": 1, ")": -1}.get(expr[i], 0)
        if depth == 0:
            return expr[start:i]
    return expr[start:]


def _join_key(panel: dict[str, Any]) -> str:
    return str(_transformation(panel, "joinByField")["byField"])


def _join_columns(panel: dict[str, Any]) -> list[str]:
    """Column order (original field names) of the organize step after the join."""
    steps = [t["id"] for t in panel["transformations"]]
    last = panel["transformations"][len(steps) - 1 - steps[::-1].index("organize")]
    order = last["options"]["indexByName"]
    return sorted(order, key=order.__getitem__)


def _display_names(panel: dict[str, Any]) -> dict[str, str]:
    """Field name -> title, from the renaming organize step and displayName overrides."""
    names: dict[str, str] = {}
    for t in panel["transformations"]:
        if t["id"] == "organize":
            names.update(t["options"]["renameByName"])
    for o in panel["fieldConfig"]["overrides"]:
        for prop in o["properties"]:
            if prop["id"] == "displayName" and o["matcher"]["id"] == "byName":
                names[o["matcher"]["options"]] = prop["value"]
    return names


def _joined_tables() -> list[tuple[str, dict[str, Any]]]:
    return [
        (uid, p)
        for uid, p in _panels()
        if p["type"] == "table"
        and any(t["id"] == "joinByField" for t in p.get("transformations", []))
    ]


def test_joined_tables_have_one_row_per_key() -> None:
    """Queries merged into one table row per key: every frame carries the key label, Time is
    dropped from each frame before the join, and every query has a column."""
    tables = _joined_tables()
    assert {p["title"] for uid, p in tables if uid == dash.TRAINING_UID} >= {
        "Evaluation runs", "Model"}
    assert any(uid == dash.OVERVIEW_UID for uid, _ in tables)
    for uid, panel in tables:
        where = (uid, panel["title"])
        key = _join_key(panel)
        ids = [t["id"] for t in panel["transformations"]]
        join_at = ids.index("joinByField")
        assert "organize" in ids[:join_at], where
        before = panel["transformations"][ids.index("organize")]["options"]["excludeByName"]
        assert before == {"Time": True}, where
        assert _transformation(panel, "joinByField")["mode"] == "outer", where
        columns = _join_columns(panel)
        excluded = panel["transformations"][-1]["options"]["excludeByName"]
        labels: set[str] = set()
        for t in panel["targets"]:
            assert t["instant"] is True and t["format"] == "table", (*where, t["refId"])
            grouping = _grouping(t["expr"])
            assert key in grouping, (*where, t["expr"])
            labels |= grouping
            value = f"Value #{t['refId']}"
            # A number column, or an info metric whose constant value is dropped.
            assert (value in columns) != bool(excluded.get(value)), (*where, value)
        for column in columns:
            assert column.startswith("Value #") or column in labels, (*where, column)


def test_evaluation_runs_table() -> None:
    panel = next(p for p in dash.iter_panels(BOARDS[dash.TRAINING_UID])
                 if p["type"] == "table" and p["title"] == "Evaluation runs")
    assert _join_key(panel) == "run"
    by_ref = {t["refId"]: t["expr"] for t in panel["targets"]}
    for expr in by_ref.values():
        assert _grouping(expr) == {"run"}, expr
    names = _display_names(panel)
    titles = {names[f"Value #{ref}"]: expr for ref, expr in by_ref.items()}
    assert names["run"] == "Run"
    expected = {
        "Started": "deepracer_evaluation_timestamp_seconds",
        "Trials": "deepracer_evaluation_trials",
        "Completed laps": "deepracer_evaluation_completed_laps",
        "Completion": "deepracer_evaluation_completion_ratio",
        "Mean lap": 'deepracer_evaluation_lap_seconds{model="$model", stat="mean",',
        "Best lap": 'deepracer_evaluation_lap_seconds{model="$model", stat="min",',
    }
    for reason, title in (
        ("off_track", "Off track"),
        ("crashed", "Crashed"),
        ("reversed", "Reversed"),
        ("immobilized", "Immobilized"),
    ):
        expected[title] = f'deepracer_evaluation_resets{{model="$model", reason="{reason}",'
    # The run's step timing beside its lap times (issue 13).
    expected["Mean step"] = 'deepracer_evaluation_step_seconds{model="$model", stat="mean",'
    expected["p95 step"] = 'deepracer_evaluation_step_seconds{model="$model", stat="p95",'
    expected["Real-time factor"] = 'deepracer_evaluation_real_time_factor{model="$model",'
    assert set(titles) == set(expected)
    for title, fragment in expected.items():
        assert fragment in titles[title], (title, titles[title])
    # Grafana's dateTime units take milliseconds.
    assert titles["Started"].startswith("1000 * ")
    units = {
        o["matcher"]["options"]: p["value"]
        for o in panel["fieldConfig"]["overrides"]
        for p in o["properties"]
        if p["id"] == "unit"
    }
    assert units["Started"].startswith("dateTime")
    assert units["Completion"] == "percentunit"
    assert units["Mean lap"] == units["Best lap"] == "s"
    assert units["Mean step"] == units["p95 step"] == "s"
    no_value = _override_values(panel, "noValue")
    assert no_value == {"Mean step": "No simtrace", "p95 step": "No simtrace",
                        "Real-time factor": "No simtrace wall_clock"}
    assert _join_columns(panel)[0] == "run"
    assert panel["options"]["sortBy"] == [{"displayName": "Run", "desc": True}]


def _override_values(panel: dict[str, Any], prop_id: str) -> dict[str, Any]:
    """Matcher option (field name or refId) -> value of one override property."""
    return {
        o["matcher"]["options"]: p["value"]
        for o in panel["fieldConfig"]["overrides"]
        for p in o["properties"]
        if p["id"] == prop_id
    }


def _training_panel(title: str) -> dict[str, Any]:
    return next(p for p in dash.iter_panels(BOARDS[dash.TRAINING_UID]) if p["title"] == title)


def _stat_titles(panel: dict[str, Any]) -> dict[str, str]:
    """refId -> displayName of a stat panel with one override per query."""
    return {
        o["matcher"]["options"]: p["value"]
        for o in panel["fieldConfig"]["overrides"]
        if o["matcher"]["id"] == "byFrameRefID"
        for p in o["properties"]
        if p["id"] == "displayName"
    }


def test_model_panels() -> None:
    best = _training_panel("Best evaluated lap")
    assert best["type"] == "stat"
    assert "deepracer_model_best_evaluation_lap_seconds" in best["targets"][0]["expr"]
    assert best["fieldConfig"]["defaults"]["unit"] == "s"

    model = _training_panel("Model")
    assert model["type"] == "table"
    columns = _join_columns(model)
    assert columns == [
        "action_space_type",
        "action_count",
        "sensors",
        "neural_network",
        "training_algorithm",
        "version",
        "exploration_type",
        "loss_type",
    ]
    exprs = " ".join(t["expr"] for t in model["targets"])
    assert "deepracer_model_metadata_info" in exprs
    assert "deepracer_model_hyperparameters_info" in exprs

    for title, kind in (("Speed range", "speed"), ("Steering range", "steering_angle")):
        panel = _training_panel(title)
        by_ref = {t["refId"]: t["expr"] for t in panel["targets"]}
        titles = _stat_titles(panel)
        for bound in ("min", "max"):
            ref = next(r for r, name in titles.items() if name == bound)
            assert f'bound="{kind}_{bound}"' in by_ref[ref], by_ref[ref]
    assert _training_panel("Speed range")["fieldConfig"]["defaults"]["unit"] == "velocityms"
    assert _training_panel("Steering range")["fieldConfig"]["defaults"]["unit"] == "degree"

    hyper = _training_panel("Hyperparameters")
    titles = _stat_titles(hyper)
    shown = {
        re.search(r'name="(\w+)"', t["expr"]).group(1): titles[t["refId"]]  # type: ignore[union-attr]
        for t in hyper["targets"]
    }
    assert shown == {
        "batch_size": "Batch size",
        "lr": "Learning rate",
        "discount_factor": "Discount",
        "num_episodes_between_training": "Episodes between training",
        "num_epochs": "Epochs",
        "beta_entropy": "Entropy",
    }

    checkpoints = _training_panel("Checkpoints")
    exprs = " ".join(t["expr"] for t in checkpoints["targets"])
    assert "max by (kind) (deepracer_model_checkpoint{" in exprs
    assert "deepracer_model_checkpoint_timestamp_seconds" in exprs


def _rows(board: dict[str, Any]) -> list[tuple[str, list[dict[str, Any]]]]:
    """(row title, its panels) in dashboard order."""
    rows: list[tuple[str, list[dict[str, Any]]]] = []
    for panel in board["panels"]:
        if panel["type"] == "row":
            rows.append((panel["title"], list(panel.get("panels", []))))
        elif rows:
            rows[-1][1].append(panel)
    return rows


def _exprs_by_name(panel: dict[str, Any]) -> dict[str, str]:
    """Series display name -> expression of a chart with one override per query."""
    by_ref = {t["refId"]: t["expr"] for t in panel["targets"]}
    return {name: by_ref[ref] for ref, name in _stat_titles(panel).items()}


def _trend_series(panel: dict[str, Any]) -> dict[str, str]:
    """Series name -> expression of a trend chart (its frames joined, then renamed)."""
    assert panel["type"] == "trend", panel["title"]
    names = _display_names(panel)
    return {names[f"Value #{t['refId']}"]: t["expr"] for t in panel["targets"]}


def _lines(panel: dict[str, Any]) -> list[dict[str, Any]]:
    """The threshold lines of a chart (the base step draws nothing)."""
    defaults = panel["fieldConfig"]["defaults"]
    assert defaults["custom"]["thresholdsStyle"]["mode"] in ("line", "dashed"), panel["title"]
    base, *lines = defaults["thresholds"]["steps"]
    assert base["value"] is None and base["color"] == "transparent", panel["title"]
    return list(lines)


def test_simulator_row() -> None:
    """Issue 13: step time against the 15 Hz target, real-time factor, training vs policy time,
    latest-iteration stats; "No simtrace" instead of an empty panel."""
    rows = dict(_rows(BOARDS[dash.TRAINING_UID]))
    panels = {p["title"]: p for p in rows["Simulator (simtrace)"]}
    assert list(panels) == ["Step time per iteration", "Step time (latest iteration)",
                            "Real-time factor (latest iteration)",
                            "Real-time factor per iteration",
                            "Training and policy time per iteration"]
    chart = panels["Step time per iteration"]
    step = _trend_series(chart)
    assert 'deepracer_iteration_step_seconds{model="$model", stat="mean",' in step["mean"]
    assert 'deepracer_iteration_step_seconds{model="$model", stat="p95",' in step["p95"]
    # The target: 15 steps per simulated second, a green threshold line.
    assert {"value": 1 / 15, "color": "green"} in _lines(chart)
    assert chart["fieldConfig"]["defaults"]["unit"] == "s"

    latest = panels["Step time (latest iteration)"]
    exprs = " ".join(t["expr"] for t in latest["targets"])
    for metric in ("deepracer_model_step_p95_seconds", "deepracer_model_step_mean_seconds",
                   "deepracer_model_simtrace_iteration"):
        assert metric in exprs, metric
    rtf = panels["Real-time factor (latest iteration)"]
    assert "deepracer_model_real_time_factor{" in rtf["targets"][0]["expr"]
    rtf_chart = panels["Real-time factor per iteration"]
    assert "deepracer_iteration_real_time_factor{" in " ".join(_trend_series(rtf_chart).values())
    assert {"value": 1, "color": "green"} in _lines(rtf_chart)


    timing = panels["Training and policy time per iteration"]
    series = _exprs_by_name(timing)
    training, policy = series["training (simulation)"], series["policy update + evaluation"]
    assert "deepracer_iteration_training_seconds{" in training
    assert "deepracer_iteration_policy_seconds{" in policy
    assert series["training / policy"] == f"{training} / {policy}"
    placement = _override_values(timing, "custom.axisPlacement")
    ratio_ref = next(r for r, n in _stat_titles(timing).items() if n == "training / policy")
    assert placement[ratio_ref] == "right"
    assert set(placement.values()) == {"left", "right"}

    for title, panel in panels.items():
        wall_clock = "Real-time" in title or "policy time" in title
        expected = "No simtrace wall_clock" if wall_clock else "No simtrace"
        assert panel["fieldConfig"]["defaults"]["noValue"] == expected, title
        assert expected in panel["description"], title


def test_simulator_stats_are_the_exported_ones() -> None:
    """deepracer_iteration_step_seconds exports mean and p95 by default (max only with
    iteration_stats: full); evaluation runs export mean, p95 and max (DECISIONS.md)."""
    exported = {"deepracer_iteration_step_seconds": {"mean", "p95"},
                "deepracer_evaluation_step_seconds": {"mean", "p95", "max"}}
    used: dict[str, set[str]] = {name: set() for name in exported}
    for q in QUERIES:
        for metric, matchers in _SELECTOR.findall(q.expr):
            if metric in exported:
                stat = dict(_EQUALS.findall(matchers))["stat"]
                assert stat in exported[metric], (q.panel_title, q.expr)
                used[metric].add(stat)
    assert used == {"deepracer_iteration_step_seconds": {"mean", "p95"},
                    "deepracer_evaluation_step_seconds": {"mean", "p95"}}


def test_policy_row() -> None:
    """Issues 17, 25: entropy per iteration beside the reward, right after the console chart;
    the latest epoch; a note on where the figures come from; "No policy data" instead of an
    empty panel."""
    rows = _rows(BOARDS[dash.TRAINING_UID])
    titles = [title for title, _ in rows]
    at = titles.index("Policy training (trainer)")
    assert titles[at - 1] == "Training progress", "beside the console chart"
    panels = {p["title"]: p for p in rows[at][1]}
    assert list(panels) == ["Policy entropy per iteration", "Policy (latest epoch)",
                            "Policy metrics: where they come from"]

    chart = panels["Policy entropy per iteration"]
    assert chart["type"] == "xychart"
    series = _exprs_by_name(chart)
    entropy = series["entropy"]
    assert entropy == ('max by (iteration) (deepracer_iteration_policy_entropy{model="$model", '
                       'job=~"$job"})')
    # The reward of the same iterations: none at all without a push, so the panel shows its note.
    reward = series["Average reward (training)"]
    console = next(t["expr"] for t in dash.console_chart_panel(BOARDS)["targets"]
                   if dash.CONSOLE_CHART_SERIES[t["refId"]] == "train_reward")
    assert reward == f"{console} and on (iteration) {entropy}"
    placement = _override_values(chart, "custom.axisPlacement")
    reward_ref = next(r for r, n in _stat_titles(chart).items() if n.startswith("Average reward"))
    assert placement[reward_ref] == "right"
    units = _override_values(chart, "unit")
    assert units[reward_ref] != chart["fieldConfig"]["defaults"]["unit"], "its own y scale"

    latest = panels["Policy (latest epoch)"]
    exprs = " ".join(t["expr"] for t in latest["targets"])
    for metric in ("deepracer_policy_entropy", "deepracer_policy_kl_divergence",
                   "deepracer_policy_surrogate_loss",
                   "deepracer_policy_last_epoch_timestamp_seconds"):
        assert metric in exprs, metric
    for panel in (chart, latest):
        assert panel["fieldConfig"]["defaults"]["noValue"] == "No policy data"
        assert "No policy data" in panel["description"]

    note = panels["Policy metrics: where they come from"]
    assert note["type"] == "text" and note["options"]["mode"] == "markdown"
    content = note["options"]["content"]
    for needle in ("DR_TELEGRAF_HOST", "DR_TELEGRAF_PORT=8092", 'listen: "0.0.0.0:8092"',
                   "system.env", "cloudwatch:", "simapp 6", "No policy data"):
        assert needle in content, needle
    # The note's YAML is the exporter's docker section, as its configuration reads it.
    block = re.search(r"```yaml\n(.*?)```", content, re.S)
    assert block and yaml.safe_load(block[1]) == {"docker": {"socket": "/var/run/docker.sock"}}
    from deepracer_exporter.config import parse_config

    config = parse_config(block[1] + "models:\n  - {name: m, directory: /tmp, prefix: m}\n",
                          "note")
    assert config.docker is not None and config.docker.socket == "/var/run/docker.sock"


def test_requires_flags() -> None:
    """Queries on files a model may lack are flagged, so integration tests can skip them."""
    flagged: dict[str, set[str]] = {}
    for q in QUERIES:
        names = dash.metric_names(q.expr)
        for flag, families in dash.FILE_REQUIREMENTS.items():
            assert (flag in q.requires) == bool(names & families), (q.panel_title, q.expr)
            if flag in q.requires:
                flagged.setdefault(flag, set()).add(q.dashboard_uid)
    assert set(flagged) == set(dash.FILE_REQUIREMENTS)
    assert (
        flagged["evaluation_runs"]
        == flagged["metadata"]
        == {
            dash.TRAINING_UID,
            dash.OVERVIEW_UID,
        }
    )
    # Every family of a flag is documented, so a rename in the exporter breaks this test.
    documented = dash.documented_metrics()
    for families in dash.FILE_REQUIREMENTS.values():
        assert families <= documented
    # Per-run lap times exist only for runs with a completed lap.
    lap = next(
        q
        for q in dash.queries_for_model("m")
        if 'stat="mean"' in q.expr and "deepracer_evaluation_lap_seconds" in q.expr
    )
    assert {"evaluation_runs", "evaluation_lap"} <= lap.requires
    trials = next(q for q in QUERIES if "deepracer_evaluation_trials" in q.expr)
    assert trials.requires == {"evaluation_runs"}


# --- against real exporter output ----------------------------------------------------------------

GOLDEN = Path(__file__).resolve().parent / "golden" / "drfc1.prom"
_SAMPLE = re.compile(r"^([a-zA-Z_:][\w:]*)(?:\{(.*)\})?\s+\S+$")
_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')
_SELECTOR = re.compile(r"\b(deepracer_\w+)\s*\{([^}]*)\}")
_EQUALS = re.compile(r'(\w+)\s*=\s*"([^"]*)"')


def _golden_series() -> dict[str, list[dict[str, str]]]:
    series: dict[str, list[dict[str, str]]] = {}
    for line in GOLDEN.read_text().splitlines():
        match = _SAMPLE.match(line)
        if match and not line.startswith("#"):
            labels = dict(_LABEL.findall(match.group(2) or ""))
            series.setdefault(match.group(1), []).append(labels)
    return series


def test_label_matchers_select_real_series() -> None:
    """Every `label="value"` matcher selects a series of the real exporter output (the golden
    exposition of model drfc1), so a misspelt label value (name="learning_rate",
    bound="speed_maximum") cannot leave a panel empty. Families absent from it are skipped."""
    series = _golden_series()
    assert "deepracer_evaluation_resets" in series, "golden file lacks the evaluation runs"
    checked = 0
    for q in dash.queries_for_model("drfc1"):
        for metric, matchers in _SELECTOR.findall(q.expr):
            if metric not in series:
                continue
            wanted = dict(_EQUALS.findall(matchers))
            assert any(all(s.get(k) == v for k, v in wanted.items()) for s in series[metric]), (
                q.panel_title,
                q.ref_id,
                metric,
                wanted,
            )
            checked += 1
        for label in _grouping(q.expr) - {"model", "job", "instance"}:
            for metric in dash.metric_names(_first_aggregated(q.expr)) & set(series):
                assert any(label in s for s in series[metric]), (q.panel_title, metric, label)
    # Every training dashboard query has a `model="$model"` selector; only checkpoints lack data.
    training = [q for q in QUERIES if q.dashboard_uid == dash.TRAINING_UID]
    assert checked >= len([q for q in training if "checkpoint" not in q.expr])


# --- lint: grafana/dashboard-linter's rules as tests ---------------------------------------------

# Grafana unit ids this project may use (a misspelt unit shows raw numbers).
VALID_UNITS = {
    "none", "short", "percent", "percentunit", "s", "ms", "m", "h", "d", "dtdurations",
    "dateTimeAsIso", "dateTimeFromNow", "bytes", "Bps", "reqps", "ops", "velocityms", "degree",
    "lengthm",
}  # fmt: skip
QUANTITY_PANELS = {"stat", "timeseries", "table", "xychart", "barchart"}
COUNTER = re.compile(r"[a-zA-Z_:][\w:]*_total\b")


def _targets() -> list[tuple[str, str, str]]:
    return [(q.dashboard_uid, q.panel_title, q.expr) for q in QUERIES]


def test_lint_every_panel_has_a_title_and_a_description() -> None:
    for uid, panel in _panels():
        assert panel.get("title", "").strip(), (uid, panel.get("id"))
        if panel["type"] != "row":
            assert len(panel.get("description", "")) > 20, (uid, panel["title"])
    titles = [(uid, p["title"]) for uid, p in _panels() if p["type"] != "row"]
    assert len(titles) == len(set(titles)), "two panels of a dashboard share a title"


def test_lint_quantities_have_units() -> None:
    for uid, panel in _panels():
        if panel["type"] not in QUANTITY_PANELS:
            continue
        where = (uid, panel["title"])
        assert panel["fieldConfig"]["defaults"].get("unit") in VALID_UNITS, where
        for o in panel["fieldConfig"]["overrides"]:
            for prop in o["properties"]:
                if prop["id"] == "unit":
                    assert prop["value"] in VALID_UNITS, (*where, o["matcher"])


def _strip_strings(expr: str) -> str:
    return re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)


# A counter whose value is the training's own count, read from its files (it does not restart
# with the exporter): "Training episodes" shows that total (issue 27), not an increase.
COUNTER_TOTALS = {("Training episodes", 'sum(deepracer_model_episodes_total{model="$model", '
                   'phase="training", job=~"$job"})')}


def test_lint_counters_only_under_rate_or_increase() -> None:
    """target-counter-agg: a counter's raw value (episodes so far, errors so far) depends on
    when the exporter started; only its rate or increase means something on a chart."""
    counters = 0
    for uid, title, expr in _targets():
        if (title, expr) in COUNTER_TOTALS:
            continue
        text = _strip_strings(expr)
        for match in COUNTER.finditer(text):
            before, after = text[: match.start()], text[match.end() :]
            assert re.search(r"\b(?:rate|irate|increase)\(\s*$", before), (uid, title, expr)
            assert re.match(r'\s*(?:\{[^}]*\})?\s*\[', after), (uid, title, expr)
            counters += 1
    assert counters >= 4
    assert not re.search(r"\b(?:rate|increase)\(\s*$", "sum(deepracer_model_episodes_total)")


def test_lint_rates_use_rate_interval() -> None:
    rates = 0
    for uid, title, expr in _targets():
        for window in re.findall(r"\b(?:rate|irate)\([^\[]*\[([^\]]+)\]", expr):
            assert window == "$__rate_interval", (uid, title, expr)
            rates += 1
    assert rates >= 2


def test_lint_every_selector_filters_on_the_job_variable() -> None:
    """With several exporters (shards, jobs) feeding one Grafana, `job` picks among them."""
    for uid, title, expr in _targets():
        for name in dash.metric_names(expr):
            for match in re.finditer(rf"\b{re.escape(name)}\b(\{{[^}}]*\}})?", expr):
                assert match.group(1) and 'job=~"$job"' in match.group(1), (uid, title, expr)


# --- one place for the thresholds: the rules file -------------------------------------------------


def _rule_numbers(text: str) -> dict[str, float]:
    """The shared thresholds, read here independently of the generator."""
    exprs = {r["alert"]: r["expr"] for g in yaml.safe_load(text)["groups"] for r in g["rules"]
             if "alert" in r}  # fmt: skip
    stalled = exprs["DeepRacerTrainingStalled"]
    window = re.search(r"changes\([^)]*\[(\d+)h\]\)", stalled)
    stall = re.search(r"^time\(\) - \(\w+ > 0\) > (\d+)$", stalled, re.M)
    plateau = re.search(r"\} >= (\d+)$", exprs["DeepRacerProgressPlateau"], re.M)
    slow = exprs["DeepRacerSimulatorSlow"]
    p95 = re.search(r"^\s*deepracer_model_step_p95_seconds > ([\d.]+)$", slow, re.M)
    mean = re.search(r"^\s*or deepracer_model_step_mean_seconds > ([\d.]+)$", slow, re.M)
    rtf = re.search(r"^\s*or deepracer_model_real_time_factor < ([\d.]+)$", slow, re.M)
    assert window and stall and plateau, "the rule text changed: update this test"
    assert p95 and mean and rtf, "the rule text changed: update this test"
    return {"stall": int(stall[1]), "window": 3600 * int(window[1]), "plateau": int(plateau[1]),
            "step p95": float(p95[1]), "step mean": float(mean[1]), "rtf": float(rtf[1])}


def _red_step(steps: list[dict[str, Any]]) -> float:
    return next(s["value"] for s in steps if s["color"] == "red")


def _after_red(steps: list[dict[str, Any]]) -> float:
    """Where a red-below threshold ends (red is the base colour)."""
    assert steps[0]["color"] == "red" and steps[0]["value"] is None, steps
    return float(steps[1]["value"])


def _level(panel: dict[str, Any], color: str) -> float:
    """The value of the chart's threshold line of that colour."""
    (value,) = [float(line["value"]) for line in _lines(panel) if line["color"] == color]
    return value


def _simulator_thresholds(boards: dict[str, Any]) -> dict[str, float]:
    """Where the training dashboard shows DeepRacerSimulatorSlow's numbers."""
    training = {p["title"]: p for p in dash.iter_panels(boards[dash.TRAINING_UID])}
    chart = training["Step time per iteration"]
    rtf_chart = training["Real-time factor per iteration"]
    stat = training["Step time (latest iteration)"]
    stat_steps = {_stat_titles(stat)[ref]: v["steps"]
                  for ref, v in _override_values(stat, "thresholds").items()}
    runs = training["Evaluation runs"]
    run_steps = {name: v["steps"] for name, v in _override_values(runs, "thresholds").items()}
    return {
        "step chart p95": _level(chart, "red"),
        "step chart mean": _level(chart, "dark-red"),
        "step stat p95": _red_step(stat_steps["p95"]),
        "step stat mean": _red_step(stat_steps["mean"]),
        "evaluation p95": _red_step(run_steps["p95 step"]),
        "evaluation mean": _red_step(run_steps["Mean step"]),
        "rtf chart": _level(rtf_chart, "red"),
        "rtf stat": _after_red(training["Real-time factor (latest iteration)"]["fieldConfig"]
                               ["defaults"]["thresholds"]["steps"]),
        "evaluation rtf": _after_red(run_steps["Real-time factor"]),
    }  # fmt: skip


def _shown_thresholds(boards: dict[str, Any]) -> dict[str, Any]:
    """Where the dashboards show the alert thresholds."""
    training = {p["title"]: p for p in dash.iter_panels(boards[dash.TRAINING_UID])}
    models = next(p for p in dash.iter_panels(boards[dash.OVERVIEW_UID]) if p["title"] == "Models")
    names = _display_names(models)
    by_title = {names.get(f"Value #{t['refId']}"): t["expr"] for t in models["targets"]}
    stalled = re.search(r"> bool (\d+)\) \* \(.* <= bool (\d+)\)", by_title["Stalled"])
    assert stalled, by_title["Stalled"]
    return {
        "since last update": _red_step(
            training["Since last update"]["fieldConfig"]["defaults"]["thresholds"]["steps"]),
        "overview stalled": int(stalled[1]),
        "overview stalled window": int(stalled[2]),
        "plateau": _red_step(training["Iterations without improvement"]["fieldConfig"]
                             ["defaults"]["thresholds"]["steps"]),
        **_simulator_thresholds(boards),
    }  # fmt: skip


def _agrees(shown: dict[str, Any], rules: dict[str, float]) -> None:
    assert shown == {
        "since last update": rules["stall"],
        "overview stalled": rules["stall"],
        "overview stalled window": rules["window"],
        "plateau": rules["plateau"],
        "step chart p95": rules["step p95"],
        "step stat p95": rules["step p95"],
        "evaluation p95": rules["step p95"],
        "step chart mean": rules["step mean"],
        "step stat mean": rules["step mean"],
        "evaluation mean": rules["step mean"],
        "rtf chart": rules["rtf"],
        "rtf stat": rules["rtf"],
        "evaluation rtf": rules["rtf"],
    }


def test_dashboards_show_the_thresholds_of_the_alert_rules() -> None:
    rules = _rule_numbers(RULES.read_text())
    assert rules == {"stall": 900, "window": 6 * 3600, "plateau": 20,
                     "step p95": 0.090, "step mean": 0.070, "rtf": 0.8}
    _agrees(_shown_thresholds(BOARDS), rules)
    since = _training_panel("Since last update")["description"]
    assert f"red after {rules['stall'] // 60} min" in since
    # The step chart names the thresholds in its description, in milliseconds.
    step = _training_panel("Step time per iteration")
    assert "p95 over 90 ms or mean over 70 ms" in step["description"]


def test_dashboards_follow_a_changed_rules_file(tmp_path: Path) -> None:
    """The generator reads the thresholds out of the rules: change a rule, the dashboards follow."""
    import json

    text = RULES.read_text()
    for old, new in (("> 900\n", "> 1200\n"), ("[6h]", "[3h]"), (">= 20\n", ">= 30\n"),
                     ("> 0.090\n", "> 0.1\n"), ("> 0.070\n", "> 0.075\n"),
                     ("< 0.8\n", "< 0.9\n")):
        assert text.count(old) == 1, old
        text = text.replace(old, new)
    changed = tmp_path / "deepracer.yml"
    changed.write_text(text)
    boards = {json.loads(t)["uid"]: json.loads(t)
              for t in _load_generator().render(changed).values()}  # fmt: skip
    rules = _rule_numbers(text)
    assert rules == {"stall": 1200, "window": 3 * 3600, "plateau": 30,
                     "step p95": 0.1, "step mean": 0.075, "rtf": 0.9}
    _agrees(_shown_thresholds(boards), rules)


# --- the default per-iteration series (DECISIONS.md) ----------------------------------------------

# deepracer_iteration_* family -> its name in the exporter's iteration_stats configuration.
STAT_FAMILIES = {
    "deepracer_iteration_reward": "reward",
    "deepracer_iteration_completion_ratio": "completion",
    "deepracer_iteration_episode_seconds": "episode_seconds",
    "deepracer_iteration_lap_seconds": "lap_seconds",
    "deepracer_iteration_rolling_reward": "rolling_reward",
    "deepracer_iteration_rolling_completion_ratio": "rolling_completion",
}


def default_stat_selectors(exprs: list[str]) -> list[tuple[str, str, str]]:
    """(phase, family, stat) of every per-iteration stat selector; fails on one without both."""
    found = []
    for expr in exprs:
        for metric, matchers in re.findall(r"\b(deepracer_iteration_\w+)\{([^}]*)\}", expr):
            if metric in STAT_FAMILIES:
                labels = dict(re.findall(r'(\w+)="([^"]*)"', matchers))
                assert {"phase", "stat"} <= set(labels), expr
                found.append((labels["phase"], STAT_FAMILIES[metric], labels["stat"]))
    return found


def test_dashboards_use_only_the_default_per_iteration_series() -> None:
    from deepracer_exporter.config import DEFAULT_ITERATION_STATS

    default = {(p, f, s) for p, f, stats in DEFAULT_ITERATION_STATS for s in stats}
    used = default_stat_selectors([q.expr for q in QUERIES])
    assert len(used) >= 15
    assert set(used) <= default, sorted(set(used) - default)


def test_overview_lists_idle_models() -> None:
    """An idle model exports no per-iteration series: the overview must not need any."""
    overview = [q for q in QUERIES if q.dashboard_uid == dash.OVERVIEW_UID]
    assert overview
    for q in overview:
        assert "per_iteration" not in q.requires, (q.panel_title, q.expr)
    training = [q for q in QUERIES if q.dashboard_uid == dash.TRAINING_UID]
    assert any("per_iteration" in q.requires for q in training)


# --- lint: issue 27 (the live edge, colours, thresholds, links) ----------------------------------


def _series_colors(panel: dict[str, Any]) -> dict[str, str]:
    """refId -> fixed colour of a chart's query overrides."""
    colors = {}
    for o in panel.get("fieldConfig", {}).get("overrides", []):
        if o["matcher"]["id"] != "byFrameRefID":
            continue
        for prop in o["properties"]:
            if prop["id"] == "color" and prop["value"].get("mode") == "fixed":
                colors[o["matcher"]["options"]] = prop["value"]["fixedColor"]
    return colors


def test_lint_one_colour_family_per_phase() -> None:
    """Evaluation is orange on every chart and training never is (the console chart had it red
    and the progress charts used orange for a training max)."""
    checked = 0
    for uid, panel in _panels():
        colors = _series_colors(panel)
        for t in panel.get("targets", []):
            color = colors.get(t["refId"])
            phases = set(re.findall(r'phase="(\w+)"', t.get("expr", "")))
            if color is None or len(phases) != 1 or color == "text":
                continue
            (phase,) = phases
            is_orange = color.endswith("orange")
            assert is_orange == (phase == "evaluation"), (uid, panel["title"], t["refId"], color)
            checked += 1
    assert checked >= 15


def test_lint_no_fake_threshold_series() -> None:
    """Reference lines are thresholds, not `0 * x + c` series that show in legends and
    tooltips."""
    for q in QUERIES:
        assert not re.search(r"\b0\s*\*", q.expr), (q.panel_title, q.expr)
    lined = [p for _, p in _panels()
             if p.get("fieldConfig", {}).get("defaults", {}).get("custom", {})
             .get("thresholdsStyle", {}).get("mode") in ("line", "dashed")]
    assert {p["title"] for p in lined} >= {"Step time per iteration",
                                          "Real-time factor per iteration"}


def test_lint_red_only_where_an_alert_fires() -> None:
    """Red means an alert: thresholds turn red only at an alert rule's number, and value
    mappings only for states an alert watches."""
    rules = _rule_numbers(RULES.read_text())
    alerting = {rules["stall"], rules["plateau"], rules["step p95"], rules["step mean"],
                rules["rtf"]}  # a red line at the real-time factor's threshold
    found = 0
    for uid, panel in _panels():
        steps_lists = []
        defaults = panel.get("fieldConfig", {}).get("defaults", {})
        if "thresholds" in defaults:
            steps_lists.append(defaults["thresholds"]["steps"])
        for o in panel.get("fieldConfig", {}).get("overrides", []):
            for prop in o["properties"]:
                if prop["id"] == "thresholds":
                    steps_lists.append(prop["value"]["steps"])
        for steps in steps_lists:
            for i, step in enumerate(steps):
                if step["color"] != "red":
                    continue
                found += 1
                where = (uid, panel["title"], steps)
                if step["value"] is None:  # red below: the real-time factor
                    assert steps[i + 1]["value"] == rules["rtf"], where
                elif panel["title"] == "Failing refreshes":  # DeepRacerExporterRefreshFailing
                    assert step["value"] == 1, where
                else:
                    assert step["value"] in alerting, where
        for o in [{"properties": [{"id": "mappings", "value": defaults.get("mappings", [])}]},
                  *panel.get("fieldConfig", {}).get("overrides", [])]:
            for prop in o["properties"]:
                if prop["id"] != "mappings":
                    continue
                for mapping in prop["value"]:
                    for result in mapping.get("options", {}).values():
                        if result.get("color") == "red":
                            assert result["text"] in ("FAILING", "STALLED"), (uid, result)
    assert found >= 6


def test_lint_finished_model_is_not_red() -> None:
    """"Since last update" colours only a model still training; a finished one's series is
    matched by its `state` label and shown without colour."""
    panel = _training_panel("Since last update")
    (target,) = panel["targets"]
    assert '"state", "training"' in target["expr"] and '"state", "finished"' in target["expr"]
    assert "deepracer_model_finished" in target["expr"]
    finished = [o for o in panel["fieldConfig"]["overrides"]
                if o["matcher"] == {"id": "byRegexp", "options": ".*finished.*"}]
    (override,) = finished
    (thresholds,) = [p["value"] for p in override["properties"] if p["id"] == "thresholds"]
    assert [s["color"] for s in thresholds["steps"]] == ["text"]


def test_lint_unfinished_iteration_apart_on_the_console_chart() -> None:
    """The iteration being played is its own grey series; episodes total and this
    iteration's episodes are on the status row."""
    panel = dash.console_chart_panel(BOARDS)
    refs = {t["refId"]: t["expr"] for t in panel["targets"]}
    assert "deepracer_model_episodes_per_iteration" in refs["D"]
    assert _series_colors(panel)["D"] == "text"
    episodes = _exprs_by_name(_training_panel("Training episodes"))
    assert "deepracer_model_iteration_episodes" in episodes["This iteration"]
    assert "increase(" not in episodes["Total"]


def test_lint_exporter_panels_one_unit_each() -> None:
    """A chart's series share one unit (requests, bytes and seconds were on one axis)."""
    for uid, panel in _panels():
        if panel["type"] != "timeseries":
            continue
        units = {p["value"] for o in panel["fieldConfig"]["overrides"] for p in o["properties"]
                 if p["id"] == "unit"}
        assert not units - {panel["fieldConfig"]["defaults"]["unit"]}, (uid, panel["title"])
