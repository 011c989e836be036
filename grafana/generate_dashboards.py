#!/usr/bin/env python3
"""Generate the provisioned Grafana dashboards (grafana/dashboards/*.json).

The JSON is committed; this script is its source. After editing, run
`python grafana/generate_dashboards.py` and commit both. tests/test_dashboards.py fails when the
committed JSON differs from what this script produces.

Target: Grafana 11.3+ (dashboard schemaVersion 39, the XY chart with `mapping`/`series` matchers).
Per-iteration charts use instant table queries, so their x axis is the iteration number (a label
converted to a number by a transformation), not wall time.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

DS = {"type": "prometheus", "uid": "deepracer-prometheus"}
# The alert list panel selects its rules source by datasource *name* (provisioning/datasources).
DS_NAME = "Prometheus"
GRAFANA_VERSION = "11.3.0"
SCHEMA_VERSION = 39
OUT_DIR = Path(__file__).resolve().parent / "dashboards"

# Fixed panel ids the integration tests rely on (see tests/dashboards.py).
CONSOLE_CHART_ID = 2

STATUS_COLORS = {
    "lap_complete": "green",
    "off_track": "red",
    "crashed": "dark-red",
    "reversed": "orange",
    "time_up": "yellow",
    "immobilized": "purple",
    "in_progress": "blue",
    "other": "text",
}
STAT_COLORS = {"mean": "blue", "median": "green", "max": "orange", "min": "purple"}
# A model counts as stalled when its metrics have not changed for this long and it is not finished
# (the DeepRacerTrainingStalled alert in prometheus/rules/deepracer.yml uses the same 15 min).
STALL_SECONDS = 900
WARN_SECONDS = 300

Json = dict[str, Any]


def target(ref: str, expr: str, *, instant: bool = False, legend: str = "") -> Json:
    """A Prometheus query; instant ones come back as one table frame (labels become columns)."""
    t: Json = {"datasource": DS, "refId": ref, "expr": expr, "editorMode": "code"}
    if instant:
        t.update({"instant": True, "range": False, "format": "table"})
    else:
        t.update({"instant": False, "range": True, "format": "time_series"})
        t["legendFormat"] = legend or "__auto"
    return t


def grid(x: int, y: int, w: int, h: int) -> Json:
    return {"x": x, "y": y, "w": w, "h": h}


def row(pid: int, title: str, y: int) -> Json:
    return {
        "id": pid,
        "type": "row",
        "title": title,
        "collapsed": False,
        "gridPos": grid(0, y, 24, 1),
        "panels": [],
    }


def override(matcher_id: str, options: Any, **props: Any) -> Json:
    return {
        "matcher": {"id": matcher_id, "options": options},
        "properties": [{"id": k.replace("__", "."), "value": v} for k, v in props.items()],
    }


def fixed(color: str) -> Json:
    return {"mode": "fixed", "fixedColor": color}


def per_iteration(
    pid: int,
    title: str,
    description: str,
    pos: Json,
    series: list[tuple[str, str, str, str, str]],
    *,
    unit: str = "none",
    right_unit: str = "none",
    right_refs: tuple[str, ...] = (),
    y_label: str = "",
    right_label: str = "",
) -> Json:
    """XY chart with the iteration on the x axis.

    `series` items are (refId, expr, display name, color, show) where `show` is `points` or
    `lines`. Each expr must return at most one value per iteration and keep the `iteration` and
    `round` labels (e.g. `max by (round, iteration) (...)`): the round then shows in the tooltip.
    Series in `right_refs` use `right_unit` on the right axis (the XY chart keys y scales by unit).
    """
    targets = []
    overrides = [
        override(
            "byName",
            "iteration",
            custom__axisLabel="Iteration",
            decimals=0,
            unit="none",
        )
    ]
    for ref, expr, name, color, show in series:
        targets.append(target(ref, expr, instant=True))
        props: Json = {"displayName": name, "color": fixed(color), "custom__show": show}
        if ref in right_refs:
            props.update(unit=right_unit, custom__axisPlacement="right")
            props["custom__axisLabel"] = right_label
        else:
            props["custom__axisPlacement"] = "left"
            props["custom__axisLabel"] = y_label
        overrides.append(override("byFrameRefID", ref, **props))
    return {
        "id": pid,
        "type": "xychart",
        "title": title,
        "description": description,
        "pluginVersion": GRAFANA_VERSION,
        "datasource": DS,
        "gridPos": pos,
        "targets": targets,
        "transformations": [
            {
                "id": "convertFieldType",
                "options": {
                    "fields": {},
                    "conversions": [{"targetField": "iteration", "destinationType": "number"}],
                },
            },
            {"id": "sortBy", "options": {"fields": {}, "sort": [{"field": "iteration"}]}},
        ],
        "fieldConfig": {
            "defaults": {
                "unit": unit,
                "color": {"mode": "palette-classic"},
                "custom": {
                    "show": "points",
                    "pointSize": {"fixed": 4},
                    "pointShape": "circle",
                    "pointStrokeWidth": 1,
                    "lineWidth": 2,
                    "lineStyle": {"fill": "solid"},
                    "axisPlacement": "auto",
                    "axisBorderShow": False,
                    "hideFrom": {"legend": False, "tooltip": False, "viz": False},
                },
            },
            "overrides": overrides,
        },
        "options": {
            "mapping": "auto",
            "series": [
                {
                    "x": {"matcher": {"id": "byName", "options": "iteration"}},
                    "y": {"matcher": {"id": "byType", "options": "number"}},
                }
            ],
            "legend": {
                "showLegend": True,
                "displayMode": "list",
                "placement": "bottom",
                "calcs": [],
            },
            "tooltip": {"mode": "single", "sort": "none"},
        },
    }


def stat(
    pid: int,
    title: str,
    description: str,
    pos: Json,
    targets: list[Json],
    *,
    unit: str = "none",
    decimals: int | None = None,
    thresholds: list[tuple[float | None, str]] | None = None,
    mappings: list[Json] | None = None,
    color_mode: str = "value",
) -> Json:
    # One frame per series (not one table frame) so that each series gets its own value.
    for t in targets:
        if t.get("instant"):
            t["format"] = "time_series"
    defaults: Json = {
        "unit": unit,
        "color": {"mode": "thresholds"},
        "thresholds": {
            "mode": "absolute",
            "steps": [{"value": v, "color": c} for v, c in (thresholds or [(None, "text")])],
        },
        "mappings": mappings or [],
    }
    if decimals is not None:
        defaults["decimals"] = decimals
    return {
        "id": pid,
        "type": "stat",
        "title": title,
        "description": description,
        "pluginVersion": GRAFANA_VERSION,
        "datasource": DS,
        "gridPos": pos,
        "targets": targets,
        "fieldConfig": {"defaults": defaults, "overrides": []},
        "options": {
            "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
            "orientation": "auto",
            "textMode": "value_and_name" if len(targets) > 1 else "auto",
            "colorMode": color_mode,
            "graphMode": "none",
            "justifyMode": "auto",
            "wideLayout": True,
            "showPercentChange": False,
        },
    }


def value_map(values: dict[str, tuple[str, str]]) -> list[Json]:
    return [
        {
            "type": "value",
            "options": {
                k: {"text": text, "color": color, "index": i}
                for i, (k, (text, color)) in enumerate(values.items())
            },
        }
    ]


def timeseries(
    pid: int,
    title: str,
    description: str,
    pos: Json,
    targets: list[Json],
    *,
    unit: str = "none",
    draw: str = "line",
    stack: bool = False,
    interval: str | None = None,
) -> Json:
    panel: Json = {
        "id": pid,
        "type": "timeseries",
        "title": title,
        "description": description,
        "pluginVersion": GRAFANA_VERSION,
        "datasource": DS,
        "gridPos": pos,
        "targets": targets,
        "fieldConfig": {
            "defaults": {
                "unit": unit,
                "color": {"mode": "palette-classic"},
                "custom": {
                    "drawStyle": draw,
                    "lineInterpolation": "stepAfter",
                    "lineWidth": 2,
                    "fillOpacity": 30 if stack else 0,
                    "showPoints": "never",
                    "spanNulls": False,
                    "stacking": {"mode": "normal" if stack else "none", "group": "A"},
                    "axisPlacement": "auto",
                },
            },
            "overrides": [],
        },
        "options": {
            "legend": {
                "showLegend": True,
                "displayMode": "list",
                "placement": "bottom",
                "calcs": [],
            },
            "tooltip": {"mode": "multi", "sort": "none"},
        },
    }
    if interval:
        panel["interval"] = interval
    return panel


def alert_list(pid: int, title: str, description: str, pos: Json, label_filter: str) -> Json:
    """Firing/pending alerts of the rules Prometheus evaluates (datasource-managed, read-only)."""
    return {
        "id": pid,
        "type": "alertlist",
        "title": title,
        "description": description,
        "pluginVersion": GRAFANA_VERSION,
        "gridPos": pos,
        "options": {
            "viewMode": "list",
            "groupMode": "default",
            "groupBy": [],
            "maxItems": 20,
            "sortOrder": 3,
            "dashboardAlerts": False,
            "alertName": "DeepRacer",
            "alertInstanceLabelFilter": label_filter,
            "datasource": DS_NAME,
            "showInstances": True,
            "showInactiveAlerts": False,
            "stateFilter": {
                "firing": True,
                "pending": True,
                "noData": False,
                "normal": False,
                "error": True,
                "recovering": False,
            },
        },
    }


def dashboard(
    uid: str,
    title: str,
    description: str,
    panels: list[Json],
    variables: list[Json],
    links: list[Json],
) -> Json:
    return {
        "uid": uid,
        "title": title,
        "description": description,
        "tags": ["deepracer"],
        "editable": True,
        "graphTooltip": 0,
        "schemaVersion": SCHEMA_VERSION,
        "version": 1,
        "refresh": "30s",
        "time": {"from": "now-6h", "to": "now"},
        "timepicker": {},
        "timezone": "browser",
        "fiscalYearStartMonth": 0,
        "liveNow": False,
        "weekStart": "",
        "annotations": {
            "list": [
                {
                    "builtIn": 1,
                    "datasource": {"type": "grafana", "uid": "-- Grafana --"},
                    "enable": True,
                    "hide": True,
                    "iconColor": "rgba(0, 211, 255, 1)",
                    "name": "Annotations & Alerts",
                    "type": "dashboard",
                }
            ]
        },
        "links": links,
        "templating": {"list": variables},
        "panels": panels,
    }


# ---------------------------------------------------------------------------------------------
# Training dashboard: one model


def m(metric: str, extra: str = "") -> str:
    """`metric{model="$model", extra}` selector."""
    sel = 'model="$model"' + (", " + extra if extra else "")
    return f"{metric}{{{sel}}}"


TRAINING = 'phase="training"'
MEAN = 'stat="mean"'
MIN = 'stat="min"'


def label(name: str, value: str) -> str:
    """`name="value"` matcher."""
    return f'{name}="{value}"'


def per_iter(metric: str, extra: str, scale: str = "") -> str:
    return f"{scale}max by (round, iteration) ({m(metric, extra)})"


def table(
    pid: int,
    title: str,
    description: str,
    pos: Json,
    targets: list[Json],
    transformations: list[Json],
    overrides: list[Json],
    *,
    sort_by: list[Json] | None = None,
) -> Json:
    return {
        "id": pid,
        "type": "table",
        "title": title,
        "description": description,
        "pluginVersion": GRAFANA_VERSION,
        "datasource": DS,
        "gridPos": pos,
        "targets": targets,
        "transformations": transformations,
        "fieldConfig": {
            "defaults": {"custom": {"align": "auto", "cellOptions": {"type": "auto"}}},
            "overrides": overrides,
        },
        "options": {
            "showHeader": True,
            "cellHeight": "sm",
            "footer": {"show": False, "reducer": ["sum"], "fields": ""},
            "sortBy": sort_by or [],
        },
    }


def join_tables(key: str, refs: list[str], order: list[str], rename: dict[str, str]) -> list[Json]:
    """Transformations that make one table row per `key` value out of instant table queries.

    Each query's frame is (Time, labels..., "Value #<ref>"). Time is dropped from every frame
    first (organize works per frame), then the frames are outer-joined on the `key` label: a
    query without a value for some key leaves an empty cell. `order` lists the resulting columns
    by their original names; the constant values of info metrics (not in `order`) are dropped.
    """
    drop = {"Time": True}
    excluded = {
        name: True for name in ("Value", *(f"Value #{r}" for r in refs)) if name not in order
    }
    return [
        {
            "id": "organize",
            "options": {"excludeByName": drop, "indexByName": {}, "renameByName": {}},
        },
        {"id": "joinByField", "options": {"byField": key, "mode": "outer"}},
        {
            "id": "organize",
            "options": {
                "excludeByName": excluded,
                "indexByName": {name: i for i, name in enumerate(order)},
                "renameByName": rename,
            },
        },
    ]


# deepracer_evaluation_resets reasons, in the order of the evaluation runs table.
RESET_REASONS = {
    "off_track": "Off track",
    "crashed": "Crashed",
    "reversed": "Reversed",
    "immobilized": "Immobilized",
}
# Numeric hyperparameters shown on the training dashboard: name -> (title, decimals).
KEY_HYPERPARAMETERS = {
    "batch_size": ("Batch size", 0),
    "lr": ("Learning rate", None),
    "discount_factor": ("Discount", None),
    "num_episodes_between_training": ("Episodes between training", 0),
    "num_epochs": ("Epochs", 0),
    "beta_entropy": ("Entropy", None),
}
# deepracer_model_metadata_info / deepracer_model_hyperparameters_info labels -> column title.
METADATA_COLUMNS = {
    "action_space_type": "Action space",
    "action_count": "Actions",
    "sensors": "Sensors",
    "neural_network": "Network",
    "training_algorithm": "Algorithm",
    "version": "Version",
}
HYPERPARAMETER_INFO_COLUMNS = {"exploration_type": "Exploration", "loss_type": "Loss"}


def evaluation_panels(y: int) -> tuple[list[Json], int]:
    """Evaluation runs (metrics/evaluation/*.json): one table row per run, and the best lap."""
    p: list[Json] = [row(60, "Evaluation runs", y)]
    y += 1
    ev = "deepracer_evaluation_"
    columns: list[tuple[str, str, str, Json]] = [
        # (refId, expr, column title, field config)
        (
            "A",
            f"1000 * max by (run) ({m(ev + 'timestamp_seconds')})",
            "Started",
            {"unit": "dateTimeAsIso"},
        ),
        ("B", f"max by (run) ({m(ev + 'trials')})", "Trials", {"decimals": 0}),
        ("C", f"max by (run) ({m(ev + 'completed_laps')})", "Completed laps", {"decimals": 0}),
        (
            "D",
            f"max by (run) ({m(ev + 'completion_ratio')})",
            "Completion",
            {"unit": "percentunit", "decimals": 1},
        ),
        (
            "E",
            f"max by (run) ({m(ev + 'lap_seconds', MEAN)})",
            "Mean lap",
            {"unit": "s", "decimals": 3},
        ),
        (
            "F",
            f"max by (run) ({m(ev + 'lap_seconds', MIN)})",
            "Best lap",
            {"unit": "s", "decimals": 3},
        ),
    ]
    for ref, (reason, title) in zip("GHIJ", RESET_REASONS.items(), strict=True):
        columns.append(
            (
                ref,
                f"sum by (run) ({m(ev + 'resets', label('reason', reason))})",
                title,
                {"decimals": 0},
            )
        )
    refs = [ref for ref, *_ in columns]
    order = ["run", *(f"Value #{ref}" for ref in refs)]
    rename = {"run": "Run", **{f"Value #{ref}": title for ref, _, title, _ in columns}}
    overrides = [override("byName", title, **props) for _, _, title, props in columns]
    overrides.append(
        override(
            "byName",
            "Completion",
            custom__cellOptions={"type": "color-text"},
            thresholds={
                "mode": "absolute",
                "steps": [
                    {"value": None, "color": "red"},
                    {"value": 0.5, "color": "orange"},
                    {"value": 1, "color": "green"},
                ],
            },
        )
    )
    p.append(
        table(
            61,
            "Evaluation runs",
            "One row per evaluation run (metrics/evaluation/*.json, the latest "
            "max_evaluation_runs): start time (from the file name; DRfC writes local time, "
            "shown as if UTC), trials, completed laps, mean completion, mean and best lap time "
            "of the completed laps, and resets by cause. Newest first.",
            grid(0, y, 18, 8),
            [target(ref, expr, instant=True) for ref, expr, _, _ in columns],
            join_tables("run", refs, order, rename),
            overrides,
            sort_by=[{"displayName": "Run", "desc": True}],
        )
    )
    p.append(
        stat(
            62,
            "Best evaluated lap",
            "Fastest completed lap over all evaluation runs (not the evaluation episodes "
            "during training: those are under Best lap).",
            grid(18, y, 6, 4),
            [target("A", f"min({m('deepracer_model_best_evaluation_lap_seconds')})", instant=True)],
            unit="s",
            decimals=3,
        )
    )
    p.append(
        stat(
            63,
            "Evaluation runs",
            "Evaluation runs found for this model, all rounds (the table shows the latest "
            "max_evaluation_runs).",
            grid(18, y + 4, 6, 4),
            [target("A", f"max({m('deepracer_evaluation_runs')})", instant=True)],
            decimals=0,
        )
    )
    return p, y + 8


def model_panels(y: int) -> tuple[list[Json], int]:
    """model_metadata.json, action space, key hyperparameters and checkpoints of the model."""
    p: list[Json] = [row(70, "Model: metadata, hyperparameters, checkpoints", y)]
    y += 1
    meta = ", ".join(METADATA_COLUMNS)
    hinfo = ", ".join(HYPERPARAMETER_INFO_COLUMNS)
    p.append(
        table(
            71,
            "Model",
            "model/model_metadata.json of the latest round (action space type, number of "
            "discrete actions, sensors, network, training algorithm, simapp version) and the "
            "text hyperparameters.",
            grid(0, y, 24, 4),
            [
                target(
                    "A",
                    f"max by (model, {meta}) ({m('deepracer_model_metadata_info')})",
                    instant=True,
                ),
                target(
                    "B",
                    f"max by (model, {hinfo}) ({m('deepracer_model_hyperparameters_info')})",
                    instant=True,
                ),
            ],
            join_tables(
                "model",
                ["A", "B"],
                [*METADATA_COLUMNS, *HYPERPARAMETER_INFO_COLUMNS],
                {**METADATA_COLUMNS, **HYPERPARAMETER_INFO_COLUMNS},
            ),
            [],
        )
    )
    # The joined table still has the key column; hide it (the dashboard is for one model).
    p[-1]["transformations"][-1]["options"]["excludeByName"]["model"] = True
    y += 4
    for pid, x, title, kind, unit, desc in (
        (72, 0, "Speed range", "speed", "velocityms", "Slowest and fastest action speed, m/s."),
        (73, 4, "Steering range", "steering_angle", "degree", "Steering angle range, degrees."),
    ):
        p.append(
            stat(
                pid,
                title,
                desc + " From the action space in model_metadata.json.",
                grid(x, y, 4, 4),
                [
                    target(
                        ref,
                        f"max({m('deepracer_model_action_space', label('bound', f'{kind}_{b}'))})",
                        instant=True,
                    )
                    for ref, b in (("A", "min"), ("B", "max"))
                ],
                unit=unit,
            )
        )
        p[-1]["fieldConfig"]["overrides"] = [
            override("byFrameRefID", "A", displayName="min"),
            override("byFrameRefID", "B", displayName="max"),
        ]
    hyper_targets = []
    hyper_overrides = []
    for ref, (name, (title, decimals)) in zip("ABCDEF", KEY_HYPERPARAMETERS.items(), strict=True):
        hyper_targets.append(
            target(
                ref,
                f"max({m('deepracer_model_hyperparameter', label('name', name))})",
                instant=True,
            )
        )
        props: Json = {"displayName": title}
        if decimals is not None:
            props["decimals"] = decimals
        hyper_overrides.append(override("byFrameRefID", ref, **props))
    p.append(
        stat(
            74,
            "Hyperparameters",
            "Key numeric hyperparameters of the latest round (ip/hyperparameters.json): "
            "batch_size, lr, discount_factor, num_episodes_between_training, num_epochs, "
            "beta_entropy.",
            grid(8, y, 12, 4),
            hyper_targets,
        )
    )
    p[-1]["fieldConfig"]["overrides"] = hyper_overrides
    p.append(
        stat(
            75,
            "Checkpoints",
            "Last and best checkpoint number in model/deepracer_checkpoints.json, and the "
            "time since the trainer last saved a checkpoint (the file's LastModified).",
            grid(20, y, 4, 4),
            [
                target("A", f"max by (kind) ({m('deepracer_model_checkpoint')})", instant=True),
                target(
                    "B",
                    f"time() - max({m('deepracer_model_checkpoint_timestamp_seconds')})",
                    instant=True,
                ),
            ],
            decimals=0,
        )
    )
    p[-1]["fieldConfig"]["overrides"] = [
        override("byFrameRefID", "A", displayName="${__field.labels.kind}"),
        override("byFrameRefID", "B", displayName="saved ago", unit="s"),
    ]
    return p, y + 4


def training_dashboard() -> Json:
    p: list[Json] = []
    y = 0

    # --- Status -------------------------------------------------------------------------------
    p.append(row(100, "Status", y))
    y += 1
    p.append(
        stat(
            101,
            "Iteration",
            "Latest master iteration with training episodes (continues "
            "across rounds) and the current round.",
            grid(0, y, 4, 4),
            [
                target("A", f"max({m('deepracer_model_iteration')})", instant=True),
                target("B", f"max({m('deepracer_model_round')})", instant=True),
            ],
            decimals=0,
        )
    )
    p[-1]["fieldConfig"]["overrides"] = [
        override("byFrameRefID", "A", displayName="Iteration"),
        override("byFrameRefID", "B", displayName="Round"),
    ]
    p.append(
        stat(
            102,
            "Training episodes",
            "Training episodes so far (all outcomes) and episodes per iteration (all workers).",
            grid(4, y, 4, 4),
            [
                target("A", f"sum({m('deepracer_model_episodes_total', TRAINING)})", instant=True),
                target("B", f"max({m('deepracer_model_episodes_per_iteration')})", instant=True),
            ],
            decimals=0,
        )
    )
    p[-1]["fieldConfig"]["overrides"] = [
        override("byFrameRefID", "A", displayName="Episodes"),
        override("byFrameRefID", "B", displayName="Per iteration"),
    ]
    p.append(
        stat(
            103,
            "Best lap",
            "Fastest completed lap over all iterations, per phase.",
            grid(8, y, 4, 4),
            [
                target(
                    "A", f"min by (phase) ({m('deepracer_model_best_lap_seconds')})", instant=True
                ),
            ],
            unit="s",
            decimals=3,
        )
    )
    p[-1]["fieldConfig"]["defaults"]["displayName"] = "${__field.labels.phase}"
    p[-1]["options"]["textMode"] = "value_and_name"
    p.append(
        stat(
            104,
            "Since last update",
            "Time since the newest TrainingMetrics object changed. "
            f"Orange after {WARN_SECONDS // 60} min, red after {STALL_SECONDS // 60} min: "
            "training stalled, stopped or finished.",
            grid(12, y, 4, 4),
            [
                target(
                    "A",
                    f"time() - max({m('deepracer_model_last_update_timestamp_seconds')} > 0)",
                    instant=True,
                ),
            ],
            unit="s",
            decimals=0,
            thresholds=[(None, "green"), (WARN_SECONDS, "orange"), (STALL_SECONDS, "red")],
        )
    )
    p.append(
        stat(
            105,
            "Training state",
            "Finished when the latest round reached term_cond_max_episodes.",
            grid(16, y, 4, 4),
            [
                target("A", f"max({m('deepracer_model_finished')})", instant=True),
            ],
            mappings=value_map({"0": ("Training", "blue"), "1": ("Finished", "green")}),
        )
    )
    p.append(
        stat(
            106,
            "Exporter",
            "Did the exporter's last refresh of this model succeed "
            "(last good data is still served when it fails), and refresh errors in the "
            "dashboard time range.",
            grid(20, y, 4, 4),
            [
                target("A", f"min({m('deepracer_exporter_refresh_success')})", instant=True),
                target(
                    "B",
                    f"sum(increase({m('deepracer_exporter_refresh_errors_total')}[$__range]))",
                    instant=True,
                ),
            ],
            decimals=0,
        )
    )
    p[-1]["fieldConfig"]["overrides"] = [
        override(
            "byFrameRefID",
            "A",
            displayName="Refresh",
            mappings=value_map({"0": ("FAILING", "red"), "1": ("OK", "green")}),
        ),
        override(
            "byFrameRefID",
            "B",
            displayName="Errors",
            thresholds={
                "mode": "absolute",
                "steps": [{"value": None, "color": "green"}, {"value": 1, "color": "red"}],
            },
        ),
    ]
    y += 4
    p.append(
        stat(
            107,
            "Rolling completion",
            "Latest rolling mean (window rolling_window) of the per-iteration mean completion.",
            grid(0, y, 6, 4),
            [
                target(
                    "A",
                    f"max by (phase) ({m('deepracer_model_rolling_completion_ratio')})",
                    instant=True,
                ),
            ],
            unit="percentunit",
            decimals=1,
            thresholds=[(None, "red"), (0.5, "orange"), (0.9, "green")],
        )
    )
    p[-1]["fieldConfig"]["defaults"]["displayName"] = "${__field.labels.phase}"
    p.append(
        stat(
            108,
            "Rolling reward",
            "Latest rolling mean of the per-iteration mean reward.",
            grid(6, y, 6, 4),
            [
                target(
                    "A", f"max by (phase) ({m('deepracer_model_rolling_reward')})", instant=True
                ),
            ],
            decimals=1,
        )
    )
    p[-1]["fieldConfig"]["defaults"]["displayName"] = "${__field.labels.phase}"
    p.append(
        stat(
            109,
            "Iterations without improvement",
            "Iterations since the rolling mean last reached a new maximum (a plateau).",
            grid(12, y, 6, 4),
            [
                target(
                    "A",
                    f"max by (phase, metric) ({m('deepracer_model_plateau_iterations')})",
                    instant=True,
                ),
            ],
            decimals=0,
            thresholds=[(None, "green"), (10, "orange"), (25, "red")],
        )
    )
    p[-1]["fieldConfig"]["defaults"]["displayName"] = (
        "${__field.labels.phase} ${__field.labels.metric}"
    )
    p.append(
        alert_list(
            110,
            "Firing DeepRacer alerts",
            "Alerts Prometheus evaluates from "
            "prometheus/rules for this model (firing and pending).",
            grid(18, y, 6, 4),
            '{model="$model"}',
        )
    )
    y += 4

    # --- Console chart ------------------------------------------------------------------------
    p.append(row(1, "Training progress", y))
    y += 1
    p.append(
        per_iteration(
            CONSOLE_CHART_ID,
            "Reward and completion (DeepRacer console)",
            "The DeepRacer console's reward graph: average reward per training iteration (left "
            "axis) and average track completion of training and evaluation episodes (right axis). "
            "Hover a point to see its round.",
            grid(0, y, 24, 9),
            [
                (
                    "A",
                    per_iter("deepracer_iteration_reward", 'phase="training", stat="mean"'),
                    "Average reward (training)",
                    "green",
                    "points+lines",
                ),
                (
                    "B",
                    per_iter(
                        "deepracer_iteration_completion_ratio",
                        'phase="training", stat="mean"',
                        "100 * ",
                    ),
                    "Average completion (training)",
                    "blue",
                    "points+lines",
                ),
                (
                    "C",
                    per_iter(
                        "deepracer_iteration_completion_ratio",
                        'phase="evaluation", stat="mean"',
                        "100 * ",
                    ),
                    "Average completion (evaluation)",
                    "red",
                    "points+lines",
                ),
            ],
            unit="none",
            right_unit="percent",
            right_refs=("B", "C"),
            y_label="Reward",
            right_label="Completion",
        )
    )
    y += 9

    # --- plotProgress -------------------------------------------------------------------------
    p.append(row(20, "Progress per iteration (notebook plotProgress)", y))
    y += 1
    pid = 21
    for metric, rolling, label, unit, scale in (
        (
            "deepracer_iteration_completion_ratio",
            "deepracer_iteration_rolling_completion_ratio",
            "Completion",
            "percentunit",
            "",
        ),
        ("deepracer_iteration_reward", "deepracer_iteration_rolling_reward", "Reward", "none", ""),
    ):
        for x, phase in ((0, "training"), (12, "evaluation")):
            series = []
            ref = iter("ABCDEF")
            for st in ("mean", "median", "max"):
                sel = f'phase="{phase}", stat="{st}"'
                series.append(
                    (next(ref), per_iter(metric, sel, scale), f"{st}", STAT_COLORS[st], "points")
                )
                series.append(
                    (
                        next(ref),
                        per_iter(rolling, sel, scale),
                        f"{st} (rolling)",
                        STAT_COLORS[st],
                        "lines",
                    )
                )
            p.append(
                per_iteration(
                    pid,
                    f"{label} per iteration ({phase})",
                    f"{label} of {phase} episodes per iteration: mean, median and max as points, "
                    "their rolling average (window rolling_window) as lines, like deepracer-utils "
                    "plotProgress.",
                    grid(x, y, 12, 8),
                    series,
                    unit=unit,
                    y_label=label,
                )
            )
            pid += 1
        y += 8

    # --- Laps ---------------------------------------------------------------------------------
    p.append(row(30, "Lap times", y))
    y += 1
    lap_series = []
    ref = iter("ABCD")
    for phase, colors in (
        ("training", ("blue", "light-blue")),
        ("evaluation", ("red", "light-red")),
    ):
        for st, color, show in (("min", colors[0], "points+lines"), ("mean", colors[1], "points")):
            lap_series.append(
                (
                    next(ref),
                    per_iter("deepracer_iteration_lap_seconds", f'phase="{phase}", stat="{st}"'),
                    f"{'best' if st == 'min' else 'mean'} lap ({phase})",
                    color,
                    show,
                )
            )
    p.append(
        per_iteration(
            31,
            "Lap time per iteration",
            "Best (fastest) and mean lap time of the completed laps of each iteration. Iterations "
            "without a completed lap have no point.",
            grid(0, y, 12, 9),
            lap_series,
            unit="s",
            y_label="Lap time",
        )
    )
    best = {
        "id": 32,
        "type": "table",
        "title": "Fastest laps",
        "description": "The top_laps fastest completed laps (rank 1 = fastest) per phase, with "
        "where to find them in the logs: round, iteration, episode, worker.",
        "pluginVersion": GRAFANA_VERSION,
        "datasource": DS,
        "gridPos": grid(12, y, 12, 9),
        "targets": [
            target(
                "A",
                "max by (phase, rank, round, iteration, episode, worker) "
                f"({m('deepracer_best_lap_seconds')})",
                instant=True,
            )
        ],
        "transformations": [
            {
                "id": "convertFieldType",
                "options": {
                    "fields": {},
                    "conversions": [
                        {"targetField": f, "destinationType": "number"}
                        for f in ("rank", "round", "iteration", "episode", "worker")
                    ],
                },
            },
            {
                "id": "organize",
                "options": {
                    "excludeByName": {"Time": True},
                    "indexByName": {
                        "phase": 0,
                        "rank": 1,
                        "Value": 2,
                        "round": 3,
                        "iteration": 4,
                        "episode": 5,
                        "worker": 6,
                    },
                    "renameByName": {
                        "phase": "Phase",
                        "rank": "Rank",
                        "Value": "Lap time",
                        "round": "Round",
                        "iteration": "Iteration",
                        "episode": "Episode",
                        "worker": "Worker",
                    },
                },
            },
        ],
        "fieldConfig": {
            "defaults": {"custom": {"align": "auto", "cellOptions": {"type": "auto"}}},
            "overrides": [override("byName", "Lap time", unit="s", decimals=3)],
        },
        "options": {
            "showHeader": True,
            "cellHeight": "sm",
            "footer": {"show": False, "reducer": ["sum"], "fields": ""},
            "sortBy": [{"displayName": "Lap time", "desc": False}],
        },
    }
    p.append(best)
    y += 9
    p.append(
        timeseries(
            33,
            "Best lap progression",
            "Fastest lap so far (a running minimum) over wall time, per phase.",
            grid(0, y, 12, 7),
            [
                target(
                    "A",
                    f"min by (phase) ({m('deepracer_model_best_lap_seconds')})",
                    legend="{{phase}}",
                )
            ],
            unit="s",
        )
    )
    p.append(
        per_iteration(
            34,
            "Completed laps per iteration",
            "Share of episodes of each iteration that completed a lap.",
            grid(12, y, 12, 7),
            [
                (
                    "A",
                    per_iter("deepracer_iteration_completed_ratio", 'phase="training"'),
                    "training",
                    "blue",
                    "points+lines",
                ),
                (
                    "B",
                    per_iter("deepracer_iteration_completed_ratio", 'phase="evaluation"'),
                    "evaluation",
                    "red",
                    "points+lines",
                ),
            ],
            unit="percentunit",
            y_label="Completed laps",
        )
    )
    y += 7

    panels, y = evaluation_panels(y)
    p.extend(panels)

    # --- Episode outcomes ---------------------------------------------------------------------
    p.append(row(40, "Episode outcomes", y))
    y += 1
    outcomes: Json = {
        "id": 41,
        "type": "barchart",
        "title": "Training episode outcomes per iteration",
        "description": "How each iteration's training episodes ended, stacked: lap complete, "
        "off track, crashed, reversed, time up, ...",
        "pluginVersion": GRAFANA_VERSION,
        "datasource": DS,
        "gridPos": grid(0, y, 16, 9),
        "targets": [
            target(
                "A",
                "sum by (iteration, status) "
                f"({m('deepracer_iteration_status_episodes', TRAINING)})",
                instant=True,
            )
        ],
        "transformations": [
            {
                "id": "groupingToMatrix",
                "options": {
                    "columnField": "status",
                    "rowField": "iteration",
                    "valueField": "Value",
                    "emptyValue": "zero",
                },
            },
            {
                "id": "organize",
                "options": {
                    "renameByName": {"iteration\\status": "iteration"},
                    "excludeByName": {},
                    "indexByName": {},
                },
            },
            {
                "id": "convertFieldType",
                "options": {
                    "fields": {},
                    "conversions": [{"targetField": "iteration", "destinationType": "number"}],
                },
            },
            {"id": "sortBy", "options": {"fields": {}, "sort": [{"field": "iteration"}]}},
        ],
        "fieldConfig": {
            "defaults": {
                "unit": "none",
                "decimals": 0,
                "color": {"mode": "palette-classic"},
                "custom": {
                    "fillOpacity": 80,
                    "lineWidth": 0,
                    "gradientMode": "none",
                    "axisPlacement": "auto",
                    "axisLabel": "Episodes",
                },
            },
            "overrides": [override("byName", s, color=fixed(c)) for s, c in STATUS_COLORS.items()],
        },
        "options": {
            "xField": "iteration",
            "orientation": "vertical",
            "stacking": "normal",
            "showValue": "never",
            "groupWidth": 0.9,
            "barWidth": 0.97,
            "barRadius": 0,
            "xTickLabelRotation": 0,
            "xTickLabelSpacing": 100,
            "fullHighlight": False,
            "legend": {
                "showLegend": True,
                "displayMode": "list",
                "placement": "bottom",
                "calcs": [],
            },
            "tooltip": {"mode": "multi", "sort": "desc"},
        },
    }
    p.append(outcomes)
    rounds: Json = {
        "id": 42,
        "type": "table",
        "title": "Rounds",
        "description": "Round boundaries: first and last master iteration and training "
        "episodes of each round (a cloned model continues its parent's "
        "iteration numbers).",
        "pluginVersion": GRAFANA_VERSION,
        "datasource": DS,
        "gridPos": grid(16, y, 8, 9),
        "targets": [
            target("A", per_iter("deepracer_iteration_episodes", 'phase="training"'), instant=True)
        ],
        "transformations": [
            {
                "id": "convertFieldType",
                "options": {
                    "fields": {},
                    "conversions": [
                        {"targetField": "iteration", "destinationType": "number"},
                        {"targetField": "round", "destinationType": "number"},
                    ],
                },
            },
            {
                "id": "groupBy",
                "options": {
                    "fields": {
                        "round": {"operation": "groupby", "aggregations": []},
                        "iteration": {"operation": "aggregate", "aggregations": ["min", "max"]},
                        "Value": {"operation": "aggregate", "aggregations": ["sum"]},
                    }
                },
            },
            {
                "id": "organize",
                "options": {
                    "excludeByName": {},
                    "indexByName": {},
                    "renameByName": {
                        "round": "Round",
                        "iteration (min)": "First iteration",
                        "iteration (max)": "Last iteration",
                        "Value (sum)": "Training episodes",
                    },
                },
            },
        ],
        "fieldConfig": {"defaults": {"decimals": 0, "custom": {"align": "auto"}}, "overrides": []},
        "options": {
            "showHeader": True,
            "cellHeight": "sm",
            "footer": {"show": False, "reducer": ["sum"], "fields": ""},
            "sortBy": [{"displayName": "Round", "desc": False}],
        },
    }
    p.append(rounds)
    y += 9
    p.append(
        per_iteration(
            43,
            "Episode duration per iteration",
            "Mean and max episode duration of all episodes (completed or not) per iteration.",
            grid(0, y, 24, 7),
            [
                (
                    "A",
                    per_iter(
                        "deepracer_iteration_episode_seconds", 'phase="training", stat="mean"'
                    ),
                    "mean (training)",
                    "blue",
                    "points",
                ),
                (
                    "B",
                    per_iter("deepracer_iteration_episode_seconds", 'phase="training", stat="max"'),
                    "max (training)",
                    "light-blue",
                    "points",
                ),
                (
                    "C",
                    per_iter(
                        "deepracer_iteration_episode_seconds", 'phase="evaluation", stat="mean"'
                    ),
                    "mean (evaluation)",
                    "red",
                    "points",
                ),
            ],
            unit="s",
            y_label="Duration",
        )
    )
    y += 7

    panels, y = model_panels(y)
    p.extend(panels)

    # --- Exporter / activity (wall time) -------------------------------------------------------
    p.append(row(50, "Activity and exporter health (wall time)", y))
    y += 1
    p.append(
        timeseries(
            51,
            "Iteration over time",
            "Training speed: master iteration and round over wall time.",
            grid(0, y, 8, 7),
            [
                target("A", f"max({m('deepracer_model_iteration')})", legend="iteration"),
                target("B", f"max({m('deepracer_model_round')})", legend="round"),
            ],
        )
    )
    p.append(
        timeseries(
            52,
            "Refresh errors",
            "Failed refreshes of this model by reason (not_found, "
            "access_denied, unreachable, timeout, ...).",
            grid(8, y, 8, 7),
            [
                target(
                    "A",
                    "sum by (reason) (increase("
                    f"{m('deepracer_exporter_refresh_errors_total')}[$__rate_interval]))",
                    legend="{{reason}}",
                )
            ],
            draw="bars",
            stack=True,
        )
    )
    p.append(
        timeseries(
            53,
            "Exporter requests",
            "Object GETs per second by result (downloaded or "
            "not_modified thanks to the ETag), downloaded bytes per second, refresh duration.",
            grid(16, y, 8, 7),
            [
                target(
                    "A",
                    "sum by (result) (rate("
                    f"{m('deepracer_exporter_object_requests_total')}[$__rate_interval]))",
                    legend="GET {{result}}/s",
                ),
                target(
                    "B",
                    "sum(rate("
                    f"{m('deepracer_exporter_downloaded_bytes_total')}[$__rate_interval]))",
                    legend="bytes/s",
                ),
                target(
                    "C",
                    f"max({m('deepracer_exporter_refresh_duration_seconds')})",
                    legend="refresh duration (s)",
                ),
            ],
        )
    )
    y += 7

    variables = [
        {
            "name": "model",
            "label": "Model",
            "type": "query",
            "datasource": DS,
            "definition": "label_values(deepracer_model_info, model)",
            "query": {
                "qryType": 1,
                "query": "label_values(deepracer_model_info, model)",
                "refId": "PrometheusVariableQueryEditor-VariableQuery",
            },
            "refresh": 2,
            "sort": 1,
            "multi": False,
            "includeAll": False,
            "current": {},
            "options": [],
            "hide": 0,
            "regex": "",
        }
    ]
    links = [
        {
            "title": "All models",
            "type": "link",
            "url": "/d/deepracer-overview",
            "icon": "dashboard",
            "keepTime": True,
            "includeVars": False,
            "asDropdown": False,
            "targetBlank": False,
            "tags": [],
            "tooltip": "",
        }
    ]
    return dashboard(
        "deepracer-training",
        "DeepRacer training",
        "One DeepRacer model: console reward graph, notebook progress charts, "
        "lap times, episode outcomes, exporter health.",
        p,
        variables,
        links,
    )


# ---------------------------------------------------------------------------------------------
# Overview dashboard: all models


def overview_dashboard() -> Json:
    p: list[Json] = []
    y = 0
    queries = [
        ("A", "max by (model) (deepracer_model_iteration)", "Iteration"),
        ("B", "max by (model) (deepracer_model_round)", "Round"),
        (
            "C",
            'min by (model) (deepracer_model_best_lap_seconds{phase="training"})',
            "Best lap (training)",
        ),
        (
            "D",
            'min by (model) (deepracer_model_best_lap_seconds{phase="evaluation"})',
            "Best lap (evaluation)",
        ),
        (
            "E",
            'max by (model) (deepracer_model_rolling_completion_ratio{phase="training"})',
            "Completion (training)",
        ),
        (
            "F",
            'max by (model) (deepracer_model_rolling_completion_ratio{phase="evaluation"})',
            "Completion (evaluation)",
        ),
        (
            "G",
            'max by (model) (deepracer_model_rolling_reward{phase="training"})',
            "Reward (training)",
        ),
        (
            "H",
            "time() - max by (model) (deepracer_model_last_update_timestamp_seconds > 0)",
            "Since update",
        ),
        (
            "I",
            f"(time() - max by (model) (deepracer_model_last_update_timestamp_seconds > 0) > bool "
            f"{STALL_SECONDS}) * on (model) (1 - max by (model) (deepracer_model_finished))",
            "Stalled",
        ),
        ("J", "max by (model) (deepracer_model_finished)", "Finished"),
        ("K", "min by (model) (deepracer_exporter_refresh_success)", "Refresh"),
        (
            "M",
            'max by (model) (deepracer_model_action_space{bound="speed_min"})',
            "Speed min",
        ),
        (
            "N",
            'max by (model) (deepracer_model_action_space{bound="speed_max"})',
            "Speed max",
        ),
        (
            "O",
            "min by (model) (deepracer_model_best_evaluation_lap_seconds)",
            "Best evaluated lap",
        ),
    ]
    # Action space type and number of actions are labels of an info metric: its frame brings them
    # as columns, joined to the others on `model` (its constant value is dropped).
    metadata = target(
        "L",
        "max by (model, action_space_type, action_count) (deepracer_model_metadata_info)",
        instant=True,
    )
    columns = ["model", "Value #A", "Value #B", "action_space_type", "action_count"]
    columns += [f"Value #{ref}" for ref in "MNCDO"] + [f"Value #{ref}" for ref in "EFGHIJK"]
    overrides = [
        override(
            "byName",
            "model",
            displayName="Model",
            links=[
                {
                    "title": "Open ${__data.fields.model} in DeepRacer training",
                    "url": "/d/deepracer-training/deepracer-training"
                    "?var-model=${__data.fields.model}&${__url_time_range}",
                    "targetBlank": False,
                }
            ],
        ),
        override("byName", "Value #C", unit="s", decimals=3),
        override("byName", "Value #D", unit="s", decimals=3),
        override("byName", "Value #E", unit="percentunit", decimals=1),
        override("byName", "Value #F", unit="percentunit", decimals=1),
        override("byName", "Value #G", decimals=1),
        override("byName", "Value #M", unit="velocityms", decimals=2),
        override("byName", "Value #N", unit="velocityms", decimals=2),
        override("byName", "Value #O", unit="s", decimals=3),
        override("byName", "action_space_type", displayName="Action space"),
        override("byName", "action_count", displayName="Actions"),
        override(
            "byName",
            "Value #H",
            unit="s",
            decimals=0,
            custom__cellOptions={"type": "color-text"},
            thresholds={
                "mode": "absolute",
                "steps": [
                    {"value": None, "color": "green"},
                    {"value": WARN_SECONDS, "color": "orange"},
                    {"value": STALL_SECONDS, "color": "red"},
                ],
            },
        ),
        override(
            "byName",
            "Value #I",
            custom__cellOptions={"type": "color-background"},
            mappings=value_map({"0": ("no", "green"), "1": ("STALLED", "red")}),
        ),
        override(
            "byName",
            "Value #J",
            mappings=value_map({"0": ("training", "blue"), "1": ("finished", "green")}),
        ),
        override(
            "byName",
            "Value #K",
            custom__cellOptions={"type": "color-background"},
            mappings=value_map({"0": ("FAILING", "red"), "1": ("OK", "green")}),
        ),
    ]
    for ref, _, title in queries:
        overrides.append(override("byName", f"Value #{ref}", displayName=title))
    # Iteration and round are integers.
    overrides[1:1] = [
        override("byName", "Value #A", decimals=0),
        override("byName", "Value #B", decimals=0),
    ]
    p.append(
        {
            "id": 1,
            "type": "table",
            "title": "Models",
            "description": "Every watched model side by side. Click a model to open its training "
            f"dashboard. Stalled: no new metrics for {STALL_SECONDS // 60} min and not "
            "finished. Completion and reward are rolling means at the latest "
            "iteration. Action space, actions (discrete) and speed range come from "
            "model_metadata.json; the best evaluated lap from the evaluation runs.",
            "pluginVersion": GRAFANA_VERSION,
            "datasource": DS,
            "gridPos": grid(0, y, 24, 9),
            "targets": [
                *(target(ref, expr, instant=True) for ref, expr, _ in queries),
                metadata,
            ],
            "transformations": join_tables(
                "model", [*(ref for ref, _, _ in queries), "L"], columns, {}
            ),
            "fieldConfig": {
                "defaults": {"custom": {"align": "auto", "cellOptions": {"type": "auto"}}},
                "overrides": overrides,
            },
            "options": {
                "showHeader": True,
                "cellHeight": "sm",
                "footer": {"show": False, "reducer": ["sum"], "fields": ""},
                "sortBy": [{"displayName": "Model", "desc": False}],
            },
        }
    )
    y += 9
    p.append(
        timeseries(
            2,
            "Rolling completion (training)",
            "Rolling mean completion of every model over wall time.",
            grid(0, y, 12, 8),
            [
                target(
                    "A",
                    'max by (model) (deepracer_model_rolling_completion_ratio{phase="training"})',
                    legend="{{model}}",
                )
            ],
            unit="percentunit",
        )
    )
    p.append(
        timeseries(
            3,
            "Iteration",
            "Master iteration of every model over wall time: a flat line is a model "
            "that is not training.",
            grid(12, y, 12, 8),
            [target("A", "max by (model) (deepracer_model_iteration)", legend="{{model}}")],
        )
    )
    y += 8
    p.append(
        timeseries(
            4,
            "Best lap (training)",
            "Fastest training lap of every model so far.",
            grid(0, y, 12, 8),
            [
                target(
                    "A",
                    'min by (model) (deepracer_model_best_lap_seconds{phase="training"})',
                    legend="{{model}}",
                )
            ],
            unit="s",
        )
    )
    p.append(
        alert_list(
            5,
            "Firing DeepRacer alerts",
            "Firing and pending alerts of all "
            "models (rules in prometheus/rules, evaluated by Prometheus).",
            grid(12, y, 12, 8),
            "",
        )
    )
    y += 8
    p.append(
        stat(
            6,
            "Models watched",
            "Models the exporter watches.",
            grid(0, y, 6, 4),
            [target("A", "max(deepracer_exporter_models)", instant=True)],
            decimals=0,
        )
    )
    p.append(
        stat(
            7,
            "Failing refreshes",
            "Models whose last refresh failed.",
            grid(6, y, 6, 4),
            [
                target(
                    "A", "count(deepracer_exporter_refresh_success == 0) or vector(0)", instant=True
                )
            ],
            decimals=0,
            thresholds=[(None, "green"), (1, "red")],
        )
    )
    p.append(
        stat(
            8,
            "Discovery",
            "Did the last listing of each `discover` entry succeed?",
            grid(12, y, 6, 4),
            [target("A", "min(deepracer_exporter_discovery_success) or vector(1)", instant=True)],
            mappings=value_map({"0": ("FAILING", "red"), "1": ("OK", "green")}),
        )
    )
    p.append(
        stat(
            9,
            "Exporter version",
            "deepracer-exporter version.",
            grid(18, y, 6, 4),
            [target("A", "max by (version) (deepracer_exporter_build_info)", instant=True)],
        )
    )
    p[-1]["fieldConfig"]["defaults"]["displayName"] = "${__field.labels.version}"
    p[-1]["options"]["textMode"] = "name"
    links = [
        {
            "title": "Training dashboard",
            "type": "link",
            "url": "/d/deepracer-training",
            "icon": "dashboard",
            "keepTime": True,
            "includeVars": False,
            "asDropdown": False,
            "targetBlank": False,
            "tags": [],
            "tooltip": "",
        }
    ]
    return dashboard(
        "deepracer-overview",
        "DeepRacer overview",
        "Every DeepRacer model the exporter watches, side by side.",
        p,
        [],
        links,
    )


DASHBOARDS = {
    "deepracer-training.json": training_dashboard,
    "deepracer-overview.json": overview_dashboard,
}


def render() -> dict[str, str]:
    """File name -> JSON text, exactly as committed."""
    return {name: json.dumps(build(), indent=2) + "\n" for name, build in DASHBOARDS.items()}


def main() -> int:
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    for name, text in render().items():
        (OUT_DIR / name).write_text(text)
        print(f"wrote {OUT_DIR / name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
