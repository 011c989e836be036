"""End to end: a real Prometheus scrapes the real exporter, which reads a real S3 (moto's server).

One S3 bucket, one exporter and one Prometheus (scrape and rule evaluation every 1s) are shared by
the whole module. The bucket holds:

- `single`: sample-drfc-1 (one worker, with ip/hyperparameters.json);
- `workers`: sample-drfc-3 (three workers);
- `rounds`: two rounds (sample-drfc-1, then the console sample), iterations continue across them;
- `discovered/found`: a sample-drfc-1 copy found through a `discover` entry;
- `nolaps` (55 iterations, no lap completed) and `collapsed` (a good round, then a bad one):
  static simulated trainings that the slow (`for:` 15m/30m) alerts should hold pending;
- `stalling` and `finished`: simulated trainings (deepracer_exporter.simulate) that the
  `stall_run` fixture writes episode by episode while Prometheus watches, then stops writing.
  `finished` reaches its term_cond_max_episodes on the way; `stalling` does not.

Prometheus loads the project's rule files; deepracer.yml is loaded as a test-only copy in which
DeepRacerTrainingStalled's thresholds are shortened (15m -> STALL_AFTER_S, 6h -> 5m,
for 5m -> 2s) so the alert can go pending and fire within seconds.
"""

from __future__ import annotations

import json
import math
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pytest
import yaml
from telegraf.client import TelegrafClient

import dashboards as dash
from deepracer_exporter.app import Exporter
from deepracer_exporter.simulate import (
    TrainingSimulator,
    TrainingSpec,
    generate_documents,
    generate_files,
)
from helpers import Samples, config_from, exporter_for, parse, pick, s3_yaml, scrape, value
from promserver import PromServer
from test_parity import console_file, load_reference, upload_round

T = TypeVar("T")

REPO = Path(__file__).resolve().parent.parent
RULES_DIR = REPO / "prometheus" / "rules"
MAIN_RULES = RULES_DIR / "deepracer.yml"
STALLED = "DeepRacerTrainingStalled"
# Shortened "no metrics write for N seconds" of the test copy of DeepRacerTrainingStalled. It must
# exceed how old the served timestamp can get while a training writes every WRITE_EVERY_S: moto's
# LastModified has 1 s resolution, + refresh interval, + scrape interval, + evaluation offset.
STALL_AFTER_S = 5
STALL_FOR = "2s"
WRITE_EVERY_S = 0.3
WRITE_FOR_S = 5.0
REFRESH = "0.5s"
TOL = 1e-9
STATIC_MODELS = ("single", "workers", "rounds", "discovered/found", "nolaps", "collapsed", "full")
# `full`: a simulated DRfC training with everything a real one writes (simtrace with wall clock,
# evaluation runs and their simtrace, metadata, checkpoints) and the trainer's metrics push.
FULL = TrainingSpec(episodes_between_training=10, seed=31, learning_speed=3.0,
                    max_episodes=10**6)
LIVE_MODELS = ("stalling", "finished")
# Prometheus target labels added to every scraped series.
TARGET_LABELS = {"job", "instance"}


# --- rules ---------------------------------------------------------------------------------------

def alert_block(text: str, name: str) -> tuple[int, int]:
    """Start and end offsets of one alert's rule in the rule file text."""
    start = text.index(f"      - alert: {name}\n")
    nxt = text.find("      - alert:", start + 1)
    group = text.find("\n  - name:", start)
    ends = [i for i in (nxt, group) if i != -1]
    return start, min(ends) if ends else len(text)


def shortened_rules() -> str:
    """deepracer.yml with only DeepRacerTrainingStalled's thresholds shortened.

    Every replacement must happen exactly once inside that alert, so a change of the real rule
    text breaks this test loudly instead of silently testing something else.
    """
    text = MAIN_RULES.read_text()
    start, end = alert_block(text, STALLED)
    block = text[start:end]
    for old, new in (("> 900", f"> {STALL_AFTER_S}"), ("[6h]", "[5m]"),
                     ("for: 5m", f"for: {STALL_FOR}")):
        assert block.count(old) == 1, (
            f"{MAIN_RULES}: expected {old!r} exactly once in {STALLED}; the rule text changed, "
            f"update tests/test_integration.py")
        block = block.replace(old, new)
    return text[:start] + block + text[end:]


