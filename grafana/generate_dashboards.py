#!/usr/bin/env python3
"""Generate the provisioned Grafana dashboards (grafana/dashboards/*.json).

The JSON is committed and is what Grafana provisions; this script, built on Grafana's typed
builders (grafana-foundation-sdk, Grafana 11 build; a development dependency), is its source.
After editing, run `python grafana/generate_dashboards.py` and commit both:
tests/test_dashboards.py fails when they differ.

Layout is computed: each section is a row followed by panels of given width and height that the
SDK flows left to right (each line fills the 24 grid columns); ids are numbered in that order.
Every panel and variable queries the `datasource` variable (defaulting to the provisioned uid), so
the JSON imports into any Grafana; `job` selects among several exporter scrape jobs.
Alert thresholds the dashboards show are read out of prometheus/rules/deepracer.yml, their one
place. Per-iteration charts use instant table queries of the default per-iteration series, so
their x axis is the iteration (a label turned into a number), not wall time.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from grafana_foundation_sdk.builders import barchart, stat, table, timeseries, trend, xychart
from grafana_foundation_sdk.builders import common as cb
from grafana_foundation_sdk.builders import dashboard as db
from grafana_foundation_sdk.builders import prometheus as pb
from grafana_foundation_sdk.builders import text as textpanel
from grafana_foundation_sdk.cog.builder import Builder
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import common as cm
from grafana_foundation_sdk.models import dashboard as dm
from grafana_foundation_sdk.models import prometheus as pm
from grafana_foundation_sdk.models import text as tm
from grafana_foundation_sdk.models import xychart as xm

ROOT = Path(__file__).resolve().parent.parent
OUT_DIR = ROOT / "grafana" / "dashboards"
RULES = ROOT / "prometheus" / "rules" / "deepracer.yml"
ALERTS_DOC = ROOT / "docs" / "alerts.md"
# Set on every panel: Grafana runs a panel's option migrations when it is missing or older.
GRAFANA_VERSION = "11.6.0"
DEFAULT_DATASOURCE_UID = "deepracer-prometheus"  # grafana/provisioning/datasources
DS = dm.DataSourceRef(type_val="prometheus", uid="${datasource}")
JOB = 'job=~"$job"'
TRAINING_UID = "deepracer-training"
OVERVIEW_UID = "deepracer-overview"
RUNBOOK_UID = "deepracer-runbook"
CONSOLE_CHART_TITLE = "Reward and completion (DeepRacer console)"
WARN_SECONDS = 300  # "Since last update" turns orange (dashboard only)
# The car acts 15 times per simulated second: a step every 1/15 s (66.7 ms), the target line.
STEP_TARGET_SECONDS = 1 / 15
STEP_TARGET_TEXT = "66.7 ms"
# Shown instead of "No data" where the cause of missing data is known.
NO_SIMTRACE = "No simtrace"
NO_WALL_CLOCK = "No simtrace wall_clock"
NO_POLICY = "No policy data"

STATUS_COLORS = {
    "lap_complete": "green",
    "off_track": "red",
    "crashed": "dark-red",
    "reversed": "yellow",
    "time_up": "light-yellow",
    "immobilized": "purple",
    "in_progress": "blue",
    "other": "text",
}
# One colour family per phase on every chart (the console's: training blue, evaluation orange),
# a shade per statistic; reward of the console chart is green. Nothing else is orange.
PHASE_COLORS = {"training": "blue", "evaluation": "orange"}
STAT_SHADES = {"mean": "", "median": "light-", "max": "dark-", "min": "semi-dark-"}


def stat_color(phase: str, stat: str) -> str:
    """The colour of one statistic of one phase: a shade of the phase's colour."""
    return STAT_SHADES[stat] + PHASE_COLORS[phase]

# Default per-iteration stats of reward and completion (DECISIONS.md), points of plotProgress.
PROGRESS_STATS = {"training": ("mean", "median", "max"), "evaluation": ("mean", "max")}
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

Json = dict[str, Any]
PanelBuilder = Builder[dm.Panel]


# --- thresholds: read out of the alert rules ----------------------------------------------------


@dataclass(frozen=True)
class Thresholds:
    stall_seconds: int  # DeepRacerTrainingStalled: no metrics write for longer than this
    stall_window_seconds: int  # ... and one seen within this window (older: finished)
    plateau_iterations: int  # DeepRacerProgressPlateau
    step_p95_seconds: float  # DeepRacerSimulatorSlow: latest iteration's p95 step over this
    step_mean_seconds: float  # ... or its mean step over this
    real_time_factor: float  # ... or its real-time factor under this


# alert -> (field, pattern with the number as group 1 and an optional unit as group 2)
RULE_NUMBERS = {
    "stall_seconds": ("DeepRacerTrainingStalled", r"_timestamp_seconds > 0\) > (\d+)()"),
    "stall_window_seconds": ("DeepRacerTrainingStalled", r"nonzero\[(\d+)([smhd])\]\) > 0"),
    "plateau_iterations": ("DeepRacerProgressPlateau", r"_iterations\{[^}]*\} >= (\d+)()"),
    "step_p95_seconds": ("DeepRacerSimulatorSlow", r"step_p95_seconds > ([\d.]+)()"),
    "step_mean_seconds": ("DeepRacerSimulatorSlow", r"step_mean_seconds > ([\d.]+)()"),
    "real_time_factor": ("DeepRacerSimulatorSlow", r"real_time_factor < ([\d.]+)()"),
}
SECONDS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def rule_thresholds(path: Path = RULES) -> Thresholds:
    """The numbers of the alert rules that the dashboards show too."""
    exprs = {
        rule["alert"]: rule["expr"]
        for group in yaml.safe_load(path.read_text())["groups"]
        for rule in group["rules"]
        if "alert" in rule
    }
    found: dict[str, Any] = {}
    for name, (alert, pattern) in RULE_NUMBERS.items():
        match = re.search(pattern, exprs[alert])
        if not match:
            raise ValueError(f"{path}: no {pattern!r} in {alert}; update RULE_NUMBERS")
        number = float(match.group(1)) if "." in match.group(1) else int(match.group(1))
        found[name] = number * SECONDS[match.group(2)]
    return Thresholds(**found)


# --- queries ---------------------------------------------------------------------------------


def sel(metric: str, *, per_model: bool = True, **labels: str) -> str:
    """`metric{model="$model", label="value", ..., job=~"$job"}`."""
    matchers = ['model="$model"'] if per_model else []
    matchers += [f'{k}="{v}"' for k, v in labels.items()]
    return f"{metric}{{{', '.join([*matchers, JOB])}}}"


def per_iter(metric: str, **labels: str) -> str:
    """One value per iteration, keeping `round` for the tooltip."""
    return f"max by (round, iteration) ({sel(metric, **labels)})"


def per_iter_unrounded(metric: str, **labels: str) -> str:
    """One value per iteration of a family without a `round` label (simtrace, the push)."""
    return f"max by (iteration) ({sel(metric, **labels)})"


def short_iterations() -> str:
    """(round, iteration) of the iterations with fewer training episodes than an iteration
    plays, while the model trains: the one being played (its values still move), or one a
    round ended early. PromQL cannot compare the `iteration` label with
    deepracer_model_iteration, hence the episode count."""
    return (f"(max by (round, iteration) ({sel('deepracer_iteration_episodes', phase='training')})"
            f" < on () group_left () max({sel('deepracer_model_episodes_per_iteration')}))"
            f" and on () (max({sel('deepracer_model_finished')}) == 0)")


def unfinished(expr: str) -> str:
    """`expr` at the unfinished iterations only."""
    return f"{expr} and on (round, iteration) ({short_iterations()})"


UNFINISHED_NAME = "unfinished iteration"
UNFINISHED_TEXT = ("The grey point is an unfinished iteration (fewer training episodes than an "
                   "iteration plays, usually the one being played): its mean still moves, and "
                   "no rolling mean counts it.")


def query(expr: str, ref: str, *, instant: bool = False, table_format: bool = True,
          legend: str = "__auto") -> pb.Dataquery:
    """A Prometheus target; instant ones are one table frame unless `table_format` is off."""
    q = pb.Dataquery().expr(expr).ref_id(ref).datasource(DS).editor_mode(pm.QueryEditorMode.CODE)
    if instant:
        fmt = pm.PromQueryFormat.TABLE if table_format else pm.PromQueryFormat.TIME_SERIES
        return q.instant().format(fmt)
    return q.range().format(pm.PromQueryFormat.TIME_SERIES).legend_format(legend)


