"""Read the provisioned Grafana dashboards: panels, their PromQL, template substitution.

Used by tests/test_dashboards.py (static checks) and by integration tests that run every dashboard
query against a real Prometheus:

    for q in dashboards.queries_for_model("my-model"):
        result = prometheus_query(q.expr)        # instant query
        if not result and not q.requires: fail(q)

`Query.requires` names what a query legitimately needs before it can return data, so a test can
skip it for a model that lacks it: `completed_lap` (lap metrics exist only after a completed lap),
`evaluation` (evaluation episodes), `discover` (a `discover` entry in the exporter config),
`history` (a range vector: at least two scrapes), `per_iteration` (deepracer_iteration_* series,
which an idle model does not export), `unfinished_iteration` (an iteration with fewer training
episodes than an iteration plays, in a model still training), and for the files besides the
training metrics:
`evaluation_runs` (evaluation run files, `metrics/evaluation/*.json`), `evaluation_lap` (an
evaluation run with a completed lap), `metadata` (`model/model_metadata.json`), `hyperparameters`
(`ip/hyperparameters.json`), `checkpoints` (`model/deepracer_checkpoints.json`); and for the
simulator and policy families: `simtrace` (training simtrace CSVs), `wall_clock` (simtrace with the
`wall_clock` column: real-time factor, training and policy time; policy time also needs a next
iteration), `evaluation_simtrace` (an evaluation run with simtrace), `push` (DRfC's metrics push
reaching the exporter's `telegraf` listener for this model).

The console chart (DeepRacer console reward graph) is the panel titled `CONSOLE_CHART_TITLE` of the
training dashboard; `console_chart_queries(model)` maps deepracer-utils `getSummary(method="mean")`
columns to its queries. Completion there is in percent, the same scale as getSummary.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
GRAFANA_DIR = REPO_ROOT / "grafana"
DASHBOARD_DIR = GRAFANA_DIR / "dashboards"
PROVISIONING_DIR = GRAFANA_DIR / "provisioning"
METRICS_DOC = REPO_ROOT / "docs" / "metrics.md"

TRAINING_UID = "deepracer-training"
OVERVIEW_UID = "deepracer-overview"
RUNBOOK_UID = "deepracer-runbook"
CONSOLE_CHART_TITLE = "Reward and completion (DeepRacer console)"
# What `$job` becomes with the job variable's default, All (its allValue).
ALL_JOBS = ".+"
# refId of the console chart's query -> deepracer-utils getSummary(method="mean") column.
CONSOLE_CHART_SERIES = {"A": "train_reward", "B": "train_completion", "C": "eval_completion"}

Json = dict[str, Any]


@dataclass(frozen=True)
class Query:
    dashboard_uid: str
    panel_id: int
    panel_title: str
    panel_type: str
    ref_id: str
    expr: str
    instant: bool
    format: str
    requires: frozenset[str] = frozenset()


def load_dashboards() -> dict[str, Json]:
    """Every dashboard JSON under grafana/dashboards, by uid."""
    boards: dict[str, Json] = {}
    for path in sorted(DASHBOARD_DIR.glob("*.json")):
        board = json.loads(path.read_text())
        boards[board["uid"]] = board
    return boards


def iter_panels(dashboard: Json) -> Iterator[Json]:
    """All panels, rows included, and the panels nested in (collapsed) rows."""
    for panel in dashboard.get("panels", []):
        yield panel
        yield from panel.get("panels", [])


def iter_queries(dashboards: dict[str, Json] | None = None) -> Iterator[Query]:
    """Every panel target with an expression, template variables not substituted."""
    for uid, board in (dashboards or load_dashboards()).items():
        for panel in iter_panels(board):
            for t in panel.get("targets", []):
                if t.get("hide") or not t.get("expr"):
                    continue
                expr = t["expr"]
                yield Query(
                    dashboard_uid=uid,
                    panel_id=panel["id"],
                    panel_title=panel.get("title", ""),
                    panel_type=panel["type"],
                    ref_id=t["refId"],
                    expr=expr,
                    instant=bool(t.get("instant")),
                    format=t.get("format", "time_series"),
                    requires=_requires(expr),
                )


def _requires(expr: str) -> frozenset[str]:
    need = set()
    names = metric_names(expr)
    if names & {
        "deepracer_iteration_lap_seconds",
        "deepracer_best_lap_seconds",
        "deepracer_model_best_lap_seconds",
    }:
        need.add("completed_lap")
    if 'phase="evaluation"' in expr:
        need.add("evaluation")
    if "deepracer_exporter_discovery_success" in names and "vector(" not in expr:
        need.add("discover")
    if re.search(r"\[[^\]]+\]", expr):
        need.add("history")
    if any(n.startswith("deepracer_iteration_") for n in names):
        need.add("per_iteration")
    if "deepracer_model_episodes_per_iteration" in names and "group_left" in expr:
        need.add("unfinished_iteration")  # only while an iteration lacks episodes
    for flag, families in FILE_REQUIREMENTS.items():
        if names & families:
            need.add(flag)
    return frozenset(need)


# `Query.requires` flag -> metric families that exist only when the model has that file.
FILE_REQUIREMENTS: dict[str, frozenset[str]] = {
    "evaluation_runs": frozenset(
        {
            "deepracer_evaluation_step_seconds",
            "deepracer_evaluation_real_time_factor",
            "deepracer_evaluation_runs",
            "deepracer_evaluation_timestamp_seconds",
            "deepracer_evaluation_trials",
            "deepracer_evaluation_completed_laps",
            "deepracer_evaluation_completion_ratio",
            "deepracer_evaluation_lap_seconds",
            "deepracer_evaluation_resets",
            "deepracer_model_best_evaluation_lap_seconds",
        }
    ),
    "evaluation_lap": frozenset(
        {"deepracer_evaluation_lap_seconds", "deepracer_model_best_evaluation_lap_seconds"}
    ),
    "metadata": frozenset({"deepracer_model_metadata_info", "deepracer_model_action_space"}),
    "hyperparameters": frozenset(
        {"deepracer_model_hyperparameter", "deepracer_model_hyperparameters_info"}
    ),
    "checkpoints": frozenset(
        {"deepracer_model_checkpoint", "deepracer_model_checkpoint_timestamp_seconds"}
    ),
    "simtrace": frozenset(
        {
            "deepracer_iteration_step_seconds",
            "deepracer_iteration_real_time_factor",
            "deepracer_iteration_training_seconds",
            "deepracer_iteration_policy_seconds",
            "deepracer_model_step_p95_seconds",
            "deepracer_model_step_mean_seconds",
            "deepracer_model_real_time_factor",
            "deepracer_model_simtrace_iteration",
            "deepracer_iteration_speed_meters_per_second",
            "deepracer_iteration_distance_meters",
            "deepracer_iteration_projected_lap_seconds",
            "deepracer_model_action_ratio",
        }
    ),
    "wall_clock": frozenset(
        {
            "deepracer_iteration_real_time_factor",
            "deepracer_iteration_training_seconds",
            "deepracer_iteration_policy_seconds",
            "deepracer_model_real_time_factor",
            "deepracer_evaluation_real_time_factor",
        }
    ),
    "evaluation_simtrace": frozenset(
        {"deepracer_evaluation_step_seconds", "deepracer_evaluation_real_time_factor"}
    ),
    "push": frozenset(
        {
            "deepracer_policy_entropy",
            "deepracer_policy_kl_divergence",
            "deepracer_policy_surrogate_loss",
            "deepracer_policy_epochs_total",
            "deepracer_policy_last_epoch_timestamp_seconds",
            "deepracer_iteration_policy_entropy",
            "deepracer_push_episodes_total",
        }
    ),
}


_VARIABLE = re.compile(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)|\[\[(\w+)\]\]")


def substitute(
    expr: str,
    model: str,
    *,
    interval: str = "15s",
    rate_interval: str = "1m",
    range_: str = "1h",
    job: str = ALL_JOBS,
) -> str:
    """Replace Grafana template variables the way Grafana would for one model.

    Raises ValueError on a variable it does not know, so a new dashboard variable cannot slip
    through the integration test unsubstituted.
    """
    values = {
        "model": _escape_label_value(model),
        "job": job,
        "__interval": interval,
        "__interval_ms": str(_duration_ms(interval)),
        "__rate_interval": rate_interval,
        "__range": range_,
        "__range_s": str(_duration_ms(range_) // 1000),
        "__range_ms": str(_duration_ms(range_)),
    }

    def repl(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2) or match.group(3)
        if name not in values:
            raise ValueError(f"unknown template variable ${name} in {expr!r}")
        return values[name]

    return _VARIABLE.sub(repl, expr)


def _escape_label_value(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"')


def _duration_ms(text: str) -> int:
    match = re.fullmatch(r"(\d+)(ms|s|m|h|d)", text)
    if not match:
        raise ValueError(f"unsupported duration {text!r}")
    factor = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}[match.group(2)]
    return int(match.group(1)) * factor


def queries_for_model(model: str, **durations: str) -> list[Query]:
    """Every dashboard query with its variables substituted for `model` (see `substitute`)."""
    out = []
    for q in iter_queries():
        out.append(
            Query(
                dashboard_uid=q.dashboard_uid,
                panel_id=q.panel_id,
                panel_title=q.panel_title,
                panel_type=q.panel_type,
                ref_id=q.ref_id,
                expr=substitute(q.expr, model, **durations),
                instant=q.instant,
                format=q.format,
                requires=q.requires,
            )
        )
    return out


def console_chart_panel(dashboards: dict[str, Json] | None = None) -> Json:
    board = (dashboards or load_dashboards())[TRAINING_UID]
    for panel in iter_panels(board):
        if panel.get("title") == CONSOLE_CHART_TITLE:
            return panel
    raise LookupError(f"no panel {CONSOLE_CHART_TITLE!r} in {TRAINING_UID}")


def console_chart_queries(model: str) -> dict[str, str]:
    """getSummary column (train_reward, train_completion, eval_completion) -> substituted PromQL.

    Each query returns one sample per iteration with labels `round` and `iteration`.
    """
    panel = console_chart_panel()
    by_ref = {t["refId"]: t["expr"] for t in panel["targets"]}
    return {col: substitute(by_ref[ref], model) for ref, col in CONSOLE_CHART_SERIES.items()}


def variable_queries(dashboard: Json) -> list[tuple[str, str]]:
    """(variable name, PromQL text) of every query variable."""
    out = []
    for var in dashboard.get("templating", {}).get("list", []):
        if var.get("type") != "query":
            continue
        query = var.get("query")
        if isinstance(query, dict):
            query = query.get("query", "")
        out.append((var["name"], query or ""))
    return out


# --- PromQL metric names -----------------------------------------------------------------------

_STRINGS = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_MATCHERS = re.compile(r"\{[^}]*\}")
_RANGES = re.compile(r"\[[^\]]*\]")
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_IDENT = re.compile(r"(?<![\w:.])([A-Za-z_:][\w:]*)(?![\w:])(?!\s*\()")
_KEYWORDS = {
    "and", "or", "unless", "bool", "offset", "by", "without", "on", "ignoring", "group_left",
    "group_right", "inf", "nan", "atan2", "start", "end",
}  # fmt: skip
_LABEL_VALUES = re.compile(r"^\s*label_values\(\s*(?:(.*),)?\s*\w+\s*\)\s*$", re.S)


def metric_names(expr: str) -> set[str]:
    """Metric names used by a PromQL expression (or a `label_values(metric, label)` query)."""
    lv = _LABEL_VALUES.match(expr)
    if lv:
        return metric_names(lv.group(1)) if lv.group(1) else set()
    text = _STRINGS.sub(" ", expr)
    text = _MATCHERS.sub(" ", text)
    text = _RANGES.sub(" ", text)
    text = _GROUPING.sub(" ", text)
    names = {m.group(1) for m in _IDENT.finditer(text)}
    # `{__name__="x"}` selects a metric too
    names |= set(re.findall(r'__name__\s*=\s*"([^"]+)"', expr))
    return {n for n in names if n.lower() not in _KEYWORDS}


def documented_metrics() -> set[str]:
    """Metric families named in the first column of the tables in docs/metrics.md."""
    text = METRICS_DOC.read_text()
    return set(re.findall(r"^\|\s*`([a-z_:][a-z0-9_:]*)`\s*\|", text, re.M))