def rule(rules_text: str, name: str) -> dict[str, Any]:
    for group in yaml.safe_load(rules_text)["groups"]:
        for r in group["rules"]:
            if r.get("alert") == name or r.get("record") == name:
                return dict(r)
    raise LookupError(name)


# --- the stack -----------------------------------------------------------------------------------

@dataclass
class Stack:
    s3: Any
    bucket: str
    exporter: Exporter
    prom: PromServer
    rules_text: str
    sims: dict[str, TrainingSimulator]
    initial: Samples  # the exposition served at the first scrape
    samples: Path

    def metrics(self) -> Samples:
        return parse(scrape(self.exporter.port))

    def put_changed(self, name: str) -> None:
        sim = self.sims[name]
        for worker in sorted(sim.take_changed()):
            self.s3.put_object(Bucket=self.bucket, Key=sim.key_for(name, worker),
                               Body=sim.document(worker))

    def wait(self, predicate: Callable[[], T], message: str, timeout: float = 30.0) -> T:
        try:
            return self.prom.wait_for(predicate, timeout=timeout, message=message)
        except TimeoutError as exc:
            pytest.fail(f"{exc}\n--- prometheus log ---\n{self.prom.log_tail()}")


def drfc1(samples: Path) -> Path:
    return samples / "sample-drfc-1-logs/metrics/TrainingMetrics.json"


def drfc3(samples: Path) -> list[Path]:
    return [samples / "sample-drfc-3-logs/metrics" / f"TrainingMetrics{s}.json"
            for s in ("", "_1", "_2")]


def hyper(path: Path) -> Path:
    return path.parent.parent / "ip/hyperparameters.json"


# model -> rounds (each a list of worker files), as test_parity.load_reference takes them
def reference_cases(samples: Path) -> dict[str, list[list[Path]]]:
    return {
        "single": [[drfc1(samples)]],
        "workers": [drfc3(samples)],
        "rounds": [[drfc1(samples)], [console_file(samples)]],
    }


SPECS = {
    # episodes_between_training 5: an iteration every 5 writes, evaluation after each.
    "stalling": TrainingSpec(episodes_between_training=5, seed=11, learning_speed=4.0),
    # reaches term_cond_max_episodes after 10 more writes, about 3 s into the 5 s of writing
    "finished": TrainingSpec(episodes_between_training=5, seed=12, learning_speed=4.0,
                             max_episodes=20),
}
INITIAL_EPISODES = 10
LAP = b'"completion_percentage": 100, "episode_status": "Lap complete"'
NOT_A_LAP = b'"completion_percentage": 99, "episode_status": "Off track"'


def static_simulations() -> dict[str, list[tuple[TrainingSpec, bytes]]]:
    """Model -> rounds of (spec, worker 0 document) for the slow alerts."""
    # A slow learner whose every completed lap is turned into an off-track at 99%.
    slow = TrainingSpec(episodes_between_training=5, seed=23, learning_speed=0.1)
    no_laps = generate_documents(slow, 55 * 5)[0]
    assert no_laps.count(LAP) > 0
    no_laps = no_laps.replace(LAP, NOT_A_LAP)
    assert b"Lap complete" not in no_laps
    # 20 iterations that reach ~90% completion, then a round of an untrained policy (~10%).
    good = TrainingSpec(episodes_between_training=5, seed=21, learning_speed=4.0)
    bad = TrainingSpec(episodes_between_training=5, seed=22, learning_speed=0.1)
    return {
        "nolaps": [(slow, no_laps)],
        "collapsed": [(good, generate_documents(good, 20 * 5)[0]),
                      (bad, generate_documents(bad, 8 * 5)[0])],
    }