REFS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"


def prop(name: str, value: Any) -> dm.DynamicConfigValue:
    built = value.build() if isinstance(value, Builder) else value
    return dm.DynamicConfigValue(id_val=name, value=built)


def props(**values: Any) -> list[dm.DynamicConfigValue]:
    """Override properties; `custom__axisLabel` stands for `custom.axisLabel`."""
    return [prop(k.replace("__", "."), v) for k, v in values.items()]


def fixed(color: str) -> Json:
    return {"mode": "fixed", "fixedColor": color}


def steps(*pairs: tuple[float | None, str]) -> db.ThresholdsConfig:
    return (
        db.ThresholdsConfig()
        .mode(dm.ThresholdsMode.ABSOLUTE)
        .steps([dm.Threshold(value=v, color=c) for v, c in pairs])
    )


def value_map(values: dict[str, tuple[str, str]]) -> list[dm.ValueMapping]:
    return [
        dm.ValueMap(
            options={
                k: dm.ValueMappingResult(text=text, color=color, index=i)
                for i, (k, (text, color)) in enumerate(values.items())
            }
        )
    ]


OK_FAILING = value_map({"0": ("FAILING", "red"), "1": ("OK", "green")})


def transform(tid: str, **options: Any) -> dm.DataTransformerConfig:
    return dm.DataTransformerConfig(id_val=tid, options=options)


def to_numbers(*fields: str) -> dm.DataTransformerConfig:
    conversions = [{"targetField": f, "destinationType": "number"} for f in fields]
    return transform("convertFieldType", fields={}, conversions=conversions)


SORT_BY_ITERATION = transform("sortBy", fields={}, sort=[{"field": "iteration"}])


def legend() -> cb.VizLegendOptions:
    return (
        cb.VizLegendOptions()
        .show_legend(True)
        .display_mode(cm.LegendDisplayMode.LIST)
        .placement(cm.LegendPlacement.BOTTOM)
        .calcs([])
    )


def tooltip(mode: cm.TooltipDisplayMode, order: cm.SortOrder = cm.SortOrder.NONE) -> Any:
    return cb.VizTooltipOptions().mode(mode).sort(order)


def common(panel: Any, title: str, description: str, size: tuple[int, int]) -> Any:
    """What every query panel has: title, description, the datasource variable, a grid size."""
    w, h = size
    return panel.title(title).description(description).datasource(DS).span(w).height(h)


# --- panel shapes ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Value:
    """One query of a stat panel or one column of a joined table."""

    expr: str
    name: str = ""  # display name / column title; "" keeps Grafana's
    props: dict[str, Any] = field(default_factory=dict)  # more override properties


VALUE_AND_NAME = cm.BigValueTextMode.VALUE_AND_NAME


def stat_panel(
    title: str,
    description: str,
    size: tuple[int, int],
    values: Sequence[Value],
    *,
    unit: str = "none",
    decimals: int | None = None,
    thresholds: db.ThresholdsConfig | None = None,
    mappings: list[dm.ValueMapping] | None = None,
    display: str = "",
    text_mode: cm.BigValueTextMode | None = None,
    no_value: str = "",
) -> stat.Panel:
    """Latest value of each query; one frame per series so each gets its own value.
    `no_value` replaces Grafana's "No data" where missing data has a known cause."""
    several = len(values) > 1 or bool(display)
    p = (
        common(stat.Panel(), title, description, size)
        .unit(unit)
        .color_scheme(db.FieldColor().mode(dm.FieldColorModeId.THRESHOLDS))
        .thresholds(thresholds or steps((None, "text")))
        .mappings(mappings or [])
        .reduce_options(cb.ReduceDataOptions().calcs(["lastNotNull"]).fields("").values(False))
        .orientation(cm.VizOrientation.AUTO)
        .text_mode(text_mode or (VALUE_AND_NAME if several else cm.BigValueTextMode.AUTO))
        .color_mode(cm.BigValueColorMode.VALUE)
        .graph_mode(cm.BigValueGraphMode.NONE)
        .justify_mode(cm.BigValueJustifyMode.AUTO)
        .wide_layout(True)
        .show_percent_change(False)
    )
    if decimals is not None:
        p = p.decimals(decimals)
    if display:
        p = p.display_name(display)
    if no_value:
        p = p.no_value(no_value)
    for ref, v in zip(REFS, values, strict=False):
        p = p.with_target(query(v.expr, ref, instant=True, table_format=False))
        extra = ({"displayName": v.name} if v.name else {}) | v.props
        if extra:
            p = p.override_by_query(ref, [prop(k, x) for k, x in extra.items()])
    return p


def by_phase(title: str, description: str, size: tuple[int, int], agg: str, metric: str,
             **options: Any) -> stat.Panel:
    """One value per phase of a model-level family, named by its phase."""
    expr = f"{agg} by (phase) ({sel(metric)})"
    return stat_panel(title, description, size, [Value(expr)],
                      display="${__field.labels.phase}", **options)


@dataclass(frozen=True)
class Series:
    """One line/point set of a per-iteration chart."""

    expr: str
    name: str
    color: str
    show: str = "points"  # points, lines or points+lines
    right: bool = False  # on the right axis (with the chart's right unit)


def iteration_chart(
    title: str,
    description: str,
    size: tuple[int, int],
    series: Sequence[Series],
    *,
    unit: str,
    y_label: str,
    right_unit: str = "none",
    right_label: str = "",
    right_range: tuple[float, float] | None = None,
    no_value: str = "",
) -> xychart.Panel:
    """XY chart with the iteration on the x axis; each expr gives one value per iteration and
    keeps `round` and `iteration`. The XY chart keys y scales by unit, hence right_unit."""
    p = (
        common(xychart.Panel(), title, description, size)
        .unit(unit)
        .color_scheme(db.FieldColor().mode(dm.FieldColorModeId.PALETTE_CLASSIC))
        .show(xm.XYShowMode.POINTS)
        .point_size(xychart.XychartFieldConfigPointSize().fixed(4))
        .point_shape(xm.PointShape.CIRCLE)
        .point_stroke_width(1)
        .line_width(2)
        .line_style(cb.LineStyle().fill("solid"))
        .hide_from(cb.HideSeriesConfig().legend(False).tooltip(False).viz(False))
        .axis_border_show(False)
        .axis_placement(cm.AxisPlacement.AUTO)
        .mapping(xm.SeriesMapping.AUTO)
        .series(
            [
                xychart.XYSeriesConfig()
                .x(xychart.XychartXYSeriesConfigX().matcher(xychart.MatcherConfig().id("byName").options("iteration")))
                .y(xychart.XychartXYSeriesConfigY().matcher(xychart.MatcherConfig().id("byType").options("number")))
            ]
        )
        .legend(legend())
        .tooltip(tooltip(cm.TooltipDisplayMode.SINGLE))
        .transformations([to_numbers("iteration"), SORT_BY_ITERATION])
        .override_by_name("iteration", props(custom__axisLabel="Iteration", decimals=0,
                                             unit="none"))
    )
    if no_value:
        p = p.no_value(no_value)
    for ref, s in zip(REFS, series, strict=False):
        side: dict[str, Any] = dict(unit=right_unit, custom__axisPlacement="right",
                                    custom__axisLabel=right_label)
        if right_range is not None:
            side.update(min=right_range[0], max=right_range[1])
        if not s.right:
            side = dict(custom__axisPlacement="left", custom__axisLabel=y_label)
        p = p.with_target(query(s.expr, ref, instant=True)).override_by_query(
            ref, props(displayName=s.name, color=fixed(s.color), custom__show=s.show, **side)
        )
    return p


def trend_chart(
    title: str,
    description: str,
    size: tuple[int, int],
    series: Sequence[Series],
    *,
    unit: str,
    y_label: str,
    lines: db.ThresholdsConfig,
    no_value: str = "",
) -> trend.Panel:
    """An iteration chart with reference lines (targets, alert thresholds) drawn as threshold
    lines, which the XY chart cannot draw: Grafana's trend panel, its queries' frames joined
    on the iteration. The base step of `lines` draws nothing; make it transparent."""
    rename = {f"Value #{ref}": s.name for ref, s in zip(REFS, series, strict=False)}
    p = (
        common(trend.Panel(), title, description, size)
        .unit(unit)
        .x_field("iteration")
        .color_scheme(db.FieldColor().mode(dm.FieldColorModeId.PALETTE_CLASSIC))
        .draw_style(cm.GraphDrawStyle.LINE)
        .line_width(2)
        .fill_opacity(0)
        .show_points(cm.VisibilityMode.ALWAYS)
        .point_size(5)
        .span_nulls(True)
        .axis_label(y_label)
        .axis_placement(cm.AxisPlacement.AUTO)
        .thresholds(lines)
        .thresholds_style(cb.GraphThresholdsStyleConfig().mode(cm.GraphThresholdsStyleMode.DASHED))
        .legend(legend())
        .tooltip(tooltip(cm.TooltipDisplayMode.MULTI))
        .transformations([
            transform("organize", excludeByName={"Time": True}, indexByName={}, renameByName={}),
            transform("joinByField", byField="iteration", mode="outer"),
            to_numbers("iteration"),
            SORT_BY_ITERATION,
            transform("organize", excludeByName={}, indexByName={}, renameByName=rename),
        ])
        .override_by_name("iteration", props(custom__axisLabel="Iteration", decimals=0,
                                             unit="none"))
    )
    if no_value:
        p = p.no_value(no_value)
    for ref, s in zip(REFS, series, strict=False):
        p = p.with_target(query(s.expr, ref, instant=True)).override_by_name(
            s.name, props(color=fixed(s.color)))
    return p


def timeseries_panel(
    title: str,
    description: str,
    size: tuple[int, int],
    targets: Sequence[tuple[str, str]],
    *,
    unit: str = "none",
    bars: bool = False,
    units: dict[str, str] | None = None,
) -> timeseries.Panel:
    """Wall-time chart of (expr, legend) targets; `units` sets a unit per refId."""
    p = (
        common(timeseries.Panel(), title, description, size)
        .unit(unit)
        .color_scheme(db.FieldColor().mode(dm.FieldColorModeId.PALETTE_CLASSIC))
        .draw_style(cm.GraphDrawStyle.BARS if bars else cm.GraphDrawStyle.LINE)
        .line_interpolation(cm.LineInterpolation.STEP_AFTER)
        .line_width(2)
        .fill_opacity(30 if bars else 0)
        .show_points(cm.VisibilityMode.NEVER)
        .span_nulls(False)
        .stacking(cb.StackingConfig().group("A")
                  .mode(cm.StackingMode.NORMAL if bars else cm.StackingMode.NONE))
        .axis_placement(cm.AxisPlacement.AUTO)
        .legend(legend())
        .tooltip(tooltip(cm.TooltipDisplayMode.MULTI))
    )
    for ref, (expr, legend_format) in zip(REFS, targets, strict=False):
        p = p.with_target(query(expr, ref, legend=legend_format))
        if units and ref in units:
            p = p.override_by_query(ref, props(unit=units[ref]))
    return p


def table_panel(title: str, description: str, size: tuple[int, int]) -> table.Panel:
    return (
        common(table.Panel(), title, description, size)
        .unit("none")
        .align(cm.FieldTextAlignment.AUTO)
        .cell_options(cm.TableAutoCellOptions())
        .show_header(True)
        .cell_height(cm.TableCellHeight.SM)
    )


def joined_table(
    title: str,
    description: str,
    size: tuple[int, int],
    key: str,
    columns: Sequence[Value],
    *,
    info: Sequence[tuple[str, dict[str, str]]] = (),
    order: Sequence[str] = (),
    sort_by: tuple[str, bool] | None = None,
) -> table.Panel:
    """One row per `key` value: instant queries outer-joined on that label.

    `columns` are number columns (titled by `Value.name`); `info` are (expr, {label: title}) info
    metrics whose labels become columns and whose constant value is dropped. Time is dropped
    from every frame first (organize works per frame), then the frames are joined on `key`.
    `order` places label columns (by original name) before the number columns.
    """
    p = table_panel(title, description, size)
    refs = list(REFS[: len(columns) + len(info)])
    rename: dict[str, str] = {}
    for ref, col in zip(refs, columns, strict=False):
        p = p.with_target(query(col.expr, ref, instant=True))
        rename[f"Value #{ref}"] = col.name
        if col.props:
            p = p.override_by_name(col.name, [prop(k, v) for k, v in col.props.items()])
    for ref, (expr, labels) in zip(refs[len(columns) :], info, strict=True):
        p = p.with_target(query(expr, ref, instant=True))
        rename.update(labels)
    numbers = [f"Value #{ref}" for ref in refs[: len(columns)]]
    names = [*order, *numbers]
    excluded = {n: True for n in ("Value", *(f"Value #{r}" for r in refs)) if n not in names}
    if key not in names:
        excluded[key] = True
    p = p.transformations(
        [
            transform("organize", excludeByName={"Time": True}, indexByName={}, renameByName={}),
            transform("joinByField", byField=key, mode="outer"),
            transform(
                "organize",
                excludeByName=excluded,
                indexByName={n: i for i, n in enumerate(names)},
                renameByName={n: t for n, t in rename.items() if n in names or n == key},
            ),
        ]
    )
    if sort_by:
        p = p.sort_by([cb.TableSortByFieldState().display_name(sort_by[0]).desc(sort_by[1])])
    return p


def alert_list(title: str, description: str, size: tuple[int, int], label_filter: str) -> Any:
    """Firing/pending DeepRacer alerts of every rules source (the panel's rules source is picked
    by datasource *name*, which differs between Grafanas, so none is named)."""
    w, h = size
    options = {
        "viewMode": "list",
        "groupMode": "default",
        "groupBy": [],
        "maxItems": 20,
        "sortOrder": 3,
        "dashboardAlerts": False,
        "alertName": "DeepRacer",
        "alertInstanceLabelFilter": label_filter,
        "datasource": "",
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
    }
    return (
        db.Panel().type("alertlist").title(title).description(description).span(w).height(h)
        .options(options)
    )


def text_panel(title: str, description: str, size: tuple[int, int], markdown: str) -> Any:
    """A note (no query): what a user must set up for the panels beside it."""
    w, h = size
    return (
        textpanel.Panel().title(title).description(description).span(w).height(h)
        .mode(tm.TextMode.MARKDOWN).content(markdown)
    )


# --- dashboards ------------------------------------------------------------------------------

Section = tuple[str, list[Any]]  # row title ("" for none) and its panels


def variables(*, per_model: bool) -> list[Any]:
    """`datasource` (any Prometheus, the provisioned one by default), `job` and maybe `model`."""
    out: list[Any] = [
        db.DatasourceVariable("datasource")
        .label("Data source")
        .type("prometheus")
        .current(dm.VariableOption(selected=True, text="Prometheus", value=DEFAULT_DATASOURCE_UID))
        .regex(""),
        db.QueryVariable("job")
        .label("Job")
        .description("Prometheus scrape jobs of deepracer-exporter (all by default).")
        .datasource(DS)
        .query(_variable_query("label_values(deepracer_exporter_build_info, job)"))
        .refresh(dm.VariableRefresh.ON_TIME_RANGE_CHANGED)
        .sort(dm.VariableSort.ALPHABETICAL_ASC)
        .multi(True)
        .include_all(True)
        .all_value(".+")
        .current(dm.VariableOption(selected=True, text="All", value="$__all")),
    ]
    if per_model:
        out.append(
            db.QueryVariable("model")
            .label("Model")
            .datasource(DS)
            .query(_variable_query(f"label_values(deepracer_model_info{{{JOB}}}, model)"))
            .refresh(dm.VariableRefresh.ON_TIME_RANGE_CHANGED)
            .sort(dm.VariableSort.ALPHABETICAL_ASC)
            .multi(False)
            .include_all(False)
        )
    return out


def _variable_query(text: str) -> Json:
    return {"qryType": 1, "query": text, "refId": "PrometheusVariableQuery"}