@pytest.fixture(scope="module")
def stack(s3: Any, s3_endpoint: str, samples: Path) -> Iterator[Stack]:
    bucket = f"integration-{time.time_ns()}"
    s3.create_bucket(Bucket=bucket)
    models = []
    for name, rounds in reference_cases(samples).items():
        prefixes = [name] if len(rounds) == 1 else [f"{name}-{r}" for r in range(1, len(rounds)
                                                                                  + 1)]
        for prefix, files in zip(prefixes, rounds, strict=True):
            h = hyper(files[0])
            upload_round(s3, bucket, prefix, files, h if h.exists() else None)
        models.append(f"  - name: {name}\n    bucket: {bucket}\n    rounds: {prefixes}\n")
    upload_round(s3, bucket, "discovered/found", [drfc1(samples)], hyper(drfc1(samples)))
    # `single` also gets what sits beside the training metrics, for the evaluation and model
    # panels: the sample's evaluation runs and metadata, and a checkpoint index.
    sample_dir = drfc1(samples).parent.parent
    for path in sorted((sample_dir / "metrics").glob("EvaluationMetrics-*.json")):
        s3.put_object(Bucket=bucket, Key=f"single/metrics/{path.name}", Body=path.read_bytes())
    s3.put_object(Bucket=bucket, Key="single/model/model_metadata.json",
                  Body=(sample_dir / "model/model_metadata.json").read_bytes())
    s3.put_object(Bucket=bucket, Key="single/model/deepracer_checkpoints.json",
                  Body=json.dumps({"last_checkpoint": {"name": "27_Step-20313.ckpt"},
                                   "best_checkpoint": {"name": "25_Step-18764.ckpt"}}).encode())

    for name, rounds_ in static_simulations().items():
        prefixes = [f"{name}-{r}" for r in range(1, len(rounds_) + 1)]
        for prefix, (spec, doc) in zip(prefixes, rounds_, strict=True):
            s3.put_object(Bucket=bucket, Key=f"{prefix}/ip/hyperparameters.json",
                          Body=TrainingSimulator(spec).hyperparameters())
            s3.put_object(Bucket=bucket, Key=f"{prefix}/metrics/TrainingMetrics.json", Body=doc)
        models.append(f"  - name: {name}\n    bucket: {bucket}\n    rounds: {prefixes}\n")

    for key, body in generate_files(FULL, 10 * 12, prefix="full").items():
        s3.put_object(Bucket=bucket, Key=key, Body=body)
    models.append(f"  - name: full\n    bucket: {bucket}\n    prefix: full\n")

    sims = {}
    for name, spec in SPECS.items():
        sim = TrainingSimulator(spec)
        s3.put_object(Bucket=bucket, Key=f"{name}/ip/hyperparameters.json",
                      Body=sim.hyperparameters())
        sim.advance(INITIAL_EPISODES)
        sims[name] = sim
        models.append(f"  - name: {name}\n    bucket: {bucket}\n    prefix: {name}\n")

    config = config_from(
        'listen: "127.0.0.1:0"\n'
        f"refresh_interval: {REFRESH}\n"
        'telegraf:\n  listen: "127.0.0.1:0"\n'
        + s3_yaml(s3_endpoint)
        + "models:\n" + "".join(models)
        + f"discover:\n  - bucket: {bucket}\n    prefix: discovered\n"
    )
    for name, sim in sims.items():
        for worker, body in sim.documents().items():
            s3.put_object(Bucket=bucket, Key=sim.key_for(name, worker), Body=body)
        sim.take_changed()
    rules_text = shortened_rules()
    other_rules = [p for p in sorted(RULES_DIR.glob("*.yml")) if p != MAIN_RULES]
    exporter = exporter_for(config)
    prom: PromServer | None = None
    try:
        exporter.start()
        assert exporter.push is not None
        # What DRfC's trainer pushes after an iteration: one line per policy-training epoch.
        client = TelegrafClient(host="127.0.0.1", port=exporter.push.port)
        for epoch, entropy in enumerate((1.05, 1.0, 0.97)):
            client.metric("dr_sagemaker_epochs", {"entropy": entropy, "epoch": epoch,
                                                  "kl_divergence": 0.01, "surrogate_loss": -0.02},
                          tags={"model": "full"})
        deadline = time.monotonic() + 10
        while exporter.push.receiver.state().lines["policy"] < 3:
            assert time.monotonic() < deadline, "pushed lines not received"
            time.sleep(0.05)
        prom = PromServer(f"127.0.0.1:{exporter.port}", rule_files=other_rules,
                          extra_rules=rules_text)
        st = Stack(s3, bucket, exporter, prom, rules_text, sims, {}, samples)
        st.initial = st.metrics()
        prom.start()
        st.wait(lambda: [t for t in prom.targets() if t["health"] == "up"], "target up")
        # Range-vector panels and rules need a few scrapes of history.
        st.wait(lambda: (prom.query_value('count_over_time(up{job="deepracer-exporter"}[1m])')
                         or 0) >= 3, "three scrapes")
        yield st
    finally:
        if prom is not None:
            prom.stop()
        exporter.stop()