def dashboard(
    uid: str, title: str, description: str, sections: Sequence[Section], *, per_model: bool,
    link: tuple[str, str],
) -> dm.Dashboard:
    """Rows of panels laid out by the SDK, then numbered; every panel on this Grafana version."""
    board = (
        db.Dashboard(title)
        .uid(uid)
        .description(description)
        .tags(["deepracer"])
        .editable()
        .tooltip(dm.DashboardCursorSync.OFF)
        .refresh("30s")
        .time("now-6h", "now")
        .timezone("browser")
        .version(1)
        .annotation(
            db.AnnotationQuery()
            .name("Annotations & Alerts")
            .datasource(dm.DataSourceRef(type_val="grafana", uid="-- Grafana --"))
            .enable(True)
            .hide(True)
            .icon_color("rgba(0, 211, 255, 1)")
            .type("dashboard")
            .built_in(1)
        )
        .link(
            db.DashboardLink(link[0])
            .type(dm.DashboardLinkType.LINK)
            .url(link[1])
            .icon("dashboard")
            .keep_time(True)
            .include_vars(True)
            .as_dropdown(False)
            .target_blank(False)
            .tags([])
            .tooltip("")
        )
    )
    for v in variables(per_model=per_model):
        board = board.with_variable(v)
    for title_, panels in sections:
        if title_:
            board = board.with_row(db.Row(title_))
        for panel in panels:
            board = board.with_panel(panel)
    built = board.build()
    for number, panel in enumerate(built.panels or [], start=1):
        panel.id_val = number
        if isinstance(panel, dm.Panel):
            panel.plugin_version = GRAFANA_VERSION
    return built


# --- training dashboard: one model -------------------------------------------------------------


def status_section(t: Thresholds) -> Section:
    last_write = f"time() - max({sel('deepracer_model_last_update_timestamp_seconds')} > 0)"
    plateau_completion = ('deepracer_model_plateau_iterations{model="$model", '
                          f'phase="training", metric="completion", {JOB}}}')
    return "Status", [
        stat_panel(
            "Iteration",
            "Latest master iteration with training episodes (continues across rounds) and the "
            "current round.",
            (4, 4),
            [Value(f"max({sel('deepracer_model_iteration')})", "Iteration"),
             Value(f"max({sel('deepracer_model_round')})", "Round")],
            decimals=0,
        ),
        stat_panel(
            "Training episodes",
            "Training episodes of the model (all rounds, all outcomes), those of the latest "
            "iteration so far and how many an iteration plays (all workers): fewer so far means "
            "that iteration is still being played.",
            (4, 4),
            [Value(f"sum({sel('deepracer_model_episodes_total', phase='training')})", "Total"),
             Value(f"max({sel('deepracer_model_iteration_episodes')})", "This iteration"),
             Value(f"max({sel('deepracer_model_episodes_per_iteration')})", "Per iteration")],
            decimals=0,
        ),
        by_phase("Best lap", "Fastest completed lap over all iterations, per phase.", (4, 4),
                 "min", "deepracer_model_best_lap_seconds", unit="s", decimals=3),
        stat_panel(
            "Since last update",
            "Time since the newest TrainingMetrics object changed. While the model trains: "
            f"orange after {WARN_SECONDS // 60} min, red after {t.stall_seconds // 60} min (the "
            "DeepRacerTrainingStalled threshold: stalled or stopped). A finished model is not "
            "coloured: it is expected to stop writing.",
            (4, 4),
            [Value(f'label_replace({last_write}, "state", "training", "", "") unless on () '
                   f"(max({sel('deepracer_model_finished')}) == 1) or "
                   f'(label_replace({last_write}, "state", "finished", "", "") and on () '
                   f"(max({sel('deepracer_model_finished')}) == 1))")],
            unit="s", decimals=0, text_mode=cm.BigValueTextMode.VALUE,
            thresholds=steps((None, "green"), (WARN_SECONDS, "orange"), (t.stall_seconds, "red")),
        ).override_by_regexp(".*finished.*", props(thresholds=steps((None, "text")).build())),
        stat_panel(
            "Training state",
            "Finished when the latest round reached term_cond_max_episodes.",
            (4, 4),
            [Value(f"max({sel('deepracer_model_finished')})")],
            mappings=value_map({"0": ("Training", "blue"), "1": ("Finished", "green")}),
        ),
        stat_panel(
            "Exporter",
            "Did the exporter's last refresh of this model succeed (last good data is still "
            "served when it fails), and refresh errors in the dashboard time range.",
            (4, 4),
            [Value(f"min({sel('deepracer_exporter_refresh_success')})", "Refresh",
                   {"mappings": OK_FAILING}),
             Value(f"sum(increase({sel('deepracer_exporter_refresh_errors_total')}[$__range]))",
                   "Errors", {"thresholds": steps((None, "green"), (1, "orange"))})],
            decimals=0,
        ),
        by_phase("Rolling completion",
                 "Latest rolling mean (window rolling_window) of the per-iteration mean "
                 "completion.", (6, 4), "max", "deepracer_model_rolling_completion_ratio",
                 unit="percentunit", decimals=1,
                 thresholds=steps((None, "text"), (0.9, "green"))),
        by_phase("Rolling reward", "Latest rolling mean of the per-iteration mean reward.",
                 (6, 4), "max", "deepracer_model_rolling_reward", decimals=1),
        stat_panel(
            "Iterations without improvement",
            "Finished iterations since the rolling mean last reached a new maximum (a plateau). "
            "Training completion turns red from "
            f"{t.plateau_iterations}, the DeepRacerProgressPlateau threshold; the others have "
            "no alert behind them and are not coloured.",
            (6, 4),
            [Value(f"max({plateau_completion})",
                   "training completion"),
             Value(f"max by (phase, metric) ({sel('deepracer_model_plateau_iterations')}) unless "
                   "on (phase, metric) "
                   f"{plateau_completion}",
                   "${__field.labels.phase} ${__field.labels.metric}",
                   {"thresholds": steps((None, "text"))})],
            decimals=0,
            thresholds=steps((None, "green"), (t.plateau_iterations // 2, "orange"),
                             (t.plateau_iterations, "red")),
        ),
        alert_list(
            "Firing DeepRacer alerts",
            "Alerts Prometheus evaluates from prometheus/rules for this model (firing and "
            "pending).",
            (6, 4),
            '{model="$model"}',
        ),
    ]


def console_section() -> Section:
    return "Training progress", [
        iteration_chart(
            CONSOLE_CHART_TITLE,
            "The DeepRacer console's reward graph: average reward per training iteration (left "
            "axis) and average track completion of training and evaluation episodes (right "
            "axis, fixed at 0-100 %). Hover a point to see its round. "
            f"{UNFINISHED_TEXT}",
            (24, 9),
            [
                Series(per_iter("deepracer_iteration_reward", phase="training", stat="mean"),
                       "Average reward (training)", "green", "points+lines"),
                *(Series("100 * " + per_iter("deepracer_iteration_completion_ratio", phase=phase,
                                             stat="mean"),
                         f"Average completion ({phase})", PHASE_COLORS[phase], "points+lines",
                         right=True)
                  for phase in ("training", "evaluation")),
                Series(unfinished(per_iter("deepracer_iteration_reward", phase="training",
                                           stat="mean")),
                       UNFINISHED_NAME, "text", "points"),
            ],
            unit="none", y_label="Reward", right_unit="percent", right_label="Completion",
            right_range=(0, 100),
        )
    ]


def progress_section() -> Section:
    """deepracer-utils plotProgress: the default stats as points, the rolling mean as a line."""
    charts = []
    for metric, label, unit in (("completion_ratio", "Completion", "percentunit"),
                                ("reward", "Reward", "none")):
        for phase, stats in PROGRESS_STATS.items():
            points = [Series(per_iter(f"deepracer_iteration_{metric}", phase=phase, stat=s), s,
                             stat_color(phase, s)) for s in stats]
            rolling = per_iter(f"deepracer_iteration_rolling_{metric}", phase=phase, stat="mean")
            charts.append(
                iteration_chart(
                    f"{label} per iteration ({phase})",
                    f"{label} of {phase} episodes per iteration: {', '.join(stats)} as points, "
                    "the rolling average of the mean (window rolling_window) as a line, like "
                    "deepracer-utils plotProgress. The iteration being played has no rolling "
                    "value yet: its mean still moves.",
                    (12, 8),
                    [*points, Series(rolling, "mean (rolling)", stat_color(phase, "mean"),
                                     "lines")],
                    unit=unit,
                    y_label=label,
                )
            )
    return "Progress per iteration (notebook plotProgress)", charts


def laps_section() -> Section:
    laps = [
        Series(per_iter("deepracer_iteration_lap_seconds", phase=phase, stat=st),
               f"{'best' if st == 'min' else 'mean'} lap ({phase})", color, show)
        for phase in ("training", "evaluation")
        for st, color, show in (("min", stat_color(phase, "mean"), "points+lines"),
                                ("mean", stat_color(phase, "median"), "points"))
    ]
    columns = {"phase": "Phase", "rank": "Rank", "Value": "Lap time", "round": "Round",
               "iteration": "Iteration", "episode": "Episode", "worker": "Worker"}
    fastest = (
        table_panel(
            "Fastest laps",
            "The top_laps fastest completed laps (rank 1 = fastest) per phase, with where to "
            "find them in the logs: round, iteration, episode, worker.",
            (12, 9),
        )
        .with_target(query("max by (phase, rank, round, iteration, episode, worker) "
                           f"({sel('deepracer_best_lap_seconds')})", "A", instant=True))
        .transformations([
            to_numbers("rank", "round", "iteration", "episode", "worker"),
            transform("organize", excludeByName={"Time": True}, renameByName=columns,
                      indexByName={name: i for i, name in enumerate(columns)}),
        ])
        .override_by_name("Lap time", props(unit="s", decimals=3))
        .sort_by([cb.TableSortByFieldState().display_name("Lap time").desc(False)])
    )
    completed = [
        Series(per_iter("deepracer_iteration_completed_ratio", phase=phase), phase,
               PHASE_COLORS[phase], "points+lines")
        for phase in ("training", "evaluation")
    ]
    return "Lap times", [
        iteration_chart(
            "Lap time per iteration",
            "Best (fastest) and mean lap time of the completed laps of each iteration. "
            "Iterations without a completed lap have no point.",
            (12, 9), laps, unit="s", y_label="Lap time",
        ),
        fastest,
        timeseries_panel(
            "Best lap progression",
            "Fastest lap so far (a running minimum) over wall time, per phase.",
            (12, 7),
            [(f"min by (phase) ({sel('deepracer_model_best_lap_seconds')})", "{{phase}}")],
            unit="s",
        ),
        iteration_chart(
            "Completed laps per iteration",
            "Share of episodes of each iteration that completed a lap.",
            (12, 7), completed, unit="percentunit", y_label="Completed laps",
        ),
    ]


def evaluation_section(t: Thresholds) -> Section:
    """Evaluation runs (metrics/evaluation/*.json): one table row per run, and the best lap."""
    ev = "deepracer_evaluation_"
    lap = {"unit": "s", "decimals": 3}

    def step(limit: float) -> Json:
        return {"unit": "s", "decimals": 1, "noValue": NO_SIMTRACE,
                "custom.cellOptions": {"type": "color-text"},
                "thresholds": steps((None, "green"), (limit, "red"))}

    columns = [
        Value(f"1000 * max by (run) ({sel(ev + 'timestamp_seconds')})", "Started",
              {"unit": "dateTimeAsIso"}),
        Value(f"max by (run) ({sel(ev + 'trials')})", "Trials", {"decimals": 0}),
        Value(f"max by (run) ({sel(ev + 'completed_laps')})", "Completed laps", {"decimals": 0}),
        Value(f"max by (run) ({sel(ev + 'completion_ratio')})", "Completion",
              {"unit": "percentunit", "decimals": 1, "custom.cellOptions": {"type": "color-text"},
               "thresholds": steps((None, "text"), (1, "green"))}),
        Value(f"max by (run) ({sel(ev + 'lap_seconds', stat='mean')})", "Mean lap", lap),
        Value(f"max by (run) ({sel(ev + 'lap_seconds', stat='min')})", "Best lap", lap),
        *(Value(f"sum by (run) ({sel(ev + 'resets', reason=reason)})", title, {"decimals": 0})
          for reason, title in RESET_REASONS.items()),
        Value(f"max by (run) ({sel(ev + 'step_seconds', stat='mean')})", "Mean step",
              step(t.step_mean_seconds)),
        Value(f"max by (run) ({sel(ev + 'step_seconds', stat='p95')})", "p95 step",
              step(t.step_p95_seconds)),
        Value(f"max by (run) ({sel(ev + 'real_time_factor')})", "Real-time factor",
              {"decimals": 2, "noValue": NO_WALL_CLOCK,
               "custom.cellOptions": {"type": "color-text"},
               "thresholds": steps((None, "red"), (t.real_time_factor, "green"))}),
    ]
    return "Evaluation runs", [
        joined_table(
            "Evaluation runs",
            "One row per evaluation run (metrics/evaluation/*.json, the latest "
            "max_evaluation_runs): start time (from the file name: deepracer-for-cloud writes "
            "its host's local time and no zone, so the time is shown as written, as if UTC; "
            "console and DeepRacer-on-AWS names are UTC), trials, completed laps, mean "
            "completion, mean and best lap time of the completed laps (the simulator's elapsed "
            "time: it includes time lost to resets and off-track penalties), resets by cause, "
            "and the simulator's step time (mean, p95; "
            f"target {STEP_TARGET_TEXT}) and real-time factor during the run, from its simtrace "
            f"('{NO_SIMTRACE}' where the run has none; red past the DeepRacerSimulatorSlow "
            "thresholds: then the lap times are not what the car would drive). Newest first.",
            (24, 8), "run", columns, order=["run"], sort_by=("Run", True),
        ).override_by_name("run", props(displayName="Run")),
        stat_panel(
            "Best evaluated lap",
            "Fastest completed lap over all evaluation runs (not the evaluation episodes during "
            "training: those are under Best lap).",
            (12, 4),
            [Value(f"min({sel('deepracer_model_best_evaluation_lap_seconds')})")],
            unit="s", decimals=3,
        ),
        stat_panel(
            "Evaluation runs found",
            "Evaluation runs found for this model, all rounds (the table shows the latest "
            "max_evaluation_runs).",
            (12, 4),
            [Value(f"max({sel('deepracer_evaluation_runs')})")],
            decimals=0,
        ),
    ]


def outcomes_section() -> Section:
    outcomes = (
        common(barchart.Panel(), "Training episode outcomes per iteration",
               "How each iteration's training episodes ended, stacked: lap complete, off track, "
               "crashed, reversed, time up, ...", (16, 9))
        .unit("none").decimals(0)
        .color_scheme(db.FieldColor().mode(dm.FieldColorModeId.PALETTE_CLASSIC))
        .with_target(query("sum by (iteration, status) "
                           f"({sel('deepracer_iteration_status_episodes', phase='training')})",
                           "A", instant=True))
        .transformations([
            transform("groupingToMatrix", columnField="status", rowField="iteration",
                      valueField="Value", emptyValue="zero"),
            transform("organize", renameByName={"iteration\\status": "iteration"},
                      excludeByName={}, indexByName={}),
            to_numbers("iteration"),
            SORT_BY_ITERATION,
        ])
        .fill_opacity(80).line_width(0).gradient_mode(cm.GraphGradientMode.NONE)
        .axis_placement(cm.AxisPlacement.AUTO).axis_label("Episodes")
        .x_field("iteration").orientation(cm.VizOrientation.VERTICAL)
        .stacking(cm.StackingMode.NORMAL).show_value(cm.VisibilityMode.NEVER)
        .group_width(0.9).bar_width(0.97).bar_radius(0).x_tick_label_rotation(0)
        .x_tick_label_spacing(100).full_highlight(False)
        .legend(legend()).tooltip(tooltip(cm.TooltipDisplayMode.MULTI, cm.SortOrder.DESCENDING))
    )
    for status, color in STATUS_COLORS.items():
        outcomes = outcomes.override_by_name(status, props(color=fixed(color)))
    rounds = (
        table_panel("Rounds", "Round boundaries: first and last master iteration and training "
                    "episodes of each round (a cloned model continues its parent's iteration "
                    "numbers).", (8, 9))
        .decimals(0)
        .with_target(query(per_iter("deepracer_iteration_episodes", phase="training"), "A",
                           instant=True))
        .transformations([
            to_numbers("iteration", "round"),
            transform("groupBy", fields={
                "round": {"operation": "groupby", "aggregations": []},
                "iteration": {"operation": "aggregate", "aggregations": ["min", "max"]},
                "Value": {"operation": "aggregate", "aggregations": ["sum"]},
            }),
            transform("organize", excludeByName={}, indexByName={}, renameByName={
                "round": "Round", "iteration (min)": "First iteration",
                "iteration (max)": "Last iteration", "Value (sum)": "Training episodes",
            }),
        ])
        .sort_by([cb.TableSortByFieldState().display_name("Round").desc(False)])
    )
    return "Episode outcomes", [
        outcomes,
        rounds,
        iteration_chart(
            "Episode duration per iteration",
            "Mean duration of the training episodes (completed or not) of each iteration.",
            (24, 7),
            [Series(per_iter("deepracer_iteration_episode_seconds", phase="training", stat="mean"),
                    "mean (training)", "blue")],
            unit="s", y_label="Duration",
        ),
    ]


def simulator_section(t: Thresholds) -> Section:
    """Simulator health from simtrace (issue 13): step time against the 15 Hz target, the
    real-time factor and where an iteration's wall-clock time goes. The alert's thresholds are
    drawn from the rules file."""
    step = "deepracer_iteration_step_seconds"
    rtf = per_iter_unrounded("deepracer_iteration_real_time_factor")
    training = per_iter_unrounded("deepracer_iteration_training_seconds")
    policy = per_iter_unrounded("deepracer_iteration_policy_seconds")
    p95_ms, mean_ms = f"{1000 * t.step_p95_seconds:g} ms", f"{1000 * t.step_mean_seconds:g} ms"
    missing = (f"'{NO_SIMTRACE}': the model has no simtrace files (older layouts, console "
               "exports without them) or is idle (history_max_age).")
    wall_clock = ("Only from simulators that write simtrace's wall_clock column "
                  f"('{NO_WALL_CLOCK}' otherwise).")
    return "Simulator (simtrace)", [
        trend_chart(
            "Step time per iteration",
            "Simulated time between two steps of an episode, mean and p95 of each iteration "
            "(simtrace, all workers merged). The car should act 15 times per simulated second: "
            f"the green dashed line is that target, {STEP_TARGET_TEXT} (1/15 s). The red and "
            f"dark red dashed lines are the DeepRacerSimulatorSlow thresholds: p95 over {p95_ms} "
            f"or mean over {mean_ms} (the log-analysis notebook's limits) for 30 minutes. "
            f"{missing}",
            (16, 8),
            [Series(per_iter_unrounded(step, stat="mean"), "mean", "blue"),
             Series(per_iter_unrounded(step, stat="p95"), "p95", "purple")],
            unit="s", y_label="Step time", no_value=NO_SIMTRACE,
            lines=steps((None, "transparent"), (STEP_TARGET_SECONDS, "green"),
                        (t.step_mean_seconds, "dark-red"), (t.step_p95_seconds, "red")),
        ),
        stat_panel(
            "Step time (latest iteration)",
            "p95 and mean step time of the latest iteration with simtrace, and that iteration. "
            f"Red over {p95_ms} (p95) or {mean_ms} (mean), the DeepRacerSimulatorSlow "
            f"thresholds; the target is {STEP_TARGET_TEXT}. {missing}",
            (4, 8),
            [Value(f"max({sel('deepracer_model_step_p95_seconds')})", "p95",
                   {"decimals": 1,
                    "thresholds": steps((None, "green"), (t.step_p95_seconds, "red"))}),
             Value(f"max({sel('deepracer_model_step_mean_seconds')})", "mean",
                   {"decimals": 1,
                    "thresholds": steps((None, "green"), (t.step_mean_seconds, "red"))}),
             Value(f"max({sel('deepracer_model_simtrace_iteration')})", "iteration",
                   {"unit": "none", "decimals": 0})],
            unit="s", no_value=NO_SIMTRACE,
        ),
        stat_panel(
            "Real-time factor (latest iteration)",
            "Simulated seconds per wall-clock second in the latest iteration with simtrace (mean "
            "over the workers): 1 is real time. Red under "
            f"{t.real_time_factor:g}, the DeepRacerSimulatorSlow threshold: the host cannot keep "
            f"up. {wall_clock}",
            (4, 8),
            [Value(f"max({sel('deepracer_model_real_time_factor')})")],
            decimals=2, no_value=NO_WALL_CLOCK,
            thresholds=steps((None, "red"), (t.real_time_factor, "green")),
        ),
        trend_chart(
            "Real-time factor per iteration",
            "Simulated seconds per wall-clock second of each iteration (mean over the workers). "
            "The green dashed line is real time (1); under the red one "
            f"({t.real_time_factor:g}, the DeepRacerSimulatorSlow threshold) the host cannot keep "
            f"up and training crawls. {wall_clock}",
            (12, 8),
            [Series(rtf, "real-time factor", "blue")],
            unit="none", y_label="Real-time factor", no_value=NO_WALL_CLOCK,
            lines=steps((None, "transparent"), (t.real_time_factor, "red"), (1, "green")),
        ),
        iteration_chart(
            "Training and policy time per iteration",
            "Where an iteration's wall-clock time goes (worker 0's simtrace): simulating the "
            "training episodes, then the trainer updating the policy (and the evaluation "
            "episodes meanwhile) until the next iteration starts; the latest iteration has no "
            "policy time yet. Right axis: training time over policy time. A falling ratio means "
            "the policy update (trainer CPU/GPU, batch size, epochs) is what makes training slow. "
            f"{wall_clock}",
            (12, 8),
            [Series(training, "training (simulation)", "blue", "points+lines"),
             Series(policy, "policy update + evaluation", "orange", "points+lines"),
             Series(f"{training} / {policy}", "training / policy", "purple", "points",
                    right=True)],
            unit="s", y_label="Wall-clock time", right_unit="short",
            right_label="Training / policy", no_value=NO_WALL_CLOCK,
        ),
    ]


def analysis_section() -> Section:
    """Training analysis from simtrace (issue 28), as deepracer-utils' analysis notebook shows it
    after the fact: projected lap time, speed and distance per iteration, the latest actions."""
    projected = "deepracer_iteration_projected_lap_seconds"
    speed = per_iter_unrounded("deepracer_iteration_speed_meters_per_second")
    distance = per_iter_unrounded("deepracer_iteration_distance_meters")
    missing = (f"'{NO_SIMTRACE}': the model has no simtrace files (older layouts, console "
               "exports without them) or is idle (history_max_age).")
    actions = (
        common(barchart.Panel(), "Action usage (latest iteration)",
               "Share of the latest simtrace iteration's steps taken with each action, named "
               "'steering angle (degrees) | speed (m/s)' from model_metadata.json (a continuous "
               "action space: steering x speed cells). One bar near 100 % means the policy "
               "collapsed onto one action; the model page shows how the shares change over "
               f"iterations. {missing}", (8, 8))
        .unit("percentunit").decimals(0).min(0).max(1).no_value(NO_SIMTRACE)
        .color_scheme(db.FieldColor().mode(dm.FieldColorModeId.FIXED).fixed_color("blue"))
        .with_target(query("label_join(max by (steering_angle, speed) "
                           f"({sel('deepracer_model_action_ratio')}), "
                           '"cell", " | ", "steering_angle", "speed")', "A", instant=True))
        .transformations([
            transform("organize", excludeByName={"Time": True, "steering_angle": True,
                                                 "speed": True},
                      indexByName={}, renameByName={"cell": "steering | speed",
                                                    "Value": "share"}),
        ])
        .x_field("steering | speed")
        .fill_opacity(80).line_width(0).gradient_mode(cm.GraphGradientMode.NONE)
        .axis_placement(cm.AxisPlacement.AUTO).axis_label("Share of steps")
        .orientation(cm.VizOrientation.HORIZONTAL).show_value(cm.VisibilityMode.AUTO)
        .legend(legend()).tooltip(tooltip(cm.TooltipDisplayMode.SINGLE))
    )
    return "Training analysis (simtrace)", [
        iteration_chart(
            "Projected lap time per iteration",
            "Each training episode's time scaled to a full lap (time x 100 / progress, "
            "simulation_agg's time_if_complete): the fastest and the median episode of each "
            "iteration. A lap time to expect before laps complete; falling means the car gets "
            f"faster where it drives. {missing}",
            (8, 8),
            [Series(per_iter_unrounded(projected, stat="min"), "fastest episode", "green",
                    "points+lines"),
             Series(per_iter_unrounded(projected, stat="median"), "median episode", "blue",
                    "points+lines")],
            unit="s", y_label="Projected lap time", no_value=NO_SIMTRACE,
        ),
        iteration_chart(
            "Speed and distance per iteration",
            "Mean speed decision of the iteration's training episodes (left) and the distance "
            "an episode drove (right). Speed rising while completion holds: the car learns to "
            f"go faster. {missing}",
            (8, 8),
            [Series(speed, "mean speed", "blue", "points+lines"),
             Series(distance, "distance per episode", "purple", "points+lines", right=True)],
            unit="velocityms", y_label="Speed", right_unit="lengthm", right_label="Distance",
            no_value=NO_SIMTRACE,
        ),
        actions,
    ]


POLICY_NOTE = f"""Entropy, KL divergence and the surrogate loss never reach S3: the trainer prints
them (`Policy training>` lines). Where the exporter takes them from:

- **deepracer-for-cloud, any version**: the SageMaker container's log, through the Docker socket
  (mounted read-only; the DRfC compose variant does both):

```yaml
docker:
  socket: /var/run/docker.sock
```

- **DRfC with simapp 5.3.x**: also its UDP push, with `telegraf: {{listen: "0.0.0.0:8092"}}` and
  `DR_TELEGRAF_HOST`, `DR_TELEGRAF_PORT=8092` in DRfC's `system.env` (simapp 6 pushes none).
- **Console or DeepRacer on AWS logs downloaded**: nothing to set; the export's training log is
  read.
- **DeepRacer on AWS while it trains**: `cloudwatch: {{log_group: ...}}`.

Which applies to which version: docs/compose.md. Until data arrives the panels show
"{NO_POLICY}"."""


def policy_section() -> Section:
    """Policy training from the trainer's output (issues 17, 25): entropy against iteration
    beside reward, the latest epoch's figures, and where the figures come from."""
    entropy = per_iter_unrounded("deepracer_iteration_policy_entropy")
    reward = per_iter("deepracer_iteration_reward", phase="training", stat="mean")
    latest = [("Entropy", "deepracer_policy_entropy"),
              ("KL divergence", "deepracer_policy_kl_divergence"),
              ("Surrogate loss", "deepracer_policy_surrogate_loss")]
    return "Policy training (trainer)", [
        iteration_chart(
            "Policy entropy per iteration",
            "Mean entropy of the policy update after each training iteration (the trainer's "
            "epochs), and the average training reward of the same iterations "
            "(right axis). Entropy should fall steadily while the policy learns; a collapse to "
            "near 0 early, or a rise, means trouble (learning rate, beta_entropy). "
            f"'{NO_POLICY}': no trainer log or push reaches the exporter for this model (see the "
            "note).",
            (12, 8),
            [Series(entropy, "entropy", "purple", "points+lines"),
             Series(f"{reward} and on (iteration) {entropy}", "Average reward (training)",
                    "green", "points+lines", right=True)],
            unit="none", y_label="Entropy", right_unit="short", right_label="Reward",
            no_value=NO_POLICY,
        ),
        stat_panel(
            "Policy (latest epoch)",
            "Entropy, KL divergence between the old and the new policy, and PPO surrogate loss "
            "of the latest policy-training epoch the trainer printed or pushed, and how long ago "
            f"it arrived. '{NO_POLICY}': see the note.",
            (6, 8),
            [*(Value(f"max({sel(metric)})", title) for title, metric in latest),
             Value(f"time() - max({sel('deepracer_policy_last_epoch_timestamp_seconds')})",
                   "received ago", {"unit": "s", "decimals": 0})],
            no_value=NO_POLICY,
        ),
        text_panel(
            "Policy metrics: where they come from",
            "Which source gives the trainer's policy figures for each kind of DeepRacer training.",
            (6, 8), POLICY_NOTE,
        ),
    ]


def model_section() -> Section:
    """model_metadata.json, action space, key hyperparameters and checkpoints of the model."""
    meta = ", ".join(METADATA_COLUMNS)
    hinfo = ", ".join(HYPERPARAMETER_INFO_COLUMNS)

    def bounds(title: str, kind: str, unit: str, description: str) -> stat.Panel:
        return stat_panel(
            title, description + " From the action space in model_metadata.json.", (4, 4),
            [Value(f"max({sel('deepracer_model_action_space', bound=f'{kind}_{b}')})", b)
             for b in ("min", "max")],
            unit=unit,
        )

    return "Model: metadata, hyperparameters, checkpoints", [
        joined_table(
            "Model",
            "model/model_metadata.json of the latest round (action space type, number of "
            "discrete actions, sensors, network, training algorithm, simapp version) and the "
            "text hyperparameters.",
            (24, 4), "model", [],
            info=[(f"max by (model, {meta}) ({sel('deepracer_model_metadata_info')})",
                   METADATA_COLUMNS),
                  (f"max by (model, {hinfo}) ({sel('deepracer_model_hyperparameters_info')})",
                   HYPERPARAMETER_INFO_COLUMNS)],
            order=[*METADATA_COLUMNS, *HYPERPARAMETER_INFO_COLUMNS],
        ),
        bounds("Speed range", "speed", "velocityms", "Slowest and fastest action speed, m/s."),
        bounds("Steering range", "steering_angle", "degree", "Steering angle range, degrees."),
        stat_panel(
            "Hyperparameters",
            "Key numeric hyperparameters of the latest round (ip/hyperparameters.json): "
            + ", ".join(KEY_HYPERPARAMETERS) + ".",
            (12, 4),
            [Value(f"max({sel('deepracer_model_hyperparameter', name=name)})", title,
                   {} if decimals is None else {"decimals": decimals})
             for name, (title, decimals) in KEY_HYPERPARAMETERS.items()],
        ),
        stat_panel(
            "Checkpoints",
            "Last and best checkpoint number in model/deepracer_checkpoints.json, and the time "
            "since the trainer last saved a checkpoint (the file's LastModified).",
            (4, 4),
            [Value(f"max by (kind) ({sel('deepracer_model_checkpoint')})",
                   "${__field.labels.kind}"),
             Value(f"time() - max({sel('deepracer_model_checkpoint_timestamp_seconds')})",
                   "saved ago", {"unit": "s"})],
            decimals=0,
        ),
    ]


def activity_section() -> Section:
    return "Activity and exporter health (wall time)", [
        timeseries_panel(
            "Iteration over time",
            "Training speed: master iteration and round over wall time.",
            (8, 7),
            [(f"max({sel('deepracer_model_iteration')})", "iteration"),
             (f"max({sel('deepracer_model_round')})", "round")],
        ),
        timeseries_panel(
            "Refresh errors",
            "Failed refreshes of this model by reason (not_found, access_denied, unreachable, "
            "timeout, ...).",
            (8, 7),
            [("sum by (reason) (increase("
              f"{sel('deepracer_exporter_refresh_errors_total')}[$__rate_interval]))",
              "{{reason}}")],
            bars=True,
        ),
        timeseries_panel(
            "Exporter requests",
            "Object GETs per second by result: downloaded, tail (a grown object read from "
            "where it was), or not_modified thanks to the ETag.",
            (8, 7),
            [("sum by (result) (rate("
              f"{sel('deepracer_exporter_object_requests_total')}[$__rate_interval]))",
              "GET {{result}}")],
            unit="reqps",
        ),
        timeseries_panel(
            "Exporter downloads",
            "Bytes per second the exporter downloads for this model.",
            (12, 7),
            [(f"sum(rate({sel('deepracer_exporter_downloaded_bytes_total')}[$__rate_interval]))",
              "downloaded")],
            unit="Bps",
        ),
        timeseries_panel(
            "Refresh duration",
            "How long the exporter's latest refresh of this model took.",
            (12, 7),
            [(f"max({sel('deepracer_exporter_refresh_duration_seconds')})", "refresh duration")],
            unit="s",
        ),
    ]


def training_dashboard(t: Thresholds) -> dm.Dashboard:
    return dashboard(
        TRAINING_UID,
        "DeepRacer training",
        "One DeepRacer model: console reward graph, notebook progress charts, lap times, "
        "episode outcomes, exporter health.",
        [status_section(t), console_section(), policy_section(), progress_section(),
         laps_section(), evaluation_section(t), outcomes_section(), simulator_section(t),
         analysis_section(),
         model_section(), activity_section()],
        per_model=True,
        link=("All models", f"/d/{OVERVIEW_UID}"),
    )


# --- overview dashboard: all models ------------------------------------------------------------


def overview_dashboard(t: Thresholds) -> dm.Dashboard:
    """Current-state families only, so idle models (no per-iteration history) are listed too."""

    def by_model(agg: str, metric: str, **labels: str) -> str:
        return f"{agg} by (model) ({sel(metric, per_model=False, **labels)})"

    since = f"time() - ({by_model('max', 'deepracer_model_last_update_timestamp_seconds')} > 0)"
    not_finished = f"(1 - {by_model('max', 'deepracer_model_finished')})"
    seconds = {"unit": "s", "decimals": 3}
    ratio = {"unit": "percentunit", "decimals": 1}
    speed = {"unit": "velocityms", "decimals": 2}
    def col(agg: str, metric: str, title: str, extra: Json, **labels: str) -> Value:
        return Value(by_model(agg, metric, **labels), title, extra)

    rolling = "deepracer_model_rolling_completion_ratio"
    best = "deepracer_model_best_lap_seconds"
    columns = [
        col("max", "deepracer_model_iteration", "Iteration", {"decimals": 0}),
        col("max", "deepracer_model_round", "Round", {"decimals": 0}),
        *(col("max", "deepracer_model_action_space", f"Speed {b}", speed, bound=f"speed_{b}")
          for b in ("min", "max")),
        *(col("min", best, f"Best lap ({phase})", seconds, phase=phase)
          for phase in ("training", "evaluation")),
        col("min", "deepracer_model_best_evaluation_lap_seconds", "Best evaluated lap", seconds),
        *(col("max", rolling, f"Completion ({phase})", ratio, phase=phase)
          for phase in ("training", "evaluation")),
        col("max", "deepracer_model_rolling_reward", "Reward (training)", {"decimals": 1},
            phase="training"),
        Value(since, "Since update", {"unit": "s", "decimals": 0}),
        Value(f"({since} > bool {t.stall_seconds}) * ({since} <= bool {t.stall_window_seconds})"
              f" * on (model) {not_finished}", "Stalled",
              {"custom.cellOptions": {"type": "color-background"},
               "mappings": value_map({"0": ("no", "green"), "1": ("STALLED", "red")})}),
        Value(by_model("max", "deepracer_model_finished"), "Finished",
              {"mappings": value_map({"0": ("training", "blue"), "1": ("finished", "green")})}),
        Value(by_model("min", "deepracer_exporter_refresh_success"), "Refresh",
              {"custom.cellOptions": {"type": "color-background"}, "mappings": OK_FAILING}),
    ]
    info = [
        (by_model("max", "deepracer_model_info"), {}),
        ("max by (model, action_space_type, action_count) "
         f"({sel('deepracer_model_metadata_info', per_model=False)})",
         {"action_space_type": "Action space", "action_count": "Actions"}),
    ]
    link = {
        "title": "Open ${__data.fields.model} in DeepRacer training",
        "url": f"/d/{TRAINING_UID}/deepracer-training?var-model="
        "${__data.fields.model:percentencode}"
        "&${datasource:queryparam}&${job:queryparam}&${__url_time_range}",
        "targetBlank": False,
    }
    models = joined_table(
        "Models",
        "Every model the exporter watches, idle ones included (only current-state series are "
        "queried). Click a model to open its training dashboard. Since update is not coloured: "
        "a finished model stops writing too; Stalled carries the alert. Stalled: no new "
        "metrics for "
        f"{t.stall_seconds // 60} min, written within the last {t.stall_window_seconds // 3600} h "
        "and not finished (as DeepRacerTrainingStalled). Completion and reward are rolling means "
        "at the latest iteration. Action space, actions (discrete) and speed range come from "
        "model_metadata.json; the best evaluated lap from the evaluation runs.",
        (24, 9), "model", columns, info=info,
        order=["model", "Value #A", "Value #B", "action_space_type", "action_count"],
        sort_by=("Model", False),
    ).override_by_name("model", props(displayName="Model", links=[link]))

    def by_model_chart(title: str, description: str, expr: str, unit: str = "none") -> Any:
        return timeseries_panel(title, description, (12, 8), [(expr, "{{model}}")], unit=unit)

    return dashboard(
        OVERVIEW_UID,
        "DeepRacer overview",
        "Every DeepRacer model the exporter watches, side by side.",
        [("", [
            models,
            by_model_chart("Rolling completion (training)",
                           "Rolling mean completion of every model over wall time.",
                           by_model("max", rolling, phase="training"),
                           "percentunit"),
            by_model_chart("Iteration", "Master iteration of every model over wall time: a flat "
                           "line is a model that is not training.",
                           by_model("max", "deepracer_model_iteration")),
            by_model_chart("Best lap (training)", "Fastest training lap of every model so far.",
                           by_model("min", best, phase="training"), "s"),
            alert_list("Firing DeepRacer alerts", "Firing and pending alerts of all models "
                       "(rules in prometheus/rules, evaluated by Prometheus).", (12, 8), ""),
            stat_panel("Models watched", "Models the exporter watches.", (6, 4),
                       [Value(f"sum(max by (job, instance) (deepracer_exporter_models{{{JOB}}}))")],
                       decimals=0),
            stat_panel("Failing refreshes", "Models whose last refresh failed.", (6, 4),
                       [Value(f"count(deepracer_exporter_refresh_success{{{JOB}}} == 0)"
                              " or vector(0)")],
                       decimals=0, thresholds=steps((None, "green"), (1, "red"))),
            stat_panel("Discovery", "Did the last listing of each `discover` entry succeed?",
                       (6, 4),
                       [Value(f"min(deepracer_exporter_discovery_success{{{JOB}}}) or vector(1)")],
                       mappings=OK_FAILING),
            stat_panel("Exporter version", "deepracer-exporter version.", (6, 4),
                       [Value(f"max by (version) (deepracer_exporter_build_info{{{JOB}}})")],
                       display="${__field.labels.version}", text_mode=cm.BigValueTextMode.NAME),
        ])],
        per_model=False,
        link=("Training dashboard", f"/d/{TRAINING_UID}"),
    )


def runbook_sections(doc: Path = ALERTS_DOC) -> list[tuple[str, str]]:
    """(alert name, its section of docs/alerts.md without the heading), in the doc's order."""
    parts = re.split(r"^## ", doc.read_text(), flags=re.M)[1:]
    sections = [part.partition("\n") for part in parts]
    return [(title.strip(), body.strip()) for title, _, body in sections
            if title.startswith("DeepRacer")]


def runbook_dashboard(doc: Path = ALERTS_DOC) -> dm.Dashboard:
    """docs/alerts.md's section of each alert as a text panel (panel N = the Nth alert), so an
    alert's runbook link resolves on the user's own Grafana: /d/deepracer-runbook?viewPanel=N."""
    panels = [
        text_panel(name, f"What {name} means and what to do (docs/alerts.md).",
                   (24, min(4 + body.count("\n") // 2, 24)),
                   # A link to another doc would resolve against Grafana: keep its text only.
                   re.sub(r"\[([^]]+)\]\((?!https?:)[^)]*\)", r"\1", body))
        for name, body in runbook_sections(doc)
    ]
    return dashboard(
        RUNBOOK_UID,
        "DeepRacer alert runbook",
        "What each DeepRacer alert means and what to do; alerts link here (runbook_url).",
        [("", panels)],
        per_model=False,
        link=("Overview", f"/d/{OVERVIEW_UID}"),
    )


def render(rules: Path = RULES) -> dict[str, str]:
    """File name -> JSON text, exactly as committed (with the thresholds of `rules`)."""
    t = rule_thresholds(rules)
    boards = {"deepracer-training.json": training_dashboard(t),
              "deepracer-overview.json": overview_dashboard(t),
              "deepracer-runbook.json": runbook_dashboard()}
    return {name: json.dumps(b, cls=JSONEncoder, indent=2) + "\n" for name, b in boards.items()}


def main() -> int:
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    for name, text in render().items():
        (OUT_DIR / name).write_text(text)
        print(f"wrote {OUT_DIR / name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