# --- the simulated trainings ---------------------------------------------------------------------

@dataclass
class StallRun:
    # DeepRacerTrainingStalled states by model, polled between writes
    during_writes: list[dict[str, str]] = field(default_factory=list)
    # (seconds since the last write, states by model) after writing stopped
    after: list[tuple[float, dict[str, str]]] = field(default_factory=list)
    finished_at_write: int | None = None  # write number at which `finished` reached its limit
    writes: int = 0


def alert_states(prom: PromServer, alertname: str) -> dict[str, str]:
    return {a["labels"].get("model", ""): a["state"] for a in prom.alerts()
            if a["labels"]["alertname"] == alertname}


@pytest.fixture(scope="module")
def stall_run(stack: Stack) -> StallRun:
    """Write both simulated trainings episode by episode for WRITE_FOR_S, then stop writing.

    Polls the stalled alert while writing and afterwards until `stalling` fires, then watches
    three more evaluations so `finished` gets every chance to (wrongly) go pending.
    """
    run = StallRun()
    began = time.monotonic()
    while time.monotonic() - began < WRITE_FOR_S:
        for name, sim in stack.sims.items():
            sim.advance(1)
            stack.put_changed(name)
            if name == "finished" and sim.finished and run.finished_at_write is None:
                run.finished_at_write = run.writes
        run.writes += 1
        run.during_writes.append(alert_states(stack.prom, STALLED))
        time.sleep(WRITE_EVERY_S)
    stopped = time.monotonic()

    def fired() -> bool:
        states = alert_states(stack.prom, STALLED)
        run.after.append((time.monotonic() - stopped, states))
        return states.get("stalling") == "firing"

    try:
        stack.prom.wait_for(fired, timeout=40, interval=0.25, message="stalling fires")
    except TimeoutError:
        pass  # test_stalled_training_alert reports the timeline
    else:
        end = time.monotonic() + 3
        while time.monotonic() < end:
            fired()
            time.sleep(0.25)
    return run


# --- issue 3: target, per-iteration series, stalled alert ---------------------------------------

def test_target_up_and_every_model_served(stack: Stack) -> None:
    (target,) = stack.prom.targets()
    assert target["health"] == "up", target
    assert target["labels"]["instance"] == f"127.0.0.1:{stack.exporter.port}"
    assert stack.prom.query_value('up{job="deepracer-exporter"}') == 1.0
    served = {r["metric"]["model"] for r in stack.prom.query("deepracer_model_info")}
    assert served == set(STATIC_MODELS) | set(LIVE_MODELS)
    ok = stack.prom.query("deepracer_exporter_refresh_success == 1")
    assert {r["metric"]["model"] for r in ok} == served
    assert stack.prom.query_value("deepracer_exporter_models") == len(served)
    assert stack.prom.query_value("deepracer_exporter_discovery_success") == 1.0


def prom_samples(stack: Stack, selector: str) -> Samples:
    out: Samples = {}
    for r in stack.prom.query(selector):
        labels = dict(r["metric"])
        name = labels.pop("__name__")
        assert {labels.pop(k) for k in TARGET_LABELS} == {
            "deepracer-exporter", f"127.0.0.1:{stack.exporter.port}"}
        out[(name, frozenset(labels.items()))] = float(r["value"][1])
    return out


@pytest.mark.parametrize("model", ["single", "workers", "rounds"])
def test_per_iteration_series_equal_the_exposition(stack: Stack, model: str) -> None:
    exposed = {k: v for k, v in stack.metrics().items()
               if k[0].startswith("deepracer_iteration_") and ("model", model) in k[1]}
    # The default per-iteration set: about 27 series per iteration, >= 24 iterations per model.
    assert len(exposed) > 500, len(exposed)
    queried = prom_samples(stack, f'{{__name__=~"deepracer_iteration_.+", model="{model}"}}')
    assert set(queried) == set(exposed)
    # Values go through the text format and Prometheus' float formatting: both are exact.
    assert queried == exposed


def test_simulated_finish_is_read_from_hyperparameters(stack: Stack,
                                                       stall_run: StallRun) -> None:
    spec = SPECS["finished"]
    body = stack.s3.get_object(Bucket=stack.bucket, Key="finished/ip/hyperparameters.json")
    assert yaml.safe_load(body["Body"].read())["term_cond_max_episodes"] == spec.max_episodes
    assert stack.sims["finished"].finished and not stack.sims["stalling"].finished
    assert stall_run.finished_at_write is not None
    assert stall_run.finished_at_write < stall_run.writes - 3, "finished too late to matter"
    # 0 while it was short of term_cond_max_episodes, 1 once it reached them
    assert value(stack.initial, "deepracer_model_finished", model="finished") == 0
    got = stack.metrics()
    assert value(got, "deepracer_model_finished", model="finished") == 1
    assert sum(pick(got, "deepracer_model_episodes_total", model="finished",
                    phase="training").values()) == spec.max_episodes
    for model in ("stalling", *STATIC_MODELS):
        assert value(got, "deepracer_model_finished", model=model) == 0, model
    assert stack.prom.query_value('deepracer_model_finished{model="finished"}') == 1


def test_stalled_training_alert(stack: Stack, stall_run: StallRun) -> None:
    timeline = "\n".join(f"  +{t:5.2f}s {s}" for t, s in stall_run.after)
    context = (f"states while writing: {stall_run.during_writes}\nafter:\n{timeline}\n"
               f"--- prometheus log ---\n{stack.prom.log_tail()}")
    assert len(stall_run.during_writes) >= 10
    assert all(s == {} for s in stall_run.during_writes), context
    stalling = [s.get("stalling") for _, s in stall_run.after]
    assert "firing" in stalling, context
    first_pending = stalling.index("pending") if "pending" in stalling else None
    assert first_pending is not None, f"never seen pending before firing\n{context}"
    assert set(stalling[:first_pending]) <= {None}, context
    assert first_pending < stalling.index("firing"), context
    assert stalling[-1] == "firing", context
    # pending not before ~STALL_AFTER_S after the last write (LastModified is truncated to whole
    # seconds, so the served timestamp may be up to 1 s older than the write; the last write was
    # WRITE_EVERY_S before `stopped`)
    assert stall_run.after[first_pending][0] >= STALL_AFTER_S - 2, context
    # Only the model that stopped early is stalled: `finished` reached term_cond_max_episodes,
    # the static samples never changed while Prometheus watched (the "6h" rule, here 5m).
    for _, states in stall_run.after:
        assert set(states) <= {"stalling"}, context

    (alert,) = [a for a in stack.prom.alerts() if a["labels"]["alertname"] == STALLED]
    assert alert["labels"]["severity"] == "critical"
    assert alert["annotations"]["summary"] == (
        "DeepRacer model stalling stopped writing training metrics.")
    assert float(alert["value"]) > STALL_AFTER_S
    assert alert["annotations"]["dashboard_url"].endswith("var-model=stalling")


def test_finished_model_is_silenced_only_by_finished(stack: Stack, stall_run: StallRun) -> None:
    """Without its `unless ... finished` clause the alert expression does match `finished`."""
    expr = rule(stack.rules_text, STALLED)["expr"]
    clause = "unless on (model) (deepracer_model_finished == 1)"
    assert clause in expr
    assert f"> {STALL_AFTER_S}" in expr and "[5m]" in expr
    assert rule(stack.rules_text, STALLED)["for"] == STALL_FOR
    unsilenced = expr.replace(clause, "")
    matched = {r["metric"]["model"] for r in stack.prom.query(unsilenced)}
    assert matched == {"stalling", "finished"}
    assert {r["metric"]["model"] for r in stack.prom.query(expr)} == {"stalling"}
    # and the static samples are excluded by the history clause alone
    changed = stack.prom.query(
        "changes(model:deepracer_last_update_timestamp_seconds:nonzero[5m]) > 0")
    assert {r["metric"]["model"] for r in changed} == set(LIVE_MODELS)


# --- issue 4: dashboards -------------------------------------------------------------------------

def model_has(got: Samples, model: str) -> set[str]:
    """What a model's data offers, in the vocabulary of dashboards.Query.requires.

    `completed_lap` together with `evaluation` means a completed *evaluation* lap.
    """
    has = {"history", "discover"}  # >= 3 scrapes waited for; a discover entry is configured
    if pick(got, "deepracer_model_best_lap_seconds", model=model, phase="training"):
        has.add("completed_lap")
    if pick(got, "deepracer_iteration_episodes", model=model, phase="evaluation"):
        has.add("evaluation")
    if pick(got, "deepracer_iteration_episodes", model=model):
        has.add("per_iteration")
    if (pick(got, "deepracer_model_iteration_episodes", model=model)
            and value(got, "deepracer_model_iteration_episodes", model=model)
            < value(got, "deepracer_model_episodes_per_iteration", model=model)
            and not value(got, "deepracer_model_finished", model=model)):
        has.add("unfinished_iteration")
    if pick(got, "deepracer_model_best_lap_seconds", model=model, phase="evaluation"):
        has.add("completed_lap+evaluation")
    for flag, family in (("evaluation_runs", "deepracer_evaluation_runs"),
                         ("evaluation_lap", "deepracer_model_best_evaluation_lap_seconds"),
                         ("metadata", "deepracer_model_metadata_info"),
                         ("hyperparameters", "deepracer_model_hyperparameter"),
                         ("checkpoints", "deepracer_model_checkpoint"),
                         ("simtrace", "deepracer_model_step_p95_seconds"),
                         ("wall_clock", "deepracer_model_real_time_factor"),
                         ("evaluation_simtrace", "deepracer_evaluation_step_seconds"),
                         ("push", "deepracer_policy_entropy")):
        if pick(got, family, model=model):
            has.add(flag)
    return has


def satisfied(q: dash.Query, has: set[str]) -> bool:
    need = set(q.requires)
    if {"completed_lap", "evaluation"} <= need:
        need = (need - {"completed_lap", "evaluation"}) | {"completed_lap+evaluation"}
    return need <= has


def test_every_dashboard_query_returns_data(stack: Stack) -> None:
    got = stack.metrics()
    # The real sample has everything its layout can hold; the simulated full training adds
    # simtrace with a wall clock and the push: together they exercise every dashboard query.
    assert model_has(got, "single") >= {"completed_lap", "evaluation", "per_iteration",
                                        "completed_lap+evaluation", "evaluation_runs",
                                        "evaluation_lap", "metadata", "hyperparameters",
                                        "checkpoints"}
    assert model_has(got, "full") >= {"simtrace", "wall_clock", "evaluation_simtrace", "push",
                                      "per_iteration", "evaluation_runs"}
    unmet = [q for q in dash.queries_for_model("any")
             if not any(satisfied(q, model_has(got, m)) for m in (*STATIC_MODELS, *LIVE_MODELS))]
    assert not unmet, f"no model exercises {[(q.panel_title, q.ref_id) for q in unmet]}"
    checked = 0
    empty = []
    for model in (*STATIC_MODELS, *LIVE_MODELS):
        has = model_has(got, model)
        for q in dash.queries_for_model(model):
            if not satisfied(q, has):
                continue
            result = stack.prom.query(q.expr)
            checked += 1
            if not result:
                empty.append(f"{model}: {q.dashboard_uid} panel {q.panel_id} "
                             f"{q.panel_title!r} {q.ref_id}: {q.expr}")
                continue
            if f'model="{model}"' in q.expr:  # a per-model panel shows only that model
                assert {r["metric"].get("model", model) for r in result} == {model}, q
    assert not empty, "dashboard queries without data:\n" + "\n".join(empty)
    assert checked > 200


@pytest.mark.parametrize("model", ["single", "workers", "rounds"])
def test_console_chart_equals_deepracer_utils(stack: Stack, model: str) -> None:
    tm = load_reference(reference_cases(stack.samples)[model])
    summary = tm.getSummary(method="mean").reset_index()
    master = tm.metrics.groupby("r-i")["master_iteration"].first()
    rounds = tm.metrics.groupby("r-i")["round"].first()
    compared = 0
    for column, expr in dash.console_chart_queries(model).items():
        charted = {}
        for r in stack.prom.query(expr):
            assert set(r["metric"]) == {"round", "iteration"}, r
            key = (int(r["metric"]["round"]), int(r["metric"]["iteration"]))
            assert key not in charted, f"{column}: two series for {key}"
            charted[key] = float(r["value"][1])
        expected = {(int(rounds[row["r-i"]]), int(master[row["r-i"]])): float(row[column])
                    for _, row in summary.iterrows() if not math.isnan(row[column])}
        assert set(charted) == set(expected), column
        for key, want in expected.items():
            assert charted[key] == pytest.approx(want, abs=TOL), (column, key)
            compared += 1
    assert compared > 30


# --- alert rules on real series ------------------------------------------------------------------

def by_model(results: list[dict[str, Any]]) -> dict[str, float]:
    return {r["metric"]["model"]: float(r["value"][1]) for r in results}


def test_recording_rules_see_exporter_series(stack: Stack, stall_run: StallRun) -> None:
    """model:deepracer_training_active = not finished and written within the hour.

    The samples are uploaded when the module starts, so their LastModified is "now" and they
    count as active (a model older than an hour cannot be made with moto; test_promserver covers
    it with a static exposition). The simulated `finished` model is the one that is not active.
    """
    got = stack.metrics()
    models = (*STATIC_MODELS, *LIVE_MODELS)
    stamps = {m: value(got, "deepracer_model_last_update_timestamp_seconds", model=m)
              for m in models}
    recorded = by_model(stack.prom.query("model:deepracer_last_update_timestamp_seconds:nonzero"))
    assert recorded == stamps
    assert all(time.time() - s < 3600 for s in stamps.values())
    assert stamps["stalling"] > max(stamps[m] for m in STATIC_MODELS)

    active = by_model(stack.prom.query("model:deepracer_training_active"))
    assert set(active) == set(models) - {"finished"}
    assert set(active.values()) == {1.0}


def expected_pending(got: Samples, active: set[str],
                     turned_finished: set[str]) -> set[tuple[str, str]]:
    """The alerts with long `for:` that the exposition should make pending, computed here;
    `turned_finished`: models Prometheus saw go from training to finished."""
    out = {("DeepRacerTrainingFinished", m) for m in turned_finished
           if value(got, "deepracer_model_finished", model=m) == 1}
    for m in active:
        plateau = value(got, "deepracer_model_plateau_iterations", model=m, metric="completion",
                        phase="training")
        rolling = value(got, "deepracer_model_rolling_completion_ratio", model=m,
                        phase="training")
        if plateau >= 20 and rolling < 0.95:
            out.add(("DeepRacerProgressPlateau", m))
        laps = sum(pick(got, "deepracer_model_episodes_total", model=m,
                        status="lap_complete").values())
        if value(got, "deepracer_model_iteration", model=m) >= 50 and not laps > 0:
            out.add(("DeepRacerNoLapsCompleted", m))
        best = max(pick(got, "deepracer_iteration_rolling_completion_ratio", model=m,
                        phase="training", stat="mean").values())
        if rolling < 0.5 * best and best >= 0.3:
            out.add(("DeepRacerCompletionCollapsed", m))
    return out


def test_alerts_series_match_the_rules(stack: Stack, stall_run: StallRun) -> None:
    alerts = [r["metric"] for r in stack.prom.query("ALERTS")]
    firing = {(a["alertname"], a.get("model")) for a in alerts if a["alertstate"] == "firing"}
    assert firing == {(STALLED, "stalling")}
    got = stack.metrics()
    active = set(by_model(stack.prom.query("model:deepracer_training_active")))
    turned = set(by_model(stack.prom.query("changes(deepracer_model_finished[1h]) > 0")))
    want = expected_pending(got, active, turned)
    # the data is built so that these two at least are pending
    assert {("DeepRacerNoLapsCompleted", "nolaps"),
            ("DeepRacerCompletionCollapsed", "collapsed")} <= want, want
    pending = {(a["alertname"], a.get("model")) for a in alerts if a["alertstate"] == "pending"}
    assert pending == want, re.sub(r"\), ", "),\n", repr(alerts))
    for a in alerts:
        assert a["alertname"] not in {"DeepRacerIterationNotAdvancing",
                                      "DeepRacerExporterRefreshFailing",
                                      "DeepRacerExporterDiscoveryFailing",
                                      "DeepRacerExporterDown"}, a
    errors = [(r["name"], r.get("lastError")) for g in stack.prom.rules() for r in g["rules"]
              if r["health"] != "ok"]
    assert errors == []
